/*
 * lock.c - the fenced Redis lease of lock.h: one script takes the lease and its fence
 * (SET NX PX, then INCR), one renewal thread per pool, compare-and-delete release.
 *
 * The three scripts are the whole safety argument: the lease and its fence are taken in one
 * atomic step, and renewal and release act only while the key still holds our token,
 * atomically inside Redis, so a holder whose lease expired and passed to another can
 * neither extend nor delete the new holder's lease. Each script is sent by its SHA1
 * (EVALSHA): one round trip and a few dozen bytes; the text (EVAL) only when the server
 * does not know it yet (NOSCRIPT: a fresh or restarted Redis), which also loads it there.
 */
#include "lock.h"

#include <openssl/evp.h>
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

/* KEYS[1] lock key, KEYS[2] fence key, ARGV[1] token, ARGV[2] ttl ms: take the lease
 * when it is free and, in the same atomic step, the next fence (>= 1); 0 when busy. The
 * fence is taken only with the lease, so two holders can never share one. */
static const char acquire_script[] =
    "if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
    "return redis.call('incr', KEYS[2]) else return 0 end";
/* KEYS[1] lock key, ARGV[1] token, ARGV[2] ttl ms: extend only our own lease. */
static const char renew_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/* KEYS[1] lock key, ARGV[1] token: delete only our own lease. */
static const char release_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end";

#define POOL_IDLE_MAX 16 /* idle connections a pool keeps; more are closed when returned */

struct dq_lock_pool {
    char *url;
    int timeout_ms;
    int private; /* made by dq_lock_try() for one lock, freed with it */
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the renewal thread's wake-up; also "a renewal finished" */
    dq_redis *idle[POOL_IDLE_MAX]; /* guarded by mu */
    int n_idle;
    dq_lock *held;          /* the leases held, renewed by the thread (guarded by mu) */
    int64_t wake_ms;        /* when the renewal thread wakes next, 0 busy (guarded by mu) */
    pthread_t thread;
    int thread_started;
    int stopping;           /* guarded by mu */
};

struct dq_lock {
    dq_lock_pool *pool;
    dq_lock *next_held;   /* in pool->held (guarded by pool->mu) */
    char key[300];
    char fence_key[300];
    char token[DQ_LOCK_TOKEN_LEN + 1];
    char ttl_text[32];
    int64_t ttl_ms;
    int64_t fence;
    int64_t next_renew_ms; /* guarded by pool->mu */
    int64_t last_ok_ms;    /* atomic: when the last renewal that succeeded was sent */
    int lost;              /* atomic */
    int renewing;          /* the renewal thread is using this lock (guarded by pool->mu) */
};

int64_t dq_lock_fence(const dq_lock *l)
{
    return l ? l->fence : 0;
}

int dq_lock_lost(const dq_lock *l)
{
    if (!l || __atomic_load_n(&l->lost, __ATOMIC_ACQUIRE))
        return 1;
    /* The lease ran out if no renewal sent in the last ttl succeeded, whether or not the
     * renewal thread has got round to trying: judged from the clock, never from its
     * progress (a slow Redis delays renewals, it must not delay this answer). */
    if (dq_mono_ms() - __atomic_load_n(&l->last_ok_ms, __ATOMIC_ACQUIRE) < l->ttl_ms)
        return 0;
    /* and it stays lost, even if a renewal sent before now comes back successful (the lock
     * was allocated writable; const is the caller's view) */
    __atomic_store_n((int *)&l->lost, 1, __ATOMIC_RELEASE);
    return 1;
}

const char *dq_lock_key(const dq_lock *l)
{
    return l ? l->key : "";
}

const char *dq_lock_token(const dq_lock *l)
{
    return l ? l->token : "";
}

/* An idle connection of the pool, or a new one. NULL with err when Redis cannot be
 * reached. */
static dq_redis *conn_get(dq_lock_pool *p, char *err, size_t errlen)
{
    dq_redis *rc = NULL;

    pthread_mutex_lock(&p->mu);
    if (p->n_idle > 0)
        rc = p->idle[--p->n_idle];
    pthread_mutex_unlock(&p->mu);
    return rc ? rc : dq_redis_connect(p->url, p->timeout_ms, err, errlen);
}

/* Give a connection back (it reconnects by itself if it broke), or close it. */
static void conn_put(dq_lock_pool *p, dq_redis *rc)
{
    if (!rc)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->n_idle < POOL_IDLE_MAX) {
        p->idle[p->n_idle++] = rc;
        rc = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    dq_redis_free(rc);
}

