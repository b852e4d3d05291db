/*
 * monitor.c - deployq-monitor's work (see monitor.h): reading the targets' monitor
 * settings, starting a watch session for each successful deploy or rollback, and the
 * ticker threads that probe due sessions and emit the verdicts.
 *
 * Event ids are derived from the session id (and the tick for health changes), so an
 * instance that takes over a session and repeats a tick, or a redelivered trigger,
 * produces the same events again rather than new ones.
 */
#include "monitor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "json.h"
#include "log.h"
#include "util.h"

#define SEND_TIMEOUT_MS 10000
#define KEEP_ENDED_MS (24LL * 3600 * 1000)
#define MAX_DUE 16

static const char *const top_keys[] = {
    "interval", "window", "failure_threshold", "max_error_rate", "error_rate_window",
    "workers", "lease", NULL,
};

/* "file:line: path" of a monitor mapping, the prefix of its messages. */
static char *where_of(const dq_config *cfg, const cJSON *node, const char *path, char *buf,
                      size_t len)
{
    char at[512];

    snprintf(buf, len, "%s%s", dq_config_where(cfg, node, at, sizeof at), path);
    return buf;
}

/* The top-level monitor: section: worker settings, and defaults for every target. */
static int load_top(dq_monitor *m, const cJSON **defaults, char *err, size_t errlen)
{
    const cJSON *it;
    char where[512];

    m->n_tickers = 4;
    *defaults = dq_config_view(m->cfg, "monitor");
    if (!*defaults || cJSON_IsNull(*defaults))
        return 0;
    where_of(m->cfg, *defaults, "monitor", where, sizeof where);
    if (!cJSON_IsObject(*defaults)) {
        snprintf(err, errlen, "%s: expected a mapping", where);
        return -1;
    }
    if (dq_config_check_keys(m->cfg, *defaults, top_keys, "monitor", err, errlen) != 0) {
        size_t n = strlen(err);

        /* the likely mistake: probes are per target */
        if (cJSON_GetObjectItemCaseSensitive(*defaults, "probes") && n < errlen)
            snprintf(err + n, errlen - n, "; probes belong to an environment "
                                          "(services.<name>.environments.<env>.monitor.probes)");
        return -1;
    }
    it = cJSON_GetObjectItemCaseSensitive(*defaults, "workers");
    if (it) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 1 || it->valuedouble > 64 ||
            it->valuedouble != (double)(int)it->valuedouble) {
            snprintf(err, errlen, "%s.workers: expected a whole number 1..64", where);
            return -1;
        }
        m->n_tickers = (int)it->valuedouble;
    }
    it = cJSON_GetObjectItemCaseSensitive(*defaults, "lease");
    if (it) {
        int64_t d = cJSON_IsString(it) ? dq_duration_parse(it->valuestring) : -1;
        if (d <= 0) {
            snprintf(err, errlen, "%s.lease: expected a duration (e.g. 5s)", where);
            return -1;
        }
        m->lease_ms = d;
    }
    return 0;
}

int dq_monitor_load(dq_monitor *m, const dq_config *cfg, char *err, size_t errlen)
{
    const cJSON *defaults = NULL;
    int64_t fixed_lease;
    int rc = -1;

    m->cfg = cfg;
    m->lease_ms = 0;
    if (load_top(m, &defaults, err, errlen) != 0)
        goto out;
    fixed_lease = m->lease_ms;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const dq_service *s = &cfg->services[i];
        for (size_t j = 0; j < s->n_envs; j++) {
            const cJSON *env = s->envs[j].view, *node;
            dq_monitor_target *t;
            char where[512], path[256];

            node = cJSON_IsObject(env) ? cJSON_GetObjectItemCaseSensitive(env, "monitor") : NULL;
            if (!node)
                continue;
            snprintf(path, sizeof path, "services.%s.environments.%s.monitor", s->name,
                     s->envs[j].name);
            where_of(cfg, node, path, where, sizeof where);
            t = realloc(m->targets, (m->n_targets + 1) * sizeof *t);
            if (!t) {
                snprintf(err, errlen, "monitor: out of memory");
                goto out;
            }
            m->targets = t;
            t = &m->targets[m->n_targets];
            memset(t, 0, sizeof *t);
            t->watch = dq_watch_config_from_json(node, cJSON_IsObject(defaults) ? defaults : NULL, where,
                                                 err, errlen);
            if (!t->watch)
                goto out;
            t->service = strdup(s->name);
            t->environment = strdup(s->envs[j].name);
            m->n_targets++;
            if (!t->service || !t->environment) {
                snprintf(err, errlen, "monitor: out of memory");
                goto out;
            }
            /* a lease covers one round of probes (they run at once, but one that gets no
             * thread runs after the others, so the sum) and the emit, and no more: a dead
             * holder delays the session by about this much */
            t->lease_ms = 2000;
            for (size_t k = 0; k < t->watch->n_probes; k++)
                t->lease_ms += t->watch->probes[k]->timeout_ms;
            if (fixed_lease > 0)
                t->lease_ms = fixed_lease;
            if (t->lease_ms > m->lease_ms)
                m->lease_ms = t->lease_ms;
        }
    }
    if (m->lease_ms <= 0)
        m->lease_ms = 5000;
    rc = 0;
