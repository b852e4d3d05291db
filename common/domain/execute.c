/*
 * execute.c - one deploy run (execute.h): chain from the configuration, idempotency
 * records in Redis, deterministic events through a sink.
 *
 * The order of side effects is what makes a crash at any point harmless: an intent record
 * is written before a provider is asked to deploy (a later run that finds only that waits
 * for the record the asking process may hold, runrecord.h), the record of a
 * started provider deployment is written before the first poll (a restart resumes, never
 * deploys twice), and the terminal record only after the terminal event was delivered (a
 * restart before that re-emits the same event id).
 */
#include "execute.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "runrecord.h"
#include "util.h"

#define RECORD_WRITE_TRIES 3 /* losing a started record would let a restart deploy twice */
#define INTENT_POLL_MS 200   /* how often a run waiting for an earlier run's record reads it */

/* ---- configuration ---- */

void dq_exec_chain_free(dq_provider **providers, size_t n)
{
    if (!providers)
        return;
    for (size_t i = 0; i < n; i++)
        dq_provider_free(providers[i]);
    free(providers);
}

int dq_exec_chain_load(const dq_config *cfg, const char *service, const char *environment,
                       dq_provider ***providers, size_t *n, char *err, size_t errlen)
{
    const cJSON *env, *arr, *defs;
    dq_provider **ps = NULL;
    size_t count = 0;
    char at[512];

    *providers = NULL;
    *n = 0;
    env = dq_config_env_view(cfg, service, environment);
    arr = dq_json_get(env, "providers");
    dq_config_where(cfg, arr ? arr : env, at, sizeof at);
    if (!arr) {
        snprintf(err, errlen, "%s%s/%s: no providers configured (services.%s.environments.%s.providers)",
                 at, service, environment, service, environment);
        return -1;
    }
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0) {
        snprintf(err, errlen, "%s%s/%s: providers must be a non-empty list", at, service, environment);
        goto fail;
    }
    defs = dq_config_view(cfg, "providers");
    ps = calloc((size_t)cJSON_GetArraySize(arr), sizeof *ps);
    if (!ps) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (const cJSON *item = arr->child; item; item = item->next) {
        const cJSON *conf = item;
        cJSON *copy = NULL;
        char why[512], def_at[512] = "", named[160] = "";

        if (cJSON_IsString(item)) {
            /* a name of a top-level providers: entry; its key is its default name */
            const cJSON *def = dq_json_get(defs, item->valuestring);
            if (!cJSON_IsObject(def)) {
                snprintf(err, errlen, "%s%s/%s: provider '%.64s' is not defined under providers:",
                         at, service, environment, item->valuestring);
                goto fail;
            }
            /* a mistake in the definition is said at its own line */
            dq_config_where(cfg, def, def_at, sizeof def_at);
            snprintf(named, sizeof named, " (providers.%.64s)", item->valuestring);
            copy = cJSON_Duplicate(def, 1);
            if (copy && !cJSON_GetObjectItemCaseSensitive(copy, "name"))
                cJSON_AddStringToObject(copy, "name", item->valuestring);
            conf = copy;
        } else if (!cJSON_IsObject(item)) {
            snprintf(err, errlen, "%s%s/%s: each provider is a mapping or a name", at, service,
                     environment);
            goto fail;
        }
        /* cost: is checked on the item as written, for its file:line (conf may be a copy) */
        {
            const cJSON *src = cJSON_IsString(item) ? dq_json_get(defs, item->valuestring) : item;
            const char *nm = cJSON_IsString(item) ? item->valuestring : dq_json_str(src, "name");
            char where[160];

            if (!nm)
                nm = dq_json_str(src, "type");
            snprintf(where, sizeof where, "%s/%s: provider %.64s", service, environment, nm ? nm : "?");
            if (dq_provider_cost_check(cfg, src, where, err, errlen) != 0) {
                cJSON_Delete(copy);
                goto fail;
            }
        }
        ps[count] = conf ? dq_provider_new(conf, why, sizeof why) : NULL;
        cJSON_Delete(copy);
        if (!ps[count]) {
            snprintf(err, errlen, "%s%s/%s: provider %zu%s: %s", def_at[0] ? def_at : at, service, environment,
                     count + 1, named, conf ? why : "out of memory");
            goto fail;
        }
        for (size_t j = 0; j < count; j++) {
            if (strcmp(dq_provider_name(ps[j]), dq_provider_name(ps[count])) == 0) {
                snprintf(err, errlen, "%s%s/%s: provider name '%s' used twice in the chain", at,
                         service, environment, dq_provider_name(ps[count]));
                count++;
                goto fail;
            }
        }
        count++;
    }
    *providers = ps;
    *n = count;
    return 0;
