/*
 * watch.c - watch sessions (see watch.h): the monitor settings of a target, the session
 * state and its JSON form, the verdict rules, and the Lua scripts that keep sessions in
 * Redis safe to share between monitor instances.
 */
#include "watch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "json.h"
#include "log.h"

#define KEY_PREFIX "deployq:monitor:"
#define STATE_MAX_BYTES (4 * 1024 * 1024)

/* ---- configuration ---- */

void dq_watch_config_free(dq_watch_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_probes; i++)
        dq_probe_free(c->probes[i]);
    free(c->probes);
    free(c);
}

/* The member name of obj, else of defaults. */
static const cJSON *pick(const cJSON *obj, const cJSON *defaults, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return v ? v : cJSON_GetObjectItemCaseSensitive(defaults, name);
}

/* A duration (string or seconds) into *out; keeps *out when absent. 0 ok, -1 bad. */
static int read_duration(const cJSON *v, int64_t *out)
{
    int64_t d = -1;
    char buf[32];

    if (!v || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsString(v)) {
        d = dq_duration_parse(v->valuestring);
    } else if (cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble) {
        snprintf(buf, sizeof buf, "%lld", (long long)v->valuedouble);
        d = dq_duration_parse(buf);
    }
    if (d <= 0)
        return -1;
    *out = d;
    return 0;
}

static int read_int(const cJSON *v, int lo, int hi, int *out)
{
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble || v->valuedouble < lo ||
        v->valuedouble > hi)
        return -1;
    *out = (int)v->valuedouble;
    return 0;
}

static const char *const watch_keys[] = {
    "interval", "window", "failure_threshold", "max_error_rate", "error_rate_window", "probes", NULL,
};

dq_watch_config *dq_watch_config_from_json(const cJSON *obj, const cJSON *defaults,
                                           const char *where, char *err, size_t errlen)
{
    dq_watch_config *c = NULL;
    const cJSON *it, *probes;
    char sub[512];
    int64_t timeout;

    if (!cJSON_IsObject(obj)) {
        snprintf(err, errlen, "%s: expected a mapping", where);
        return NULL;
    }
    if (dq_config_check_keys(NULL, obj, watch_keys, where, err, errlen) != 0)
        return NULL;
    c = calloc(1, sizeof *c);
    if (!c)
        goto oom;
    c->interval_ms = 10000;
    c->window_ms = 15 * 60 * 1000;
    c->failure_threshold = 3;
    c->max_error_rate = 0.5;
    c->error_rate_window = 10;
    if (read_duration(pick(obj, defaults, "interval"), &c->interval_ms) != 0) {
        snprintf(err, errlen, "%s.interval: expected a duration (e.g. 10s)", where);
        goto fail;
    }
    if (read_duration(pick(obj, defaults, "window"), &c->window_ms) != 0 ||
        c->window_ms < c->interval_ms) {
        snprintf(err, errlen, "%s.window: expected a duration of at least one interval", where);
        goto fail;
    }
    if (read_int(pick(obj, defaults, "failure_threshold"), 1, 1000, &c->failure_threshold) != 0) {
        snprintf(err, errlen, "%s.failure_threshold: expected a whole number 1..1000", where);
        goto fail;
    }
    if (read_int(pick(obj, defaults, "error_rate_window"), 1, DQ_WATCH_KEEP_SAMPLES_MAX,
                 &c->error_rate_window) != 0) {
        snprintf(err, errlen, "%s.error_rate_window: expected a whole number 1..%d", where,
                 DQ_WATCH_KEEP_SAMPLES_MAX);
        goto fail;
    }
    it = pick(obj, defaults, "max_error_rate");
    if (it && !cJSON_IsNull(it)) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1) {
            snprintf(err, errlen, "%s.max_error_rate: expected a number from 0 to 1", where);
            goto fail;
        }
        c->max_error_rate = it->valuedouble;
    }
    probes = cJSON_GetObjectItemCaseSensitive(obj, "probes");
    if (!cJSON_IsArray(probes) || cJSON_GetArraySize(probes) == 0) {
        snprintf(err, errlen, "%s.probes: required, a non-empty list%s", where,
                 probes && !cJSON_IsArray(probes) ? " (not a list)" : "");
        goto fail;
    }
    c->probes = calloc((size_t)cJSON_GetArraySize(probes), sizeof *c->probes);
    if (!c->probes)
        goto oom;
    /* a probe should not outlive its interval, or rounds would pile up */
    timeout = c->interval_ms < 1000 ? 1000 : c->interval_ms > 10000 ? 10000 : c->interval_ms;
    cJSON_ArrayForEach(it, probes) {
        snprintf(sub, sizeof sub, "%s.probes[%zu]", where, c->n_probes);
        c->probes[c->n_probes] = dq_probe_from_json(it, sub, timeout, err, errlen);
        if (!c->probes[c->n_probes])
            goto fail;
        /* An explicit timeout longer than the interval is the operator's: an endpoint that
         * is slow but healthy (1.5 s answers, timeout 3s, interval 1s) must pass, not count
         * as no response (the chaos suite's slow-health fault rolled back good versions
         * when it was cut to the interval). A latency-limited probe gives up at its
         * max_latency (probe.h), so a slow endpoint is judged within the interval. */
        for (size_t i = 0; i < c->n_probes; i++) {
            if (strcmp(c->probes[i]->name, c->probes[c->n_probes]->name) == 0) {
                snprintf(err, errlen, "%s.name: '%s' is used twice", sub, c->probes[i]->name);
                c->n_probes++;
                goto fail;
            }
        }
        c->n_probes++;
    }
    return c;
