/*
 * runlease.c - the registry of runs and the orphan scan of runlease.h.
 *
 * Each step that touches more than one key is one Lua script, so a scan never sees half
 * a registration: the claim script's "lock key absent" and "claim taken" are one atomic
 * decision, which is what lets several workers scan at once with one adopter per run.
 */
#include "runlease.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runrecord.h"
#include "util.h"

#define KEY_LEN 512
#define SCAN_PAGE 256
#define WAIT_STEP_MS 50 /* how often a waiting scanner looks at the stop flags */

/* KEYS[1] ZSET, KEYS[2] job hash, KEYS[3] claim; ARGV id, now ms, lock key, event, ttl s */
static const char register_script[] =
    "redis.call('hset', KEYS[2], 'lock', ARGV[3], 'event', ARGV[4]) "
    "redis.call('expire', KEYS[2], ARGV[5]) "
    "redis.call('zadd', KEYS[1], ARGV[2], ARGV[1]) "
    "redis.call('expire', KEYS[1], ARGV[5]) "
    "redis.call('del', KEYS[3]) "
    "return 1";
/* KEYS[1] ZSET, KEYS[2] job hash, KEYS[3] claim; ARGV id */
static const char unregister_script[] =
    "redis.call('zrem', KEYS[1], ARGV[1]) "
    "redis.call('del', KEYS[2], KEYS[3]) "
    "return 1";
/* KEYS[1] the run's lock key, KEYS[2] job hash, KEYS[3] claim; ARGV claimant, claim ms.
 * 1: claimed for the caller; 0: its lock is held, it is gone, or someone else claimed it. */
static const char claim_script[] =
    "if redis.call('exists', KEYS[1]) == 1 then return 0 end "
    "if redis.call('exists', KEYS[2]) == 0 then return 0 end "
    "if redis.call('set', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
    "return 0";
/* KEYS[1] ZSET, KEYS[2] job hash; ARGV id: drop a member whose hash expired */
static const char prune_script[] =
    "if redis.call('exists', KEYS[2]) == 0 then return redis.call('zrem', KEYS[1], ARGV[1]) end "
    "return 0";

typedef struct keys {
    char zset[KEY_LEN];
    char job[KEY_LEN];
    char claim[KEY_LEN];
} keys;

static int keys_of(keys *k, const char *kind, const char *id, char *err, size_t errlen)
{
    if (!kind || !kind[0] || !id || !id[0]) {
        snprintf(err, errlen, "runlease: kind and id are required");
        return -1;
    }
    if ((size_t)snprintf(k->zset, sizeof k->zset, "deployq:runs:%s", kind) >= sizeof k->zset ||
        (size_t)snprintf(k->job, sizeof k->job, "deployq:runs:%s:job:%s", kind, id) >= sizeof k->job ||
        (size_t)snprintf(k->claim, sizeof k->claim, "deployq:runs:%s:claim:%s", kind, id) >=
            sizeof k->claim) {
        snprintf(err, errlen, "runlease: id too long");
        return -1;
    }
    return 0;
}

/* EVAL script with the keys and arguments. The integer reply, or -1 with a reason in err
 * when Redis could not be asked or answered an error. */
static long long eval(dq_redis *r, const char *script, int nkeys, const char *const *k, int nargs,
                      const char *const *a, char *err, size_t errlen)
{
    const char *argv[12];
    size_t argvlen[12];
    char nk[8];
    int argc = 0;
    redisReply *rep;
    long long v = -1;

    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[argc++] = "EVAL";
    argv[argc++] = script;
    argv[argc++] = nk;
    for (int i = 0; i < nkeys; i++)
        argv[argc++] = k[i];
    for (int i = 0; i < nargs; i++)
        argv[argc++] = a[i];
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    rep = dq_redis_commandv(r, argc, argv, argvlen);
    if (!rep) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(r), dq_redis_errstr(r));
        return -1;
    }
    if (rep->type == REDIS_REPLY_INTEGER)
        v = rep->integer;
    else
        snprintf(err, errlen, "redis %s: unexpected reply to a run script%s%.200s", dq_redis_where(r),
                 rep->type == REDIS_REPLY_ERROR ? ": " : "", rep->type == REDIS_REPLY_ERROR ? rep->str : "");
    freeReplyObject(rep);
    return v;
}