out:
    return rc;
}

void dq_monitor_unload(dq_monitor *m)
{
    for (size_t i = 0; i < m->n_targets; i++) {
        free(m->targets[i].service);
        free(m->targets[i].environment);
        dq_watch_config_free(m->targets[i].watch);
    }
    free(m->targets);
    m->targets = NULL;
    m->n_targets = 0;
}

const dq_monitor_target *dq_monitor_target_find(const dq_monitor *m, const char *service,
                                                const char *environment)
{
    for (size_t i = 0; service && environment && i < m->n_targets; i++) {
        if (strcmp(m->targets[i].service, service) == 0 &&
            strcmp(m->targets[i].environment, environment) == 0)
            return &m->targets[i];
    }
    return NULL;
}

/* ---- emitting ---- */

static dq_event *event_for(const dq_monitor *m, const dq_watch_state *st, const char *type,
                           const char *id_name)
{
    dq_event *ev = dq_event_new(type, st->deployment_id, st->service, st->environment,
                                st->version, m->actor);
    if (!ev)
        return NULL;
    dq_event_set_id_from(ev, id_name);
    ev->fence = st->fence;
    cJSON_AddStringToObject(ev->data, "session_id", st->id);
    cJSON_AddStringToObject(ev->data, "trigger", st->trigger);
    return ev;
}

/* Send ev (and free it). 0 acknowledged, -1 not (the reason is logged). */
static int emit(const dq_monitor *m, dq_producer *p, dq_event *ev)
{
    char key[512], err[512];
    char *txt;
    int rc = -1;

    if (!ev)
        return -1;
    txt = dq_event_encode(ev);
    dq_target_key(ev->service ? ev->service : "", ev->environment ? ev->environment : "", key,
                  sizeof key);
    if (txt && dq_producer_send(p, m->cfg->topic_events, key, txt, strlen(txt), SEND_TIMEOUT_MS,
                                NULL, NULL, err, sizeof err) == 0)
        rc = 0;
    else
        dq_warn("could not emit %s for %s: %s", ev->type, key, txt ? err : "out of memory");
    free(txt);
    dq_event_free(ev);
    return rc;
}

static void add_time(cJSON *o, const char *name, int64_t ms)
{
    char t[DQ_TIME_LEN + 1];
    cJSON_AddStringToObject(o, name, dq_time_format(ms, t));
}

/* ---- the consumer half ---- */

