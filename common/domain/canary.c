/*
 * canary.c - canary releases (see canary.h): the `canary:` section, and the rollout that
 * walks its steps on a blue-green target's weighted router, sampling both colors and
 * judging them (analysis.h), with the events that say so.
 *
 * Time goes by the wall clock in ms (dq_now_ms): every moment an event reports is one the
 * reader can line up with the other workers' events. Waits are cut into pieces of at most
 * 100 ms so a shutdown or a cancel is seen within a round.
 */
#include "canary.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "probe.h"
#include "util.h"

#define RESTORE_RETRY_MS 500 /* how often a router that did not answer is asked again */
#define WAIT_SLICE_MS 100

/* ---- configuration ---- */

static const cJSON *env_key(const dq_config *cfg, const char *service, const char *environment,
                            const char *key)
{
    const cJSON *env = dq_config_env_view(cfg, service, environment);

    return cJSON_IsObject(env) ? cJSON_GetObjectItemCaseSensitive(env, key) : NULL;
}

int dq_canary_configured(const dq_config *cfg, const char *service, const char *environment)
{
    return env_key(cfg, service, environment, "canary") != NULL;
}

int dq_canary_applies(const dq_config *cfg, const char *service, const char *environment,
                      const char *request_strategy)
{
    char num[32];
    const char *s = dq_config_text(cfg, env_key(cfg, service, environment, "strategy"), num, sizeof num);

    if (request_strategy && strcmp(request_strategy, "canary") == 0)
        return 1;
    return s && strcmp(s, "canary") == 0 &&
           !(request_strategy && strcmp(request_strategy, "blue-green") == 0);
}

/* A share: "1%" / "0.5%" (percent) or a number 0..1 (fraction). 0, -1 when neither. */
static int share_of(const dq_config *cfg, const cJSON *v, double *out)
{
    char num[32], *end;
    const char *t = dq_config_text(cfg, v, num, sizeof num);
    double d;

    if (!t || !*t)
        return -1;
    d = strtod(t, &end);
    if (end == t)
        return -1;
    if (*end == '%' && end[1] == '\0')
        d /= 100.0;
    else if (*end != '\0' || !cJSON_IsNumber(v))
        return -1;
    if (!(d >= 0.0 && d <= 1.0))
        return -1;
    *out = d;
    return 0;
}

static int share_key(const dq_config *cfg, const cJSON *sec, const char *where, const char *key,
                     double *out, char *err, size_t errlen)
{
    const cJSON *v = dq_json_get(sec, key);

    if (!v)
        return 0;
    if (share_of(cfg, v, out) != 0)
        return dq_config_fail(cfg, v, err, errlen, "%s.%s: expected a percentage such as 1%% (or a fraction 0 to 1)",
                              where, key);
    return 0;
}

/* A whole number lo..hi written as a number. */
static int int_of(const cJSON *v, int lo, int hi, int *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(long long)v->valuedouble || v->valuedouble < lo ||
        v->valuedouble > hi)
        return -1;
    *out = (int)v->valuedouble;
    return 0;
}