int dq_runlease_register(dq_redis *r, const char *kind, const char *id, const char *lock_key,
                         const char *event_json, char *err, size_t errlen)
{
    keys k;
    char now[32], ttl[32];

    if (keys_of(&k, kind, id, err, errlen) != 0)
        return -1;
    if (!lock_key || !lock_key[0] || !event_json) {
        snprintf(err, errlen, "runlease: a run needs its lock key and its event");
        return -1;
    }
    snprintf(now, sizeof now, "%lld", (long long)dq_now_ms());
    snprintf(ttl, sizeof ttl, "%d", DQ_RUNLEASE_TTL_S);
    {
        const char *kk[] = {k.zset, k.job, k.claim};
        const char *a[] = {id, now, lock_key, event_json, ttl};
        return eval(r, register_script, 3, kk, 5, a, err, errlen) < 0 ? -1 : 0;
    }
}

int dq_runlease_unregister(dq_redis *r, const char *kind, const char *id, char *err, size_t errlen)
{
    keys k;

    if (keys_of(&k, kind, id, err, errlen) != 0)
        return -1;
    {
        const char *kk[] = {k.zset, k.job, k.claim};
        const char *a[] = {id};
        return eval(r, unregister_script, 3, kk, 1, a, err, errlen) < 0 ? -1 : 0;
    }
}

/* Look at one registered run; adopt it when it is orphaned and we got the claim.
 * 1 adopted, 0 not, -1 Redis failed (reason in err). */
static int scan_one(dq_redis *r, const char *kind, const char *id, const char *claimant,
                    const char *claim_ms, dq_runlease_adopt_fn adopt, void *ctx, char *err,
                    size_t errlen)
{
    keys k;
    redisReply *rep;
    char *lock_key = NULL, *event = NULL;
    long long v;
    int rc = 0;

    if (keys_of(&k, kind, id, err, errlen) != 0)
        return 0; /* a member we could never have written: leave it */
    rep = dq_redis_command(r, "HMGET %s lock event", k.job);
    if (!rep) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(r), dq_redis_errstr(r));
        return -1;
    }
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
        if (rep->element[0]->type == REDIS_REPLY_STRING)
            lock_key = strdup(rep->element[0]->str);
        if (rep->element[1]->type == REDIS_REPLY_STRING)
            event = strdup(rep->element[1]->str);
    }
    freeReplyObject(rep);
    if (!lock_key || !event) {
        /* unregistered since the ZRANGE, or its hash expired: drop what is left of it */
        const char *kk[] = {k.zset, k.job};
        const char *a[] = {id};
        rc = eval(r, prune_script, 2, kk, 1, a, err, errlen) < 0 ? -1 : 0;
        goto out;
    }
    {
        const char *kk[] = {lock_key, k.job, k.claim};
        const char *a[] = {claimant, claim_ms};
        v = eval(r, claim_script, 3, kk, 2, a, err, errlen);
    }
    if (v < 0) {
        rc = -1;
    } else if (v == 1) {
        dq_debug("run %s/%s: %s is free: claimed by %s", kind, id, lock_key, claimant);
        adopt(ctx, r, id, event);
        rc = 1;
    }
out:
    free(lock_key);
    free(event);
    return rc;
}

int dq_runlease_scan(dq_redis *r, const char *kind, const char *claimant, int64_t claim_ms,
                     dq_runlease_skip_fn skip, dq_runlease_adopt_fn adopt, void *ctx, char *err,
                     size_t errlen)
{
    char zset[KEY_LEN], cms[32];
    int adopted = 0;

    if (!kind || !kind[0] || !adopt) {
        snprintf(err, errlen, "runlease: kind and adopt are required");
        return -1;
    }
    snprintf(zset, sizeof zset, "deployq:runs:%s", kind);
    snprintf(cms, sizeof cms, "%lld", (long long)(claim_ms > 0 ? claim_ms : 1));
    /* Pages of the ZSET, oldest first. A member that moves between two pages (a run
     * unregistered meanwhile) may be missed: the next scan sees it. */
    for (long start = 0;; start += SCAN_PAGE) {
        redisReply *rep = dq_redis_command(r, "ZRANGE %s %ld %ld", zset, start, start + SCAN_PAGE - 1);
        size_t n;

        if (!rep) {
            snprintf(err, errlen, "redis %s: %s", dq_redis_where(r), dq_redis_errstr(r));
            return -1;
        }
        if (rep->type != REDIS_REPLY_ARRAY) {
            snprintf(err, errlen, "redis %s: ZRANGE %s: unexpected reply%s%.200s", dq_redis_where(r), zset,
                     rep->type == REDIS_REPLY_ERROR ? ": " : "", rep->type == REDIS_REPLY_ERROR ? rep->str : "");
            freeReplyObject(rep);
            return -1;
        }
        n = rep->elements;
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = rep->element[i];
            int rc;

            if (e->type != REDIS_REPLY_STRING || (skip && skip(ctx, e->str)))
                continue;
            rc = scan_one(r, kind, e->str, claimant ? claimant : "?", cms, adopt, ctx, err, errlen);
            if (rc < 0) {
                freeReplyObject(rep);
                return -1;
            }
            adopted += rc;
        }
        freeReplyObject(rep);
        if (n < SCAN_PAGE)
            break;
    }
    return adopted;
}