oom:
    snprintf(err, errlen, "%s: out of memory", where);
fail:
    dq_watch_config_free(c);
    return NULL;
}

/* ---- state ---- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

void dq_watch_state_free(dq_watch_state *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_probes; i++)
        free(st->probes[i].samples);
    free(st->probes);
    free(st->deployment_id);
    free(st->service);
    free(st->environment);
    free(st->version);
    free(st);
}

dq_watch_state *dq_watch_state_new(const dq_watch_config *cfg, const char *trigger,
                                   const char *trigger_event_id, int64_t trigger_at_ms,
                                   const char *deployment_id, const char *service,
                                   const char *environment, const char *version, int64_t fence,
                                   int64_t now_ms)
{
    dq_watch_state *st = calloc(1, sizeof *st);
    char name[128];

    if (!st)
        return NULL;
    snprintf(name, sizeof name, "watch:%s", trigger_event_id);
    dq_uuid_from_name(name, st->id);
    dq_strlcpy(st->trigger, trigger, sizeof st->trigger);
    dq_strlcpy(st->trigger_event_id, trigger_event_id, sizeof st->trigger_event_id);
    st->deployment_id = dup_or_null(deployment_id);
    st->service = dup_or_null(service);
    st->environment = dup_or_null(environment);
    st->version = dup_or_null(version);
    if ((deployment_id && !st->deployment_id) || (service && !st->service) ||
        (environment && !st->environment) || (version && !st->version)) {
        dq_watch_state_free(st);
        return NULL;
    }
    st->fence = fence;
    st->trigger_at_ms = trigger_at_ms;
    st->started_ms = now_ms;
    st->interval_ms = cfg->interval_ms;
    st->window_ms = cfg->window_ms;
    st->ends_ms = now_ms + cfg->window_ms;
    st->next_ms = now_ms;
    return st;
}

static size_t keep_for(const dq_watch_config *cfg)
{
    size_t k = (size_t)cfg->error_rate_window;
    return k < DQ_WATCH_KEEP_SAMPLES_MIN ? DQ_WATCH_KEEP_SAMPLES_MIN : k;
}

/* The session's state of the probe called name, added when new. NULL on OOM. */
static dq_watch_probe_state *probe_state(dq_watch_state *st, const char *name, size_t cap)
{
    dq_watch_probe_state *ps;

    for (size_t i = 0; i < st->n_probes; i++) {
        if (strcmp(st->probes[i].name, name) == 0)
            return &st->probes[i];
    }
    ps = realloc(st->probes, (st->n_probes + 1) * sizeof *ps);
    if (!ps)
        return NULL;
    st->probes = ps;
    ps = &st->probes[st->n_probes];
    memset(ps, 0, sizeof *ps);
    dq_strlcpy(ps->name, name, sizeof ps->name);
    ps->last = -1;
    ps->cap = cap;
    ps->samples = calloc(cap, sizeof *ps->samples);
    if (!ps->samples)
        return NULL;
    st->n_probes++;
    return ps;
}

static const dq_watch_probe_state *find_probe(const dq_watch_state *st, const char *name)
{
    for (size_t i = 0; i < st->n_probes; i++) {
        if (strcmp(st->probes[i].name, name) == 0)
            return &st->probes[i];
    }
    return NULL;
}

static void push_sample(dq_watch_probe_state *ps, const dq_watch_sample *ws)
{
    if (ps->cap == 0)
        return;
    if (ps->n_samples == ps->cap) {
        memmove(ps->samples, ps->samples + 1, (ps->cap - 1) * sizeof *ps->samples);
        ps->n_samples--;
    }
    ps->samples[ps->n_samples++] = *ws;
}

static const char *const count_names[] = {"pass", "fail", "skip"};

static cJSON *sample_state_json(const dq_watch_sample *ws)
{
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "at", (double)ws->s.at_ms);
    cJSON_AddStringToObject(o, "o", dq_sample_outcome_name(ws->s.outcome));
    cJSON_AddStringToObject(o, "c", count_names[ws->counted]);
    cJSON_AddStringToObject(o, "check", ws->s.check);
    cJSON_AddNumberToObject(o, "status", (double)ws->s.status);
    cJSON_AddNumberToObject(o, "latency", (double)ws->s.latency_ms);
    if (ws->s.has_value) {
        /* JSON has no infinity: keep it as text */
        if (isinf(ws->s.value))
            cJSON_AddStringToObject(o, "value", ws->s.value > 0 ? "+Inf" : "-Inf");
        else
            cJSON_AddNumberToObject(o, "value", ws->s.value);
    }
    cJSON_AddStringToObject(o, "observed", ws->s.observed);
    cJSON_AddStringToObject(o, "detail", ws->s.detail);
    return o;
}

