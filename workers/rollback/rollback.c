/*
 * rollback.c - deployq-rollback's handler (rollback.h): per-target history in Redis,
 * rollback requests turned into a restore of the last verified version, notifications.
 *
 * The order of side effects makes a crash at any point harmless, as in execute.c:
 * rollback.started is emitted before the provider is called, the record of the provider
 * deployment that was accepted is written before it is polled (a restart resumes it
 * instead of rolling back again), and the terminal record only after the terminal event
 * was delivered (a restart before that re-emits the same event id). Notifications are
 * sent last, each at most once per trigger event and channel as far as Redis can tell.
 * A rollback is registered as a run (runlease.h) from its lock until its outcome was
 * delivered, so that another worker resumes it soon after this one died.
 *
 * A target held with `deployq hold` (opstate.h) does not act on the monitor's requests:
 * each ends as rollback.held, recorded like an outcome and notified; a person's request
 * (`deployq rollback`) still runs.
 */
#include "rollback.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bluegreen.h"
#include "event.h"
#include "json.h"
#include "lock.h"
#include "log.h"
#include "notify.h"
#include "opstate.h"
#include "notifyq.h"
#include "provider.h"
#include "runlease.h"
#include "runrecord.h"
#include "util.h"

#define SEND_TIMEOUT_MS 5000
#define RETRY_MIN_MS 200
#define RETRY_MAX_MS 5000
#define RECORD_TTL_S (7 * 24 * 3600)
#define VERIFIED_KEEP 50
#define KEY_LEN 512
#define RECORD_MAX_BYTES (256 * 1024)

/* ---- requests running in this process (dq_rb_running) ---- */

typedef struct running_id {
    struct running_id *next;
    char *id;
} running_id;

struct dq_rb_running {
    pthread_mutex_t mu;
    running_id *head; /* guarded by mu */
};

dq_rb_running *dq_rb_running_new(void)
{
    dq_rb_running *rr = calloc(1, sizeof *rr);

    if (rr)
        pthread_mutex_init(&rr->mu, NULL);
    return rr;
}

void dq_rb_running_free(dq_rb_running *rr)
{
    if (!rr)
        return;
    while (rr->head) {
        running_id *e = rr->head;
        rr->head = e->next;
        free(e->id);
        free(e);
    }
    pthread_mutex_destroy(&rr->mu);
    free(rr);
}

static running_id *running_find(dq_rb_running *rr, const char *id)
{
    for (running_id *e = rr->head; e; e = e->next)
        if (strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

int dq_rb_running_has(dq_rb_running *rr, const char *request_id)
{
    int has;

    if (!rr || !request_id)
        return 0;
    pthread_mutex_lock(&rr->mu);
    has = running_find(rr, request_id) != NULL;
    pthread_mutex_unlock(&rr->mu);
    return has;
}

/* 1 entered (the caller runs id now), 0 another thread runs it, -1 out of memory. */
static int running_enter(dq_rb_running *rr, const char *id)
{
    running_id *e;
    int rc = 1;

    if (!rr)
        return 1;
    pthread_mutex_lock(&rr->mu);
    if (running_find(rr, id)) {
        rc = 0;
    } else if ((e = calloc(1, sizeof *e)) != NULL && (e->id = strdup(id)) != NULL) {
        e->next = rr->head;
        rr->head = e;
    } else {
        free(e);
        rc = -1;
    }
    pthread_mutex_unlock(&rr->mu);
    return rc;
}

static void running_leave(dq_rb_running *rr, const char *id)
{
    running_id *gone = NULL;

    if (!rr)
        return;
    pthread_mutex_lock(&rr->mu);
    for (running_id **pp = &rr->head; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) == 0) {
            gone = *pp;
            *pp = gone->next;
            break;
        }
    }
    pthread_mutex_unlock(&rr->mu);
    if (gone) {
        free(gone->id);
        free(gone);
    }
}

/* The request is done (its outcome delivered, or nothing to do): no scan adopts it any
 * more. A failure only costs a later adoption that finds it concluded. */
static void run_unregister(dq_rollbacker *rb, const char *request_id)
{
    char err[512];

    if (dq_runlease_unregister(rb->redis, DQ_RUNLEASE_KIND_ROLLBACK, request_id, err, sizeof err) != 0)
        dq_warn("rollback %s: still registered for adoption (it would only repeat its outcome): %s",
                request_id, err);
}

/* ---- emitting ---- */

/* Deliver ev keyed by its target. tries <= 0: until delivered or the worker stops (an
 * outcome must not be lost); otherwise that many attempts (a notification report must
 * never hold up the partition). */
static int emit(dq_rollbacker *rb, const dq_event *ev, int tries, char *err, size_t errlen)
{
    char key[300], *json = dq_event_encode(ev);
    int64_t backoff = RETRY_MIN_MS;
    int rc = -1;

    if (!json) {
        snprintf(err, errlen, "out of memory encoding %s", ev->type);
        return -1;
    }
    dq_target_key(ev->service, ev->environment, key, sizeof key);
    for (int i = 0; !*rb->stop && (tries <= 0 || i < tries); i++) {
        if (dq_producer_send(rb->producer, rb->cfg->topic_events, key, json, strlen(json), SEND_TIMEOUT_MS,
                             NULL, NULL, err, errlen) == 0) {
            rc = 0;
            break;
        }
        dq_warn("%s of %s not delivered, retrying: %s", ev->type, key, err);
        dq_sleep_ms(backoff);
        backoff = backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2;
    }
    if (rc != 0 && *rb->stop)
        snprintf(err, errlen, "stopping");
    free(json);
    return rc;
}

/* ---- Redis helpers ---- */

static void tkey(char *out, size_t outlen, const char *what, const char *service, const char *environment)
{
    snprintf(out, outlen, "deployq:rb:%s:%s/%s", what, service, environment);
}

/* Take a reply: 0 when it is one, -1 (reason in err) when Redis failed or answered an
 * error. Frees the reply. */