/* ---- the scanner thread ---- */

struct dq_runlease_scanner {
    dq_runlease_opts o; /* strings point at the copies below */
    char *redis_url, *kind, *claimant;
    pthread_t thread;
    int stopping; /* atomic */
};

static int scanner_stopping(const dq_runlease_scanner *s)
{
    return __atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE) || (s->o.stop && *s->o.stop);
}

/* Sleep ms in short steps. 1 when told to stop meanwhile. */
static int scanner_wait(const dq_runlease_scanner *s, int64_t ms)
{
    int64_t until = dq_mono_ms() + ms;

    while (!scanner_stopping(s)) {
        int64_t left = until - dq_mono_ms();
        if (left <= 0)
            return 0;
        dq_sleep_ms(left < WAIT_STEP_MS ? left : WAIT_STEP_MS);
    }
    return 1;
}

static void *scanner_main(void *arg)
{
    dq_runlease_scanner *s = arg;
    dq_redis *r = NULL;
    int failing = 0; /* log a Redis problem once, and its end */
    char err[512];

    while (!scanner_wait(s, s->o.interval_ms)) {
        int n;

        if (!r)
            r = dq_redis_connect(s->o.redis_url, s->o.redis_timeout_ms, err, sizeof err);
        /* First what this process could not record while Redis was down (runrecord.h):
         * another process that adopts such a run waits for it. */
        if (r)
            dq_runrecord_flush(r);
        n = r ? dq_runlease_scan(r, s->o.kind, s->o.claimant, s->o.claim_ms, s->o.skip, s->o.adopt,
                                 s->o.ctx, err, sizeof err)
              : -1;
        if (n < 0) {
            if (!failing)
                dq_warn("orphaned %s runs: scan failed, retrying every %lld ms: %s", s->o.kind,
                        (long long)s->o.interval_ms, err);
            failing = 1;
        } else if (failing) {
            dq_info("orphaned %s runs: scanning again", s->o.kind);
            failing = 0;
        }
    }
    dq_redis_free(r);
    return NULL;
}

static void scanner_free(dq_runlease_scanner *s)
{
    if (!s)
        return;
    free(s->redis_url);
    free(s->kind);
    free(s->claimant);
    free(s);
}

dq_runlease_scanner *dq_runlease_scanner_start(const dq_runlease_opts *o, char *err, size_t errlen)
{
    dq_runlease_scanner *s;

    if (!o || !o->redis_url || !o->kind || !o->adopt || o->interval_ms <= 0) {
        snprintf(err, errlen, "runlease: redis_url, kind, adopt and a positive interval are required");
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->o = *o;
    s->redis_url = strdup(o->redis_url);
    s->kind = strdup(o->kind);
    s->claimant = strdup(o->claimant ? o->claimant : "?");
    if (!s->redis_url || !s->kind || !s->claimant)
        goto oom;
    s->o.redis_url = s->redis_url;
    s->o.kind = s->kind;
    s->o.claimant = s->claimant;
    if (pthread_create(&s->thread, NULL, scanner_main, s) != 0) {
        snprintf(err, errlen, "runlease: cannot start the scanner thread");
        scanner_free(s);
        return NULL;
    }
    return s;
oom:
    snprintf(err, errlen, "runlease: out of memory");
    scanner_free(s);
    return NULL;
}

void dq_runlease_scanner_stop(dq_runlease_scanner *s)
{
    if (!s)
        return;
    __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
    pthread_join(s->thread, NULL);
    scanner_free(s);
}
