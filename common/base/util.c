/*
 * util.c - time, UUIDs, hex/base64, SHA-256, string and file helpers (see util.h).
 *
 * Every cryptographic primitive (randomness, digests, base64) is OpenSSL's; this file only
 * validates input and lays out bytes.
 */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int64_t dq_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dq_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void dq_mono_deadline(int64_t ms, struct timespec *out)
{
    clock_gettime(CLOCK_MONOTONIC, out);
    out->tv_sec += (time_t)(ms / 1000);
    out->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}

void dq_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    /* A signal cuts the sleep short; carry on with what is left. */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

char *dq_time_format(int64_t ms, char out[DQ_TIME_LEN + 1])
{
    /* Floor division, so times before 1970 keep a positive millisecond part. */
    int64_t secs = ms / 1000;
    int millis = (int)(ms % 1000);
    if (millis < 0) {
        millis += 1000;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) {
        dq_strlcpy(out, "0000-00-00T00:00:00.000Z", DQ_TIME_LEN + 1);
        return out;
    }
    /* Wide enough for any int fields, so the compiler sees no truncation; the year
     * check above makes the text exactly DQ_TIME_LEN long. */
    char text[80];
    snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
    dq_strlcpy(out, text, DQ_TIME_LEN + 1);
    return out;
}

/* Read exactly n digits at *p into *val, advancing *p. */
static int digits(const char **p, int n, int *val)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *val = v;
    return 0;
}

static int expect(const char **p, const char *chars)
{
    if (**p == '\0' || strchr(chars, **p) == NULL)
        return -1;
    (*p)++;
    return 0;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

int dq_time_parse(const char *s, int64_t *ms)
{
    int year, mon, day, hour, min, sec, frac = 0, off = 0;
    const char *p = s;

    if (s == NULL || ms == NULL)
        return -1;
    if (digits(&p, 4, &year) || expect(&p, "-") || digits(&p, 2, &mon) || expect(&p, "-") ||
        digits(&p, 2, &day) || expect(&p, "Tt") || digits(&p, 2, &hour) || expect(&p, ":") ||
        digits(&p, 2, &min) || expect(&p, ":") || digits(&p, 2, &sec))
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hour > 23 ||
        min > 59 || sec > 60)
        return -1;

    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        /* Milliseconds are the resolution: further digits are read and dropped. */
        int n = 0;
        for (; isdigit((unsigned char)*p); n++, p++)
            if (n < 3)
                frac = frac * 10 + (*p - '0');
        for (; n < 3; n++)
            frac *= 10;
    }

    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(&p, 2, &oh) || expect(&p, ":") || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 60 + om) * 60;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;

    struct tm tm = {.tm_year = year - 1900, .tm_mon = mon - 1, .tm_mday = day,
                    .tm_hour = hour, .tm_min = min, .tm_sec = sec};
    time_t t = timegm(&tm);
    *ms = ((int64_t)t - off) * 1000 + frac;
    return 0;
}

int64_t dq_duration_parse(const char *s)
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};

    if (s == NULL || !isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    char *end;
    long long n = strtoll(s, &end, 10);
    if (errno != 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (n > INT64_MAX / units[i].ms)
                return -1;
            return n * units[i].ms;
        }
    }
    return -1;
}

static void uuid_format(unsigned char b[16], int version, char out[DQ_UUID_LEN + 1])
{
    char hex[33];
    b[6] = (unsigned char)((b[6] & 0x0f) | (version << 4));
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    dq_hex(b, 16, hex);
    snprintf(out, DQ_UUID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12,
             hex + 16, hex + 20);
}

int dq_uuid_v4(char out[DQ_UUID_LEN + 1])
{
    unsigned char b[16];
    if (dq_random_bytes(b, sizeof b) != 0)
        return -1;
    uuid_format(b, 4, out);
    return 0;
}

void dq_uuid_from_name(const char *name, char out[DQ_UUID_LEN + 1])
{
    unsigned char digest[32];
    dq_sha256(name, strlen(name), digest);
    uuid_format(digest, 5, out);
}