char *dq_watch_state_encode(const dq_watch_state *st)
{
    cJSON *o = cJSON_CreateObject(), *probes;
    char *txt = NULL;

    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "id", st->id);
    cJSON_AddStringToObject(o, "trigger", st->trigger);
    cJSON_AddStringToObject(o, "trigger_event_id", st->trigger_event_id);
    if (st->deployment_id)
        cJSON_AddStringToObject(o, "deployment_id", st->deployment_id);
    if (st->service)
        cJSON_AddStringToObject(o, "service", st->service);
    if (st->environment)
        cJSON_AddStringToObject(o, "environment", st->environment);
    if (st->version)
        cJSON_AddStringToObject(o, "version", st->version);
    cJSON_AddNumberToObject(o, "fence", (double)st->fence);
    cJSON_AddNumberToObject(o, "trigger_at", (double)st->trigger_at_ms);
    cJSON_AddNumberToObject(o, "started", (double)st->started_ms);
    cJSON_AddNumberToObject(o, "ends", (double)st->ends_ms);
    cJSON_AddNumberToObject(o, "interval", (double)st->interval_ms);
    cJSON_AddNumberToObject(o, "window", (double)st->window_ms);
    cJSON_AddNumberToObject(o, "next", (double)st->next_ms);
    cJSON_AddNumberToObject(o, "ticks", (double)st->ticks);
    cJSON_AddNumberToObject(o, "n_samples", (double)st->n_samples);
    cJSON_AddBoolToObject(o, "degraded", st->degraded);
    cJSON_AddNumberToObject(o, "first_failure", (double)st->first_failure_ms);
    probes = cJSON_AddArrayToObject(o, "probes");
    for (size_t i = 0; probes && i < st->n_probes; i++) {
        const dq_watch_probe_state *ps = &st->probes[i];
        cJSON *p = cJSON_CreateObject(), *samples;
        if (!p)
            goto out;
        cJSON_AddItemToArray(probes, p);
        cJSON_AddStringToObject(p, "name", ps->name);
        cJSON_AddNumberToObject(p, "consecutive", ps->consecutive);
        cJSON_AddNumberToObject(p, "last", ps->last);
        cJSON_AddNumberToObject(p, "streak_start", (double)ps->streak_start_ms);
        cJSON_AddNumberToObject(p, "cap", (double)ps->cap);
        samples = cJSON_AddArrayToObject(p, "samples");
        for (size_t j = 0; samples && j < ps->n_samples; j++)
            cJSON_AddItemToArray(samples, sample_state_json(&ps->samples[j]));
    }
    txt = cJSON_PrintUnformatted(o);
out:
    cJSON_Delete(o);
    return txt;
}

static int64_t num_i64(const cJSON *o, const char *name)
{
    return (int64_t)dq_json_num(o, name, 0);
}

static int name_index(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++) {
        if (strcmp(names[i], s) == 0)
            return (int)i;
    }
    return -1;
}

static int decode_sample(const cJSON *o, dq_watch_sample *ws)
{
    static const char *const outcomes[] = {"pass", "fail", "missing"};
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "value");
    int oi = name_index(outcomes, 3, dq_json_str(o, "o"));
    int ci = name_index(count_names, 3, dq_json_str(o, "c"));

    if (oi < 0 || ci < 0)
        return -1;
    memset(ws, 0, sizeof *ws);
    ws->s.at_ms = num_i64(o, "at");
    ws->s.outcome = (dq_sample_outcome)oi;
    ws->counted = (dq_count)ci;
    dq_strlcpy(ws->s.check, dq_json_str(o, "check") ? dq_json_str(o, "check") : "", sizeof ws->s.check);
    ws->s.status = (long)dq_json_num(o, "status", 0);
    ws->s.latency_ms = (int64_t)dq_json_num(o, "latency", -1);
    if (cJSON_IsNumber(v)) {
        ws->s.value = v->valuedouble;
        ws->s.has_value = 1;
    } else if (cJSON_IsString(v)) {
        ws->s.value = strcmp(v->valuestring, "-Inf") == 0 ? -INFINITY : INFINITY;
        ws->s.has_value = 1;
    }
    dq_strlcpy(ws->s.observed, dq_json_str(o, "observed") ? dq_json_str(o, "observed") : "",
               sizeof ws->s.observed);
    dq_strlcpy(ws->s.detail, dq_json_str(o, "detail") ? dq_json_str(o, "detail") : "",
               sizeof ws->s.detail);
    return 0;
}

dq_watch_state *dq_watch_state_decode(const char *json, size_t len, char *err, size_t errlen)
{
    cJSON *o = dq_json_parse(json, len, STATE_MAX_BYTES, 16, NULL, err, errlen);
    dq_watch_state *st = NULL;
    const cJSON *probes, *p;
    const char *id, *trigger, *tid;

    if (!o)
        return NULL;
    id = dq_json_str(o, "id");
    trigger = dq_json_str(o, "trigger");
    tid = dq_json_str(o, "trigger_event_id");
    probes = cJSON_GetObjectItemCaseSensitive(o, "probes");
    if (!id || !dq_uuid_valid(id) || !trigger || !tid || !cJSON_IsArray(probes)) {
        snprintf(err, errlen, "session state: missing id, trigger or probes");
        goto fail;
    }
    st = calloc(1, sizeof *st);
    if (!st)
        goto oom;
    dq_strlcpy(st->id, id, sizeof st->id);
    dq_strlcpy(st->trigger, trigger, sizeof st->trigger);
    dq_strlcpy(st->trigger_event_id, tid, sizeof st->trigger_event_id);
    st->deployment_id = dup_or_null(dq_json_str(o, "deployment_id"));
    st->service = dup_or_null(dq_json_str(o, "service"));
    st->environment = dup_or_null(dq_json_str(o, "environment"));
    st->version = dup_or_null(dq_json_str(o, "version"));
    st->fence = num_i64(o, "fence");
    st->trigger_at_ms = num_i64(o, "trigger_at");
    st->started_ms = num_i64(o, "started");
    st->ends_ms = num_i64(o, "ends");
    st->interval_ms = num_i64(o, "interval");
    st->window_ms = num_i64(o, "window");
    st->next_ms = num_i64(o, "next");
    st->ticks = num_i64(o, "ticks");
    st->n_samples = num_i64(o, "n_samples");
    st->degraded = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "degraded"));
    st->first_failure_ms = num_i64(o, "first_failure");
    if (st->interval_ms <= 0 || st->window_ms <= 0) {
        snprintf(err, errlen, "session state: bad interval or window");
        goto fail;
    }
    cJSON_ArrayForEach(p, probes) {
        const char *name = dq_json_str(p, "name");
        const cJSON *samples = cJSON_GetObjectItemCaseSensitive(p, "samples"), *s;
        size_t cap = (size_t)dq_json_num(p, "cap", DQ_WATCH_KEEP_SAMPLES_MIN);
        dq_watch_probe_state *ps;

        if (!name || !cJSON_IsArray(samples) || cap < 1 || cap > DQ_WATCH_KEEP_SAMPLES_MAX) {
            snprintf(err, errlen, "session state: bad probe entry");
            goto fail;
        }
        ps = probe_state(st, name, cap);
        if (!ps)
            goto oom;
        ps->consecutive = (int)dq_json_num(p, "consecutive", 0);
        ps->last = (int)dq_json_num(p, "last", -1);
        ps->streak_start_ms = num_i64(p, "streak_start");
        cJSON_ArrayForEach(s, samples) {
            dq_watch_sample ws;
            if (decode_sample(s, &ws) != 0) {
                snprintf(err, errlen, "session state: bad sample of probe %s", ps->name);
                goto fail;
            }
            push_sample(ps, &ws);
        }
    }
    cJSON_Delete(o);
    return st;
