/*
 * util.h - small helpers every module needs: time in RFC 3339, UUIDs, hex and base64,
 * SHA-256, safe string handling. Randomness comes from OpenSSL's RAND_bytes, encodings
 * from OpenSSL's EVP, so nothing here is a hand-written primitive.
 */
#ifndef DQ_UTIL_H
#define DQ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define DQ_UUID_LEN 36 /* without the terminating NUL */
#define DQ_TIME_LEN 24 /* "2026-11-26T10:00:00.123Z" */
#define DQ_SHA256_HEX_LEN 64

/* Wall clock and monotonic clock, milliseconds. */
int64_t dq_now_ms(void);
int64_t dq_mono_ms(void);
/* The CLOCK_MONOTONIC time ms from now, as pthread_cond_timedwait wants it for a condition
 * variable whose clock is CLOCK_MONOTONIC (so a wall-clock jump does not move it). */
struct timespec;
void dq_mono_deadline(int64_t ms, struct timespec *out);
void dq_sleep_ms(int64_t ms);

/* Format ms since the epoch as "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC) into out[DQ_TIME_LEN+1]. */
char *dq_time_format(int64_t ms, char out[DQ_TIME_LEN + 1]);
/* Parse an RFC 3339 date-time (Z or +hh:mm offset, optional fraction). 0 ok, -1 bad. */
int dq_time_parse(const char *s, int64_t *ms);

/* Parse a duration: "300", "300s", "1500ms", "5m", "2h", "1d". Returns ms, or -1. */
int64_t dq_duration_parse(const char *s);

/* A random (v4) UUID into out[DQ_UUID_LEN+1]. Returns 0, or -1 if no randomness. */
int dq_uuid_v4(char out[DQ_UUID_LEN + 1]);
/* A name-based UUID: the first 16 bytes of SHA-256(name), version 5 layout. The same name
 * always gives the same id: used for event ids that must survive redelivery. */
void dq_uuid_from_name(const char *name, char out[DQ_UUID_LEN + 1]);
/* 1 when s is a UUID in canonical lower-case form (8-4-4-4-12 hex), else 0. */
int dq_uuid_valid(const char *s);

/* len bytes from the kernel's generator (getrandom); 0, or -1 when it failed. */
int dq_random_bytes(unsigned char *buf, size_t len);
/* Lower-case hex of len bytes into out (2*len+1). */
char *dq_hex(const unsigned char *buf, size_t len, char *out);
void dq_sha256(const void *data, size_t len, unsigned char out[32]);
void dq_sha256_hex(const void *data, size_t len, char out[DQ_SHA256_HEX_LEN + 1]);

/* Base64 (standard alphabet, padded). Encode returns a malloc'd string. Decode writes at
 * most outcap bytes and returns the decoded length, or -1 for invalid input. */
char *dq_base64_encode(const unsigned char *buf, size_t len);
long dq_base64_decode(const char *s, unsigned char *out, size_t outcap);

/* Bounded copy: always terminates, returns the length of src (truncated if >= dstlen). */
size_t dq_strlcpy(char *dst, const char *src, size_t dstlen);
/* strtoll with full validation: the whole string must be a number in [min,max]. */
int dq_parse_int(const char *s, long long min, long long max, long long *out);

/* Read a whole file (at most maxlen bytes) into a malloc'd, NUL-terminated buffer.
 * Returns NULL with errno set on failure; *len gets the size when not NULL. */
char *dq_read_file(const char *path, size_t maxlen, size_t *len);

/* "deployq-validator@host/pid" into out. */
char *dq_actor(const char *program, char *out, size_t outlen);

#endif