dq_handle_result dq_monitor_handle(void *ctx, const dq_message *msg, char *err, size_t errlen)
{
    dq_monitor *m = ctx;
    dq_event *ev;
    const dq_monitor_target *t;
    dq_watch_state *st = NULL;
    dq_event *out;
    const char *version;
    char why[256], superseded[DQ_UUID_LEN + 1], name[128];
    int64_t now = dq_now_ms();
    int rc;
    dq_handle_result res = DQ_HANDLED;

    ev = dq_event_decode(msg->value, msg->len, why, sizeof why);
    if (!ev) {
        /* not ours to judge: the registry records bad events; skipping keeps the monitor
         * from dead-lettering what every other consumer of the topic sees too */
        dq_debug("skipping unreadable event at %s/%d/%lld: %s", msg->topic, (int)msg->partition,
                 (long long)msg->offset, why);
        return DQ_HANDLED;
    }
    if (strcmp(ev->type, DQ_EV_SUCCEEDED) != 0 && strcmp(ev->type, DQ_EV_ROLLBACK_SUCCEEDED) != 0)
        goto out;
    t = dq_monitor_target_find(m, ev->service, ev->environment);
    if (!t) {
        dq_info("%s/%s: %s of %s: no probes configured, not watched", ev->service ? ev->service : "?",
                ev->environment ? ev->environment : "?", ev->type, ev->version ? ev->version : "?");
        goto out;
    }
    /* A trigger read late (rebalances, a monitor down for a while, a new consumer group)
     * is still watched, its window starting now: skipping it would leave a bad version
     * running unjudged. Old history is kept from being watched again by the start script
     * instead: a newer trigger of the target, or this trigger's own session (running,
     * ended, or remembered as the target's newest), makes it a no-op. */
    if (ev->at_ms + t->watch->window_ms < now)
        dq_info("%s/%s: %s of %s at %lld is read %lld s late; its window starts now", t->service,
                t->environment, ev->type, ev->version ? ev->version : "?", (long long)ev->at_ms,
                (long long)((now - ev->at_ms) / 1000));
    version = ev->version;
    if (strcmp(ev->type, DQ_EV_ROLLBACK_SUCCEEDED) == 0 && dq_json_str(ev->data, "to_version"))
        version = dq_json_str(ev->data, "to_version"); /* watch what now runs */
    st = dq_watch_state_new(t->watch, ev->type, ev->id, ev->at_ms, ev->deployment_id, ev->service,
                            ev->environment, version, ev->fence, now);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        res = DQ_RETRY;
        goto out;
    }
    rc = dq_watch_store_start(m->redis, st, superseded, sizeof superseded, why, sizeof why);
    if (rc < 0) {
        dq_warn("%s/%s: cannot start a watch session: %s; retrying", t->service, t->environment, why);
        res = DQ_RETRY;
        goto out;
    }
    if (rc == DQ_WATCH_START_ENDED || rc == DQ_WATCH_START_STALE) {
        dq_info("%s/%s: %s of %s: %s", t->service, t->environment, ev->type,
                version ? version : "?",
                rc == DQ_WATCH_START_ENDED ? "its watch session already ended"
                                           : "a newer deploy is already watched");
        goto out;
    }
    if (superseded[0])
        dq_info("%s/%s: session %s ended: a newer deploy (%s) is watched now", t->service,
                t->environment, superseded, version ? version : "?");
    snprintf(name, sizeof name, "monitor.started:%s", st->id);
    out = event_for(m, st, DQ_EV_MONITOR_STARTED, name);
    if (out) {
        cJSON *probes = cJSON_AddArrayToObject(out->data, "probes");
        cJSON_AddNumberToObject(out->data, "window_ms", (double)t->watch->window_ms);
        cJSON_AddNumberToObject(out->data, "interval_ms", (double)t->watch->interval_ms);
        for (size_t i = 0; probes && i < t->watch->n_probes; i++)
            cJSON_AddItemToArray(probes, cJSON_CreateString(t->watch->probes[i]->name));
        cJSON_AddNumberToObject(out->data, "failure_threshold", t->watch->failure_threshold);
        cJSON_AddNumberToObject(out->data, "max_error_rate", t->watch->max_error_rate);
        cJSON_AddNumberToObject(out->data, "error_rate_window", t->watch->error_rate_window);
        add_time(out->data, "started_at", st->started_ms);
        add_time(out->data, "ends_at", st->ends_ms);
        if (superseded[0])
            cJSON_AddStringToObject(out->data, "supersedes_session", superseded);
    }
    if (emit(m, m->producer, out) != 0) {
        res = DQ_RETRY;
        goto out;
    }
    /* only now is it due, so no verdict can precede monitor.started on the topic */
    if (dq_watch_arm(m->redis, st->id, now, why, sizeof why) != 0) {
        dq_warn("%s/%s: cannot schedule session %s: %s; retrying", t->service, t->environment,
                st->id, why);
        res = DQ_RETRY;
        goto out;
    }
    m->n_started++;
    dq_info("%s/%s: watching %s for %lld s every %lld ms (session %s)", t->service, t->environment,
            version ? version : "?", (long long)(t->watch->window_ms / 1000),
            (long long)t->watch->interval_ms, st->id);
out:
    dq_watch_state_free(st);
    dq_event_free(ev);
    return res;
}

/* ---- the ticker half ---- */