fail:
    dq_exec_chain_free(ps, count);
    return -1;
}

int dq_exec_settings_load(const dq_config *cfg, dq_exec_settings *s, char *err, size_t errlen)
{
    static const char *const known[] = {"lock_ttl", "lock_wait", "cancel_on_timeout", "cancel_wait",
                                        "orphan_scan", NULL};
    const cJSON *sec, *v;
    char num[32];

    s->lock_ttl_ms = 30000;
    s->lock_wait_ms = 60000;
    s->cancel_on_timeout = 1;
    s->cancel_wait_ms = 60000;
    s->orphan_scan_ms = 1000;
    sec = dq_config_view(cfg, "executor");
    if (!sec)
        return 0;
    if (dq_config_check_keys(cfg, sec, known, "executor", err, errlen) != 0)
        return -1;
    if (dq_config_duration_key(cfg, sec, "executor", "lock_ttl", 0, "30s", &s->lock_ttl_ms, err, errlen) < 0 ||
        dq_config_duration_key(cfg, sec, "executor", "lock_wait", 0, "30s", &s->lock_wait_ms, err, errlen) < 0 ||
        dq_config_duration_key(cfg, sec, "executor", "cancel_wait", 0, "30s", &s->cancel_wait_ms, err, errlen) < 0 ||
        dq_config_duration_key(cfg, sec, "executor", "orphan_scan", 0, "30s", &s->orphan_scan_ms, err, errlen) < 0)
        return -1;
    if (s->orphan_scan_ms != 0 && s->orphan_scan_ms < 100)
        return dq_config_fail(cfg, dq_json_get(sec, "orphan_scan"), err, errlen,
                              "executor.orphan_scan: at least 100ms, or 0 (never)");
    if (s->cancel_wait_ms <= 0)
        return dq_config_fail(cfg, dq_json_get(sec, "cancel_wait"), err, errlen,
                              "executor.cancel_wait: must be positive");
    if (s->lock_ttl_ms < 300)
        return dq_config_fail(cfg, dq_json_get(sec, "lock_ttl"), err, errlen, "executor.lock_ttl: at least 300ms");
    v = dq_json_get(sec, "cancel_on_timeout");
    if (v) {
        const char *t = dq_config_text(cfg, v, num, sizeof num);
        if (t && strcmp(t, "true") == 0) {
            s->cancel_on_timeout = 1;
        } else if (t && strcmp(t, "false") == 0) {
            s->cancel_on_timeout = 0;
        } else {
            return dq_config_fail(cfg, v, err, errlen, "executor.cancel_on_timeout: expected true or false");
        }
    }
    return 0;
}

/* ---- one run ---- */

typedef struct run {
    const dq_exec *x;
    const dq_provider_request *req;
    dq_provider *const *providers;
    size_t n;
    dq_runrecord *record; /* deployq:exec:<deployment_id> (runrecord.h) */
    int sink_failed;
    char sink_err[512];
    int attempt;         /* 1-based position in the chain of the provider being tried */
    int64_t started_at;  /* wall ms when the provider accepted */
    char unknown_key[256];      /* deployq:unknown:<service>:<environment> */
    cJSON *prev_unknown;        /* that marker left by an earlier deploy of the target, or NULL */
    cJSON *failed_over;         /* the providers of this run that failed, as provider.failed
                                   said ({provider, error_class, detail, http_status?}); NULL
                                   until one fails. deploy.started carries it (a failover). */
} run;

static int url_ok(const char *u)
{
    return u && (strncmp(u, "https://", 8) == 0 || strncmp(u, "http://", 7) == 0);
}

/* A new event of the run's deployment with the fence, data.direct and a deterministic id
 * from "<deployment_id>/<name>". */
static dq_event *run_event(const run *r, const char *type, const char *name)
{
    const dq_provider_request *q = r->req;
    dq_event *ev = dq_event_new(type, q->deployment_id, q->service, q->environment, q->version,
                                r->x->actor ? r->x->actor : "deployq");
    char idname[512];

    if (!ev)
        return NULL;
    ev->fence = r->x->fence;
    snprintf(idname, sizeof idname, "%s/%s", q->deployment_id, name);
    dq_event_set_id_from(ev, idname);
    if (r->x->direct) {
        cJSON_AddBoolToObject(ev->data, "direct", 1);
        if (r->x->direct_reason && r->x->direct_reason[0]) {
            char safe[512];
            dq_redact(r->x->direct_reason, safe, sizeof safe);
            cJSON_AddStringToObject(ev->data, "direct_reason", safe);
        }
    }
    return ev;
}

