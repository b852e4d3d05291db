/*
 * runrecord.c - the run record of runrecord.h: one key per run in Redis, and the record
 * Redis did not take yet, kept until a poll gets it written.
 *
 * Writes go through SET with an argv vector (binary safe: a record holds provider output)
 * and count only a +OK status: an error reply (OOM, READONLY, NOREPLICAS) is a refusal
 * like a lost connection.
 */
#include "runrecord.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "util.h"

struct dq_runrecord {
    dq_redis *redis; /* borrowed; NULL: no records */
    char *key;
    char *id;
    char *noun;
    long ttl_s;
    int tries;
    size_t max_bytes;
    int max_depth;
    char *pending;        /* the newest record Redis did not take yet, or NULL */
    int64_t next_retry;   /* wall ms from which a poll tries pending again */
    char errstr[512];
};

/* ---- the process memory (runrecord.h): record key -> the newest started record ---- */

typedef struct memo {
    struct memo *next;
    char *key;
    char *json;
    long ttl_s;  /* of the record's key */
    int written; /* Redis took json (or a newer record): nothing left to flush */
} memo;

static pthread_mutex_t memo_mu = PTHREAD_MUTEX_INITIALIZER;
static memo *memo_head;

static int memo_put(const char *key, const char *json, long ttl_s)
{
    char *copy;
    int rc = 0;

    if (!key || !json)
        return 0;
    copy = strdup(json);
    if (!copy)
        return -1;
    pthread_mutex_lock(&memo_mu);
    {
        memo *m = memo_head;

        while (m && strcmp(m->key, key) != 0)
            m = m->next;
        if (m) {
            free(m->json);
            m->json = copy;
            m->ttl_s = ttl_s;
            m->written = 0;
        } else if ((m = calloc(1, sizeof *m)) != NULL && (m->key = strdup(key)) != NULL) {
            m->json = copy;
            m->ttl_s = ttl_s;
            m->next = memo_head;
            memo_head = m;
        } else {
            free(m);
            free(copy);
            rc = -1;
        }
    }
    pthread_mutex_unlock(&memo_mu);
    return rc;
}

static char *memo_get(const char *key)
{
    char *copy = NULL;

    if (!key)
        return NULL;
    pthread_mutex_lock(&memo_mu);
    for (memo *m = memo_head; m; m = m->next) {
        if (strcmp(m->key, key) == 0) {
            copy = strdup(m->json);
            break;
        }
    }
    pthread_mutex_unlock(&memo_mu);
    return copy;
}

/* Redis took json for key: when that is what the memory holds, nothing is left to flush. */
static void memo_written(const char *key, const char *json)
{
    pthread_mutex_lock(&memo_mu);
    for (memo *m = memo_head; m; m = m->next) {
        if (strcmp(m->key, key) == 0) {
            if (strcmp(m->json, json) == 0)
                m->written = 1;
            break;
        }
    }
    pthread_mutex_unlock(&memo_mu);
}

static void memo_drop(const char *key)
{
    memo *gone = NULL;

    if (!key)
        return;
    pthread_mutex_lock(&memo_mu);
    for (memo **pp = &memo_head; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            gone = *pp;
            *pp = gone->next;
            break;
        }
    }
    pthread_mutex_unlock(&memo_mu);
    if (gone) {
        free(gone->key);
        free(gone->json);
        free(gone);
    }
}

dq_runrecord *dq_runrecord_new(dq_redis *redis, const dq_runrecord_opts *o, const char *id)
{
    dq_runrecord *rr;

    if (!o || !o->prefix || !o->noun || o->ttl_s <= 0 || o->tries < 1)
        return NULL;
    if (!id)
        id = "";
    rr = calloc(1, sizeof *rr);
    if (!rr)
        return NULL;
    rr->redis = redis;
    rr->ttl_s = o->ttl_s;
    rr->tries = o->tries;
    rr->max_bytes = o->max_bytes;
    rr->max_depth = o->max_depth;
    if (asprintf(&rr->key, "%s%s", o->prefix, id) < 0)
        rr->key = NULL;
    rr->id = strdup(id);
    rr->noun = strdup(o->noun);
    if (!rr->key || !rr->id || !rr->noun)
        goto err;
    return rr;
err:
    dq_runrecord_free(rr);
    return NULL;
}