oom:
    snprintf(err, errlen, "session state: out of memory");
fail:
    dq_watch_state_free(st);
    cJSON_Delete(o);
    return NULL;
}

/* ---- the rules ---- */

/* Enough samples to stand behind a verdict: failure_threshold of every probe, as many as
 * it takes to catch a failing version (watch.h). */
static int enough_evidence(const dq_watch_config *cfg, const dq_watch_state *st)
{
    size_t need = cfg->failure_threshold > 0 ? (size_t)cfg->failure_threshold : 1;

    for (size_t i = 0; i < cfg->n_probes; i++) {
        const dq_watch_probe_state *ps = find_probe(st, cfg->probes[i]->name);
        size_t have = ps ? ps->n_samples : 0;

        /* the kept samples are capped: a full buffer is enough by definition */
        if (have < need && !(ps && ps->cap > 0 && have == ps->cap))
            return 0;
    }
    return 1;
}

dq_watch_action dq_watch_plan(const dq_watch_config *cfg, const dq_watch_state *st,
                              int64_t now_ms)
{
    if (now_ms < st->ends_ms || !enough_evidence(cfg, st))
        return DQ_WATCH_PROBE;
    if (!st->degraded)
        return DQ_WATCH_VERIFY;
    if (now_ms >= st->ends_ms + (int64_t)cfg->failure_threshold * st->interval_ms)
        return DQ_WATCH_EXPIRE;
    return DQ_WATCH_PROBE;
}

static dq_count count_of(const dq_probe *p, const dq_watch_probe_state *ps, dq_sample_outcome o)
{
    if (o == DQ_SAMPLE_PASS)
        return DQ_COUNT_PASS;
    if (o == DQ_SAMPLE_FAIL)
        return DQ_COUNT_FAIL;
    switch (p->missing) {
    case DQ_MISSING_FAIL: return DQ_COUNT_FAIL;
    case DQ_MISSING_IGNORE: return DQ_COUNT_SKIP;
    case DQ_MISSING_HOLD:
        return ps->last < 0 ? DQ_COUNT_SKIP : ps->last ? DQ_COUNT_FAIL : DQ_COUNT_PASS;
    }
    return DQ_COUNT_FAIL;
}

/* The last failing counted sample of ps, or NULL. */
static const dq_watch_sample *last_failure(const dq_watch_probe_state *ps)
{
    for (size_t j = ps->n_samples; j > 0; j--) {
        if (ps->samples[j - 1].counted == DQ_COUNT_FAIL)
            return &ps->samples[j - 1];
    }
    return NULL;
}

/* Error rate over the last `window` counted samples: 1 when judged (enough samples). */
static int error_rate(const dq_watch_probe_state *ps, int window, int *fails, int64_t *first_fail)
{
    int n = 0;

    *fails = 0;
    *first_fail = 0;
    for (size_t j = ps->n_samples; j > 0 && n < window; j--) {
        const dq_watch_sample *ws = &ps->samples[j - 1];
        if (ws->counted == DQ_COUNT_SKIP)
            continue;
        n++;
        if (ws->counted == DQ_COUNT_FAIL) {
            (*fails)++;
            *first_fail = ws->s.at_ms;
        }
    }
    return n == window;
}

/* tick_ms: when this tick began probing; now_ms: when it finished. */
static void schedule_next(const dq_watch_config *cfg, dq_watch_state *st, int64_t tick_ms,
                          int64_t now_ms)
{
    int64_t next = (st->next_ms > 0 ? st->next_ms : now_ms) + st->interval_ms;
    int64_t ext_end = st->ends_ms + (int64_t)cfg->failure_threshold * st->interval_ms;

    /* a late tick (the session was armed late, or taken over after a lease ran out)
     * re-anchors the schedule on itself: rounds missed are skipped, not run back to
     * back, and samples stay about an interval apart. The window's end does not move. */
    if (next < tick_ms + st->interval_ms / 2)
        next = tick_ms + st->interval_ms;
    if (!st->degraded && next > st->ends_ms && now_ms < st->ends_ms)
        next = st->ends_ms;
    /* the extension's end is where a degraded session is judged; without the evidence
     * for a verdict, sampling simply goes on */
    if (st->degraded && next > ext_end && enough_evidence(cfg, st))
        next = ext_end > now_ms ? ext_end : now_ms;
    st->next_ms = next;
}