static int reply_ok(dq_rollbacker *rb, redisReply *r, char *err, size_t errlen)
{
    int rc = 0;

    if (!r) {
        snprintf(err, errlen, "redis: %s", dq_redis_errstr(rb->redis));
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "redis: %.200s", r->str ? r->str : "error");
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/* GET key parsed as a JSON object into *out (NULL when absent or not JSON). 0, or -1 when
 * Redis could not be asked. */
static int get_json(dq_rollbacker *rb, const char *key, cJSON **out, char *err, size_t errlen)
{
    char *s = NULL;
    char why[128];

    *out = NULL;
    if (dq_redis_get(rb->redis, key, &s) != 0) {
        snprintf(err, errlen, "redis: %s", dq_redis_errstr(rb->redis));
        return -1;
    }
    if (s)
        *out = dq_json_parse(s, strlen(s), RECORD_MAX_BYTES, 32, NULL, why, sizeof why);
    free(s);
    return 0;
}

static int set_json(dq_rollbacker *rb, const char *key, const cJSON *obj, long ttl_s, char *err, size_t errlen)
{
    char *s = dq_json_print(obj);
    redisReply *r;

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ttl_s > 0)
        r = dq_redis_command(rb->redis, "SET %s %s EX %ld", key, s, ttl_s);
    else
        r = dq_redis_command(rb->redis, "SET %s %s", key, s);
    free(s);
    return reply_ok(rb, r, err, errlen);
}

/* ---- per-target history ---- */

static int link_set(dq_rollbacker *rb, const char *deployment_id, const char *field, const char *value,
                    char *err, size_t errlen)
{
    char key[KEY_LEN];

    if (!deployment_id || !value || !value[0])
        return 0;
    snprintf(key, sizeof key, "deployq:rb:dep:%s", deployment_id);
    if (reply_ok(rb, dq_redis_command(rb->redis, "HSET %s %s %s", key, field, value), err, errlen) != 0)
        return -1;
    return reply_ok(rb, dq_redis_command(rb->redis, "EXPIRE %s %d", key, RECORD_TTL_S), err, errlen);
}