int dq_uuid_valid(const char *s)
{
    if (s == NULL)
        return 0;
    for (int i = 0; i < DQ_UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f')) {
            /* lower case only: the canonical form the schemas accept, so an id that
             * passes here can go into an event that passes them */
            return 0;
        }
    }
    return s[DQ_UUID_LEN] == '\0';
}

/* The kernel's generator (getrandom(2), which waits only until it is first seeded), not
 * OpenSSL's RAND_bytes: setting up OpenSSL's DRBG costs about 0.6 ms, a noticeable part of
 * a `deployq submit` that needs 32 random bytes (docs/performance.md). */
int dq_random_bytes(unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = getrandom(buf, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

char *dq_hex(const unsigned char *buf, size_t len, char *out)
{
    static const char digits_lc[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits_lc[buf[i] >> 4];
        out[2 * i + 1] = digits_lc[buf[i] & 0x0f];
    }
    out[2 * len] = '\0';
    return out;
}

void dq_sha256(const void *data, size_t len, unsigned char out[32])
{
    EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL);
}

void dq_sha256_hex(const void *data, size_t len, char out[DQ_SHA256_HEX_LEN + 1])
{
    unsigned char digest[32];
    dq_sha256(data, len, digest);
    dq_hex(digest, sizeof digest, out);
}

char *dq_base64_encode(const unsigned char *buf, size_t len)
{
    /* EVP_EncodeBlock takes an int length. */
    if (len > (size_t)INT_MAX / 4 * 3)
        return NULL;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, buf, (int)len);
    return out;
}

long dq_base64_decode(const char *s, unsigned char *out, size_t outcap)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (s == NULL)
        return -1;
    size_t n = strlen(s);
    if (n % 4 != 0 || n > (size_t)INT_MAX)
        return -1;
    if (n == 0)
        return 0;

    /* EVP_DecodeBlock skips whitespace and does not report padding, so the input is
     * checked strictly here and the padding subtracted from its result. */
    size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
    for (size_t i = 0; i < n - pad; i++)
        if (s[i] == '\0' || strchr(alphabet, s[i]) == NULL)
            return -1;
    size_t len = n / 4 * 3 - pad;
    if (len > outcap)
        return -1;

    unsigned char *tmp = malloc(n / 4 * 3);
    if (tmp == NULL)
        return -1;
    int got = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n);
    if (got < 0 || (size_t)got != n / 4 * 3) {
        free(tmp);
        return -1;
    }
    memcpy(out, tmp, len);
    free(tmp);
    return (long)len;
}

size_t dq_strlcpy(char *dst, const char *src, size_t dstlen)
{
    size_t n = strlen(src);
    if (dstlen > 0) {
        size_t copy = n < dstlen ? n : dstlen - 1;
        memcpy(dst, src, copy);
        dst[copy] = '\0';
    }
    return n;
}

int dq_parse_int(const char *s, long long min, long long max, long long *out)
{
    /* strtoll would skip leading blanks and accept an empty string. */
    if (s == NULL || s[0] == '\0' || isspace((unsigned char)s[0]))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

char *dq_read_file(const char *path, size_t maxlen, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;

    size_t cap = 4096, used = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        goto fail;
    for (;;) {
        if (used + 1 >= cap) {
            char *grown = realloc(buf, cap * 2);
            if (grown == NULL)
                goto fail;
            buf = grown;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + used, cap - used - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        if (n == 0)
            break;
        used += (size_t)n;
        if (used > maxlen) {
            errno = EFBIG;
            goto fail;
        }
    }
    close(fd);
    buf[used] = '\0';
    if (len != NULL)
        *len = used;
    return buf;

fail:;
    int saved = errno;
    free(buf);
    close(fd);
    errno = saved;
    return NULL;
}

char *dq_actor(const char *program, char *out, size_t outlen)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        dq_strlcpy(host, "unknown", sizeof host);
    host[sizeof host - 1] = '\0';
    snprintf(out, outlen, "%s@%s/%ld", program, host, (long)getpid());
    return out;
}
