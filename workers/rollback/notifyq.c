/*
 * notifyq.c - the outbox of notifications and the thread that delivers them (notifyq.h).
 */
#include "notifyq.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "log.h"
#include "notify.h"
#include "util.h"

#define OUTBOX "deployq:rb:outbox"
#define ENTRY_TTL_S (7 * 24 * 3600)
#define NOTIFIED_TTL_S (7 * 24 * 3600)
#define KEY_LEN 512
#define SEND_TIMEOUT_MS 5000
#define REPORT_TRIES 3
#define SWEEP_BATCH 64
#define DEFAULT_CAPACITY 1024
#define DEFAULT_SWEEP_MS 5000
#define DEFAULT_STALE_MS 10000

/* A FIFO of event ids. */
typedef struct ring {
    char **v;
    size_t head, n, cap;
} ring;

struct dq_notifyq {
    const dq_config *cfg;
    dq_producer *producer;
    char actor[256];
    int64_t sweep_ms, stale_ms, claim_ms;
    volatile sig_atomic_t *stop;
    volatile sig_atomic_t quit; /* dq_notifyq_stop */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ring urgent, rest; /* under mu */
    uint64_t sent, failed, overflowed; /* under mu */
    dq_redis *redis;  /* the thread's own */
};

static int stopping(const dq_notifyq *q) { return q->quit || (q->stop && *q->stop); }

static int ring_push(ring *r, const char *id)
{
    char *copy;

    if (r->n == r->cap || !(copy = strdup(id)))
        return -1;
    r->v[(r->head + r->n++) % r->cap] = copy;
    return 0;
}

static char *ring_pop(ring *r)
{
    char *id;

    if (r->n == 0)
        return NULL;
    id = r->v[r->head];
    r->head = (r->head + 1) % r->cap;
    r->n--;
    return id;
}

static void ring_clear(ring *r)
{
    char *id;

    while ((id = ring_pop(r)) != NULL)
        free(id);
    free(r->v);
}

/* What a person may be waiting on: sent ahead of approvals, failovers, rejections. */
static int urgent_kind(const char *kind)
{
    return kind && (strncmp(kind, "rollback.", 9) == 0 || strcmp(kind, DQ_EV_FAILED) == 0);
}

static int reply_ok(redisReply *rep)
{
    int ok = rep && rep->type != REDIS_REPLY_ERROR;

    if (rep)
        freeReplyObject(rep);
    return ok;
}

/* ---- the handler's side ---- */

int dq_notifyq_put(dq_notifyq *q, dq_redis *r, const dq_event *trigger, const char *note, int force,
                   char *err, size_t errlen)
{
    dq_notify_config nc;
    const char *kind = dq_notify_kind(trigger);
    char key[KEY_LEN], cerr[512], *done = NULL, *entry = NULL, *json = NULL;
    cJSON *o = NULL;
    int rc = -1;

    if (!trigger->service || !trigger->environment)
        return 0;
    if (dq_notify_config_load(q->cfg, trigger->service, trigger->environment, &nc, cerr, sizeof cerr) != 0) {
        dq_error("%s/%s: notifications not sent: %s", trigger->service, trigger->environment, cerr);
        return 0;
    }
    if (!(force ? (nc.slack_url || nc.webhook_url) : dq_notify_wants(&nc, kind))) {
        if (force)
            dq_warn("%s/%s: %s needs a person but no notification channel is configured (notify:)",
                    trigger->service, trigger->environment, trigger->type);
        dq_notify_config_clear(&nc);
        return 0;
    }
    dq_notify_config_clear(&nc);
    snprintf(key, sizeof key, "deployq:rb:notified:%s", trigger->id);
    if (dq_redis_get(r, key, &done) != 0) {
        snprintf(err, errlen, "notification of %s %s not recorded: Redis: %s", trigger->type, trigger->id,
                 dq_redis_errstr(r));
        return -1;
    }
    if (done) {
        dq_debug("%s %s: already notified", trigger->type, trigger->id);
        free(done);
        return 0;
    }
    json = dq_event_encode(trigger);
    o = cJSON_CreateObject();
    if (!json || !o || !cJSON_AddStringToObject(o, "event", json) ||
        (note && note[0] && !cJSON_AddStringToObject(o, "note", note)) ||
        !cJSON_AddNumberToObject(o, "force", force ? 1 : 0) || !(entry = cJSON_PrintUnformatted(o))) {
        snprintf(err, errlen, "notification of %s %s: out of memory", trigger->type, trigger->id);
        goto out;
    }
    /* NX both: a redelivered event leaves the first record (and its place) alone. */
    snprintf(key, sizeof key, OUTBOX ":%s", trigger->id);
    if (!reply_ok(dq_redis_command(r, "SET %s %s NX EX %d", key, entry, ENTRY_TTL_S)) ||
        !reply_ok(dq_redis_command(r, "ZADD " OUTBOX " NX %lld %s", (long long)dq_now_ms(), trigger->id))) {
        snprintf(err, errlen, "notification of %s %s not recorded: Redis: %s", trigger->type, trigger->id,
                 dq_redis_errstr(r));
        goto out;
    }
    pthread_mutex_lock(&q->mu);
    if (ring_push(urgent_kind(kind) ? &q->urgent : &q->rest, trigger->id) != 0) {
        q->overflowed++;
        /* recorded: a sweep delivers it once it is stale_ms old */
        dq_debug("%s %s: notification queue full; left to the outbox sweep", trigger->type, trigger->id);
    }
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    rc = 0;
out:
    cJSON_Delete(o);
    free(json);
    free(entry);
    return rc;
}