int dq_watch_apply(const dq_watch_config *cfg, dq_watch_state *st, const dq_sample *samples,
                   int64_t now_ms, dq_watch_result *res)
{
    int was_degraded = st->degraded, degraded = 0, first_bad = -1, was_bad = -1;
    size_t cap = keep_for(cfg);
    int64_t tick_ms = now_ms;

    for (size_t i = 0; i < cfg->n_probes; i++) {
        if (samples[i].at_ms > 0 && samples[i].at_ms < tick_ms)
            tick_ms = samples[i].at_ms;
    }

    memset(res, 0, sizeof *res);
    res->probe = -1;
    res->decided_ms = now_ms;
    st->ticks++;
    /* the probe that was failing, named when the session recovers */
    for (size_t i = 0; i < cfg->n_probes && was_bad < 0; i++) {
        const dq_watch_probe_state *ps = find_probe(st, cfg->probes[i]->name);
        if (ps && ps->consecutive > 0)
            was_bad = (int)i;
    }
    for (size_t i = 0; i < cfg->n_probes; i++) {
        dq_watch_probe_state *ps = probe_state(st, cfg->probes[i]->name, cap);
        dq_watch_sample ws;

        if (!ps)
            return -1;
        ws.s = samples[i];
        ws.counted = count_of(cfg->probes[i], ps, samples[i].outcome);
        if (ws.counted == DQ_COUNT_FAIL) {
            if (ps->consecutive == 0)
                ps->streak_start_ms = samples[i].at_ms;
            ps->consecutive++;
            ps->last = 1;
        } else if (ws.counted == DQ_COUNT_PASS) {
            ps->consecutive = 0;
            ps->streak_start_ms = 0;
            ps->last = 0;
        }
        push_sample(ps, &ws);
        st->n_samples++;
    }

    for (size_t i = 0; i < cfg->n_probes; i++) {
        const dq_watch_probe_state *ps = find_probe(st, cfg->probes[i]->name);
        if (ps && ps->consecutive > 0) {
            if (!degraded || ps->streak_start_ms < st->first_failure_ms)
                st->first_failure_ms = ps->streak_start_ms;
            if (first_bad < 0)
                first_bad = (int)i;
            degraded = 1;
        }
    }
    if (degraded && was_degraded && st->first_failure_ms == 0)
        st->first_failure_ms = now_ms;
    if (!degraded)
        st->first_failure_ms = 0;
    st->degraded = degraded;
    res->degraded = degraded;
    if (degraded != was_degraded) {
        res->health_changed = 1;
        res->probe = degraded ? first_bad : (was_bad >= 0 ? was_bad : 0);
    } else if (degraded) {
        res->probe = first_bad;
    }

    /* rule 1: consecutive failures */
    for (size_t i = 0; i < cfg->n_probes && res->verdict == DQ_VERDICT_NONE; i++) {
        const dq_watch_probe_state *ps = find_probe(st, cfg->probes[i]->name);
        const dq_watch_sample *lf = ps ? last_failure(ps) : NULL;
        if (!ps || ps->consecutive < cfg->failure_threshold)
            continue;
        res->verdict = DQ_VERDICT_ROLLBACK;
        res->probe = (int)i;
        dq_strlcpy(res->kind, "consecutive_failures", sizeof res->kind);
        res->failures = res->of = ps->consecutive;
        res->detected_ms = ps->streak_start_ms;
        snprintf(res->reason, sizeof res->reason, "probe %s failed %d times in a row (last: %s)",
                 ps->name, ps->consecutive, lf ? lf->s.detail : "?");
    }
    /* rule 2: the error rate over the last samples */
    for (size_t i = 0; i < cfg->n_probes && res->verdict == DQ_VERDICT_NONE; i++) {
        const dq_watch_probe_state *ps = find_probe(st, cfg->probes[i]->name);
        int fails;
        int64_t first_fail;
        if (!ps || !error_rate(ps, cfg->error_rate_window, &fails, &first_fail))
            continue;
        if ((double)fails / cfg->error_rate_window <= cfg->max_error_rate)
            continue;
        res->verdict = DQ_VERDICT_ROLLBACK;
        res->probe = (int)i;
        dq_strlcpy(res->kind, "error_rate", sizeof res->kind);
        res->failures = fails;
        res->of = cfg->error_rate_window;
        res->rate = (double)fails / cfg->error_rate_window;
        res->detected_ms = first_fail;
        snprintf(res->reason, sizeof res->reason,
                 "probe %s failed %d of the last %d samples (error rate %.2f above %.2f)",
                 ps->name, fails, cfg->error_rate_window, res->rate, cfg->max_error_rate);
    }
    /* recovered during the extension after the window, or the evidence missing at its end
     * is complete now: verified */
    if (res->verdict == DQ_VERDICT_NONE && !degraded && now_ms >= st->ends_ms &&
        enough_evidence(cfg, st)) {
        res->verdict = DQ_VERDICT_VERIFIED;
        snprintf(res->reason, sizeof res->reason, "window of %lld s passed; %s (%lld samples)",
                 (long long)(st->window_ms / 1000),
                 was_degraded ? "recovered after it ended"
                              : "clean, with the last samples it lacked taken after it ended",
                 (long long)st->n_samples);
    }
    if (res->verdict == DQ_VERDICT_NONE)
        schedule_next(cfg, st, tick_ms, now_ms);
    return 0;
}