static int load_analysis(const dq_config *cfg, const cJSON *a, const char *where, dq_canary *c,
                         char *err, size_t errlen)
{
    static const char *const known[] = {"duration", "interval", "min_samples", "error_tolerance",
                                        "max_error_rate", "latency", NULL};
    static const char *const lat_known[] = {"alpha", "tolerance", "min_delta", NULL};
    const cJSON *v, *lat;
    char w[600];
    int n;

    if (!a)
        return 0;
    if (!cJSON_IsObject(a))
        return dq_config_fail(cfg, a, err, errlen, "%s: expected a mapping", where);
    if (dq_config_check_keys(cfg, a, known, where, err, errlen) != 0 ||
        dq_config_duration_key(cfg, a, where, "duration", 1, "30s", &c->duration_ms, err, errlen) != 0 ||
        dq_config_duration_key(cfg, a, where, "interval", 10, "500ms", &c->interval_ms, err, errlen) != 0 ||
        share_key(cfg, a, where, "error_tolerance", &c->criteria.error_tolerance, err, errlen) != 0 ||
        share_key(cfg, a, where, "max_error_rate", &c->criteria.max_error_rate, err, errlen) != 0)
        return -1;
    if ((v = dq_json_get(a, "min_samples"))) {
        if (int_of(v, 8, 100000, &n) != 0)
            return dq_config_fail(cfg, v, err, errlen, "%s.min_samples: expected a whole number 8 to 100000", where);
        c->criteria.min_samples = (size_t)n;
    }
    if (!(lat = dq_json_get(a, "latency")))
        return 0;
    snprintf(w, sizeof w, "%s.latency", where);
    if (!cJSON_IsObject(lat))
        return dq_config_fail(cfg, lat, err, errlen, "%s: expected a mapping {alpha, tolerance, min_delta}", w);
    if (dq_config_check_keys(cfg, lat, lat_known, w, err, errlen) != 0)
        return -1;
    if ((v = dq_json_get(lat, "alpha"))) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0.0 && v->valuedouble < 0.5))
            return dq_config_fail(cfg, v, err, errlen, "%s.alpha: expected a number above 0 and below 0.5", w);
        c->criteria.alpha = v->valuedouble;
    }
    if ((v = dq_json_get(lat, "tolerance"))) {
        char num[32], *end;
        const char *t = dq_config_text(cfg, v, num, sizeof num);
        double d = t ? strtod(t, &end) : -1.0;

        /* relative, and may exceed 100%: "the canary may be twice as slow" is 100% */
        if (!t || end == t || !(d >= 0.0) || (*end == '%' ? end[1] != '\0' : (*end != '\0' || !cJSON_IsNumber(v))))
            return dq_config_fail(cfg, v, err, errlen, "%s.tolerance: expected a percentage such as 10%%", w);
        c->criteria.latency_tolerance = *end == '%' ? d / 100.0 : d;
    }
    {
        int64_t ms;

        if (dq_config_duration_key(cfg, lat, w, "min_delta", 0, "5ms", &ms, err, errlen) != 0)
            return -1;
        if (dq_json_get(lat, "min_delta"))
            c->criteria.latency_min_delta_ms = (double)ms;
    }
    return 0;
}

static int load_step(const dq_config *cfg, const cJSON *item, const char *where, size_t i,
                     dq_canary_step *s, char *err, size_t errlen)
{
    static const char *const known[] = {"weight", "analysis", "pause", NULL};
    const cJSON *wv = cJSON_IsObject(item) ? dq_json_get(item, "weight") : item;
    char w[600];

    snprintf(w, sizeof w, "%s.steps[%zu]", where, i);
    if (!cJSON_IsObject(item) && !cJSON_IsNumber(item))
        return dq_config_fail(cfg, item, err, errlen,
                              "%s: expected a weight (5) or a mapping {weight: 5, analysis: 10s | pause: 10s}", w);
    if (cJSON_IsObject(item) && dq_config_check_keys(cfg, item, known, w, err, errlen) != 0)
        return -1;
    if (int_of(wv, 1, 100, &s->weight) != 0)
        return dq_config_fail(cfg, wv ? wv : item, err, errlen, "%s%s: expected a whole number 1 to 100 (the canary's %% of traffic)",
                              w, cJSON_IsObject(item) ? ".weight" : "");
    s->pause = 0;
    s->hold_ms = -1; /* the default duration, filled in once analysis: is read */
    if (!cJSON_IsObject(item))
        return 0;
    if (dq_json_get(item, "analysis") && dq_json_get(item, "pause"))
        return dq_config_fail(cfg, dq_json_get(item, "pause"), err, errlen,
                              "%s: analysis or pause, not both", w);
    if (dq_json_get(item, "pause")) {
        s->pause = 1;
        return dq_config_duration_key(cfg, item, w, "pause", 0, "10s", &s->hold_ms, err, errlen);
    }
    return dq_config_duration_key(cfg, item, w, "analysis", 1, "10s", &s->hold_ms, err, errlen);
}