static int set_current(dq_rollbacker *rb, const dq_event *ev, const char *version, const char *deployment_id,
                       char *err, size_t errlen)
{
    char key[KEY_LEN];
    cJSON *o = cJSON_CreateObject();
    int rc;

    if (!o || !cJSON_AddStringToObject(o, "version", version) ||
        (deployment_id && !cJSON_AddStringToObject(o, "deployment_id", deployment_id))) {
        cJSON_Delete(o);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    tkey(key, sizeof key, "current", ev->service, ev->environment);
    rc = set_json(rb, key, o, 0, err, errlen);
    cJSON_Delete(o);
    return rc;
}

/* Remember what a later rollback needs from this event. 0, or -1 when Redis failed. */
static int track(dq_rollbacker *rb, const dq_event *ev, char *err, size_t errlen)
{
    const cJSON *d = ev->data;
    char key[KEY_LEN];

    if (strcmp(ev->type, DQ_EV_VALIDATED) == 0)
        return link_set(rb, ev->deployment_id, "ci_run_url", dq_json_str(d, "ci_run_url"), err, errlen);
    if (strcmp(ev->type, DQ_EV_FAILED) == 0)
        return link_set(rb, ev->deployment_id, "log_url", dq_json_str(d, "log_url"), err, errlen);
    if (strcmp(ev->type, DQ_EV_SUCCEEDED) == 0 && ev->version) {
        const char *prov = dq_json_str(d, "provider"), *pid = dq_json_str(d, "provider_deployment_id");

        if (prov && pid) {
            cJSON *o = cJSON_CreateObject();
            char *s;
            int rc;

            if (!o || !cJSON_AddStringToObject(o, "provider", prov) ||
                !cJSON_AddStringToObject(o, "provider_id", pid) ||
                (ev->deployment_id && !cJSON_AddStringToObject(o, "deployment_id", ev->deployment_id)) ||
                !(s = dq_json_print(o))) {
                cJSON_Delete(o);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            cJSON_Delete(o);
            tkey(key, sizeof key, "deploys", ev->service, ev->environment);
            rc = reply_ok(rb, dq_redis_command(rb->redis, "HSET %s %s %s", key, ev->version, s), err, errlen);
            free(s);
            if (rc != 0)
                return -1;
        }
        if (link_set(rb, ev->deployment_id, "url", dq_json_str(d, "url"), err, errlen) != 0)
            return -1;
        return set_current(rb, ev, ev->version, ev->deployment_id, err, errlen);
    }
    if (strcmp(ev->type, DQ_EV_VERIFIED) == 0 && ev->version) {
        /* newest first, each version once: a re-verified version moves to the front */
        tkey(key, sizeof key, "verified", ev->service, ev->environment);
        if (reply_ok(rb, dq_redis_command(rb->redis, "LREM %s 0 %s", key, ev->version), err, errlen) != 0 ||
            reply_ok(rb, dq_redis_command(rb->redis, "LPUSH %s %s", key, ev->version), err, errlen) != 0 ||
            reply_ok(rb, dq_redis_command(rb->redis, "LTRIM %s 0 %d", key, VERIFIED_KEEP - 1), err, errlen) != 0)
            return -1;
        return 0;
    }
    if (strcmp(ev->type, DQ_EV_ROLLBACK_SUCCEEDED) == 0 && dq_json_str(d, "to_version"))
        return set_current(rb, ev, dq_json_str(d, "to_version"), NULL, err, errlen);
    return 0;
}

/* ---- notifications ---- */

/* Owe a notification about trigger on the target's channels (notifyq.h: recorded here,
 * delivered by the notification thread, so that a slow webhook holds up no event of the
 * partition). force: even when its kind is not in `on` (the notify policy: the message is
 * the whole point). Returns 0, or -1 with err when it could not be recorded (Redis): the
 * caller retries, which only records it again. */
static int notify(dq_rollbacker *rb, const dq_event *trigger, const char *note, int force, char *err,
                  size_t errlen)
{
    if (!rb->notifyq)
        return 0;
    return dq_notifyq_put(rb->notifyq, rb->redis, trigger, note, force, err, errlen);
}

/* ---- one rollback ---- */

static const dq_runrecord_opts record_opts = {
    .prefix = DQ_RUNRECORD_KEY_ROLLBACK,
    .noun = "rollback",
    .ttl_s = RECORD_TTL_S,
    .tries = 1,
    .max_bytes = RECORD_MAX_BYTES,
    .max_depth = 32,
};

typedef struct run {
    dq_rollbacker *rb;
    const dq_event *req;
    dq_lock *lock;
    dq_runrecord *record; /* deployq:rb:req:<request id> (runrecord.h) */
    char rollback_id[DQ_UUID_LEN + 1]; /* the provider's deployment_id for this rollback */
    const char *from_version;
    const char *to_version;
    const char *method;
    int64_t started_at_ms;
    dq_event *terminal; /* the delivered outcome, notified once the lock is released */
    char err[512];
} run;

static int run_continue(void *ctx)
{
    run *r = ctx;

    /* Redis was down when the provider accepted: record as soon as it is back, so that
     * another process taking the target over resumes instead of redeploying. */
    dq_runrecord_poll(r->record);
    return !*r->rb->stop && !dq_lock_lost(r->lock);
}

static int run_continue_stop(void *ctx)
{
    dq_rollbacker *rb = ctx;
    return !*rb->stop;
}

static int write_started(run *r, const char *provider, const char *provider_id)
{
    cJSON *o = cJSON_CreateObject();
    char *json;
    int rc;

    if (!o || !cJSON_AddStringToObject(o, "state", "started") || !cJSON_AddStringToObject(o, "method", r->method) ||
        !cJSON_AddStringToObject(o, "provider", provider) ||
        !cJSON_AddStringToObject(o, "provider_id", provider_id ? provider_id : "") ||
        !cJSON_AddStringToObject(o, "to_version", r->to_version) ||
        !cJSON_AddNumberToObject(o, "started_at_ms", (double)r->started_at_ms)) {
        cJSON_Delete(o);
        return -1;
    }
    /* Remembered in this process first, then written; refused: kept and written while
     * polling (runrecord.h). */
    json = dq_json_print(o);
    cJSON_Delete(o);
    rc = dq_runrecord_start(r->record, json);
    if (rc != 0)
        snprintf(r->err, sizeof r->err, "%s", dq_runrecord_errstr(r->record));
    free(json);
    return rc;
}

static void on_started(void *ctx, const dq_provider *p, const char *provider_id)
{
    run *r = ctx;

    if (write_started(r, dq_provider_name(p), provider_id) != 0) {
        /* Go on: the rollback runs and this process remembers it (runrecord.h); the
         * record is tried again while polling. Only a crash before then would repeat it. */
        dq_warn("rollback %s: could not record the provider deployment yet: %s", r->req->id, r->err);
    }
}

static void on_provider_failed(void *ctx, const dq_provider *p, const dq_provider_error *e)
{
    run *r = ctx;
    dq_warn("rollback %s: provider %s unavailable (%s), trying the next: %s", r->req->id, dq_provider_name(p),
            e->error_class, e->detail);
}

/* A new event about the request: same deployment, the failing version, the lock's fence,
 * an id derived from the request's id and kind. */
static dq_event *new_event(run *r, const char *type, const char *kind)
{
    const dq_event *req = r->req;
    dq_event *ev = dq_event_new(type, req->deployment_id, req->service, req->environment, r->from_version,
                                r->rb->actor);
    char name[128];

    if (!ev)
        return NULL;
    snprintf(name, sizeof name, "%s:%s", kind, req->id);
    dq_event_set_id_from(ev, name);
    ev->fence = r->lock ? dq_lock_fence(r->lock) : 0;
    if (!cJSON_AddStringToObject(ev->data, "request_id", req->id) ||
        (r->from_version && !cJSON_AddStringToObject(ev->data, "from_version", r->from_version)) ||
        (r->to_version && !cJSON_AddStringToObject(ev->data, "to_version", r->to_version))) {
        dq_event_free(ev);
        return NULL;
    }
    return ev;
}

/* The times of MTTR: detection (the first failing probe), decision (the request). */
static void mttr_times(const dq_event *req, int64_t *detected, int64_t *decided)
{
    const cJSON *evi = cJSON_GetObjectItemCaseSensitive(req->data, "evidence");
    const char *s = dq_json_str(evi, "first_failure_at");

    *decided = req->at_ms;
    if (!s || dq_time_parse(s, detected) != 0) {
        s = dq_json_str(evi, "detected_at");
        if (!s || dq_time_parse(s, detected) != 0)
            *detected = req->at_ms;
    }
    if (*detected > *decided)
        *detected = *decided;
}

/* Emit the terminal event, record it, and report. 0 done, -1 not delivered (stopping). */
static int conclude(run *r, dq_event *ev)
{
    dq_rollbacker *rb = r->rb;
    cJSON *rec = NULL;
    char *json = NULL, *rec_json;
    const cJSON *parsed;

    if (emit(rb, ev, 0, r->err, sizeof r->err) != 0)
        return -1;
    /* concluded: unregistered while the lock (if any) is still held, so no scan adopts it */
    run_unregister(rb, r->req->id);
    json = dq_event_encode(ev);
    rec = cJSON_CreateObject();
    parsed = json ? dq_json_parse(json, strlen(json), RECORD_MAX_BYTES, 32, NULL, r->err, sizeof r->err) : NULL;
    if (rec && parsed && cJSON_AddStringToObject(rec, "state", "done"))
        cJSON_AddItemToObject(rec, "terminal", (cJSON *)parsed);
    else
        cJSON_Delete((cJSON *)parsed);
    /* the terminal record replaces whatever was pending (runrecord.h) */
    rec_json = rec ? dq_json_print(rec) : NULL;
    if (dq_runrecord_finish(r->record, rec_json) != 0)
        dq_warn("rollback %s: outcome delivered but not recorded (a redelivery re-emits the same event): %s",
                r->req->id, dq_runrecord_errstr(r->record));
    free(rec_json);
    cJSON_Delete(rec);
    free(json);
    return 0;
}

/* deployq_rollbacks_total: outcome succeeded|failed|skipped, provider "none" when none ran */
static void count_rollback(const dq_rollbacker *rb, const dq_event *req, const char *provider,
                           const char *outcome)
{
    const char *values[] = {req->service, req->environment,
                            provider && provider[0] ? provider : "none", outcome};

    dq_metric_add(rb->m_rollbacks, values, 1);
}

static int fail_with(run *r, const char *reason, const char *provider, const char *detail)
{
    dq_event *ev = new_event(r, DQ_EV_ROLLBACK_FAILED, "rollback.outcome");
    char clean[1024];
    int rc;

    if (!ev)
        return -1;
    dq_redact(reason, clean, sizeof clean);
    cJSON_AddStringToObject(ev->data, "reason", clean);
    if (r->method)
        cJSON_AddStringToObject(ev->data, "method", r->method);
    if (provider && provider[0])
        cJSON_AddStringToObject(ev->data, "provider", provider);
    if (detail && detail[0]) {
        dq_redact(detail, clean, sizeof clean);
        cJSON_AddStringToObject(ev->data, "detail", clean);
    }
    rc = conclude(r, ev);
    if (rc == 0) {
        r->rb->n_failed++;
        count_rollback(r->rb, r->req, provider, "failed");
        dq_error("rollback of %s/%s %s%s%s failed: %s", r->req->service, r->req->environment,
                 r->from_version ? r->from_version : "?", r->to_version ? " -> " : "",
                 r->to_version ? r->to_version : "", clean);
        r->terminal = ev; /* notified by the caller after the lock is released */
        return 0;
    }
    dq_event_free(ev);
    return rc;
}

static int succeed_with(run *r, const dq_chain_result *res, int64_t restored_at)
{
    dq_event *ev = new_event(r, DQ_EV_ROLLBACK_SUCCEEDED, "rollback.outcome");
    int64_t detected, decided;
    char t1[DQ_TIME_LEN + 1], t2[DQ_TIME_LEN + 1], t3[DQ_TIME_LEN + 1];
    const char *reason = dq_json_str(r->req->data, "reason");
    int rc;

    if (!ev)
        return -1;
    mttr_times(r->req, &detected, &decided);
    if (restored_at < decided)
        restored_at = decided;
    cJSON_AddStringToObject(ev->data, "method", r->method);
    if (res->provider[0])
        cJSON_AddStringToObject(ev->data, "provider", res->provider);
    if (res->provider_id[0])
        cJSON_AddStringToObject(ev->data, "provider_deployment_id", res->provider_id);
    if (strncmp(res->url, "http", 4) == 0)
        cJSON_AddStringToObject(ev->data, "url", res->url);
    cJSON_AddStringToObject(ev->data, "detected_at", dq_time_format(detected, t1));
    cJSON_AddStringToObject(ev->data, "decided_at", dq_time_format(decided, t2));
    cJSON_AddStringToObject(ev->data, "restored_at", dq_time_format(restored_at, t3));
    cJSON_AddNumberToObject(ev->data, "mttr_ms", (double)(restored_at - detected));
    if (reason)
        cJSON_AddStringToObject(ev->data, "reason", reason);
    rc = conclude(r, ev);
    if (rc == 0) {
        const char *target[] = {r->req->service, r->req->environment};

        r->rb->n_succeeded++;
        count_rollback(r->rb, r->req, res->provider, "succeeded");
        dq_metric_observe(r->rb->m_mttr, target, (double)(restored_at - detected) / 1000.0);
        dq_info("rollback of %s/%s %s -> %s succeeded (%s via %s): MTTR %.1f s (detected %s, decided %s, "
                "restored %s; %.1f s from decision to restore)",
                r->req->service, r->req->environment, r->from_version ? r->from_version : "?", r->to_version,
                r->method, res->provider[0] ? res->provider : "?", (double)(restored_at - detected) / 1000.0, t1,
                t2, t3, (double)(restored_at - decided) / 1000.0);
        r->terminal = ev; /* notified by the caller after the lock is released */
        return 0;
    }
    dq_event_free(ev);
    return rc;
}

static dq_provider *chain_find(dq_provider **chain, size_t n, const char *name)
{
    for (size_t i = 0; name && i < n; i++)
        if (strcmp(dq_provider_name(chain[i]), name) == 0)
            return chain[i];
    return NULL;
}

/* The version to return to: the newest verified one that is not the failing one.
 * 0 with *out (malloc'd, NULL when there is none), -1 when Redis failed. */
static int pick_verified(run *r, char **out)
{
    char key[KEY_LEN];
    redisReply *rep;

    *out = NULL;
    tkey(key, sizeof key, "verified", r->req->service, r->req->environment);
    rep = dq_redis_command(r->rb->redis, "LRANGE %s 0 -1", key);
    if (!rep || rep->type != REDIS_REPLY_ARRAY)
        return reply_ok(r->rb, rep, r->err, sizeof r->err) == 0 ? 0 : -1;
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if (e->type == REDIS_REPLY_STRING && (!r->from_version || strcmp(e->str, r->from_version) != 0)) {
            *out = strdup(e->str);
            break;
        }
    }
    freeReplyObject(rep);
    return 0;
}

/* Restore r->to_version. Returns 0 when concluded (an outcome event delivered), -1 when
 * it must be tried again (stopping, lease lost, broker down). */
/* ---- blue-green (bluegreen.h): a rollback within the window is a switch back ---- */

/* When the target is blue-green and the color that is not live still runs r->to_version
 * (or a resumed switch back already made it live), switch traffic to it: rollback.started,
 * the router call, traffic.switched, then rollback.succeeded with method traffic_switch.
 * Returns 1 when it handled the rollback (*rc as restore() returns), 0 when a switch back
 * is not possible (the caller restores by provider as usual). */
static int bg_switch_back(run *r, const cJSON *rec, int *rc)
{
    dq_rollbacker *rb = r->rb;
    const dq_event *req = r->req;
    const char *rec_method = dq_json_str(rec, "method");
    int resumed = rec_method && strcmp(rec_method, "traffic_switch") == 0;
    dq_bluegreen *bg;
    dq_bg_state st;
    dq_chain_result res;
    const char *back = NULL;
    char err[512], seed[128];
    dq_event *ev;

    if (!dq_bg_configured(rb->cfg, req->service, req->environment) || (rec && !resumed))
        return 0;
    bg = dq_bg_load(rb->cfg, req->service, req->environment, err, sizeof err);
    if (!bg || dq_bg_state_read(rb->redis, req->service, req->environment, &st, err, sizeof err) != 0) {
        dq_warn("rollback %s: no switch back (%s); restoring by provider", req->id, err);
        dq_bg_free(bg);
        return 0;
    }
    if (st.live[0] && strcmp(dq_bg_state_version(&st, dq_bg_other(st.live)), r->to_version) == 0)
        back = dq_bg_other(st.live);
    else if (resumed && st.live[0] && strcmp(dq_bg_state_version(&st, st.live), r->to_version) == 0)
        back = st.live; /* switched before we stopped: the same switch again is harmless */
    if (!back) {
        dq_info("rollback %s: no color of %s/%s runs %s any more; restoring by provider", req->id,
                req->service, req->environment, r->to_version);
        dq_bg_free(bg);
        return 0;
    }
    r->method = "traffic_switch";
    r->started_at_ms = resumed ? (int64_t)dq_json_num(rec, "started_at_ms", (double)dq_now_ms()) : dq_now_ms();
    *rc = -1;
    if (!resumed) {
        ev = new_event(r, DQ_EV_ROLLBACK_STARTED, "rollback.started");
        if (!ev) {
            snprintf(r->err, sizeof r->err, "out of memory");
            goto out;
        }
        cJSON_AddStringToObject(ev->data, "method", r->method);
        cJSON_AddStringToObject(ev->data, "provider", dq_bg_router_name(bg));
        if (dq_json_str(req->data, "reason"))
            cJSON_AddStringToObject(ev->data, "reason", dq_json_str(req->data, "reason"));
        if (emit(rb, ev, 0, r->err, sizeof r->err) != 0) {
            dq_event_free(ev);
            goto out;
        }
        dq_event_free(ev);
        if (write_started(r, dq_bg_router_name(bg), "") != 0)
            dq_warn("rollback %s: switch back not recorded: %s", req->id, r->err);
    }
    dq_info("rollback %s of %s/%s: %s -> %s by switching traffic back to %s (fence %lld)", req->id,
            req->service, req->environment, r->from_version ? r->from_version : "?", r->to_version, back,
            (long long)dq_lock_fence(r->lock));
    if (dq_bg_switch(bg, back, dq_lock_fence(r->lock), err, sizeof err) != 0) {
        *rc = fail_with(r, "the router did not switch traffic back", dq_bg_router_name(bg), err);
        goto out;
    }
    if (dq_bg_set_live(rb->redis, req->service, req->environment, back, NULL, err, sizeof err) != 0) {
        snprintf(r->err, sizeof r->err, "traffic switched back to %s but not recorded: %s", back, err);
        goto out;
    }
    snprintf(seed, sizeof seed, "traffic.switched:%s", req->id);
    ev = dq_bg_switched_event(req->deployment_id, req->service, req->environment, r->to_version,
                              rb->actor, dq_lock_fence(r->lock), dq_bg_other(back), back,
                              dq_bg_router_name(bg), seed);
    if (ev && cJSON_AddStringToObject(ev->data, "request_id", req->id) &&
        emit(rb, ev, 0, r->err, sizeof r->err) == 0) {
        memset(&res, 0, sizeof res);
        dq_strlcpy(res.provider, dq_bg_router_name(bg), sizeof res.provider);
        *rc = succeed_with(r, &res, dq_now_ms());
    } else if (!ev) {
        snprintf(r->err, sizeof r->err, "out of memory");
    }
    dq_event_free(ev);
out:
    dq_bg_free(bg);
    return 1;
}

/* ---- end of blue-green ---- */

static int restore(run *r, const cJSON *rec)
{
    dq_rollbacker *rb = r->rb;
    const dq_event *req = r->req;
    dq_provider **chain = NULL;
    size_t n = 0;
    dq_provider_request preq = {.deployment_id = r->rollback_id, .service = req->service,
                                .environment = req->environment, .version = r->to_version,
                                .fence = dq_lock_fence(r->lock)};
    dq_chain_callbacks cb = {.ctx = r, .on_started = on_started, .on_provider_failed = on_provider_failed,
                             .should_continue = run_continue};
    dq_chain_options opts = {0};
    dq_chain_result res;
    dq_chain_outcome outcome;
    dq_provider *native = NULL;
    char *deploy_rec = NULL, err[512], detail[DQ_PROVIDER_DETAIL_LEN + 64];
    cJSON *dj = NULL;
    int rc = -1;

    memset(&res, 0, sizeof res);
    if (bg_switch_back(r, rec, &rc)) /* blue-green: a switch back, when the old color is there */
        return rc;
    if (dq_exec_chain_load(rb->cfg, req->service, req->environment, &chain, &n, err, sizeof err) != 0)
        return fail_with(r, "no provider chain to roll back with", NULL, err);

    if (rec) {
        /* A run of this request accepted a provider deployment before we stopped: poll it. */
        const char *prov = dq_json_str(rec, "provider"), *pid = dq_json_str(rec, "provider_id");
        dq_provider *p = chain_find(chain, n, prov);
        int64_t started = (int64_t)dq_json_num(rec, "started_at_ms", (double)dq_now_ms());

        r->method = dq_json_str(rec, "method") ? dq_json_str(rec, "method") : "redeploy";
        r->started_at_ms = started;
        if (!p) {
            rc = fail_with(r, "the provider of the interrupted rollback is no longer configured", prov, NULL);
            goto out;
        }
        dq_info("rollback %s: resuming %s deployment %s on %s", req->id, r->method, pid && pid[0] ? pid : "-",
                dq_provider_name(p));
        if (!pid || !pid[0]) {
            /* Only a rollback recorded before deployq polled what deploymentRollback
             * started leaves no id: what it restored cannot be seen, so never a success. */
            rc = fail_with(r, "the interrupted rollback left no provider deployment to poll: the restore "
                              "cannot be confirmed",
                           dq_provider_name(p), "check what serves now, then deployq rollback --to VERSION");
            goto out;
        }
        outcome = dq_chain_resume(p, pid, dq_now_ms() - started, &preq, &cb, &opts, &res);
        goto judged;
    }

    /* What the version's own deploy left: a Railway deployment can be rolled back to. */
    {
        char key[KEY_LEN];
        redisReply *rep;

        tkey(key, sizeof key, "deploys", req->service, req->environment);
        rep = dq_redis_command(rb->redis, "HGET %s %s", key, r->to_version);
        if (!rep) {
            snprintf(r->err, sizeof r->err, "redis: %s", dq_redis_errstr(rb->redis));
            goto out;
        }
        if (rep->type == REDIS_REPLY_STRING)
            deploy_rec = strdup(rep->str);
        freeReplyObject(rep);
        if (deploy_rec)
            dj = dq_json_parse(deploy_rec, strlen(deploy_rec), RECORD_MAX_BYTES, 8, NULL, err, sizeof err);
        native = chain_find(chain, n, dq_json_str(dj, "provider"));
        if (native && strcmp(dq_provider_type(native), "railway") != 0)
            native = NULL;
    }
    r->method = native ? "provider_rollback" : "redeploy";
    r->started_at_ms = dq_now_ms();
    {
        dq_event *ev = new_event(r, DQ_EV_ROLLBACK_STARTED, "rollback.started");

        if (!ev) {
            snprintf(r->err, sizeof r->err, "out of memory");
            goto out;
        }
        cJSON_AddStringToObject(ev->data, "method", r->method);
        cJSON_AddStringToObject(ev->data, "provider", dq_provider_name(native ? native : chain[0]));
        if (dq_json_str(req->data, "reason"))
            cJSON_AddStringToObject(ev->data, "reason", dq_json_str(req->data, "reason"));
        if (emit(rb, ev, 0, r->err, sizeof r->err) != 0) {
            dq_event_free(ev);
            goto out;
        }
        dq_event_free(ev);
    }
    dq_info("rollback %s of %s/%s: %s -> %s by %s (fence %lld)", req->id, req->service, req->environment,
            r->from_version ? r->from_version : "?", r->to_version, r->method, (long long)preq.fence);

    if (native) {
        char new_id[DQ_PROVIDER_ID_LEN];
        dq_provider_error e;

        if (dq_provider_rollback(native, &preq, dq_json_str(dj, "provider_id"), new_id, sizeof new_id, &e) == 0) {
            /* A provider rollback only starts a deployment (Railway's deploymentRollback
             * builds the old image anew while the failing version keeps serving): the
             * restore is that deployment's terminal state, polled like a deploy's. */
            on_started(r, native, new_id);
            if (!new_id[0]) {
                rc = fail_with(r, "the provider accepted the rollback but named no deployment to poll: the "
                                  "restore cannot be confirmed",
                               dq_provider_name(native), NULL);
                goto out;
            }
            dq_info("rollback %s: %s started deployment %s; polling it to a terminal state", req->id,
                    dq_provider_name(native), new_id);
            outcome = dq_chain_resume(native, new_id, 0, &preq, &cb, &opts, &res);
            goto judged;
        }
        if (e.kind == DQ_PROV_FAILED) {
            rc = fail_with(r, "the provider refused the rollback", dq_provider_name(native), e.detail);
            goto out;
        }
        /* Unavailable: nothing was started there, so a redeploy through the chain (which
         * fails over) is safe. */
        dq_warn("rollback %s: %s rollback unavailable (%s), redeploying %s through the chain instead", req->id,
                dq_provider_name(native), e.error_class, r->to_version);
        r->method = "redeploy";
    }
    outcome = dq_chain_run(chain, n, &preq, &cb, &opts, &res);

judged:
    switch (outcome) {
    case DQ_CHAIN_SUCCEEDED:
        rc = succeed_with(r, &res, dq_now_ms());
        break;
    case DQ_CHAIN_FAILED:
    case DQ_CHAIN_TIMEOUT:
        snprintf(detail, sizeof detail, "%s%s%s", res.failure[0] ? res.failure : "failed", res.reason[0] ? ": " : "",
                 res.reason);
        rc = fail_with(r, outcome == DQ_CHAIN_TIMEOUT ? "the restore did not finish before the deadline"
                                                      : "the restore failed",
                       res.provider, detail);
        break;
    case DQ_CHAIN_STOPPED:
        snprintf(r->err, sizeof r->err, "%s", dq_lock_lost(r->lock) ? "lease lost" : "stopping");
        rc = -1;
        break;
    }
out:
    dq_chain_result_clear(&res);
    cJSON_Delete(dj);
    free(deploy_rec);
    dq_exec_chain_free(chain, n);
    return rc;
}

/* The target's policy: 1 auto (default), 0 notify. A value that is neither was refused at
 * start (main.c, dq_rollback_policy_load) and the configuration is read once, so -1 does
 * not happen here; were it to, nothing is rolled back on a guess and the reason is logged. */
static int policy_auto(const dq_rollbacker *rb, const dq_event *req)
{
    char err[512];
    int rc = dq_rollback_policy_load(rb->cfg, req->service, req->environment, err, sizeof err);

    if (rc < 0)
        dq_error("%s; acting as notify", err);
    return rc > 0;
}

/* 1 when req comes from the monitor (automatic), 0 from a person (`deployq rollback`). */
static int requested_automatically(const dq_event *req)
{
    const char *by = dq_json_str(req->data, "requested_by");

    return cJSON_GetObjectItemCaseSensitive(req->data, "evidence") != NULL ||
           (by && strcmp(by, "deployq-monitor") == 0);
}

/* `deployq hold` on the target (opstate.h) and req automatic: the request's outcome is
 * rollback.held, recorded like any outcome (a redelivery finds it concluded) and notified;
 * nothing is rolled back. 1 handled so (*result set), 0 not held, -1 Redis unreachable. */
static int held(dq_rollbacker *rb, run *r, dq_handle_result *result, char *err, size_t errlen)
{
    const dq_event *req = r->req;
    dq_opmark mark;
    dq_event *ev;
    char note[900];
    int rc;

    if (!requested_automatically(req))
        return 0;
    rc = dq_opstate_get(rb->redis, DQ_OPSTATE_HELD, req->service, req->environment, &mark);
    if (rc <= 0) {
        if (rc < 0)
            snprintf(err, errlen, "rollback %s: redis %s unavailable to read the hold: %s", req->id,
                     dq_redis_where(rb->redis), dq_redis_errstr(rb->redis));
        return rc;
    }
    dq_warn("rollback requested for %s/%s (%s); automatic rollback is held by %s: not rolling back",
            req->service, req->environment,
            dq_json_str(req->data, "reason") ? dq_json_str(req->data, "reason") : "", mark.by);
    r->from_version = req->version ? req->version : dq_json_str(req->data, "from_version");
    ev = new_event(r, DQ_EV_ROLLBACK_HELD, "rollback.outcome");
    if (!ev || !cJSON_AddStringToObject(ev->data, "held_by", mark.by) ||
        (mark.reason[0] && !cJSON_AddStringToObject(ev->data, "held_reason", mark.reason)) ||
        !cJSON_AddStringToObject(ev->data, "reason", "automatic rollback is held: nothing was rolled back") ||
        conclude(r, ev) != 0) {
        snprintf(err, errlen, "rollback %s: the held outcome was not delivered: %s", req->id,
                 ev ? r->err : "out of memory");
        dq_event_free(ev);
        *result = DQ_RETRY;
        return 1;
    }
    dq_event_free(ev);
    count_rollback(rb, req, NULL, "skipped");
    snprintf(note, sizeof note,
             "Automatic rollback of %s/%s is held by %s (%s): nothing was rolled back. A person must decide "
             "(deployq rollback --service %s --env %s --reason ..., or deployq release to let it act again).",
             req->service, req->environment, mark.by, mark.reason[0] ? mark.reason : "no reason given",
             req->service, req->environment);
    *result = notify(rb, req, note, 1, err, errlen) == 0 ? DQ_HANDLED : DQ_RETRY;
    return 1;
}

static dq_handle_result on_request(dq_rollbacker *rb, const dq_event *req, char *err, size_t errlen)
{
    run r;
    cJSON *rec = NULL, *cur = NULL;
    char *picked = NULL, lerr[512];
    dq_handle_result result = DQ_RETRY;
    dq_lock_status ls;
    int64_t lock_t0;

    memset(&r, 0, sizeof r);
    r.rb = rb;
    r.req = req;
    if (!req->service || !req->environment) {
        snprintf(err, errlen, "rollback.requested %s names no service/environment", req->id);
        return DQ_POISON;
    }
    r.record = dq_runrecord_new(rb->redis, &record_opts, req->id);
    if (!r.record) {
        snprintf(err, errlen, "rollback %s: out of memory", req->id);
        return DQ_RETRY;
    }
    {
        char name[128];
        snprintf(name, sizeof name, "rollback:%s", req->id);
        dq_uuid_from_name(name, r.rollback_id);
    }
    if (dq_runrecord_read(r.record, &rec) != 0) {
        snprintf(err, errlen, "%s", dq_runrecord_errstr(r.record));
        dq_runrecord_free(r.record);
        return DQ_RETRY;
    }
    if (rec && strcmp(dq_json_str(rec, "state") ? dq_json_str(rec, "state") : "", "done") == 0) {
        /* Concluded earlier: only the notifications may still be owed. */
        dq_runrecord_forget(r.record); /* Redis has the outcome */
        const cJSON *term = cJSON_GetObjectItemCaseSensitive(rec, "terminal");
        char *json = term ? dq_json_print(term) : NULL;
        dq_event *tev = json ? dq_event_decode(json, strlen(json), lerr, sizeof lerr) : NULL;

        dq_info("rollback %s: already concluded (%s)", req->id, tev ? tev->type : "?");
        result = notify(rb, req, NULL, 0, err, errlen) == 0 && (!tev || notify(rb, tev, NULL, 0, err, errlen) == 0)
                     ? DQ_HANDLED
                     : DQ_RETRY;
        dq_event_free(tev);
        free(json);
        dq_runrecord_free(r.record);
        cJSON_Delete(rec);
        return result;
    }

    switch (held(rb, &r, &result, err, errlen)) {
    case 1:
    case -1:
        dq_runrecord_free(r.record);
        cJSON_Delete(rec);
        return result;
    default:
        break;
    }

    if (!policy_auto(rb, req)) {
        char note[600];

        snprintf(note, sizeof note,
                 "Policy for %s/%s is `rollback: notify`: nothing was rolled back. A person must decide "
                 "(deployq rollback --service %s --env %s --reason ...).",
                 req->service, req->environment, req->service, req->environment);
        dq_event *ev;

        dq_warn("rollback requested for %s/%s (%s); policy notify: not rolling back",
                req->service, req->environment, dq_json_str(req->data, "reason") ? dq_json_str(req->data, "reason") : "");
        /* The request's final event, so that whoever follows the deployment (submit --wait,
         * the registry) learns it ends here: a rollback.failed that says data.policy
         * "notify" (nothing was attempted). Recorded like any outcome, so a redelivery
         * takes the "already concluded" path above. */
        r.from_version = req->version ? req->version : dq_json_str(req->data, "from_version");
        ev = new_event(&r, DQ_EV_ROLLBACK_FAILED, "rollback.outcome");
        if (!ev || !cJSON_AddStringToObject(ev->data, "reason",
                                            "policy notify: nothing was rolled back; a person must decide") ||
            !cJSON_AddStringToObject(ev->data, "policy", "notify") || conclude(&r, ev) != 0) {
            snprintf(err, errlen, "rollback %s: the policy-notify outcome was not delivered: %s", req->id,
                     ev ? r.err : "out of memory");
            dq_event_free(ev);
            dq_runrecord_free(r.record);
            cJSON_Delete(rec);
            return DQ_RETRY;
        }
        count_rollback(rb, req, NULL, "skipped");
        result = notify(rb, req, note, 1, err, errlen) == 0 ? DQ_HANDLED : DQ_RETRY;
        dq_event_free(ev);
        dq_runrecord_free(r.record);
        cJSON_Delete(rec);
        return result;
    }

    /* The monitor watches a restored version too. When *that* fails, rolling back again
     * would walk down the history on its own; a person decides instead. A request that
     * names its target version (deployq rollback --to) is a person's decision already. */
    if (!cJSON_GetObjectItemCaseSensitive(req->data, "to_version") &&
        strcmp(dq_json_str(req->data, "trigger") ? dq_json_str(req->data, "trigger") : "",
               DQ_EV_ROLLBACK_SUCCEEDED) == 0) {
        char note[600];

        snprintf(note, sizeof note,
                 "The version restored by a rollback of %s/%s is failing too: not rolling back any "
                 "further on my own. A person must decide (deployq rollback --service %s --env %s "
                 "--to VERSION --reason ...).",
                 req->service, req->environment, req->service, req->environment);
        dq_warn("rollback requested for %s/%s after a rollback; not rolling back further",
                req->service, req->environment);
        count_rollback(rb, req, NULL, "skipped");
        result = notify(rb, req, note, 1, err, errlen) == 0 ? DQ_HANDLED : DQ_RETRY;
        dq_runrecord_free(r.record);
        cJSON_Delete(rec);
        return result;
    }

    /* The failing version: the request's, else what runs now. */
    r.from_version = req->version ? req->version : dq_json_str(req->data, "from_version");
    if (!r.from_version) {
        char key[KEY_LEN];

        tkey(key, sizeof key, "current", req->service, req->environment);
        if (get_json(rb, key, &cur, err, errlen) != 0)
            goto out;
        r.from_version = dq_json_str(cur, "version");
    }

    lock_t0 = dq_now_ms();
    ls = dq_lock_acquire(rb->cfg->redis_url, rb->cfg->redis_timeout_ms, req->service, req->environment,
                         rb->settings.lock_ttl_ms, rb->settings.lock_wait_ms, run_continue_stop, rb, &r.lock,
                         lerr, sizeof lerr);
    {
        const char *target[] = {req->service, req->environment};

        dq_metric_observe(rb->m_lock_wait, target, (double)(dq_now_ms() - lock_t0) / 1000.0);
    }
    if (ls != DQ_LOCK_TAKEN) {
        snprintf(err, errlen, "%s/%s: lock not taken: %s", req->service, req->environment,
                 ls == DQ_LOCK_BUSY ? "busy" : lerr);
        dq_warn("rollback %s: %s; will retry", req->id, err);
        goto out;
    }
    /* From here, if this process dies, another worker runs the request again once the
     * lock expired (runlease.h) instead of waiting for Kafka's rebalance. */
    {
        char *json = dq_event_encode(req);

        if (!json || dq_runlease_register(rb->redis, DQ_RUNLEASE_KIND_ROLLBACK, req->id, dq_lock_key(r.lock),
                                          json, lerr, sizeof lerr) != 0)
            dq_warn("rollback %s: not registered for adoption (a crash is then resumed only after Kafka's "
                    "rebalance): %s",
                    req->id, json ? lerr : "out of memory");
        free(json);
    }

    if (rec) {
        r.to_version = dq_json_str(rec, "to_version");
    } else if (dq_json_str(req->data, "to_version")) {
        r.to_version = dq_json_str(req->data, "to_version");
    } else {
        if (pick_verified(&r, &picked) != 0) {
            snprintf(err, errlen, "%s", r.err);
            goto out;
        }
        r.to_version = picked;
    }
    if (!r.to_version) {
        char reason[300];

        snprintf(reason, sizeof reason,
                 "no verified version of %s/%s to return to (other than %s): no blind rollback", req->service,
                 req->environment, r.from_version ? r.from_version : "the failing one");
        result = fail_with(&r, reason, NULL, NULL) == 0 ? DQ_HANDLED : DQ_RETRY;
        goto out;
    }
    result = restore(&r, rec) == 0 ? DQ_HANDLED : DQ_RETRY;
    if (result != DQ_HANDLED)
        snprintf(err, errlen, "rollback %s: %s", req->id, r.err);
out:
    dq_lock_release(r.lock);
    if (r.terminal) {
        /* After the outcome and outside the lock; only recorded here, delivered by the
         * notification thread. Not recorded (Redis): the request is retried, finds its
         * outcome and records them then. */
        if (result == DQ_HANDLED &&
            (notify(rb, req, NULL, 0, err, errlen) != 0 || notify(rb, r.terminal, NULL, 0, err, errlen) != 0))
            result = DQ_RETRY;
        dq_event_free(r.terminal);
    }
    free(picked);
    dq_runrecord_free(r.record);
    cJSON_Delete(cur);
    cJSON_Delete(rec);
    return result;
}

dq_handle_result dq_rollback_request(dq_rollbacker *rb, const dq_event *req, char *err, size_t errlen)
{
    dq_handle_result res;
    int entered = running_enter(rb->running, req->id);

    if (entered <= 0) {
        snprintf(err, errlen, "rollback %s: %s", req->id,
                 entered == 0 ? "running in another thread of this process" : "out of memory");
        dq_info("%s; will retry", err);
        return DQ_RETRY;
    }
    res = on_request(rb, req, err, errlen);
    /* Also ends a run that concluded without an outcome of its own (concluded earlier,
     * nothing to roll back); after conclude() it is a no-op. */
    if (res == DQ_HANDLED)
        run_unregister(rb, req->id);
    running_leave(rb->running, req->id);
    return res;
}

dq_handle_result dq_rollback_handle(void *ctx, const dq_message *m, char *err, size_t errlen)
{
    dq_rollbacker *rb = ctx;
    dq_event *ev;
    dq_handle_result res = DQ_HANDLED;
    char why[512];

    /* No value: a placeholder `deployq up --data` writes so that the embedded broker's
     * offsets continue the registry's log; nothing to do, nothing to warn about. */
    if (!m->value)
        return DQ_HANDLED;
    ev = dq_event_decode(m->value ? m->value : "", m->len, why, sizeof why);
    if (!ev) {
        /* deployq.events is the workers' log; something unreadable is not ours to judge */
        dq_warn("skipping unreadable event at %s [%d] %lld: %s", m->topic, (int)m->partition,
                (long long)m->offset, why);
        return DQ_HANDLED;
    }
    if (strcmp(ev->type, DQ_EV_ROLLBACK_REQUESTED) == 0) {
        res = dq_rollback_request(rb, ev, err, errlen);
    } else if (ev->service && ev->environment) {
        if (track(rb, ev, err, errlen) != 0) {
            dq_warn("%s %s: %s; will retry", ev->type, ev->id, err);
            res = DQ_RETRY;
        } else if (strncmp(ev->type, "rollback.", 9) != 0 && dq_notify_kind(ev) &&
                   notify(rb, ev, NULL, 0, err, errlen) != 0) {
            /* rollback.* were notified by whoever emitted them; the rest is a deploy's
             * (failed, failover, awaiting approval, rejected, ...) */
            dq_warn("%s %s: %s; will retry", ev->type, ev->id, err);
            res = DQ_RETRY;
        }
    }
    dq_event_free(ev);
    return res;
}