/* Deliver ev and free it. Returns 0 or -1 (remembered: the run stops). */
static int emit(run *r, dq_event *ev)
{
    int rc;

    if (!ev) {
        r->sink_failed = 1;
        snprintf(r->sink_err, sizeof r->sink_err, "out of memory building an event");
        return -1;
    }
    rc = r->x->sink(r->x->sink_ctx, ev, r->sink_err, sizeof r->sink_err);
    if (rc != 0)
        r->sink_failed = 1;
    else
        dq_info("deploy %s: %s (fence %lld)", ev->deployment_id ? ev->deployment_id : "?", ev->type,
                (long long)ev->fence);
    dq_event_free(ev);
    return rc;
}

static int run_continue(void *ctx)
{
    run *r = ctx;

    if (r->sink_failed)
        return 0;
    /* Redis was down when the provider accepted: record as soon as it is back, so that
     * another process taking the target over resumes instead of deploying again. */
    dq_runrecord_poll(r->record);
    return r->x->should_continue == NULL || r->x->should_continue(r->x->ctx);
}

static int run_cancel_requested(void *ctx, char *by, size_t bylen)
{
    run *r = ctx;

    return r->x->cancel_requested != NULL && r->x->cancel_requested(r->x->ctx, by, bylen);
}

static void emit_started(run *r, const char *provider, const char *provider_type, const char *id,
                         int attempt)
{
    char name[256];
    dq_event *ev;

    snprintf(name, sizeof name, "%s/%s/%d", DQ_EV_STARTED, provider, attempt);
    ev = run_event(r, DQ_EV_STARTED, name);
    if (ev) {
        cJSON_AddStringToObject(ev->data, "provider", provider);
        cJSON_AddStringToObject(ev->data, "provider_type", provider_type);
        cJSON_AddStringToObject(ev->data, "provider_deployment_id", id);
        cJSON_AddNumberToObject(ev->data, "attempt", attempt);
        /* The target may run something nobody knows of: say so where operators look. */
        if (r->prev_unknown)
            cJSON_AddItemToObject(ev->data, "previous_outcome_unknown", cJSON_Duplicate(r->prev_unknown, 1));
        /* A failover: who failed and why, where the one that took over is named, so that a
         * reader (a notification) needs no state of its own. A resumed run does not know
         * its earlier failures and leaves it out. */
        if (r->failed_over && cJSON_GetArraySize(r->failed_over) > 0)
            cJSON_AddItemToObject(ev->data, "failed_over_from", cJSON_Duplicate(r->failed_over, 1));
    }
    emit(r, ev);
}

static void on_started(void *ctx, const dq_provider *p, const char *provider_id)
{
    run *r = ctx;
    cJSON *o = cJSON_CreateObject();
    char *json = NULL;

    r->started_at = dq_now_ms();
    /* which provider of the chain accepted: the chain tries them in order */
    for (size_t i = 0; i < r->n; i++)
        if (r->providers[i] == p)
            r->attempt = (int)i + 1;
    if (o && cJSON_AddStringToObject(o, "provider", dq_provider_name(p)) &&
        cJSON_AddStringToObject(o, "provider_type", dq_provider_type(p)) &&
        cJSON_AddStringToObject(o, "provider_id", provider_id) &&
        cJSON_AddNumberToObject(o, "attempt", r->attempt) &&
        cJSON_AddNumberToObject(o, "started_at_ms", (double)r->started_at) &&
        cJSON_AddNumberToObject(o, "fence", (double)r->x->fence))
        json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    /* Recorded (and remembered in this process) before anything else, polling included:
     * from here a restart resumes. */
    if (dq_runrecord_start(r->record, json) != 0)
        dq_error("deploy %s: %s %s started but NOT recorded yet: retrying while polling; a crash of "
                 "this process before that could deploy twice",
                 r->req->deployment_id, dq_provider_name(p), provider_id);
    free(json);
    emit_started(r, dq_provider_name(p), dq_provider_type(p), provider_id, r->attempt);
}