int dq_canary_load(const dq_config *cfg, const char *service, const char *environment,
                   dq_canary *c, char *err, size_t errlen)
{
    static const char *const known[] = {"steps", "max_step_time", "analysis", NULL};
    const cJSON *sec = env_key(cfg, service, environment, "canary"), *steps, *item;
    dq_bluegreen *bg;
    char where[512], at[512];
    size_t i = 0;

    memset(c, 0, sizeof *c);
    c->max_step_time_ms = 5 * 60 * 1000;
    c->duration_ms = 30000;
    c->interval_ms = 500;
    dq_analysis_defaults(&c->criteria);
    snprintf(where, sizeof where, "services.%s.environments.%s.canary", service, environment);
    if (!sec) {
        snprintf(err, errlen, "%s%s: required for strategy canary",
                 dq_config_where(cfg, dq_config_env_view(cfg, service, environment), at, sizeof at), where);
        return -1;
    }
    if (!cJSON_IsObject(sec))
        return dq_config_fail(cfg, sec, err, errlen, "%s: expected a mapping with steps", where);
    if (dq_config_check_keys(cfg, sec, known, where, err, errlen) != 0 ||
        dq_config_duration_key(cfg, sec, where, "max_step_time", 1, "5m", &c->max_step_time_ms, err, errlen) != 0)
        return -1;
    {
        char w[600];

        snprintf(w, sizeof w, "%s.analysis", where);
        if (load_analysis(cfg, dq_json_get(sec, "analysis"), w, c, err, errlen) != 0)
            return -1;
    }
    steps = dq_json_get(sec, "steps");
    if (!cJSON_IsArray(steps) || cJSON_GetArraySize(steps) == 0 || cJSON_GetArraySize(steps) > DQ_CANARY_MAX_STEPS)
        return dq_config_fail(cfg, steps ? steps : sec, err, errlen,
                              "%s.steps: required, a list of 1 to %d steps ending with 100", where, DQ_CANARY_MAX_STEPS);
    cJSON_ArrayForEach(item, steps)
    {
        dq_canary_step *s = &c->steps[i];

        if (load_step(cfg, item, where, i, s, err, errlen) != 0)
            return -1;
        if (s->hold_ms < 0)
            s->hold_ms = c->duration_ms;
        if (i > 0 && s->weight <= c->steps[i - 1].weight)
            return dq_config_fail(cfg, cJSON_IsObject(item) ? dq_json_get(item, "weight") : item, err, errlen,
                                  "%s.steps[%zu]: weight %d after %d: the weights must increase", where, i,
                                  s->weight, c->steps[i - 1].weight);
        if (s->hold_ms > c->max_step_time_ms)
            return dq_config_fail(cfg, item, err, errlen, "%s.steps[%zu]: holds %lld ms, longer than max_step_time (%lld ms)",
                                  where, i, (long long)s->hold_ms, (long long)c->max_step_time_ms);
        i++;
    }
    c->n_steps = i;
    if (c->steps[i - 1].weight != 100)
        return dq_config_fail(cfg, cJSON_GetArrayItem(steps, (int)i - 1), err, errlen,
                              "%s.steps: the last step must be 100 (the canary takes all traffic)", where);
    /* the colors, their probe and a router that takes weights */
    bg = dq_bg_load(cfg, service, environment, err, errlen);
    if (!bg)
        return -1;
    if (!dq_bg_router_weighted(bg)) {
        dq_bg_free(bg);
        return dq_config_fail(cfg, sec, err, errlen,
                              "%s: needs a router that takes weights (blue_green.router type haproxy, or weights "
                              "for an http or command router)",
                              where);
    }
    dq_bg_free(bg);
    return 0;
}

/* ---- the rollout ---- */

typedef struct series {
    double *ms;
    size_t n, cap, errors;
} series;

typedef struct rollout {
    const dq_canary_rollout *ro;
    const dq_canary *c;
    dq_canary_outcome *out;
    dq_probe *probes[2]; /* [0] canary, [1] stable */
    series canary, stable;
    int64_t t0;
    const char *stable_color; /* never NULL */
    int first;                /* no color was live */
    int failed_step;          /* the step (1-based) whose failing verdict is kept in failed */
    dq_analysis_verdict failed; /* told (canary.analysis) once traffic is back on the stable */
} rollout;

static int series_add(series *s, double ms, int error)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        double *p = realloc(s->ms, cap * sizeof *p);

        if (!p)
            return -1;
        s->ms = p;
        s->cap = cap;
    }
    s->ms[s->n++] = ms;
    s->errors += error ? 1 : 0;
    return 0;
}

static void series_reset(series *s)
{
    s->n = 0;
    s->errors = 0;
}

static int keep_going(const rollout *r)
{
    return !r->ro->should_continue || r->ro->should_continue(r->ro->ctx);
}

