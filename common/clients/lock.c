/*
 * lock.c - the fenced Redis lease of lock.h: SET NX PX, a renewal thread, compare-and-
 * delete release, INCR fence.
 *
 * The two scripts are the whole safety argument: renewal and release act only while the
 * key still holds our token, atomically inside Redis, so a holder whose lease expired and
 * passed to another can neither extend nor delete the new holder's lease.
 */
#include "lock.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "redis.h"
#include "util.h"

#define MIN_TTL_MS 300
#define RETRY_BUSY_MS 100
#define RETRY_ERROR_MAX_MS 1000

/* KEYS[1] lock key, ARGV[1] token, ARGV[2] ttl ms: extend only our own lease. */
static const char renew_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/* KEYS[1] lock key, ARGV[1] token: delete only our own lease. */
static const char release_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end";

struct dq_lock {
    dq_redis *redis; /* owned; used by the renewal thread until it is joined */
    char key[300];
    char fence_key[300];
    char token[DQ_LOCK_TOKEN_LEN + 1];
    int64_t ttl_ms;
    int64_t fence;
    int lost; /* atomic */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping; /* guarded by mu */
};

int64_t dq_lock_fence(const dq_lock *l)
{
    return l ? l->fence : 0;
}

int dq_lock_lost(const dq_lock *l)
{
    return l ? __atomic_load_n(&l->lost, __ATOMIC_ACQUIRE) : 1;
}

const char *dq_lock_key(const dq_lock *l)
{
    return l ? l->key : "";
}

const char *dq_lock_token(const dq_lock *l)
{
    return l ? l->token : "";
}

/* Run a script with one key and up to two arguments. Returns the integer reply, or -1
 * when Redis could not be asked or answered with an error (reason in err). */
static long long run_script(dq_lock *l, const char *script, const char *arg2, char *err,
                            size_t errlen)
{
    const char *argv[6] = {"EVAL", script, "1", l->key, l->token, arg2};
    size_t argvlen[6];
    int argc = arg2 ? 6 : 5;
    redisReply *r;
    long long v = -1;

    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    r = dq_redis_commandv(l->redis, argc, argv, argvlen);
    if (!r) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(l->redis), dq_redis_errstr(l->redis));
        return -1;
    }
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else
        snprintf(err, errlen, "redis %s: unexpected reply to the lock script%s%.200s",
                 dq_redis_where(l->redis), r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
    freeReplyObject(r);
    return v;
}

/* Wait on the condition variable until ms passed or the lock is being released.
 * Returns 1 when stopping. */
static int renew_wait(dq_lock *l, int64_t ms)
{
    struct timespec ts;
    int stopping;

    dq_mono_deadline(ms, &ts);
    pthread_mutex_lock(&l->mu);
    while (!l->stopping) {
        if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) == ETIMEDOUT)
            break;
    }
    stopping = l->stopping;
    pthread_mutex_unlock(&l->mu);
    return stopping;
}

static void *renew_main(void *arg)
{
    dq_lock *l = arg;
    int64_t last_ok = dq_mono_ms();
    int64_t every = l->ttl_ms / 3;
    char ttl[32], err[512];

    snprintf(ttl, sizeof ttl, "%lld", (long long)l->ttl_ms);
    while (!renew_wait(l, every)) {
        long long v = run_script(l, renew_script, ttl, err, sizeof err);

        if (v == 1) {
            last_ok = dq_mono_ms();
            continue;
        }
        if (v == 0) {
            __atomic_store_n(&l->lost, 1, __ATOMIC_RELEASE);
            dq_error("lock %s (fence %lld) lost: the lease expired or passed to another holder",
                     l->key, (long long)l->fence);
            break;
        }
        /* Redis unreachable: the lease may still be ours until its ttl runs out. */
        dq_warn("lock %s: renewal failed: %s", l->key, err);
        if (dq_mono_ms() - last_ok >= l->ttl_ms) {
            __atomic_store_n(&l->lost, 1, __ATOMIC_RELEASE);
            dq_error("lock %s (fence %lld) lost: not renewed for %lld ms", l->key,
                     (long long)l->fence, (long long)l->ttl_ms);
            break;
        }
    }
    return NULL;
}