static void on_provider_failed(void *ctx, const dq_provider *p, const dq_provider_error *e)
{
    run *r = ctx;
    char name[256];
    dq_event *ev;
    int attempt = 0;

    for (size_t i = 0; i < r->n; i++)
        if (r->providers[i] == p)
            attempt = (int)i + 1;
    if (r->started_at != 0 && attempt == r->attempt) {
        /* The provider had accepted, then ran nothing (chain: NOT_STARTED): its record
         * goes, so that a restart carries on from the next provider and never polls or
         * adopts this one again. The next provider's on_started replaces this in turn. */
        char json[128];
        snprintf(json, sizeof json, "{\"resume_from\":%d,\"fence\":%lld}", attempt + 1, (long long)r->x->fence);
        r->started_at = 0;
        /* Written or kept pending: either way the older started record is dropped, so it
         * never overwrites this one (runrecord.h). */
        dq_runrecord_start(r->record, json);
    }
    snprintf(name, sizeof name, "%s/%s/%d", DQ_EV_PROVIDER_FAILED, dq_provider_name(p), attempt);
    ev = run_event(r, DQ_EV_PROVIDER_FAILED, name);
    if (ev) {
        cJSON_AddStringToObject(ev->data, "provider", dq_provider_name(p));
        cJSON_AddStringToObject(ev->data, "provider_type", dq_provider_type(p));
        cJSON_AddStringToObject(ev->data, "error_class", e->error_class[0] ? e->error_class : "connect");
        cJSON_AddStringToObject(ev->data, "detail", e->detail);
        if (e->http_status >= 100 && e->http_status <= 599)
            cJSON_AddNumberToObject(ev->data, "http_status", (double)e->http_status);
        cJSON_AddNumberToObject(ev->data, "attempt", attempt);
    }
    if (ev && (r->failed_over || (r->failed_over = cJSON_CreateArray()))) {
        cJSON *f = cJSON_CreateObject();
        static const char *const keep[] = {"provider", "error_class", "detail", "http_status", NULL};

        for (int i = 0; f && keep[i]; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev->data, keep[i]);
            if (v)
                cJSON_AddItemToObject(f, keep[i], cJSON_Duplicate(v, 1));
        }
        if (f && cJSON_GetArraySize(r->failed_over) < 16)
            cJSON_AddItemToArray(r->failed_over, f);
        else
            cJSON_Delete(f);
    }
    emit(r, ev);
    if ((size_t)attempt < r->n) { /* the chain goes on to the next provider */
        const char *values[] = {r->req->service, r->req->environment, dq_provider_name(p),
                                e->error_class[0] ? e->error_class : "connect"};

        dq_metric_add(r->x->m_failovers, values, 1);
    }
}

/* data.cost of a terminal event (schemas/events/deploy.succeeded.json): amounts rounded
 * to a millionth, so a float's noise never reaches the log. */
static cJSON *cost_json(const dq_run_cost *c)
{
    cJSON *o = cJSON_CreateObject(), *rs;

    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "basis", dq_cost_basis_name(c->basis));
    if (c->basis == DQ_COST_UNKNOWN) {
        char safe[DQ_PROVIDER_DETAIL_LEN];
        dq_redact(c->detail, safe, sizeof safe);
        cJSON_AddStringToObject(o, "detail", safe);
        return o;
    }
    cJSON_AddNumberToObject(o, "amount", (double)(long long)(c->amount * 1e6 + 0.5) / 1e6);
    cJSON_AddNumberToObject(o, "minutes", (double)(long long)(c->minutes * 1e3 + 0.5) / 1e3);
    if (c->n_runners && (rs = cJSON_AddArrayToObject(o, "runners")))
        for (int i = 0; i < c->n_runners; i++) {
            cJSON *r = cJSON_CreateObject();
            if (!r)
                break;
            cJSON_AddStringToObject(r, "label", c->runners[i].label);
            cJSON_AddNumberToObject(r, "jobs", c->runners[i].jobs);
            cJSON_AddNumberToObject(r, "minutes", (double)(long long)(c->runners[i].minutes * 1e3 + 0.5) / 1e3);
            cJSON_AddNumberToObject(r, "amount", (double)(long long)(c->runners[i].amount * 1e6 + 0.5) / 1e6);
            cJSON_AddItemToArray(rs, r);
        }
    return o;
}