/* The weights that give the canary w percent. */
static void weights_for(const rollout *r, int w, int out[2])
{
    int ci = strcmp(r->ro->canary_color, "green") == 0;

    out[ci] = w;
    out[!ci] = 100 - w;
}

/* A new event of the rollout, its id from the deployment, type, step and fence: a repeat
 * of the same run is a duplicate, a resumed run (new fence) is not. */
static dq_event *new_event(const rollout *r, const char *type, int step)
{
    const dq_canary_rollout *ro = r->ro;
    dq_event *ev = dq_event_new(type, ro->deployment_id, ro->service, ro->environment, ro->canary_version,
                                ro->actor);
    char seed[256];

    if (!ev)
        return NULL;
    snprintf(seed, sizeof seed, "%s:%s:%d:%lld", ro->deployment_id, type, step, (long long)ro->fence);
    dq_event_set_id_from(ev, seed);
    ev->fence = ro->fence;
    return ev;
}

/* Deliver ev (freed). 0, -1 with out->detail set. */
static int send_event(rollout *r, dq_event *ev)
{
    char err[512] = "";
    int rc;

    if (!ev) {
        snprintf(r->out->detail, sizeof r->out->detail, "out of memory");
        return -1;
    }
    rc = r->ro->sink(r->ro->sink_ctx, ev, err, sizeof err);
    if (rc != 0)
        snprintf(r->out->detail, sizeof r->out->detail, "%s not delivered: %s", ev->type, err);
    dq_event_free(ev);
    return rc;
}

static int emit_step(rollout *r, int step, int steps, const dq_canary_step *s)
{
    const dq_canary_rollout *ro = r->ro;
    dq_event *ev = new_event(r, DQ_EV_CANARY_STEP, step);

    if (ev) {
        cJSON_AddNumberToObject(ev->data, "step", step);
        cJSON_AddNumberToObject(ev->data, "steps", steps);
        cJSON_AddNumberToObject(ev->data, "weight", s->weight);
        cJSON_AddStringToObject(ev->data, "canary_color", ro->canary_color);
        cJSON_AddStringToObject(ev->data, "stable_color", r->stable_color);
        cJSON_AddStringToObject(ev->data, "canary_version", ro->canary_version);
        if (ro->stable_version && ro->stable_version[0])
            cJSON_AddStringToObject(ev->data, "stable_version", ro->stable_version);
        cJSON_AddStringToObject(ev->data, "router", dq_bg_router_name(ro->bg));
        cJSON_AddStringToObject(ev->data, "kind", s->pause ? "pause" : "analysis");
        cJSON_AddNumberToObject(ev->data, "hold_ms", (double)s->hold_ms);
    }
    return send_event(r, ev);
}

static int emit_analysis(rollout *r, int step, const dq_analysis_verdict *v)
{
    dq_event *ev = new_event(r, DQ_EV_CANARY_ANALYSIS, step);
    cJSON *vj = dq_analysis_verdict_json(v, &r->c->criteria);

    if (ev && vj) {
        cJSON *it;

        cJSON_AddNumberToObject(ev->data, "step", step);
        cJSON_AddNumberToObject(ev->data, "steps", (double)r->c->n_steps);
        cJSON_AddNumberToObject(ev->data, "weight", r->c->steps[step - 1].weight);
        cJSON_AddBoolToObject(ev->data, "passed", v->result == DQ_ANALYSIS_PASS);
        while ((it = vj->child) != NULL)
            cJSON_AddItemToObject(ev->data, it->string, cJSON_DetachItemViaPointer(vj, it));
        dq_json_add_time(ev->data, "first_bad_at", r->out->first_bad_ms);
    } else if (!vj) {
        dq_event_free(ev);
        ev = NULL;
    }
    cJSON_Delete(vj);
    return send_event(r, ev);
}

/* Set the weights giving the canary w and read them back. 0, -1 with err. */
static int set_canary(const rollout *r, int w, char *err, size_t errlen)
{
    int ws[2];

    weights_for(r, w, ws);
    return dq_bg_set_weights(r->ro->bg, ws, r->ro->fence, err, errlen);
}