void dq_runrecord_free(dq_runrecord *rr)
{
    if (!rr)
        return;
    free(rr->pending);
    free(rr->key);
    free(rr->id);
    free(rr->noun);
    free(rr);
}

const char *dq_runrecord_key(const dq_runrecord *rr)
{
    return rr->key;
}

const char *dq_runrecord_errstr(const dq_runrecord *rr)
{
    return rr->errstr;
}

const char *dq_runrecord_pending(const dq_runrecord *rr)
{
    return rr->pending;
}

cJSON *dq_runrecord_parse(dq_runrecord *rr, const char *json)
{
    if (!json) {
        snprintf(rr->errstr, sizeof rr->errstr, "no record");
        return NULL;
    }
    return dq_json_parse(json, strlen(json), rr->max_bytes, rr->max_depth, NULL, rr->errstr,
                         sizeof rr->errstr);
}

int dq_runrecord_read(dq_runrecord *rr, cJSON **rec)
{
    char *text = NULL;

    *rec = NULL;
    if (rr->redis && dq_redis_get(rr->redis, rr->key, &text) != 0) {
        snprintf(rr->errstr, sizeof rr->errstr, "%s", dq_redis_errstr(rr->redis));
        return -1;
    }
    if (text) {
        *rec = dq_runrecord_parse(rr, text);
        if (!*rec)
            dq_warn("%s %s: ignoring unreadable %s: %s", rr->noun, rr->id, rr->key, rr->errstr);
        free(text);
    }
    if (!*rec || dq_runrecord_is_intent(*rec)) {
        /* Redis has no record (or only the intent written before the deploy call), but
         * this process may have seen a provider accept this run while Redis was down:
         * resume that deployment, and record it now (or, when Redis still refuses, while
         * polling). */
        char *mem = memo_get(rr->key);
        cJSON *m = mem ? dq_runrecord_parse(rr, mem) : NULL;

        if (m) {
            cJSON_Delete(*rec);
            *rec = m;
            dq_warn("%s %s: not recorded in redis but started by this process: recording it now",
                    rr->noun, rr->id);
            dq_runrecord_write(rr, mem);
        }
        free(mem);
    }
    return 0;
}