/* The terminal event of a chain result. */
static dq_event *terminal_event(run *r, const dq_chain_result *res, const char *failure,
                                const char *detail)
{
    int ok = res && res->outcome == DQ_CHAIN_SUCCEEDED;
    dq_event *ev = run_event(r, ok ? DQ_EV_SUCCEEDED : DQ_EV_FAILED, "terminal");

    if (!ev)
        return NULL;
    if (ok) {
        cJSON_AddStringToObject(ev->data, "provider", res->provider);
        cJSON_AddStringToObject(ev->data, "provider_type", res->provider_type);
        cJSON_AddStringToObject(ev->data, "provider_deployment_id", res->provider_id);
        if (url_ok(res->url))
            cJSON_AddStringToObject(ev->data, "url", res->url);
        if (url_ok(res->log_url))
            cJSON_AddStringToObject(ev->data, "log_url", res->log_url);
        cJSON_AddNumberToObject(ev->data, "duration_ms", (double)(res->duration_ms > 0 ? res->duration_ms : 0));
        /* What comes next, said by the one who knows the target's configuration: a health
         * watch (the environment has a `monitor:` mapping, what deployq-monitor watches)
         * or nothing. `submit --wait` and the fold conclude on this, never on their own
         * copy of the configuration. */
        if (r->x->cfg)
            cJSON_AddBoolToObject(ev->data, "watch", dq_config_env_watched(r->x->cfg, r->req->service,
                                                                            r->req->environment));
    } else {
        cJSON_AddStringToObject(ev->data, "reason", failure);
        if (res && res->provider[0])
            cJSON_AddStringToObject(ev->data, "provider", res->provider);
        if (res && res->provider_id[0])
            cJSON_AddStringToObject(ev->data, "provider_deployment_id", res->provider_id);
        if (res && res->provider_status[0])
            cJSON_AddStringToObject(ev->data, "provider_status", res->provider_status);
        if (res && url_ok(res->log_url))
            cJSON_AddStringToObject(ev->data, "log_url", res->log_url);
        if (res && res->error_class[0])
            cJSON_AddStringToObject(ev->data, "error_class", res->error_class);
        if (res && res->cancel[0])
            cJSON_AddStringToObject(ev->data, "cancel", res->cancel);
        if (res && res->outcome_unknown)
            cJSON_AddStringToObject(ev->data, "outcome", "unknown");
        if (res && res->cancelled_by[0])
            cJSON_AddStringToObject(ev->data, "cancelled_by", res->cancelled_by);
        cJSON_AddStringToObject(ev->data, "detail", detail ? detail : "");
        if (res)
            cJSON_AddNumberToObject(ev->data, "duration_ms",
                                    (double)(res->duration_ms > 0 ? res->duration_ms : 0));
    }
    if (res && res->cost.basis != DQ_COST_NONE)
        cJSON_AddItemToObject(ev->data, "cost", cost_json(&res->cost));
    if (res && res->output) {
        char safe[4096];
        dq_redact(res->output, safe, sizeof safe);
        cJSON_AddStringToObject(ev->data, "output", safe);
    }
    return ev;
}

static void fill_outcome(dq_exec_outcome *out, const dq_event *ev)
{
    const char *s;

    if (!out || !ev)
        return;
    dq_strlcpy(out->type, ev->type, sizeof out->type);
    s = dq_json_str(ev->data, "reason");
    dq_strlcpy(out->reason, s && strcmp(ev->type, DQ_EV_FAILED) == 0 ? s : "", sizeof out->reason);
    s = dq_json_str(ev->data, "provider");
    dq_strlcpy(out->provider, s ? s : "", sizeof out->provider);
    s = dq_json_str(ev->data, "provider_deployment_id");
    dq_strlcpy(out->provider_id, s ? s : "", sizeof out->provider_id);
    s = dq_json_str(ev->data, "detail");
    dq_strlcpy(out->detail, s ? s : "", sizeof out->detail);
}

/* The target's "outcome unknown" marker (execute.h): set by a deploy.failed whose outcome
 * is unknown, cleared by a deploy.succeeded (what runs is known again). Best effort: the
 * event itself is the record; the marker only lets the next deploy say so. */
/* What a terminal event does to the marker: 1 set, -1 clear, 0 nothing. */
static int unknown_effect(const dq_event *ev)
{
    const char *outcome = dq_json_str(ev->data, "outcome");

    if (strcmp(ev->type, DQ_EV_FAILED) == 0 && outcome && strcmp(outcome, "unknown") == 0)
        return 1;
    return strcmp(ev->type, DQ_EV_SUCCEEDED) == 0 ? -1 : 0;
}

static void unknown_note(run *r, int effect)
{
    redisReply *rep = NULL;

    if (!r->x->redis)
        return;
    if (effect > 0) {
        cJSON *o = cJSON_CreateObject();
        char *json = NULL;
        char at[DQ_TIME_LEN + 1];
        if (o && cJSON_AddStringToObject(o, "deployment_id", r->req->deployment_id) &&
            cJSON_AddStringToObject(o, "version", r->req->version ? r->req->version : "") &&
            cJSON_AddStringToObject(o, "at", dq_time_format(dq_now_ms(), at)))
            json = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (json) {
            const char *argv[] = {"SET", r->unknown_key, json};
            size_t argvlen[] = {3, strlen(r->unknown_key), strlen(json)};
            rep = dq_redis_commandv(r->x->redis, 3, argv, argvlen);
        }
        free(json);
    } else if (effect < 0) {
        const char *argv[] = {"DEL", r->unknown_key};
        size_t argvlen[] = {3, strlen(r->unknown_key)};
        rep = dq_redis_commandv(r->x->redis, 2, argv, argvlen);
    } else {
        return;
    }
    if (!rep || rep->type == REDIS_REPLY_ERROR)
        dq_warn("deploy %s: cannot update %s: %s", r->req->deployment_id, r->unknown_key,
                dq_redis_errstr(r->x->redis));
    if (rep)
        freeReplyObject(rep);
}