/* ---- the sender's side ---- */

/* The ids of the configured keys of role approver whose scope covers service/environment
 * (the only ones whose approval counts), "a, b" (may be ""). */
static void approvers(const dq_config *cfg, const char *service, const char *environment, char *out,
                      size_t outlen)
{
    size_t o = 0;

    out[0] = '\0';
    for (size_t i = 0; cfg && i < cfg->n_keys && o + 1 < outlen; i++) {
        const dq_key *k = &cfg->keys[i];

        if (!k->retired && k->role && strcmp(k->role, "approver") == 0 && k->id &&
            dq_key_in_scope(k, service, environment)) {
            int n = snprintf(out + o, outlen - o, "%s%s", o ? ", " : "", k->id);
            if (n < 0 || (size_t)n >= outlen - o)
                break;
            o += (size_t)n;
        }
    }
    out[o] = '\0';
}

/* Deliver ev's report, a few tries: a lost report is only a missing line in the history
 * (the message went out, or the log says why not). Tried once even when stopping: the
 * delivery it reports was made, and the producer outlives this thread. */
static void report(dq_notifyq *q, const dq_event *ev)
{
    char key[300], err[512];
    char *json = dq_event_encode(ev);
    int ok = 0;

    dq_target_key(ev->service, ev->environment, key, sizeof key);
    for (int i = 0; json && i < REPORT_TRIES && !ok && (i == 0 || !stopping(q)); i++) {
        ok = dq_producer_send(q->producer, q->cfg->topic_events, key, json, strlen(json), SEND_TIMEOUT_MS, NULL,
                              NULL, err, sizeof err) == 0;
        if (!ok)
            dq_sleep_ms(200 << i);
    }
    if (!ok)
        dq_warn("%s/%s: the notification report %s was not delivered: %s", ev->service, ev->environment,
                ev->type, json ? err : "out of memory");
    free(json);
}

/* The links a message carries: the event's own, else what the worker kept about the
 * deployment (rollback.h: deployq:rb:dep:<id>). */
static void read_links(dq_notifyq *q, const dq_event *ev, char *got[3])
{
    redisReply *r;

    if (!ev->deployment_id)
        return;
    r = dq_redis_command(q->redis, "HMGET deployq:rb:dep:%s ci_run_url url log_url", ev->deployment_id);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3)
        for (int i = 0; i < 3; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                got[i] = strdup(r->element[i]->str);
    if (r)
        freeReplyObject(r);
}

/* Send what the entry says, report it. Returns 1 when something was sent or given up on
 * (mark it notified), 0 when there was nothing to send. */