static void lock_free(dq_lock *l)
{
    if (!l)
        return;
    if (l->thread_started) {
        pthread_mutex_lock(&l->mu);
        l->stopping = 1;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    dq_redis_free(l->redis);
    free(l);
}

dq_lock_status dq_lock_try(const char *redis_url, int timeout_ms, const char *service,
                           const char *environment, int64_t ttl_ms, dq_lock **out, char *err,
                           size_t errlen)
{
    dq_lock *l = NULL;
    pthread_condattr_t ca;
    unsigned char rnd[DQ_LOCK_TOKEN_LEN / 2];
    char ttl[32];
    redisReply *r = NULL;
    dq_lock_status st = DQ_LOCK_ERROR;

    *out = NULL;
    if (!service || !environment) {
        snprintf(err, errlen, "lock: service and environment are required");
        return DQ_LOCK_ERROR;
    }
    l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "lock: out of memory");
        return DQ_LOCK_ERROR;
    }
    pthread_mutex_init(&l->mu, NULL);
    /* CLOCK_MONOTONIC: a wall-clock jump must not stretch or shrink the renewal period */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    l->ttl_ms = ttl_ms > 0 ? ttl_ms : DQ_LOCK_TTL_DEFAULT_MS;
    if (l->ttl_ms < MIN_TTL_MS)
        l->ttl_ms = MIN_TTL_MS;
    snprintf(l->key, sizeof l->key, "deployq:lock:%s:%s", service, environment);
    snprintf(l->fence_key, sizeof l->fence_key, "deployq:fence:%s:%s", service, environment);
    if (dq_random_bytes(rnd, sizeof rnd) != 0) {
        snprintf(err, errlen, "lock: no random bytes for the token");
        goto fail;
    }
    dq_hex(rnd, sizeof rnd, l->token);
    l->redis = dq_redis_connect(redis_url, timeout_ms, err, errlen);
    if (!l->redis)
        goto fail;

    snprintf(ttl, sizeof ttl, "%lld", (long long)l->ttl_ms);
    {
        const char *argv[] = {"SET", l->key, l->token, "NX", "PX", ttl};
        size_t argvlen[6];
        for (int i = 0; i < 6; i++)
            argvlen[i] = strlen(argv[i]);
        r = dq_redis_commandv(l->redis, 6, argv, argvlen);
    }
    if (!r) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(l->redis), dq_redis_errstr(l->redis));
        goto fail;
    }
    if (r->type == REDIS_REPLY_NIL) {
        st = DQ_LOCK_BUSY;
        goto fail;
    }
    if (r->type != REDIS_REPLY_STATUS) {
        snprintf(err, errlen, "redis %s: SET %s refused%s%.200s", dq_redis_where(l->redis), l->key,
                 r->type == REDIS_REPLY_ERROR ? ": " : "", r->type == REDIS_REPLY_ERROR ? r->str : "");
        goto fail;
    }
    freeReplyObject(r);

    /* The fence is taken after the lease, so two holders can never share one. */
    r = dq_redis_command(l->redis, "INCR %s", l->fence_key);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        snprintf(err, errlen, "redis %s: INCR %s failed%s%.200s", dq_redis_where(l->redis),
                 l->fence_key, r && r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r && r->type == REDIS_REPLY_ERROR ? r->str : "");
        /* give the lease back rather than hold it without a fence */
        char ignore[256];
        run_script(l, release_script, NULL, ignore, sizeof ignore);
        goto fail;
    }
    l->fence = r->integer;
    freeReplyObject(r);
    r = NULL;

    if (pthread_create(&l->thread, NULL, renew_main, l) != 0) {
        char ignore[256];
        snprintf(err, errlen, "lock: cannot start the renewal thread");
        run_script(l, release_script, NULL, ignore, sizeof ignore);
        goto fail;
    }
    l->thread_started = 1;
    dq_debug("lock %s taken (fence %lld, ttl %lld ms)", l->key, (long long)l->fence,
             (long long)l->ttl_ms);
    *out = l;
    return DQ_LOCK_TAKEN;
fail:
    if (r)
        freeReplyObject(r);
    lock_free(l);
    return st;
}

dq_lock_status dq_lock_acquire(const char *redis_url, int timeout_ms, const char *service,
                               const char *environment, int64_t ttl_ms, int64_t wait_ms,
                               int (*keep_going)(void *ctx), void *ctx, dq_lock **out, char *err,
                               size_t errlen)
{
    int64_t until = wait_ms >= 0 ? dq_mono_ms() + wait_ms : INT64_MAX;
    int64_t backoff = RETRY_BUSY_MS;
    dq_lock_status st;

    for (;;) {
        st = dq_lock_try(redis_url, timeout_ms, service, environment, ttl_ms, out, err, errlen);
        if (st == DQ_LOCK_TAKEN)
            return st;
        if (st == DQ_LOCK_BUSY) {
            backoff = RETRY_BUSY_MS;
        } else {
            dq_warn("lock %s/%s: %s; retrying", service, environment, err);
            backoff = backoff * 2 > RETRY_ERROR_MAX_MS ? RETRY_ERROR_MAX_MS : backoff * 2;
        }
        if (keep_going && !keep_going(ctx))
            return DQ_LOCK_BUSY;
        if (dq_mono_ms() + backoff > until)
            return st;
        dq_sleep_ms(backoff);
    }
}

int dq_lock_release(dq_lock *l)
{
    char err[512];
    long long v;

    if (!l)
        return 0;
    /* stop the renewal first: from here on this thread alone uses the connection */
    if (l->thread_started) {
        pthread_mutex_lock(&l->mu);
        l->stopping = 1;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        l->thread_started = 0;
    }
    v = run_script(l, release_script, NULL, err, sizeof err);
    if (v < 0)
        dq_warn("lock %s: release failed (it expires by itself): %s", l->key, err);
    else if (v == 0)
        dq_warn("lock %s (fence %lld) was no longer ours at release", l->key, (long long)l->fence);
    lock_free(l);
    return v < 0 ? -1 : (int)v;
}