void dq_watch_close(const dq_watch_config *cfg, const dq_watch_state *st,
                    dq_watch_action action, int64_t now_ms, dq_watch_result *res)
{
    memset(res, 0, sizeof *res);
    res->probe = -1;
    res->decided_ms = now_ms;
    res->degraded = st->degraded;
    if (action == DQ_WATCH_VERIFY) {
        res->verdict = DQ_VERDICT_VERIFIED;
        snprintf(res->reason, sizeof res->reason, "window of %lld s passed clean (%lld samples)",
                 (long long)(st->window_ms / 1000), (long long)st->n_samples);
        return;
    }
    res->verdict = DQ_VERDICT_ROLLBACK;
    dq_strlcpy(res->kind, "degraded_at_window_end", sizeof res->kind);
    res->detected_ms = st->first_failure_ms ? st->first_failure_ms : now_ms;
    for (size_t i = 0; i < cfg->n_probes; i++) {
        const dq_watch_probe_state *ps = find_probe(st, cfg->probes[i]->name);
        if (ps && ps->consecutive > 0) {
            const dq_watch_sample *lf = last_failure(ps);
            res->probe = (int)i;
            res->failures = res->of = ps->consecutive;
            snprintf(res->reason, sizeof res->reason,
                     "probe %s still failing %lld s after the window ended (last: %s)", ps->name,
                     (long long)((now_ms - st->ends_ms) / 1000), lf ? lf->s.detail : "?");
            return;
        }
    }
    res->probe = 0;
    snprintf(res->reason, sizeof res->reason, "still degraded after the window ended");
}

/* ---- events ---- */

cJSON *dq_watch_sample_json(const dq_watch_sample *ws)
{
    cJSON *o = cJSON_CreateObject();
    char t[DQ_TIME_LEN + 1];

    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "at", dq_time_format(ws->s.at_ms, t));
    cJSON_AddStringToObject(o, "outcome", dq_sample_outcome_name(ws->s.outcome));
    cJSON_AddStringToObject(o, "counted", count_names[ws->counted]);
    cJSON_AddStringToObject(o, "check", ws->s.check);
    if (ws->s.status > 0)
        cJSON_AddNumberToObject(o, "status", (double)ws->s.status);
    if (ws->s.latency_ms >= 0)
        cJSON_AddNumberToObject(o, "latency_ms", (double)ws->s.latency_ms);
    if (ws->s.has_value)
        cJSON_AddItemToObject(o, "value", dq_sample_observed_json(&ws->s));
    cJSON_AddStringToObject(o, "detail", ws->s.detail);
    return o;
}

cJSON *dq_watch_evidence(const dq_watch_config *cfg, const dq_watch_state *st,
                         const dq_watch_result *res)
{
    cJSON *e = cJSON_CreateObject(), *samples;
    const dq_probe *p = res->probe >= 0 && (size_t)res->probe < cfg->n_probes
                            ? cfg->probes[res->probe] : NULL;
    const dq_watch_probe_state *ps = p ? find_probe(st, p->name) : NULL;
    const dq_watch_sample *lf = ps ? last_failure(ps) : NULL;
    char t[DQ_TIME_LEN + 1];

    if (!e)
        return NULL;
    cJSON_AddStringToObject(e, "probe", p ? p->name : "-");
    cJSON_AddStringToObject(e, "kind", res->kind[0] ? res->kind : "unknown");
    if (p)
        cJSON_AddStringToObject(e, "type", dq_probe_type_name(p->type));
    if (lf)
        cJSON_AddStringToObject(e, "check", lf->s.check);
    if (strcmp(res->kind, "error_rate") == 0) {
        cJSON_AddNumberToObject(e, "observed", res->rate);
        cJSON_AddNumberToObject(e, "threshold", cfg->max_error_rate);
    } else if (lf && p) {
        cJSON_AddItemToObject(e, "observed", dq_sample_observed_json(&lf->s));
        cJSON_AddItemToObject(e, "threshold", dq_probe_threshold_json(p, lf->s.check));
    }
    cJSON_AddNumberToObject(e, "failures", res->failures);
    cJSON_AddNumberToObject(e, "of", res->of);
    cJSON_AddNumberToObject(e, "failure_threshold", cfg->failure_threshold);
    cJSON_AddNumberToObject(e, "max_error_rate", cfg->max_error_rate);
    cJSON_AddNumberToObject(e, "error_rate_window", cfg->error_rate_window);
    if (p)
        cJSON_AddStringToObject(e, "missing", dq_missing_policy_name(p->missing));
    samples = cJSON_AddArrayToObject(e, "samples");
    if (ps && samples) {
        size_t from = ps->n_samples > DQ_WATCH_EVIDENCE_SAMPLES
                          ? ps->n_samples - DQ_WATCH_EVIDENCE_SAMPLES : 0;
        for (size_t j = from; j < ps->n_samples; j++)
            cJSON_AddItemToArray(samples, dq_watch_sample_json(&ps->samples[j]));
    }
    if (res->detected_ms > 0) {
        cJSON_AddStringToObject(e, "first_failure_at", dq_time_format(res->detected_ms, t));
        cJSON_AddStringToObject(e, "detected_at", t);
    }
    cJSON_AddStringToObject(e, "decided_at", dq_time_format(res->decided_ms, t));
    cJSON_AddStringToObject(e, "window_started_at", dq_time_format(st->started_ms, t));
    cJSON_AddStringToObject(e, "window_ends_at", dq_time_format(st->ends_ms, t));
    return e;
}