/* One SET ... EX. 0 on +OK, else -1 with the reason in errstr. */
static int set_once(dq_runrecord *rr, const char *json)
{
    char ttl[32];
    const char *argv[5];
    size_t argvlen[5];
    redisReply *rep;
    int rc = -1;

    snprintf(ttl, sizeof ttl, "%ld", rr->ttl_s);
    argv[0] = "SET";
    argv[1] = rr->key;
    argv[2] = json;
    argv[3] = "EX";
    argv[4] = ttl;
    for (int k = 0; k < 5; k++)
        argvlen[k] = strlen(argv[k]);
    rep = dq_redis_commandv(rr->redis, 5, argv, argvlen);
    if (!rep) {
        snprintf(rr->errstr, sizeof rr->errstr, "%s", dq_redis_errstr(rr->redis));
        return -1;
    }
    if (rep->type == REDIS_REPLY_STATUS) {
        rc = 0;
        memo_written(rr->key, json);
    } else
        snprintf(rr->errstr, sizeof rr->errstr, "redis %s: SET: %.300s", dq_redis_where(rr->redis),
                 rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    return rc;
}

/* Make json (or nothing) the pending record, tried again from RETRY_MS on. */
static void keep_pending(dq_runrecord *rr, const char *json)
{
    free(rr->pending);
    rr->pending = json ? strdup(json) : NULL;
    rr->next_retry = dq_now_ms() + DQ_RUNRECORD_RETRY_MS;
}

int dq_runrecord_write(dq_runrecord *rr, const char *json)
{
    if (!rr->redis)
        return 0;
    if (!json) {
        snprintf(rr->errstr, sizeof rr->errstr, "out of memory");
        keep_pending(rr, NULL); /* the older record must not follow the one that was meant */
        dq_error("%s %s: cannot write %s: %s", rr->noun, rr->id, rr->key, rr->errstr);
        return -1;
    }
    for (int i = 0; i < rr->tries; i++) {
        if (set_once(rr, json) == 0) {
            free(rr->pending); /* older than json: writing it later would undo json */
            rr->pending = NULL;
            return 0;
        }
        if (i + 1 < rr->tries)
            dq_sleep_ms(DQ_RUNRECORD_TRY_PAUSE_MS);
    }
    dq_error("%s %s: cannot write %s: %s", rr->noun, rr->id, rr->key, rr->errstr);
    keep_pending(rr, json);
    return -1;
}

int dq_runrecord_poll(dq_runrecord *rr)
{
    if (!rr->pending || dq_now_ms() < rr->next_retry)
        return 0;
    if (set_once(rr, rr->pending) != 0) {
        dq_error("%s %s: cannot write %s: %s", rr->noun, rr->id, rr->key, rr->errstr);
        rr->next_retry = dq_now_ms() + DQ_RUNRECORD_RETRY_MS;
        return -1;
    }
    dq_info("%s %s: recorded now (%s)", rr->noun, rr->id, rr->key);
    free(rr->pending);
    rr->pending = NULL;
    return 1;
}

int dq_runrecord_start(dq_runrecord *rr, const char *json)
{
    /* Kept in memory first: whatever Redis does, a later run in this process (after the
     * lease was lost and the lock taken again) resumes this provider deployment. */
    if (!json || memo_put(rr->key, json, rr->ttl_s) != 0)
        dq_error("%s %s: provider deployment under way but not remembered (out of memory)",
                 rr->noun, rr->id);
    return dq_runrecord_write(rr, json);
}

int dq_runrecord_finish(dq_runrecord *rr, const char *json)
{
    int rc = dq_runrecord_write(rr, json);

    if (rc == 0)
        memo_drop(rr->key); /* Redis has the outcome: the memory is no longer needed */
    return rc;
}

void dq_runrecord_forget(dq_runrecord *rr)
{
    memo_drop(rr->key);
}

int dq_runrecord_is_intent(const cJSON *rec)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "intent"));
}

/* KEYS[1] the record; ARGV json, ttl s. Written over nothing or an intent only: anything
 * else is newer than what a process remembers (another run's outcome or deployment).
 * 1 written, 0 left as it was. */
static const char flush_script[] =
    "local v = redis.call('get', KEYS[1]) "
    "if v then "
    "  local ok, d = pcall(cjson.decode, v) "
    "  if not (ok and type(d) == 'table' and d.intent == true) then return 0 end "
    "end "
    "redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) "
    "return 1";

int dq_runrecord_flush(dq_redis *redis)
{
    int n = 0;

    if (!redis)
        return 0;
    for (;;) {
        char *key = NULL, *json = NULL, ttl[32];
        redisReply *rep;

        /* one unwritten memory at a time, copied out: no Redis call under the mutex */
        pthread_mutex_lock(&memo_mu);
        for (memo *m = memo_head; m; m = m->next) {
            if (!m->written) {
                key = strdup(m->key);
                json = strdup(m->json);
                snprintf(ttl, sizeof ttl, "%ld", m->ttl_s > 0 ? m->ttl_s : 1);
                if (!key || !json)
                    m->written = 1; /* out of memory: not again in this loop */
                break;
            }
        }
        pthread_mutex_unlock(&memo_mu);
        if (!key && !json)
            return n;
        if (!key || !json) {
            free(key);
            free(json);
            continue;
        }
        {
            const char *argv[] = {"EVAL", flush_script, "1", key, json, ttl};
            size_t argvlen[6];

            for (int i = 0; i < 6; i++)
                argvlen[i] = strlen(argv[i]);
            rep = dq_redis_commandv(redis, 6, argv, argvlen);
        }
        if (!rep || rep->type != REDIS_REPLY_INTEGER) {
            if (rep)
                freeReplyObject(rep);
            free(key);
            free(json);
            return -1; /* Redis is not back: the next call tries again */
        }
        if (rep->integer == 1) {
            dq_warn("%s: recorded now, from this process' memory (a provider accepted it while Redis was down)",
                    key);
            n++;
        }
        freeReplyObject(rep);
        memo_written(key, json);
        free(key);
        free(json);
    }
}