static int send_entry(dq_notifyq *q, const dq_event *ev, const char *note, int force)
{
    dq_notify_config nc;
    dq_notify_result res[DQ_NOTIFY_MAX_CHANNELS];
    dq_notify_links links = {0};
    char err[512], who[512];
    char *text, *got[3] = {NULL, NULL, NULL};
    size_t n;

    if (dq_notify_config_load(q->cfg, ev->service, ev->environment, &nc, err, sizeof err) != 0) {
        dq_error("%s/%s: notifications not sent: %s", ev->service, ev->environment, err);
        return 0;
    }
    /* the configuration may have changed since it was recorded (a restart) */
    if (!(force ? (nc.slack_url || nc.webhook_url) : dq_notify_wants(&nc, dq_notify_kind(ev)))) {
        dq_notify_config_clear(&nc);
        return 0;
    }
    read_links(q, ev, got);
    links.ci_run_url = dq_json_str(ev->data, "ci_run_url") ? dq_json_str(ev->data, "ci_run_url") : got[0];
    links.provider_url = dq_json_str(ev->data, "url") ? dq_json_str(ev->data, "url") : got[1];
    links.log_url = dq_json_str(ev->data, "log_url") ? dq_json_str(ev->data, "log_url") : got[2];
    approvers(q->cfg, ev->service, ev->environment, who, sizeof who);
    links.approvers = who;
    text = dq_notify_text(&nc, ev, &links, note);
    n = dq_notify_send(&nc, ev, text ? text : ev->type, res);
    for (size_t i = 0; i < n; i++) {
        dq_event *rep = dq_notify_event(ev, &res[i], q->actor);

        pthread_mutex_lock(&q->mu);
        if (res[i].ok)
            q->sent++;
        else
            q->failed++;
        pthread_mutex_unlock(&q->mu);
        if (res[i].ok)
            dq_info("%s/%s: notified via %s about %s %s (%d attempt%s)", ev->service, ev->environment,
                    res[i].channel, dq_notify_kind(ev) ? dq_notify_kind(ev) : ev->type, ev->id, res[i].attempts,
                    res[i].attempts == 1 ? "" : "s");
        else
            dq_warn("%s/%s: notification via %s about %s %s failed: %s", ev->service, ev->environment,
                    res[i].channel, dq_notify_kind(ev) ? dq_notify_kind(ev) : ev->type, ev->id, res[i].error);
        if (rep)
            report(q, rep);
        else
            dq_warn("%s/%s: the notification report about %s: out of memory", ev->service, ev->environment, ev->id);
        dq_event_free(rep);
    }
    free(text);
    for (int i = 0; i < 3; i++)
        free(got[i]);
    dq_notify_config_clear(&nc);
    return n > 0;
}

/* Deliver the outbox entry of id, unless another sender has it. A Redis failure leaves it
 * for a later sweep. */
static void deliver(dq_notifyq *q, const char *id)
{
    char ekey[KEY_LEN], ckey[KEY_LEN], nkey[KEY_LEN], why[512];
    char *entry = NULL, *done = NULL;
    cJSON *o = NULL;
    dq_event *ev = NULL;
    redisReply *rep;
    int claimed;

    snprintf(ekey, sizeof ekey, OUTBOX ":%s", id);
    snprintf(ckey, sizeof ckey, OUTBOX ":claim:%s", id);
    snprintf(nkey, sizeof nkey, "deployq:rb:notified:%s", id);
    rep = dq_redis_command(q->redis, "SET %s %s NX PX %lld", ckey, q->actor, (long long)q->claim_ms);
    if (!rep) {
        dq_warn("notification %s: Redis: %s; left for a later sweep", id, dq_redis_errstr(q->redis));
        return;
    }
    claimed = rep->type == REDIS_REPLY_STATUS;
    freeReplyObject(rep);
    if (!claimed)
        return; /* another sender delivers it; if it dies, its claim expires */
    if (dq_redis_get(q->redis, nkey, &done) != 0 || dq_redis_get(q->redis, ekey, &entry) != 0) {
        dq_warn("notification %s: Redis: %s; left for a later sweep", id, dq_redis_errstr(q->redis));
        goto out_keep;
    }
    if (!done && entry) {
        const char *json;

        o = cJSON_Parse(entry);
        json = dq_json_str(o, "event");
        ev = json ? dq_event_decode(json, strlen(json), why, sizeof why) : NULL;
        if (!ev)
            dq_error("notification %s: its outbox entry is unreadable (%s); dropped", id,
                     json ? why : "no event");
        else if (send_entry(q, ev, dq_json_str(o, "note"), (int)dq_json_num(o, "force", 0)) &&
                 !reply_ok(dq_redis_command(q->redis, "SET %s 1 EX %d", nkey, NOTIFIED_TTL_S))) {
            /* sent, not marked: the entry stays, and a sweep sends it again (a duplicate) */
            dq_warn("notification %s: sent but not marked (Redis: %s)", id, dq_redis_errstr(q->redis));
            goto out_keep;
        }
    }
    /* Delivered, given up on, not wanted any more, or gone: out of the outbox. */
    reply_ok(dq_redis_command(q->redis, "DEL %s", ekey));
    reply_ok(dq_redis_command(q->redis, "ZREM " OUTBOX " %s", id));
out_keep:
    reply_ok(dq_redis_command(q->redis, "DEL %s", ckey));
    dq_event_free(ev);
    cJSON_Delete(o);
    free(entry);
    free(done);
}