/* ---- Redis ---- */

/* A session record expires a day after it ends, but the target key keeps naming the
 * target's newest session: a trigger that finds its own session id there (and no record)
 * is a redelivery of an ended session, not a new deploy, however late it is read. */
static const char lua_start[] =
    "local st = redis.call('HGET', KEYS[1], 'status')\n"
    "if st then\n"
    "  if st == 'active' then return {1, ''} end\n"
    "  return {2, ''}\n"
    "end\n"
    "local old = ''\n"
    "local cur = redis.call('GET', KEYS[2])\n"
    "if cur then\n"
    "  local sp = string.find(cur, ' ', 1, true)\n"
    "  local cid = string.sub(cur, 1, sp - 1)\n"
    "  local cat = tonumber(string.sub(cur, sp + 1))\n"
    "  if cid == ARGV[1] then return {2, ''} end\n"
    "  if cat > tonumber(ARGV[3]) then return {3, cid} end\n"
    "  local ok = ARGV[4] .. 'session:' .. cid\n"
    "  if redis.call('HGET', ok, 'status') == 'active' then\n"
    "    redis.call('HSET', ok, 'status', 'superseded')\n"
    "    redis.call('PEXPIRE', ok, ARGV[5])\n"
    "    redis.call('ZREM', KEYS[3], cid)\n"
    "    old = cid\n"
    "  end\n"
    "end\n"
    "redis.call('HMSET', KEYS[1], 'state', ARGV[2], 'status', 'active')\n"
    "redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[3])\n"
    "return {0, old}\n";

static const char lua_arm[] =
    "if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 0 end\n"
    "redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])\n"
    "return 1\n";

static const char lua_claim[] =
    "local s = redis.call('ZSCORE', KEYS[2], ARGV[1])\n"
    "if not s or tonumber(s) > tonumber(ARGV[3]) then return false end\n"
    "if redis.call('HGET', KEYS[1], 'status') ~= 'active' then\n"
    "  redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "  return false\n"
    "end\n"
    "if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[4]) then return false end\n"
    "return redis.call('HGET', KEYS[1], 'state')\n";

static const char lua_still_mine[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "if redis.call('HGET', KEYS[2], 'status') ~= 'active' then return 0 end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "return 1\n";

static const char lua_commit[] =
    "if redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end\n"
    "redis.call('DEL', KEYS[3])\n"
    "if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'state', ARGV[3])\n"
    "if ARGV[5] == '' then\n"
    "  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])\n"
    "else\n"
    "  redis.call('HSET', KEYS[1], 'status', ARGV[5])\n"
    "  redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[6])\n"
    "end\n"
    "return 1\n";

static const char lua_release[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end\n"
    "return 0\n";

/* EVAL script with keys then args (all NUL-terminated strings). */
static redisReply *eval(dq_redis *r, const char *script, int nkeys, const char *const *keys,
                        int nargs, const char *const *args)
{
    const char *argv[16];
    char nk[8];
    int argc = 0;

    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[argc++] = "EVAL";
    argv[argc++] = script;
    argv[argc++] = nk;
    for (int i = 0; i < nkeys && argc < 16; i++)
        argv[argc++] = keys[i];
    for (int i = 0; i < nargs && argc < 16; i++)
        argv[argc++] = args[i];
    return dq_redis_commandv(r, argc, argv, NULL);
}

static void key_of(char *out, size_t outlen, const char *kind, const char *id)
{
    snprintf(out, outlen, KEY_PREFIX "%s%s", kind, id);
}

static int reply_failed(redisReply *rep, const dq_redis *r, char *err, size_t errlen)
{
    if (!rep) {
        if (err)
            snprintf(err, errlen, "redis: %s", dq_redis_errstr(r));
        return 1;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        if (err)
            snprintf(err, errlen, "redis: %s", rep->str);
        dq_warn("redis script error: %s", rep->str);
        freeReplyObject(rep);
        return 1;
    }
    return 0;
}

int dq_watch_store_start(dq_redis *r, const dq_watch_state *st, char *superseded,
                         size_t superseded_len, char *err, size_t errlen)
{
    char skey[128], tkey[512], at[32], keep[32];
    char *state = dq_watch_state_encode(st);
    redisReply *rep;
    int rc = -1;

    if (superseded_len)
        superseded[0] = '\0';
    if (!state) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    key_of(skey, sizeof skey, "session:", st->id);
    snprintf(tkey, sizeof tkey, KEY_PREFIX "target:%s/%s", st->service ? st->service : "",
             st->environment ? st->environment : "");
    snprintf(at, sizeof at, "%lld", (long long)st->trigger_at_ms);
    snprintf(keep, sizeof keep, "%d", 86400000);
    {
        const char *keys[] = {skey, tkey, KEY_PREFIX "due"};
        const char *args[] = {st->id, state, at, KEY_PREFIX, keep};
        rep = eval(r, lua_start, 3, keys, 5, args);
    }
    free(state);
    if (reply_failed(rep, r, err, errlen))
        return -1;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER) {
        rc = (int)rep->element[0]->integer;
        if (rc == DQ_WATCH_START_NEW && rep->element[1]->type == REDIS_REPLY_STRING && superseded_len)
            dq_strlcpy(superseded, rep->element[1]->str, superseded_len);
    } else {
        snprintf(err, errlen, "redis: unexpected reply to the start script");
    }
    freeReplyObject(rep);
    return rc;
}

int dq_watch_arm(dq_redis *r, const char *id, int64_t due_ms, char *err, size_t errlen)
{
    char skey[128], due[32];
    redisReply *rep;

    key_of(skey, sizeof skey, "session:", id);
    snprintf(due, sizeof due, "%lld", (long long)due_ms);
    {
        const char *keys[] = {skey, KEY_PREFIX "due"};
        const char *args[] = {id, due};
        rep = eval(r, lua_arm, 2, keys, 2, args);
    }
    if (reply_failed(rep, r, err, errlen))
        return -1;
    freeReplyObject(rep);
    return 0;
}

int dq_watch_due(dq_redis *r, int64_t now_ms, char ids[][DQ_UUID_LEN + 1], int max,
                 int64_t *next_due_ms)
{
    redisReply *rep;
    int n = 0;

    *next_due_ms = -1;
    rep = dq_redis_command(r, "ZRANGEBYSCORE " KEY_PREFIX "due -inf %lld LIMIT 0 %d",
                           (long long)now_ms, max);
    if (reply_failed(rep, r, NULL, 0))
        return -1;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements && n < max; i++) {
        if (rep->element[i]->type == REDIS_REPLY_STRING && dq_uuid_valid(rep->element[i]->str))
            dq_strlcpy(ids[n++], rep->element[i]->str, DQ_UUID_LEN + 1);
    }
    freeReplyObject(rep);
    rep = dq_redis_command(r, "ZRANGE " KEY_PREFIX "due 0 0 WITHSCORES");
    if (reply_failed(rep, r, NULL, 0))
        return -1;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[1]->type == REDIS_REPLY_STRING)
        *next_due_ms = (int64_t)strtod(rep->element[1]->str, NULL);
    freeReplyObject(rep);
    return n;
}