static void health_event(dq_ticker *tk, const dq_monitor_target *t, const dq_watch_state *st,
                         const dq_watch_result *res, const dq_sample *samples, int *ok)
{
    const dq_probe *p = t->watch->probes[res->probe];
    const dq_sample *s = &samples[res->probe];
    char name[160];
    dq_event *ev;

    snprintf(name, sizeof name, "health.degraded:%s:%lld:%s", st->id, (long long)st->ticks,
             res->degraded ? "degraded" : "recovered");
    ev = event_for(tk->m, st, DQ_EV_HEALTH_DEGRADED, name);
    if (ev) {
        cJSON_AddStringToObject(ev->data, "state", res->degraded ? "degraded" : "recovered");
        cJSON_AddStringToObject(ev->data, "probe", p->name);
        cJSON_AddStringToObject(ev->data, "check", s->check);
        cJSON_AddItemToObject(ev->data, "observed", dq_sample_observed_json(s));
        cJSON_AddItemToObject(ev->data, "threshold",
                              dq_probe_threshold_json(p, strcmp(s->check, DQ_CHECK_OK) == 0
                                                             ? (p->max_latency_ms ? DQ_CHECK_LATENCY
                                                                                  : DQ_CHECK_STATUS)
                                                             : s->check));
        cJSON_AddStringToObject(ev->data, "detail", s->detail);
        if (res->degraded && st->first_failure_ms)
            add_time(ev->data, "first_failure_at", st->first_failure_ms);
    }
    dq_info("%s/%s %s: health %s: probe %s: %s", st->service, st->environment,
            st->version ? st->version : "?", res->degraded ? "degraded" : "recovered", p->name,
            s->detail);
    *ok = emit(tk->m, tk->producer, ev) == 0;
}

static int verdict_event(dq_ticker *tk, const dq_monitor_target *t, const dq_watch_state *st,
                         const dq_watch_result *res)
{
    char name[160];
    dq_event *ev;

    if (res->verdict == DQ_VERDICT_VERIFIED) {
        snprintf(name, sizeof name, "deploy.verified:%s", st->id);
        ev = event_for(tk->m, st, DQ_EV_VERIFIED, name);
        if (ev) {
            cJSON *probes = cJSON_AddArrayToObject(ev->data, "probes");
            cJSON_AddNumberToObject(ev->data, "window_ms", (double)st->window_ms);
            cJSON_AddNumberToObject(ev->data, "samples", (double)st->n_samples);
            cJSON_AddNumberToObject(ev->data, "interval_ms", (double)st->interval_ms);
            for (size_t i = 0; probes && i < t->watch->n_probes; i++)
                cJSON_AddItemToArray(probes, cJSON_CreateString(t->watch->probes[i]->name));
            add_time(ev->data, "started_at", st->started_ms);
            add_time(ev->data, "ends_at", st->ends_ms);
            cJSON_AddStringToObject(ev->data, "reason", res->reason);
        }
        dq_info("%s/%s %s: verified: %s", st->service, st->environment,
                st->version ? st->version : "?", res->reason);
    } else {
        snprintf(name, sizeof name, "rollback.requested:%s", st->id);
        ev = event_for(tk->m, st, DQ_EV_ROLLBACK_REQUESTED, name);
        if (ev) {
            char reason[600];
            snprintf(reason, sizeof reason, "health check failed: %s", res->reason);
            cJSON_AddStringToObject(ev->data, "reason", reason);
            cJSON_AddStringToObject(ev->data, "requested_by", "deployq-monitor");
            if (st->version)
                cJSON_AddStringToObject(ev->data, "from_version", st->version);
            cJSON_AddItemToObject(ev->data, "evidence", dq_watch_evidence(t->watch, st, res));
        }
        dq_warn("%s/%s %s: requesting a rollback: %s", st->service, st->environment,
                st->version ? st->version : "?", res->reason);
    }
    return emit(tk->m, tk->producer, ev);
}

/* One tick of a claimed session. The state in Redis changes only at the end (commit), so
 * a tick that dies half-way is simply done again by whoever claims the session next. */