/* Deliver the outbox entries older than stale_ms: what a full queue left, or a worker that
 * stopped or died before delivering. */
static void sweep(dq_notifyq *q)
{
    redisReply *r = dq_redis_command(q->redis, "ZRANGEBYSCORE " OUTBOX " -inf %lld LIMIT 0 %d",
                                     (long long)(dq_now_ms() - q->stale_ms), SWEEP_BATCH);

    if (r && r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements && !stopping(q); i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                deliver(q, r->element[i]->str);
    if (r)
        freeReplyObject(r);
}

static void *sender(void *arg)
{
    dq_notifyq *q = arg;
    int64_t next_sweep = 0;
    char err[512];

    while (!stopping(q)) {
        char *id = NULL;

        if (!q->redis) {
            q->redis = dq_redis_connect(q->cfg->redis_url, q->cfg->redis_timeout_ms, err, sizeof err);
            if (!q->redis) {
                dq_warn("notifications: Redis: %s; retrying", err);
                dq_sleep_ms(1000);
                continue;
            }
        }
        pthread_mutex_lock(&q->mu);
        if (q->urgent.n == 0 && q->rest.n == 0) {
            struct timespec until;

            /* a short wait so that the stop flag is seen */
            dq_mono_deadline(500, &until);
            pthread_cond_timedwait(&q->cv, &q->mu, &until);
        }
        id = ring_pop(&q->urgent);
        if (!id)
            id = ring_pop(&q->rest);
        pthread_mutex_unlock(&q->mu);
        if (id) {
            deliver(q, id);
            free(id);
        } else if (dq_mono_ms() >= next_sweep) {
            sweep(q);
            next_sweep = dq_mono_ms() + q->sweep_ms;
        }
    }
    return NULL;
}

dq_notifyq *dq_notifyq_start(const dq_notifyq_opts *o, char *err, size_t errlen)
{
    dq_notifyq *q = calloc(1, sizeof *q);
    size_t cap = o->capacity ? o->capacity : DEFAULT_CAPACITY;
    pthread_condattr_t ca;

    if (!q || !(q->urgent.v = calloc(cap, sizeof(char *))) || !(q->rest.v = calloc(cap, sizeof(char *)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    q->urgent.cap = q->rest.cap = cap;
    q->cfg = o->cfg;
    q->producer = o->producer;
    dq_strlcpy(q->actor, o->actor ? o->actor : "deployq-rollback", sizeof q->actor);
    q->sweep_ms = o->sweep_ms > 0 ? o->sweep_ms : DEFAULT_SWEEP_MS;
    q->stale_ms = o->stale_ms > 0 ? o->stale_ms : DEFAULT_STALE_MS;
    /* longer than any one delivery (two channels, each within its budget and a timeout),
     * so a claim only expires when its sender died */
    q->claim_ms = 10 * 60 * 1000;
    q->stop = o->stop;
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* dq_mono_deadline's clock */
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&q->thread, NULL, sender, q) != 0) {
        snprintf(err, errlen, "could not start the notification thread");
        pthread_cond_destroy(&q->cv);
        pthread_mutex_destroy(&q->mu);
        goto fail;
    }
    return q;
fail:
    if (q) {
        free(q->urgent.v);
        free(q->rest.v);
    }
    free(q);
    return NULL;
}

void dq_notifyq_stop(dq_notifyq *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->quit = 1;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    if (q->urgent.n + q->rest.n > 0)
        dq_info("notifications: %zu not delivered yet; they wait in the outbox for the next sweep",
                q->urgent.n + q->rest.n);
    ring_clear(&q->urgent);
    ring_clear(&q->rest);
    dq_redis_free(q->redis);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

void dq_notifyq_counts(dq_notifyq *q, uint64_t *sent, uint64_t *failed)
{
    pthread_mutex_lock(&q->mu);
    *sent = q->sent;
    *failed = q->failed;
    pthread_mutex_unlock(&q->mu);
}