/* Run a script by its SHA1 (EVALSHA), falling back to its text (EVAL) when Redis does not
 * know it. keys and args as EVAL takes them (n_keys + n_args <= 4). Returns the reply
 * (free with freeReplyObject), or NULL when Redis could not be asked (reason in err). */
static redisReply *run_script(dq_redis *rc, const char *script, const char **keys, int n_keys,
                              const char **args, int n_args, char *err, size_t errlen)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    char sha[2 * 20 + 1], nkeys[8];
    const char *argv[8];
    size_t argvlen[8];
    int argc = 0;
    redisReply *r;

    if (EVP_Digest(script, strlen(script), digest, &dlen, EVP_sha1(), NULL) != 1 || dlen != 20) {
        snprintf(err, errlen, "lock: cannot compute the script's SHA1");
        return NULL;
    }
    dq_hex(digest, dlen, sha);
    snprintf(nkeys, sizeof nkeys, "%d", n_keys);
    argv[argc++] = "EVALSHA";
    argv[argc++] = sha;
    argv[argc++] = nkeys;
    for (int i = 0; i < n_keys; i++)
        argv[argc++] = keys[i];
    for (int i = 0; i < n_args; i++)
        argv[argc++] = args[i];
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    r = dq_redis_commandv(rc, argc, argv, argvlen);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = script;
        argvlen[0] = 4;
        argvlen[1] = strlen(script);
        r = dq_redis_commandv(rc, argc, argv, argvlen);
    }
    if (!r)
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(rc), dq_redis_errstr(rc));
    return r;
}

/* Renew (with_ttl) or release l over rc. Returns the integer reply, or -1 when Redis could
 * not be asked or answered with an error (reason in err). */