static void tick(dq_ticker *tk, const dq_monitor_target *t, dq_watch_state *st)
{
    const dq_watch_config *w = t->watch;
    dq_sample *samples = NULL;
    dq_watch_result res;
    dq_watch_action action = dq_watch_plan(w, st, dq_now_ms());
    int ok = 1, rc;

    if (action == DQ_WATCH_PROBE) {
        samples = calloc(w->n_probes, sizeof *samples);
        if (!samples)
            goto abandon;
        /* at once, each bounded by the interval: the round fits before the next is due;
         * a Sentry probe asks about this version's errors since the window started */
        dq_probe_target target = {st->version, st->environment, st->started_ms};

        dq_probe_run_all(w->probes, w->n_probes, &target, samples);
        for (size_t i = 0; i < w->n_probes; i++) {
            const char *values[] = {st->service, st->environment, w->probes[i]->name,
                                    dq_sample_outcome_name(samples[i].outcome)};

            dq_metric_add(tk->m->m_probe_results, values, 1);
            dq_debug("%s/%s %s: probe %s: %s: %s", st->service, st->environment,
                     st->version ? st->version : "?", w->probes[i]->name,
                     dq_sample_outcome_name(samples[i].outcome), samples[i].detail);
        }
        if (dq_watch_apply(w, st, samples, dq_now_ms(), &res) != 0)
            goto abandon;
        if (res.health_changed && res.probe >= 0) {
            health_event(tk, t, st, &res, samples, &ok);
            if (!ok)
                goto abandon;
        }
    } else {
        dq_watch_close(w, st, action, dq_now_ms(), &res);
    }
    tk->n_ticks++;
    if (res.verdict != DQ_VERDICT_NONE) {
        /* a verdict is final: make sure no other instance took the session meanwhile
         * (our lease lapsed) and that a newer deploy did not end it */
        if (dq_watch_still_mine(tk->redis, st->id, tk->token, t->lease_ms) != 1) {
            dq_info("session %s: no longer ours or ended; verdict dropped", st->id);
            goto abandon;
        }
        if (verdict_event(tk, t, st, &res) != 0)
            goto abandon;
        {
            const char *values[] = {st->service, st->environment,
                                    res.verdict == DQ_VERDICT_VERIFIED ? "verified" : "degraded"};

            dq_metric_add(tk->m->m_watch_verdicts, values, 1);
        }
        rc = dq_watch_commit(tk->redis, st, tk->token,
                             res.verdict == DQ_VERDICT_VERIFIED ? "verified" : "rollback_requested",
                             KEEP_ENDED_MS);
    } else {
        rc = dq_watch_commit(tk->redis, st, tk->token, NULL, 0);
    }
    if (rc < 0)
        dq_warn("session %s: could not save it: %s (the next claim repeats this tick)", st->id,
                dq_redis_errstr(tk->redis));
    free(samples);
    return;
abandon:
    dq_watch_release(tk->redis, st->id, tk->token);
    free(samples);
}

void *dq_monitor_ticker_run(void *arg)
{
    dq_ticker *tk = arg;
    dq_monitor *m = tk->m;
    char ids[MAX_DUE][DQ_UUID_LEN + 1];
    int warned_redis = 0;

    while (!*m->stop) {
        int64_t now = dq_now_ms(), next = -1, wait;
        int n = dq_watch_due(tk->redis, now, ids, MAX_DUE, &next), worked = 0;

        if (n < 0) {
            if (!warned_redis++)
                dq_warn("ticker %d: redis: %s; retrying", tk->index, dq_redis_errstr(tk->redis));
            dq_sleep_ms(500);
            continue;
        }
        warned_redis = 0;
        for (int i = 0; i < n && !*m->stop; i++) {
            int error = 0;
            dq_watch_state *st = dq_watch_claim(tk->redis, ids[i], tk->token, dq_now_ms(),
                                                m->lease_ms, &error);
            const dq_monitor_target *t;

            if (!st)
                continue;
            t = dq_monitor_target_find(m, st->service, st->environment);
            if (!t) {
                /* another instance with this target in its configuration can take it */
                dq_warn("session %s: %s/%s has no probes in this instance's configuration",
                        st->id, st->service ? st->service : "?",
                        st->environment ? st->environment : "?");
                dq_watch_release(tk->redis, st->id, tk->token);
                dq_watch_state_free(st);
                continue;
            }
            tick(tk, t, st);
            dq_watch_state_free(st);
            worked = 1;
        }
        if (worked)
            continue;
        /* sleep until the next session is due, but wake often enough to see new ones
         * and the stop flag */
        wait = next < 0 ? 100 : next - dq_now_ms();
        if (wait > 100)
            wait = 100;
        if (wait < 20)
            wait = 20; /* a session held by another instance: do not spin on Redis */
        dq_sleep_ms(wait);
    }
    return NULL;
}