/* The router still says what it was told: 0, -1 with err. */
static int router_holds(const rollout *r, int w, char *err, size_t errlen)
{
    int ws[2], want[2];

    if (dq_bg_read_weights(r->ro->bg, ws, err, errlen) != 0)
        return -1;
    weights_for(r, w, want);
    if (ws[0] != want[0] || ws[1] != want[1]) {
        snprintf(err, errlen, "router %s says blue=%d green=%d, not blue=%d green=%d as it was told",
                 dq_bg_router_name(r->ro->bg), ws[0], ws[1], want[0], want[1]);
        return -1;
    }
    return 0;
}

/* Sleep until at_ms, in slices; 0 at the time, 1 stopped by should_continue. */
static int wait_until(const rollout *r, int64_t at_ms)
{
    for (int64_t now = dq_now_ms(); now < at_ms; now = dq_now_ms()) {
        if (!keep_going(r))
            return 1;
        dq_sleep_ms(at_ms - now < WAIT_SLICE_MS ? at_ms - now : WAIT_SLICE_MS);
    }
    return keep_going(r) ? 0 : 1;
}

/* One round: a probe of each color, at once. 0, -1 out of memory. */
static int sample_round(rollout *r)
{
    dq_sample s[2];
    int bad;

    dq_probe_run_all(r->probes, 2, NULL, s);
    bad = s[0].outcome != DQ_SAMPLE_PASS;
    if (bad && r->out->first_bad_ms == 0) {
        r->out->first_bad_ms = s[0].at_ms;
        dq_info("canary %s: first failed canary sample of step %d: %s", r->ro->deployment_id, r->out->step,
                s[0].detail);
    }
    /* no answer: latency -1, a sample but no latency (analysis.h) */
    if (series_add(&r->canary, (double)s[0].latency_ms, bad) != 0 ||
        series_add(&r->stable, (double)s[1].latency_ms, s[1].outcome != DQ_SAMPLE_PASS) != 0)
        return -1;
    return 0;
}

/* A pause step's absolute check: the canary's failed probes so far, over at least
 * min_samples, above max_error_rate. 1 with detail when it fails. */
static int pause_fails(const rollout *r, char *detail, size_t len)
{
    const dq_analysis_criteria *k = &r->c->criteria;
    size_t base = r->canary.n > k->min_samples ? r->canary.n : k->min_samples;

    if (k->max_error_rate < 0 || r->canary.errors == 0 || (double)r->canary.errors / (double)base <= k->max_error_rate)
        return 0;
    snprintf(detail, len, "probe: canary %zu/%zu probes failed (%.1f%% of at least %zu) > max_error_rate %.1f%%",
             r->canary.errors, r->canary.n, 100.0 * (double)r->canary.errors / (double)base, k->min_samples,
             100.0 * k->max_error_rate);
    return 1;
}

typedef enum { STEP_PASSED, STEP_FAILED, STEP_STOPPED } step_result;

