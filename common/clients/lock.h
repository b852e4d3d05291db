/*
 * lock.h - one deploy per target at a time: a Redis lease with a fencing token.
 *
 * The lease is `SET deployq:lock:<service>:<env> <random token> NX PX <ttl>`, renewed about
 * every ttl/3 (a Lua script extends it only while the value is still our token) and
 * released by compare-and-delete (the same kind of script), so a holder never deletes a
 * lease that has passed to someone else. A lease can still lapse (a long pause, a
 * partition from Redis): it is then lost (dq_lock_lost), and the holder must stop acting.
 * Every acquisition also takes the next value of the per-target fence counter (INCR
 * deployq:fence:<service>:<env>), in the same script as the SET, so only a holder takes
 * one: it only ever grows, so whatever a holder that lost its lease emits later carries a
 * smaller fence than the new holder's, and readers (registry, state fold) can recognise
 * it as stale. Each step is one round trip (EVALSHA).
 *
 * Locks are taken from a pool (dq_lock_pool): its idle Redis connections and one renewal
 * thread serve every lease it holds, so a process that holds two thousand leases has one
 * renewal thread and a handful of connections, not two thousand of each. dq_lock_try()
 * and dq_lock_acquire() make a pool of one for the lock and free it with it. A lock may
 * be taken in one thread and released in another, but one dq_lock is not shared by
 * threads; a pool is (it is thread-safe).
 */
#ifndef DQ_LOCK_H
#define DQ_LOCK_H

#include <stddef.h>
#include <stdint.h>

#define DQ_LOCK_TTL_DEFAULT_MS 30000
#define DQ_LOCK_TOKEN_LEN 32 /* hex characters */

typedef struct dq_lock dq_lock;
typedef struct dq_lock_pool dq_lock_pool;

typedef enum {
    DQ_LOCK_ERROR = -1, /* Redis could not be asked; reason in err */
    DQ_LOCK_TAKEN = 0,  /* *out holds the lease */
    DQ_LOCK_BUSY = 1,   /* someone else holds it (or keep_going said stop while waiting) */
} dq_lock_status;

/* Try to take the lease of service/environment once. redis_url and timeout_ms as for
 * dq_redis_connect(); ttl_ms <= 0 means DQ_LOCK_TTL_DEFAULT_MS (at least 300 ms are
 * used). On DQ_LOCK_TAKEN *out is a new lock (its fence already taken, its renewal thread
 * running) that the caller releases with dq_lock_release(). Never puts the Redis password
 * in err. */
dq_lock_status dq_lock_try(const char *redis_url, int timeout_ms, const char *service,
                           const char *environment, int64_t ttl_ms, dq_lock **out, char *err,
                           size_t errlen);

/* A pool for the locks of one process: redis_url and timeout_ms as for dq_redis_connect()
 * (kept for the connections it makes later; nothing is connected yet). NULL with a reason
 * in err only when out of memory. Free with dq_lock_pool_free() once every lock taken
 * from it was released. */
dq_lock_pool *dq_lock_pool_new(const char *redis_url, int timeout_ms, char *err, size_t errlen);
/* Stop its renewal thread and close its connections. NULL is a no-op. */
void dq_lock_pool_free(dq_lock_pool *p);

/* dq_lock_try() and dq_lock_acquire() with a connection of the pool and its renewal
 * thread; the lock keeps no connection of its own while held. */
dq_lock_status dq_lock_pool_try(dq_lock_pool *p, const char *service, const char *environment,
                                int64_t ttl_ms, dq_lock **out, char *err, size_t errlen);
dq_lock_status dq_lock_pool_acquire(dq_lock_pool *p, const char *service, const char *environment,
                                    int64_t ttl_ms, int64_t wait_ms, int (*keep_going)(void *ctx),
                                    void *ctx, dq_lock **out, char *err, size_t errlen);

/* dq_lock_try() again and again (about every 100 ms, with backoff up to 1 s on Redis
 * errors) until the lease is taken, wait_ms passed (wait_ms < 0: no limit), or
 * keep_going(ctx) returns 0 (keep_going may be NULL). Returns DQ_LOCK_TAKEN, DQ_LOCK_BUSY
 * (gave up waiting) or DQ_LOCK_ERROR (gave up while Redis was failing; last reason in err). */
dq_lock_status dq_lock_acquire(const char *redis_url, int timeout_ms, const char *service,
                               const char *environment, int64_t ttl_ms, int64_t wait_ms,
                               int (*keep_going)(void *ctx), void *ctx, dq_lock **out, char *err,
                               size_t errlen);

/* The fencing token taken with this lease (>= 1). */
int64_t dq_lock_fence(const dq_lock *l);

/* 1 once the lease is known to be lost: a renewal found another token (or none), or no
 * renewal sent in the last ttl succeeded (judged from the clock, so a renewal delayed by a
 * slow Redis never delays this answer). Stays 1. Safe to call from any thread. */
int dq_lock_lost(const dq_lock *l);

/* The lease's key ("deployq:lock:<service>:<env>") and random token. */
const char *dq_lock_key(const dq_lock *l);
const char *dq_lock_token(const dq_lock *l);

/* Stop renewing, delete the lease if it is still ours (compare-and-delete) and free (with
 * its pool when dq_lock_try() made one for it). Returns 1 when our lease was deleted, 0 when it was no longer ours
 * (expired or taken over), -1 when Redis could not be asked (the lease then expires by
 * itself after its ttl). NULL is a no-op returning 0. */
int dq_lock_release(dq_lock *l);

#endif