dq_watch_state *dq_watch_claim(dq_redis *r, const char *id, const char *token, int64_t now_ms,
                               int64_t lease_ms, int *error)
{
    char skey[128], lkey[128], now[32], lease[32], err[256];
    redisReply *rep;
    dq_watch_state *st = NULL;

    *error = 0;
    key_of(skey, sizeof skey, "session:", id);
    key_of(lkey, sizeof lkey, "lease:", id);
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    snprintf(lease, sizeof lease, "%lld", (long long)lease_ms);
    {
        const char *keys[] = {skey, KEY_PREFIX "due", lkey};
        const char *args[] = {id, token, now, lease};
        rep = eval(r, lua_claim, 3, keys, 4, args);
    }
    if (reply_failed(rep, r, NULL, 0)) {
        *error = 1;
        return NULL;
    }
    if (rep->type == REDIS_REPLY_STRING) {
        st = dq_watch_state_decode(rep->str, rep->len, err, sizeof err);
        if (!st) {
            /* a session nobody can read must not block the schedule: drop it */
            dq_error("monitor session %s: %s; dropping it", id, err);
            freeReplyObject(dq_redis_command(r, "ZREM " KEY_PREFIX "due %s", id));
            freeReplyObject(dq_redis_command(r, "HSET %s status broken", skey));
            dq_watch_release(r, id, token);
        }
    }
    freeReplyObject(rep);
    return st;
}

int dq_watch_still_mine(dq_redis *r, const char *id, const char *token, int64_t lease_ms)
{
    char skey[128], lkey[128], lease[32];
    redisReply *rep;
    int rc;

    key_of(skey, sizeof skey, "session:", id);
    key_of(lkey, sizeof lkey, "lease:", id);
    snprintf(lease, sizeof lease, "%lld", (long long)lease_ms);
    {
        const char *keys[] = {lkey, skey};
        const char *args[] = {token, lease};
        rep = eval(r, lua_still_mine, 2, keys, 2, args);
    }
    if (reply_failed(rep, r, NULL, 0))
        return -1;
    rc = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return rc;
}

int dq_watch_commit(dq_redis *r, const dq_watch_state *st, const char *token, const char *final,
                    int64_t keep_ms)
{
    char skey[128], lkey[128], next[32], keep[32];
    char *state = dq_watch_state_encode(st);
    redisReply *rep;
    int rc;

    if (!state)
        return -1;
    key_of(skey, sizeof skey, "session:", st->id);
    key_of(lkey, sizeof lkey, "lease:", st->id);
    snprintf(next, sizeof next, "%lld", (long long)st->next_ms);
    snprintf(keep, sizeof keep, "%lld", (long long)(keep_ms > 0 ? keep_ms : 86400000));
    {
        const char *keys[] = {skey, KEY_PREFIX "due", lkey};
        const char *args[] = {st->id, token, state, next, final ? final : "", keep};
        rep = eval(r, lua_commit, 3, keys, 6, args);
    }
    free(state);
    if (reply_failed(rep, r, NULL, 0))
        return -1;
    rc = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return rc;
}

int dq_watch_release(dq_redis *r, const char *id, const char *token)
{
    char lkey[128];
    redisReply *rep;

    key_of(lkey, sizeof lkey, "lease:", id);
    {
        const char *keys[] = {lkey};
        const char *args[] = {token};
        rep = eval(r, lua_release, 1, keys, 1, args);
    }
    if (reply_failed(rep, r, NULL, 0))
        return -1;
    freeReplyObject(rep);
    return 0;
}

int dq_watch_status(dq_redis *r, const char *id, char *out, size_t outlen)
{
    redisReply *rep = dq_redis_command(r, "HGET " KEY_PREFIX "session:%s status", id);

    out[0] = '\0';
    if (reply_failed(rep, r, NULL, 0))
        return -1;
    if (rep->type == REDIS_REPLY_STRING)
        dq_strlcpy(out, rep->str, outlen);
    freeReplyObject(rep);
    return 0;
}