/* Read the target's "outcome unknown" marker into r->prev_unknown, unless it is this
 * deployment's own (a redelivery after it concluded). */
static void unknown_read(run *r)
{
    char *text = NULL;
    char why[256];

    if (!r->x->redis || dq_redis_get(r->x->redis, r->unknown_key, &text) != 0 || !text)
        return;
    cJSON *o = dq_json_parse(text, strlen(text), 4096, 4, NULL, why, sizeof why);
    free(text);
    const char *dep = dq_json_str(o, "deployment_id");
    if (!dep || strcmp(dep, r->req->deployment_id) == 0) {
        cJSON_Delete(o);
        return;
    }
    dq_warn("deploy %s: the previous deploy of %s/%s (%s, version %s) ended with an unknown outcome: it may be "
            "running; this deploy goes ahead and says so in deploy.started",
            r->req->deployment_id, r->req->service, r->req->environment, dep,
            dq_json_str(o, "version") ? dq_json_str(o, "version") : "?");
    r->prev_unknown = o;
}

/* Deliver the terminal event, then remember it. */
static dq_exec_status conclude(run *r, dq_event *ev, dq_exec_outcome *out, char *err,
                               size_t errlen)
{
    char *json;
    cJSON *rec;
    char *rec_json = NULL;

    if (!ev) {
        snprintf(err, errlen, "out of memory");
        return DQ_EXEC_STOPPED;
    }
    fill_outcome(out, ev);
    json = dq_event_encode(ev);
    int effect = unknown_effect(ev);
    const char *prov = dq_json_str(ev->data, "provider");
    char provider[64];
    int failed = strcmp(ev->type, DQ_EV_FAILED) == 0;

    dq_strlcpy(provider, prov && prov[0] ? prov : "none", sizeof provider);
    if (emit(r, ev) != 0) { /* ev is freed here */
        free(json);
        snprintf(err, errlen, "terminal event not delivered: %s", r->sink_err);
        return DQ_EXEC_STOPPED;
    }
    rec = cJSON_CreateObject();
    if (rec && json && cJSON_AddStringToObject(rec, "terminal", json))
        rec_json = cJSON_PrintUnformatted(rec);
    cJSON_Delete(rec);
    /* A lost terminal record costs a re-poll on redelivery, never a wrong outcome; the
     * memory of the started deployment goes only once Redis has the outcome. */
    dq_runrecord_finish(r->record, rec_json);
    free(rec_json);
    free(json);
    unknown_note(r, effect);
    {
        const char *values[] = {r->req->service, r->req->environment, provider,
                                failed ? "failed" : "succeeded"};

        dq_metric_add(r->x->m_deploys, values, 1);
    }
    return DQ_EXEC_DONE;
}

/* Before a provider is asked to deploy: the intent record ({"intent": true, fence,
 * resume_from?}), so that a later run that finds no started record can tell "nobody
 * asked a provider" from "a provider may have accepted while Redis was down". Not
 * written, nothing is asked. 0, or -1 with the reason in err. */
static int write_intent(run *r, int resume_from, char *err, size_t errlen)
{
    char json[160];

    if (resume_from > 1)
        snprintf(json, sizeof json, "{\"intent\":true,\"fence\":%lld,\"resume_from\":%d}", (long long)r->x->fence,
                 resume_from);
    else
        snprintf(json, sizeof json, "{\"intent\":true,\"fence\":%lld}", (long long)r->x->fence);
    if (dq_runrecord_write(r->record, json) != 0) {
        snprintf(err, errlen, "cannot record the intent to deploy (nothing asked of a provider): %s",
                 dq_runrecord_errstr(r->record));
        return -1;
    }
    return 0;
}

static const dq_runrecord_opts record_opts = {
    .prefix = DQ_RUNRECORD_KEY_EXEC,
    .noun = "deploy",
    .ttl_s = DQ_EXEC_RECORD_TTL_S,
    .tries = RECORD_WRITE_TRIES,
    .max_bytes = 1 << 20,
    .max_depth = 16,
};