static step_result fail_step(rollout *r, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static step_result fail_step(rollout *r, const char *reason, const char *fmt, ...)
{
    va_list ap;

    dq_strlcpy(r->out->reason, reason, sizeof r->out->reason);
    va_start(ap, fmt);
    vsnprintf(r->out->detail, sizeof r->out->detail, fmt, ap);
    va_end(ap);
    return STEP_FAILED;
}

/* Hold step i (0-based) at its weight, sampling; judged as canary.h says. */
static step_result hold_step(rollout *r, size_t i)
{
    const dq_canary_step *s = &r->c->steps[i];
    int64_t start = dq_now_ms(), next = start;
    dq_analysis_verdict v;
    char err[512], by[128];

    memset(&v, 0, sizeof v);
    series_reset(&r->canary);
    series_reset(&r->stable);
    r->out->first_bad_ms = 0;
    for (;;) {
        int64_t now;

        if (wait_until(r, next) != 0) {
            snprintf(r->out->detail, sizeof r->out->detail, "stopped");
            return STEP_STOPPED;
        }
        if (r->ro->cancel_requested && r->ro->cancel_requested(r->ro->ctx, by, sizeof by))
            return fail_step(r, "cancelled", "cancelled by %s at step %zu (%d%%)", by, i + 1, s->weight);
        next = dq_now_ms() + r->c->interval_ms;
        if (sample_round(r) != 0)
            return fail_step(r, "probe", "out of memory");
        if (router_holds(r, s->weight, err, sizeof err) != 0) {
            if (r->out->first_bad_ms == 0)
                r->out->first_bad_ms = dq_now_ms(); /* what went bad is the router */
            return fail_step(r, "router", "%s", err);
        }
        now = dq_now_ms();
        if (s->pause) {
            if (pause_fails(r, err, sizeof err))
                return fail_step(r, "probe", "%s", err);
            if (now - start >= s->hold_ms)
                return STEP_PASSED;
        } else {
            if (dq_analysis_judge(r->canary.ms, r->canary.n, r->canary.errors, r->stable.ms, r->stable.n,
                                  r->stable.errors, &r->c->criteria, &v) != 0)
                return fail_step(r, "analysis", "out of memory judging the samples");
            if (v.result == DQ_ANALYSIS_FAIL) {
                /* the verdict is told after the restore: nothing, not even a slow
                 * broker, stands between a failed verdict and weight 0 */
                r->failed = v;
                r->failed_step = (int)i + 1;
                return fail_step(r, "analysis", "%s", v.reason);
            }
            if (v.result == DQ_ANALYSIS_PASS && now - start >= s->hold_ms)
                return emit_analysis(r, (int)i + 1, &v) == 0 ? STEP_PASSED : STEP_STOPPED;
        }
        if (now - start >= r->c->max_step_time_ms)
            return fail_step(r, "max_step_time", "step %zu (%d%%) undecided after %lld ms: %s", i + 1, s->weight,
                             (long long)(now - start),
                             s->pause ? "no verdict" : (v.reason[0] ? v.reason : "no verdict"));
    }
}

/* Canary 0 / stable 100, asking again every RESTORE_RETRY_MS for up to max_step_time
 * (never cut short by a shutdown: see canary.h). 0 confirmed, -1 with err. */
static int restore(rollout *r, char *err, size_t errlen)
{
    int64_t deadline = dq_now_ms() + r->c->max_step_time_ms;

    for (int tries = 1;; tries++) {
        if (set_canary(r, 0, err, errlen) == 0) {
            r->out->restored_ms = dq_now_ms();
            return 0;
        }
        if (tries == 1)
            dq_warn("canary %s: the router did not take canary 0 / stable 100, asking every %d ms: %s",
                    r->ro->deployment_id, RESTORE_RETRY_MS, err);
        if (dq_now_ms() + RESTORE_RETRY_MS > deadline)
            return -1;
        dq_sleep_ms(RESTORE_RETRY_MS);
    }
}

static void add_rollback_fields(const rollout *r, cJSON *d, int64_t detected_ms, int64_t decided_ms)
{
    const dq_canary_rollout *ro = r->ro;

    cJSON_AddStringToObject(d, "method", "canary_abort");
    cJSON_AddStringToObject(d, "requested_by", "deployq-executor");
    cJSON_AddStringToObject(d, "reason", "canary_aborted");
    cJSON_AddStringToObject(d, "from_version", ro->canary_version);
    if (ro->stable_version && ro->stable_version[0])
        cJSON_AddStringToObject(d, "to_version", ro->stable_version);
    cJSON_AddStringToObject(d, "provider", dq_bg_router_name(ro->bg));
    dq_json_add_time(d, "detected_at", detected_ms);
    dq_json_add_time(d, "decided_at", decided_ms);
}

/* The router back to stable, then canary.aborted and the rollback's events. */
static dq_canary_status abort_rollout(rollout *r, int64_t decided_ms)
{
    dq_canary_outcome *o = r->out;
    const dq_canary_rollout *ro = r->ro;
    int cancelled = strcmp(o->reason, "cancelled") == 0;
    int64_t detected = o->first_bad_ms ? o->first_bad_ms : decided_ms;
    char err[512] = "";
    dq_event *ev;

    dq_warn("canary %s of %s/%s: aborted at step %d (%d%%): %s: %s", ro->deployment_id, ro->service,
            ro->environment, o->step, o->weight, o->reason, o->detail);
    o->weight_restored = restore(r, err, sizeof err) == 0;
    if (o->weight_restored)
        dq_info("canary %s: canary %s at 0%%, stable %s at 100%% (confirmed by router %s)", ro->deployment_id,
                ro->canary_color, r->stable_color, dq_bg_router_name(ro->bg));
    else
        dq_error("canary %s: the router never confirmed canary 0 / stable 100: %s", ro->deployment_id, err);

    if (r->failed_step && emit_analysis(r, r->failed_step, &r->failed) != 0)
        return DQ_CANARY_STOPPED;
    ev = new_event(r, DQ_EV_CANARY_ABORTED, o->step);
    if (ev) {
        cJSON *d = ev->data;

        cJSON_AddNumberToObject(d, "step", o->step);
        cJSON_AddNumberToObject(d, "weight", o->weight);
        cJSON_AddNumberToObject(d, "max_weight", o->max_weight);
        cJSON_AddStringToObject(d, "reason", o->reason);
        cJSON_AddStringToObject(d, "detail", o->detail);
        cJSON_AddStringToObject(d, "canary_color", ro->canary_color);
        cJSON_AddStringToObject(d, "stable_color", r->stable_color);
        cJSON_AddBoolToObject(d, "weight_restored", o->weight_restored);
        dq_json_add_time(d, "first_bad_at", o->first_bad_ms);
        dq_json_add_time(d, "restored_at", o->restored_ms);
        if (o->first_bad_ms && o->restored_ms)
            cJSON_AddNumberToObject(d, "time_to_zero_ms", (double)(o->restored_ms - o->first_bad_ms));
    }
    if (send_event(r, ev) != 0)
        return DQ_CANARY_STOPPED;
    if (cancelled)
        return DQ_CANARY_ABORTED;
    ev = new_event(r, DQ_EV_ROLLBACK_STARTED, o->step);
    if (ev)
        add_rollback_fields(r, ev->data, detected, decided_ms);
    if (send_event(r, ev) != 0)
        return DQ_CANARY_STOPPED;
    ev = new_event(r, o->weight_restored ? DQ_EV_ROLLBACK_SUCCEEDED : DQ_EV_ROLLBACK_FAILED, o->step);
    if (ev) {
        add_rollback_fields(r, ev->data, detected, decided_ms);
        if (o->weight_restored) {
            dq_json_add_time(ev->data, "restored_at", o->restored_ms);
            cJSON_AddNumberToObject(ev->data, "mttr_ms", (double)(o->restored_ms - detected));
        } else {
            cJSON_DeleteItemFromObjectCaseSensitive(ev->data, "reason");
            cJSON_AddStringToObject(ev->data, "reason", "the router did not confirm the canary's weight 0");
            cJSON_AddStringToObject(ev->data, "detail", err);
        }
    }
    if (send_event(r, ev) != 0)
        return DQ_CANARY_STOPPED;
    return DQ_CANARY_ABORTED;
}

static int emit_promoted(rollout *r, int steps)
{
    dq_event *ev = new_event(r, DQ_EV_CANARY_PROMOTED, steps);

    if (ev) {
        cJSON_AddNumberToObject(ev->data, "steps", steps);
        cJSON_AddStringToObject(ev->data, "canary_color", r->ro->canary_color);
        cJSON_AddStringToObject(ev->data, "stable_color", r->stable_color);
        cJSON_AddNumberToObject(ev->data, "duration_ms", (double)(dq_now_ms() - r->t0));
    }
    return send_event(r, ev);
}

/* The first deploy of a target: its color takes everything, nothing to compare with. */
static dq_canary_status first_deploy(rollout *r)
{
    const dq_canary_step all = {.weight = 100, .pause = 1, .hold_ms = 0};
    char err[512];

    r->out->step = 1;
    if (set_canary(r, 100, err, sizeof err) != 0) {
        /* nothing served before: there is no traffic to restore */
        dq_strlcpy(r->out->reason, "router", sizeof r->out->reason);
        snprintf(r->out->detail, sizeof r->out->detail, "%s", err);
        return DQ_CANARY_ABORTED;
    }
    r->out->weight = r->out->max_weight = 100;
    if (emit_step(r, 1, 1, &all) != 0 || emit_promoted(r, 1) != 0)
        return DQ_CANARY_STOPPED;
    return DQ_CANARY_PROMOTED;
}

static dq_canary_status walk(rollout *r)
{
    const dq_canary *c = r->c;
    char err[512];

    for (size_t i = 0; i < c->n_steps; i++) {
        const dq_canary_step *s = &c->steps[i];

        r->out->step = (int)i + 1;
        r->out->first_bad_ms = 0;
        if (!keep_going(r)) {
            snprintf(r->out->detail, sizeof r->out->detail, "stopped");
            return DQ_CANARY_STOPPED;
        }
        if (set_canary(r, s->weight, err, sizeof err) != 0) {
            /* the weight it may have taken counts as reached: the restore covers it */
            r->out->weight = s->weight;
            if (s->weight > r->out->max_weight)
                r->out->max_weight = s->weight;
            r->out->first_bad_ms = dq_now_ms();
            fail_step(r, "router", "%s", err);
            return abort_rollout(r, dq_now_ms());
        }
        r->out->weight = s->weight;
        if (s->weight > r->out->max_weight)
            r->out->max_weight = s->weight;
        dq_info("canary %s of %s/%s: step %zu/%zu, %s at %d%% (%s %s for %lld ms)", r->ro->deployment_id,
                r->ro->service, r->ro->environment, i + 1, c->n_steps, r->ro->canary_color, s->weight,
                s->pause ? "pause" : "analysis", s->pause ? "holds" : "compares", (long long)s->hold_ms);
        if (emit_step(r, (int)i + 1, (int)c->n_steps, s) != 0)
            return DQ_CANARY_STOPPED;
        switch (hold_step(r, i)) {
        case STEP_PASSED:
            break;
        case STEP_STOPPED:
            return DQ_CANARY_STOPPED;
        case STEP_FAILED:
            return abort_rollout(r, dq_now_ms());
        }
    }
    if (emit_promoted(r, (int)c->n_steps) != 0)
        return DQ_CANARY_STOPPED;
    dq_info("canary %s of %s/%s: promoted, %s takes all traffic", r->ro->deployment_id, r->ro->service,
            r->ro->environment, r->ro->canary_color);
    return DQ_CANARY_PROMOTED;
}

/* A stopped rollout whose run still holds the lock: canary 0 / stable 100, one attempt
 * (a shutdown is waiting), told in the log only. */
static void stopped_restore(rollout *r)
{
    const dq_canary_rollout *ro = r->ro;
    char err[512];

    if (ro->lock_held && !ro->lock_held(ro->ctx)) {
        dq_warn("canary %s: stopped at step %d (%d%%) with the lock lost: the router is left to its new holder",
                ro->deployment_id, r->out->step, r->out->weight);
        return;
    }
    if (set_canary(r, 0, err, sizeof err) == 0)
        dq_info("canary %s: stopped at step %d: canary %s back to 0%%, stable %s at 100%% until the deploy "
                "resumes (from step 1)",
                ro->deployment_id, r->out->step, ro->canary_color, r->stable_color);
    else
        dq_error("canary %s: stopped at step %d and the router did not take canary 0 / stable 100: %s; %s keeps "
                 "%d%% until the deploy resumes",
                 ro->deployment_id, r->out->step, err, ro->canary_color, r->out->weight);
}

dq_canary_status dq_canary_run(const dq_canary_rollout *ro, dq_canary_outcome *out)
{
    rollout r;
    dq_canary_status st;
    char err[512];

    memset(out, 0, sizeof *out);
    memset(&r, 0, sizeof r);
    r.ro = ro;
    r.c = ro->canary;
    r.out = out;
    r.t0 = dq_now_ms();
    r.first = !(ro->stable_color && ro->stable_color[0]);
    r.stable_color = r.first ? dq_bg_other(ro->canary_color) : ro->stable_color;
    if (!r.stable_color) {
        snprintf(out->detail, sizeof out->detail, "unknown canary color %s", ro->canary_color);
        dq_strlcpy(out->reason, "router", sizeof out->reason);
        return DQ_CANARY_ABORTED;
    }
    if (r.first)
        return first_deploy(&r);
    r.probes[0] = dq_bg_color_probe(ro->bg, ro->canary_color, err, sizeof err);
    r.probes[1] = r.probes[0] ? dq_bg_color_probe(ro->bg, r.stable_color, err, sizeof err) : NULL;
    if (!r.probes[1]) {
        dq_strlcpy(out->reason, "probe", sizeof out->reason);
        snprintf(out->detail, sizeof out->detail, "%s", err);
        st = DQ_CANARY_ABORTED; /* nothing moved yet: no traffic to restore */
    } else {
        st = walk(&r);
        if (st == DQ_CANARY_STOPPED && out->weight > 0)
            stopped_restore(&r);
    }
    dq_probe_free(r.probes[0]);
    dq_probe_free(r.probes[1]);
    free(r.canary.ms);
    free(r.stable.ms);
    return st;
}