static long long run_own_script(dq_redis *rc, const dq_lock *l, const char *script, int with_ttl,
                                char *err, size_t errlen)
{
    const char *keys[] = {l->key};
    const char *args[] = {l->token, l->ttl_text};
    redisReply *r = run_script(rc, script, keys, 1, args, with_ttl ? 2 : 1, err, errlen);
    long long v = -1;

    if (!r)
        return -1;
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else
        snprintf(err, errlen, "redis %s: unexpected reply to the lock script%s%.200s",
                 dq_redis_where(rc), r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
    freeReplyObject(r);
    return v;
}

/* The pool's renewal thread: renews each held lease about every ttl/3, one at a time,
 * over a connection of the pool. */
static void *renew_main(void *arg)
{
    dq_lock_pool *p = arg;
    char err[512];

    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        int64_t now = dq_mono_ms(), wake = now + 1000, sent;
        dq_lock *due = NULL;
        dq_redis *rc;
        long long v;

        for (dq_lock *l = p->held; l; l = l->next_held) {
            if (__atomic_load_n(&l->lost, __ATOMIC_ACQUIRE))
                continue;
            if (l->next_renew_ms <= now) {
                due = l;
                break;
            }
            if (l->next_renew_ms < wake)
                wake = l->next_renew_ms;
        }
        if (!due) {
            struct timespec ts;

            dq_mono_deadline(wake - now, &ts);
            p->wake_ms = wake;
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
            p->wake_ms = 0;
            continue;
        }
        /* due stays in held until its release has seen renewing go back to 0 */
        due->renewing = 1;
        pthread_mutex_unlock(&p->mu);

        sent = dq_mono_ms();
        rc = conn_get(p, err, sizeof err);
        v = rc ? run_own_script(rc, due, renew_script, 1, err, sizeof err) : -1;
        conn_put(p, rc);
        if (v == 1) {
            __atomic_store_n(&due->last_ok_ms, sent, __ATOMIC_RELEASE);
        } else if (v == 0) {
            __atomic_store_n(&due->lost, 1, __ATOMIC_RELEASE);
            dq_error("lock %s (fence %lld) lost: the lease expired or passed to another holder",
                     due->key, (long long)due->fence);
        } else {
            /* Redis unreachable: the lease may still be ours until its ttl runs out
             * (dq_lock_lost() tells from the clock) */
            dq_warn("lock %s: renewal failed: %s", due->key, err);
            if (dq_lock_lost(due)) {
                __atomic_store_n(&due->lost, 1, __ATOMIC_RELEASE);
                dq_error("lock %s (fence %lld) lost: not renewed for %lld ms", due->key,
                         (long long)due->fence, (long long)due->ttl_ms);
            }
        }

        pthread_mutex_lock(&p->mu);
        due->next_renew_ms = sent + due->ttl_ms / 3;
        due->renewing = 0;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

dq_lock_pool *dq_lock_pool_new(const char *redis_url, int timeout_ms, char *err, size_t errlen)
{
    dq_lock_pool *p = calloc(1, sizeof *p);
    pthread_condattr_t ca;

    if (!p || !redis_url || !(p->url = strdup(redis_url))) {
        snprintf(err, errlen, redis_url ? "lock: out of memory" : "lock: no Redis URL");
        free(p);
        return NULL;
    }
    p->timeout_ms = timeout_ms;
    pthread_mutex_init(&p->mu, NULL);
    /* CLOCK_MONOTONIC: a wall-clock jump must not stretch or shrink the renewal period */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    return p;
}

void dq_lock_pool_free(dq_lock_pool *p)
{
    if (!p)
        return;
    if (p->thread_started) {
        pthread_mutex_lock(&p->mu);
        p->stopping = 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);
    }
    while (p->n_idle > 0)
        dq_redis_free(p->idle[--p->n_idle]);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    if (p->url) {
        /* the URL may hold the Redis password */
        for (volatile char *c = p->url; *c; c++)
            *c = '\0';
    }
    free(p->url);
    free(p);
}

/* Put l among the pool's held leases, starting the renewal thread if needed. 0, or -1
 * when the thread cannot be started (l is then not held). */
static int pool_hold(dq_lock_pool *p, dq_lock *l)
{
    int rc = 0;

    pthread_mutex_lock(&p->mu);
    if (!p->thread_started) {
        if (pthread_create(&p->thread, NULL, renew_main, p) == 0)
            p->thread_started = 1;
        else
            rc = -1;
    }
    if (rc == 0) {
        l->next_renew_ms = l->last_ok_ms + l->ttl_ms / 3;
        l->next_held = p->held;
        p->held = l;
        /* wake the thread only when it would sleep past this lease's first renewal: a
         * wake-up per lock taken would cost a context switch each */
        if (p->wake_ms && l->next_renew_ms < p->wake_ms)
            pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* Take l out of the pool's held leases, waiting for a renewal of it in progress. */
static void pool_unhold(dq_lock_pool *p, dq_lock *l)
{
    pthread_mutex_lock(&p->mu);
    while (l->renewing)
        pthread_cond_wait(&p->cv, &p->mu);
    for (dq_lock **pp = &p->held; *pp; pp = &(*pp)->next_held) {
        if (*pp == l) {
            *pp = l->next_held;
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

dq_lock_status dq_lock_pool_try(dq_lock_pool *p, const char *service, const char *environment,
                                int64_t ttl_ms, dq_lock **out, char *err, size_t errlen)
{
    dq_lock *l = NULL;
    unsigned char rnd[DQ_LOCK_TOKEN_LEN / 2];
    dq_redis *rc = NULL;
    redisReply *r = NULL;
    int64_t sent;
    dq_lock_status st = DQ_LOCK_ERROR;

    *out = NULL;
    if (!p || !service || !environment) {
        snprintf(err, errlen, "lock: a pool, service and environment are required");
        return DQ_LOCK_ERROR;
    }
    l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "lock: out of memory");
        return DQ_LOCK_ERROR;
    }
    l->pool = p;
    l->ttl_ms = ttl_ms > 0 ? ttl_ms : DQ_LOCK_TTL_DEFAULT_MS;
    if (l->ttl_ms < MIN_TTL_MS)
        l->ttl_ms = MIN_TTL_MS;
    snprintf(l->ttl_text, sizeof l->ttl_text, "%lld", (long long)l->ttl_ms);
    snprintf(l->key, sizeof l->key, "deployq:lock:%s:%s", service, environment);
    snprintf(l->fence_key, sizeof l->fence_key, "deployq:fence:%s:%s", service, environment);
    if (dq_random_bytes(rnd, sizeof rnd) != 0) {
        snprintf(err, errlen, "lock: no random bytes for the token");
        goto fail;
    }
    dq_hex(rnd, sizeof rnd, l->token);
    rc = conn_get(p, err, errlen);
    if (!rc)
        goto fail;

    sent = dq_mono_ms(); /* the lease runs from no earlier than this */
    {
        const char *keys[] = {l->key, l->fence_key};
        const char *args[] = {l->token, l->ttl_text};

        r = run_script(rc, acquire_script, keys, 2, args, 2, err, errlen);
    }
    if (!r)
        goto fail;
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
        st = DQ_LOCK_BUSY;
        goto fail;
    }
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0) {
        char ignore[256];

        snprintf(err, errlen, "redis %s: taking %s (fence %s) failed%s%.200s", dq_redis_where(rc),
                 l->key, l->fence_key, r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
        /* a script that fails midway is not undone: the lease may be set without a fence,
         * so give it back rather than let it block the target for a whole ttl */
        run_own_script(rc, l, release_script, 0, ignore, sizeof ignore);
        goto fail;
    }
    l->fence = r->integer;
    l->last_ok_ms = sent;
    freeReplyObject(r);
    r = NULL;

    if (pool_hold(p, l) != 0) {
        char ignore[256];

        snprintf(err, errlen, "lock: cannot start the renewal thread");
        run_own_script(rc, l, release_script, 0, ignore, sizeof ignore);
        goto fail;
    }
    conn_put(p, rc);
    dq_debug("lock %s taken (fence %lld, ttl %lld ms)", l->key, (long long)l->fence,
             (long long)l->ttl_ms);
    *out = l;
    return DQ_LOCK_TAKEN;
fail:
    if (r)
        freeReplyObject(r);
    conn_put(p, rc);
    free(l);
    return st;
}

dq_lock_status dq_lock_try(const char *redis_url, int timeout_ms, const char *service,
                           const char *environment, int64_t ttl_ms, dq_lock **out, char *err,
                           size_t errlen)
{
    dq_lock_pool *p = dq_lock_pool_new(redis_url, timeout_ms, err, errlen);
    dq_lock_status st;

    *out = NULL;
    if (!p)
        return DQ_LOCK_ERROR;
    p->private = 1; /* freed with the lock by dq_lock_release() */
    st = dq_lock_pool_try(p, service, environment, ttl_ms, out, err, errlen);
    if (st != DQ_LOCK_TAKEN)
        dq_lock_pool_free(p);
    return st;
}

/* dq_lock_try() or dq_lock_pool_try(), again and again: see dq_lock_acquire(). */
static dq_lock_status acquire(dq_lock_pool *p, const char *redis_url, int timeout_ms,
                              const char *service, const char *environment, int64_t ttl_ms,
                              int64_t wait_ms, int (*keep_going)(void *ctx), void *ctx,
                              dq_lock **out, char *err, size_t errlen)
{
    int64_t until = wait_ms >= 0 ? dq_mono_ms() + wait_ms : INT64_MAX;
    int64_t backoff = RETRY_BUSY_MS;
    dq_lock_status st;

    for (;;) {
        st = p ? dq_lock_pool_try(p, service, environment, ttl_ms, out, err, errlen)
               : dq_lock_try(redis_url, timeout_ms, service, environment, ttl_ms, out, err, errlen);
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

dq_lock_status dq_lock_acquire(const char *redis_url, int timeout_ms, const char *service,
                               const char *environment, int64_t ttl_ms, int64_t wait_ms,
                               int (*keep_going)(void *ctx), void *ctx, dq_lock **out, char *err,
                               size_t errlen)
{
    return acquire(NULL, redis_url, timeout_ms, service, environment, ttl_ms, wait_ms, keep_going,
                   ctx, out, err, errlen);
}

dq_lock_status dq_lock_pool_acquire(dq_lock_pool *p, const char *service, const char *environment,
                                    int64_t ttl_ms, int64_t wait_ms, int (*keep_going)(void *ctx),
                                    void *ctx, dq_lock **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!p) {
        snprintf(err, errlen, "lock: no pool");
        return DQ_LOCK_ERROR;
    }
    return acquire(p, NULL, 0, service, environment, ttl_ms, wait_ms, keep_going, ctx, out, err,
                   errlen);
}

int dq_lock_release(dq_lock *l)
{
    char err[512];
    dq_lock_pool *p;
    dq_redis *rc;
    long long v = -1;

    if (!l)
        return 0;
    p = l->pool;
    /* no renewal of it from here on */
    pool_unhold(p, l);
    rc = conn_get(p, err, sizeof err);
    if (rc)
        v = run_own_script(rc, l, release_script, 0, err, sizeof err);
    conn_put(p, rc);
    if (v < 0)
        dq_warn("lock %s: release failed (it expires by itself): %s", l->key, err);
    else if (v == 0)
        dq_warn("lock %s (fence %lld) was no longer ours at release", l->key, (long long)l->fence);
    if (p->private)
        dq_lock_pool_free(p);
    free(l);
    return v < 0 ? -1 : (int)v;
}