dq_exec_status dq_execute(const dq_exec *x, const dq_provider_request *req_in, dq_exec_outcome *out,
                          char *err, size_t errlen)
{
    dq_provider_request req = *req_in;
    run r;
    cJSON *rec = NULL;
    dq_provider **providers = NULL;
    size_t n = 0;
    dq_chain_callbacks cb;
    dq_chain_result res;
    dq_exec_status st = DQ_EXEC_STOPPED;
    char why[1024];
    const char *terminal;

    memset(&r, 0, sizeof r);
    memset(&res, 0, sizeof res);
    if (out)
        memset(out, 0, sizeof *out);
    req.fence = x->fence;
    r.x = x;
    r.req = &req;
    snprintf(r.unknown_key, sizeof r.unknown_key, "deployq:unknown:%s:%s", req.service ? req.service : "",
             req.environment ? req.environment : "");

    r.record = dq_runrecord_new(x->redis, &record_opts, req.deployment_id);
    if (!r.record) {
        snprintf(err, errlen, "out of memory");
        return DQ_EXEC_ERROR;
    }
    if (dq_runrecord_read(r.record, &rec) != 0) {
        snprintf(err, errlen, "%s", dq_runrecord_errstr(r.record));
        dq_runrecord_free(r.record);
        return DQ_EXEC_ERROR;
    }
    if (dq_runrecord_is_intent(rec) && (int64_t)dq_json_num(rec, "fence", 0) != x->fence &&
        x->intent_wait_ms > 0) {
        /* An earlier run (another lock holder) asked a provider to deploy and left no
         * record of what it accepted: its process may hold it, unwritten while Redis was
         * down, and writes it when it can (dq_runrecord_flush). Deploying before that
         * would deploy twice. */
        int64_t until = dq_mono_ms() + x->intent_wait_ms;

        dq_warn("deploy %s: an earlier run (fence %lld) asked a provider to deploy and left no record of the "
                "outcome: waiting up to %lld ms for the record its process keeps",
                req.deployment_id, (long long)dq_json_num(rec, "fence", 0), (long long)x->intent_wait_ms);
        while (dq_runrecord_is_intent(rec) && dq_mono_ms() < until) {
            if (x->should_continue && !x->should_continue(x->ctx)) {
                cJSON_Delete(rec);
                dq_runrecord_free(r.record);
                snprintf(err, errlen, "stopped while waiting for an earlier run's record");
                return DQ_EXEC_STOPPED;
            }
            dq_sleep_ms(INTENT_POLL_MS);
            cJSON_Delete(rec);
            if (dq_runrecord_read(r.record, &rec) != 0) {
                snprintf(err, errlen, "%s", dq_runrecord_errstr(r.record));
                dq_runrecord_free(r.record);
                return DQ_EXEC_ERROR;
            }
        }
        if (dq_runrecord_is_intent(rec))
            dq_error("deploy %s: no record of the earlier run came within %lld ms: deploying (if its process "
                     "died after a provider accepted, this deploys a second time)",
                     req.deployment_id, (long long)x->intent_wait_ms);
        else
            dq_info("deploy %s: the earlier run's record came: going on from it", req.deployment_id);
    }
    terminal = dq_json_str(rec, "terminal");
    if (terminal) {
        /* concluded by an earlier run: the same event again (same id), nothing else */
        dq_event *ev = dq_event_decode(terminal, strlen(terminal), why, sizeof why);
        if (ev) {
            cJSON_Delete(rec);
            dq_runrecord_forget(r.record); /* Redis has the outcome */
            dq_runrecord_free(r.record);
            if (out)
                out->resumed = 1;
            fill_outcome(out, ev);
            if (emit(&r, ev) != 0) {
                snprintf(err, errlen, "terminal event not delivered: %s", r.sink_err);
                return DQ_EXEC_STOPPED;
            }
            return DQ_EXEC_DONE;
        }
        dq_warn("deploy %s: unreadable terminal record (%s); running again", req.deployment_id, why);
    }

    if ((x->chain_load ? x->chain_load(x->hook_ctx, &providers, &n, why, sizeof why) /* blue-green */
                       : dq_exec_chain_load(x->cfg, req.service, req.environment, &providers, &n, why,
                                            sizeof why)) != 0) {
        cJSON_Delete(rec);
        dq_error("deploy %s: %s", req.deployment_id, why);
        /* the terminal record replaces whatever was pending (runrecord.h) */
        st = conclude(&r, terminal_event(&r, NULL, "internal", why), out, err, errlen);
        dq_runrecord_free(r.record);
        return st;
    }
    r.providers = providers;
    r.n = n;
    unknown_read(&r);
    cb.ctx = &r;
    cb.on_started = on_started;
    cb.on_provider_failed = on_provider_failed;
    cb.should_continue = run_continue;
    cb.cancel_requested = run_cancel_requested;

    {
        const char *pname = dq_json_str(rec, "provider");
        const char *pid = dq_json_str(rec, "provider_id");
        int resume_from = (int)dq_json_num(rec, "resume_from", 0);
        if (!(pname && pid) && resume_from > 1) {
            /* An earlier run failed over from providers that accepted and ran nothing:
             * carry on from the next one, never back to them. */
            dq_info("deploy %s: resuming the chain at provider %d (the ones before ran nothing)", req.deployment_id,
                    resume_from);
            if (out)
                out->resumed = 1;
            cJSON_Delete(rec);
            rec = NULL;
            if (write_intent(&r, resume_from, err, errlen) != 0) {
                st = DQ_EXEC_ERROR;
                goto out;
            }
            dq_chain_resume_at(providers, n, (size_t)resume_from - 1, NULL, 0, &req, &cb, &x->chain, &res);
            goto outcome;
        }
        if (pname && pid) {
            dq_provider *p = NULL;
            size_t index = 0;
            int attempt = (int)dq_json_num(rec, "attempt", 1);
            int64_t started = (int64_t)dq_json_num(rec, "started_at_ms", (double)dq_now_ms());
            int64_t elapsed = dq_now_ms() - started;

            for (size_t i = 0; i < n; i++)
                if (strcmp(dq_provider_name(providers[i]), pname) == 0) {
                    p = providers[i];
                    index = i;
                }
            if (out)
                out->resumed = 1;
            if (!p) {
                snprintf(why, sizeof why, "deployment was started on provider %.64s (%.128s), which is no longer in the chain",
                         pname, pid);
                cJSON_Delete(rec);
                dq_exec_chain_free(providers, n);
                cJSON_Delete(r.prev_unknown);
                r.prev_unknown = NULL;
                st = conclude(&r, terminal_event(&r, NULL, "internal", why), out, err, errlen);
                dq_runrecord_free(r.record);
                return st;
            }
            dq_info("deploy %s: resuming %s %s (started %lld ms ago); no new deploy", req.deployment_id,
                    pname, pid, (long long)elapsed);
            r.attempt = attempt;
            r.started_at = started;
            /* the earlier run may have died before its deploy.started went out: same id */
            emit_started(&r, pname, dq_provider_type(p), pid, attempt);
            if (!r.sink_failed)
                dq_chain_resume_at(providers, n, index, pid, elapsed, &req, &cb, &x->chain, &res);
            else
                res.outcome = DQ_CHAIN_STOPPED;
            cJSON_Delete(rec);
            rec = NULL;
            goto outcome;
        }
    }
    cJSON_Delete(rec);
    rec = NULL;
    if (run_cancel_requested(&r, res.cancelled_by, sizeof res.cancelled_by)) {
        /* `deployq cancel` before it started: nothing ran, nothing to cancel at a provider */
        res.outcome = DQ_CHAIN_FAILED;
        dq_strlcpy(res.failure, "cancelled", sizeof res.failure);
        snprintf(res.reason, sizeof res.reason, "cancelled by %s before it started", res.cancelled_by);
        dq_info("deploy %s: %s", req.deployment_id, res.reason);
        goto outcome;
    }
    if (write_intent(&r, 0, err, errlen) != 0) {
        st = DQ_EXEC_ERROR;
        goto out;
    }
    dq_chain_run(providers, n, &req, &cb, &x->chain, &res);

outcome:
    switch (res.outcome) {
    case DQ_CHAIN_SUCCEEDED:
        /* blue-green: the idle color is probed and traffic moved before success is told */
        if (x->before_succeeded) {
            char reason[32] = "internal";
            int hook = x->before_succeeded(x->hook_ctx, &res, reason, sizeof reason, why, sizeof why);

            if (hook > 0 || r.sink_failed) {
                snprintf(err, errlen, "%s", r.sink_failed ? r.sink_err : "stopped");
                st = DQ_EXEC_STOPPED;
                break;
            }
            if (hook < 0) {
                res.outcome = DQ_CHAIN_FAILED; /* so terminal_event writes deploy.failed */
                st = conclude(&r, terminal_event(&r, &res, reason, why), out, err, errlen);
                break;
            }
        }
        st = conclude(&r, terminal_event(&r, &res, NULL, NULL), out, err, errlen);
        break;
    case DQ_CHAIN_FAILED:
    case DQ_CHAIN_TIMEOUT:
        st = conclude(&r,
                      terminal_event(&r, &res,
                                     res.failure[0] ? res.failure
                                                    : (res.outcome == DQ_CHAIN_TIMEOUT ? "timeout" : "internal"),
                                     res.reason),
                      out, err, errlen);
        break;
    case DQ_CHAIN_STOPPED:
    default:
        if (r.sink_failed)
            snprintf(err, errlen, "event not delivered: %s", r.sink_err);
        else
            snprintf(err, errlen, "%s", res.reason[0] ? res.reason : "stopped");
        st = DQ_EXEC_STOPPED;
        break;
    }
out:
    dq_chain_result_clear(&res);
    dq_exec_chain_free(providers, n);
    dq_runrecord_free(r.record);
    cJSON_Delete(r.prev_unknown);
    cJSON_Delete(r.failed_over);
    return st;
}
