/*
 * bluegreen.c - blue-green deploys (see bluegreen.h): the configuration, the colors'
 * state in Redis, the idle color's probe, and the router call that moves traffic.
 *
 * The router call is the one step that changes what users see, so it is never retried
 * blindly here: one attempt within its timeout (an HTTP router behind a flaky proxy gets
 * the usual retries only for connection errors, which cannot have switched anything). A
 * router command runs through the process runner (proc.h), like every child of deployq.
 */
#include "bluegreen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "json.h"
#include "log.h"
#include "probe.h"
#include "proc.h"
#include "util.h"

#define PICK_TTL_S (7 * 24 * 3600)
#define MAX_ARGV 64
#define ROUTER_OUTPUT_MAX 1024 /* the tail of a router command's output, for the log */

struct dq_bluegreen {
    char where[512];       /* "deployq.yaml:12: services.api.environments.prod.blue_green" */
    char *service, *environment;
    cJSON *section;        /* the blue_green mapping as JSON (owned) */
    const cJSON *colors[2]; /* blue, green: {providers, probe_url?} (borrowed from section) */
    const cJSON *probe;    /* probe mapping (borrowed) */
    const cJSON *router;   /* router mapping (borrowed) */
    char router_name[64];
    int router_is_command;
    int attempts;
    int64_t interval_ms;
    int64_t router_timeout_ms;
};

static const char *const colors[] = {"blue", "green"};

const char *dq_bg_other(const char *color)
{
    if (!color)
        return NULL;
    if (strcmp(color, "blue") == 0)
        return "green";
    if (strcmp(color, "green") == 0)
        return "blue";
    return NULL;
}

static int color_index(const char *color)
{
    return color && strcmp(color, "green") == 0 ? 1 : color && strcmp(color, "blue") == 0 ? 0 : -1;
}

static const cJSON *env_key(const dq_config *cfg, const char *service, const char *environment,
                            const char *key)
{
    const cJSON *env = dq_config_env_view(cfg, service, environment);

    return cJSON_IsObject(env) ? cJSON_GetObjectItemCaseSensitive(env, key) : NULL;
}

int dq_bg_configured(const dq_config *cfg, const char *service, const char *environment)
{
    return env_key(cfg, service, environment, "blue_green") != NULL;
}

int dq_bg_applies(const dq_config *cfg, const char *service, const char *environment,
                  const char *request_strategy)
{
    char num[32];
    const char *s = dq_config_text(cfg, env_key(cfg, service, environment, "strategy"), num, sizeof num);

    return (request_strategy && strcmp(request_strategy, "blue-green") == 0) ||
           (s && strcmp(s, "blue-green") == 0);
}

void dq_bg_free(dq_bluegreen *bg)
{
    if (!bg)
        return;
    cJSON_Delete(bg->section);
    free(bg->service);
    free(bg->environment);
    free(bg);
}

/* A duration member (string "2s" or seconds as a number); fallback when absent, -1 bad. */
static int64_t duration_of(const cJSON *obj, const char *key, int64_t fallback)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char buf[32];

    if (!v)
        return fallback;
    if (cJSON_IsString(v))
        return dq_duration_parse(v->valuestring);
    if (cJSON_IsNumber(v) && v->valuedouble >= 0) {
        snprintf(buf, sizeof buf, "%lld", (long long)v->valuedouble);
        return dq_duration_parse(buf);
    }
    return -1;
}

dq_bluegreen *dq_bg_load(const dq_config *cfg, const char *service, const char *environment,
                         char *err, size_t errlen)
{
    const cJSON *node = env_key(cfg, service, environment, "blue_green");
    dq_bluegreen *bg = calloc(1, sizeof *bg);
    const cJSON *cs, *v;
    const char *type;
    char at[512];

    if (!bg) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(bg->where, sizeof bg->where, "%sservices.%s.environments.%s.blue_green",
             dq_config_where(cfg, node ? node : dq_config_env_view(cfg, service, environment), at, sizeof at),
             service, environment);
    if (!node) {
        snprintf(err, errlen, "%s: required for strategy blue-green", bg->where);
        goto fail;
    }
    bg->service = strdup(service);
    bg->environment = strdup(environment);
    bg->section = cJSON_Duplicate(node, 1);
    if (!bg->service || !bg->environment || !bg->section) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (!cJSON_IsObject(bg->section)) {
        snprintf(err, errlen, "%s: expected a mapping", bg->where);
        goto fail;
    }
    cs = cJSON_GetObjectItemCaseSensitive(bg->section, "colors");
    for (int i = 0; i < 2; i++) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(cs, colors[i]);
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(c, "providers");

        if (!cJSON_IsObject(c) || !cJSON_IsArray(ps) || cJSON_GetArraySize(ps) == 0) {
            snprintf(err, errlen, "%s.colors.%s: required, a mapping with a non-empty providers list",
                     bg->where, colors[i]);
            goto fail;
        }
        bg->colors[i] = c;
    }
    bg->probe = cJSON_GetObjectItemCaseSensitive(bg->section, "probe");
    if (!cJSON_IsObject(bg->probe) ||
        (!dq_json_str(bg->probe, "url") &&
         !(dq_json_str(bg->colors[0], "probe_url") && dq_json_str(bg->colors[1], "probe_url")))) {
        snprintf(err, errlen, "%s.probe: required, a mapping with url (or probe_url in each color): "
                              "the idle color is probed before any traffic moves", bg->where);
        goto fail;
    }
    v = cJSON_GetObjectItemCaseSensitive(bg->probe, "attempts");
    bg->attempts = v ? (cJSON_IsNumber(v) ? (int)v->valuedouble : 0) : 10;
    if (bg->attempts < 1 || bg->attempts > 1000) {
        snprintf(err, errlen, "%s.probe.attempts: expected 1 to 1000", bg->where);
        goto fail;
    }
    bg->interval_ms = duration_of(bg->probe, "interval", 1000);
    if (bg->interval_ms < 0) {
        snprintf(err, errlen, "%s.probe.interval: expected a duration such as 1s", bg->where);
        goto fail;
    }
    bg->router = cJSON_GetObjectItemCaseSensitive(bg->section, "router");
    type = dq_json_str(bg->router, "type");
    if (!type || (strcmp(type, "http") != 0 && strcmp(type, "command") != 0)) {
        snprintf(err, errlen, "%s.router.type: required, http or command", bg->where);
        goto fail;
    }
    bg->router_is_command = strcmp(type, "command") == 0;
    if (bg->router_is_command) {
        const cJSON *argv = cJSON_GetObjectItemCaseSensitive(bg->router, "argv"), *a;
        int n = 0;

        cJSON_ArrayForEach(a, argv)
        {
            if (!cJSON_IsString(a))
                n = MAX_ARGV + 1;
            n++;
        }
        if (!cJSON_IsArray(argv) || n == 0 || n > MAX_ARGV) {
            snprintf(err, errlen, "%s.router.argv: required, a list of 1 to %d strings", bg->where,
                     MAX_ARGV);
            goto fail;
        }
    } else {
        const char *url = dq_json_str(bg->router, "url");

        if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
            snprintf(err, errlen, "%s.router.url: required, an http:// or https:// URL", bg->where);
            goto fail;
        }
    }
    bg->router_timeout_ms = duration_of(bg->router, "timeout", bg->router_is_command ? 30000 : 5000);
    if (bg->router_timeout_ms <= 0) {
        snprintf(err, errlen, "%s.router.timeout: expected a duration such as 5s", bg->where);
        goto fail;
    }
    dq_strlcpy(bg->router_name,
               dq_json_str(bg->router, "name") ? dq_json_str(bg->router, "name") : type,
               sizeof bg->router_name);
    return bg;
fail:
    dq_bg_free(bg);
    return NULL;
}

const char *dq_bg_router_name(const dq_bluegreen *bg)
{
    return bg->router_name;
}

int dq_bg_color_chain(const dq_bluegreen *bg, const char *color, dq_provider ***providers,
                      size_t *n, char *err, size_t errlen)
{
    int ci = color_index(color);
    const cJSON *ps, *item;
    dq_provider **out;
    size_t count = 0;
    char why[512];

    *providers = NULL;
    *n = 0;
    if (ci < 0) {
        snprintf(err, errlen, "%s: unknown color %s", bg->where, color ? color : "(none)");
        return -1;
    }
    ps = cJSON_GetObjectItemCaseSensitive(bg->colors[ci], "providers");
    out = calloc((size_t)cJSON_GetArraySize(ps), sizeof *out);
    if (!out) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cJSON_ArrayForEach(item, ps)
    {
        if (!cJSON_IsObject(item)) {
            snprintf(err, errlen, "%s.colors.%s.providers[%zu]: expected a provider mapping", bg->where,
                     color, count);
            goto fail;
        }
        out[count] = dq_provider_new(item, why, sizeof why);
        if (!out[count]) {
            snprintf(err, errlen, "%s.colors.%s.providers[%zu]: %s", bg->where, color, count, why);
            goto fail;
        }
        count++;
    }
    *providers = out;
    *n = count;
    return 0;
fail:
    for (size_t i = 0; i < count; i++)
        dq_provider_free(out[i]);
    free(out);
    return -1;
}

/* in with {color}, {service} and {environment} replaced; malloc'd, NULL on OOM. */
static char *subst(const dq_bluegreen *bg, const char *in, const char *color)
{
    const char *names[] = {"{color}", "{service}", "{environment}"};
    const char *values[] = {color, bg->service, bg->environment};
    size_t cap = strlen(in) + 1, len = 0;
    char *out;

    for (size_t k = 0; k < 3; k++)
        for (const char *p = strstr(in, names[k]); p; p = strstr(p + 1, names[k]))
            cap += strlen(values[k]);
    out = malloc(cap);
    if (!out)
        return NULL;
    while (*in) {
        size_t k;

        for (k = 0; k < 3; k++)
            if (strncmp(in, names[k], strlen(names[k])) == 0)
                break;
        if (k < 3) {
            memcpy(out + len, values[k], strlen(values[k]));
            len += strlen(values[k]);
            in += strlen(names[k]);
        } else {
            out[len++] = *in++;
        }
    }
    out[len] = '\0';
    return out;
}

/* ---- state ---- */

static void state_key(char *out, size_t len, const char *service, const char *environment)
{
    snprintf(out, len, "deployq:color:%s:%s", service, environment);
}

int dq_bg_state_read(dq_redis *r, const char *service, const char *environment, dq_bg_state *st,
                     char *err, size_t errlen)
{
    char key[300];
    redisReply *rep;

    memset(st, 0, sizeof *st);
    state_key(key, sizeof key, service, environment);
    rep = dq_redis_command(r, "HMGET %s live blue green", key);
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(r),
                 rep ? "unexpected reply to HMGET" : dq_redis_errstr(r));
        if (rep)
            freeReplyObject(rep);
        return -1;
    }
    if (rep->element[0]->type == REDIS_REPLY_STRING && dq_bg_other(rep->element[0]->str))
        dq_strlcpy(st->live, rep->element[0]->str, sizeof st->live);
    for (int i = 0; i < 2; i++)
        if (rep->element[i + 1]->type == REDIS_REPLY_STRING)
            dq_strlcpy(st->version[i], rep->element[i + 1]->str, sizeof st->version[i]);
    freeReplyObject(rep);
    return 0;
}

const char *dq_bg_state_version(const dq_bg_state *st, const char *color)
{
    int ci = color_index(color);

    return ci < 0 ? "" : st->version[ci];
}

int dq_bg_pick_idle(dq_redis *r, const char *service, const char *environment,
                    const char *deployment_id, char color[DQ_BG_COLOR_LEN], char *err, size_t errlen)
{
    char key[400], *known = NULL;
    dq_bg_state st;
    const char *idle;

    snprintf(key, sizeof key, "deployq:color:%s:%s:deploy:%s", service, environment, deployment_id);
    if (dq_redis_get(r, key, &known) != 0) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(r), dq_redis_errstr(r));
        return -1;
    }
    if (known && dq_bg_other(known)) {
        dq_strlcpy(color, known, DQ_BG_COLOR_LEN);
        free(known);
        return 0;
    }
    free(known);
    if (dq_bg_state_read(r, service, environment, &st, err, errlen) != 0)
        return -1;
    idle = st.live[0] ? dq_bg_other(st.live) : "blue";
    /* NX: two runs of one deployment racing agree on whichever color was written first */
    if (dq_redis_set_nx(r, key, idle, PICK_TTL_S) < 0) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(r), dq_redis_errstr(r));
        return -1;
    }
    if (dq_redis_get(r, key, &known) != 0 || !known || !dq_bg_other(known)) {
        free(known);
        snprintf(err, errlen, "redis %s: the color of %s was not kept", dq_redis_where(r), deployment_id);
        return -1;
    }
    dq_strlcpy(color, known, DQ_BG_COLOR_LEN);
    free(known);
    return 0;
}

int dq_bg_set_live(dq_redis *r, const char *service, const char *environment, const char *color,
                   const char *version, char *err, size_t errlen)
{
    char key[300], now[32];
    redisReply *rep;

    if (!dq_bg_other(color)) {
        snprintf(err, errlen, "unknown color %s", color ? color : "(none)");
        return -1;
    }
    state_key(key, sizeof key, service, environment);
    snprintf(now, sizeof now, "%lld", (long long)dq_now_ms());
    if (version)
        rep = dq_redis_command(r, "HSET %s live %s %s %s switched_at %s", key, color, color, version, now);
    else
        rep = dq_redis_command(r, "HSET %s live %s switched_at %s", key, color, now);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(r),
                 rep ? rep->str : dq_redis_errstr(r));
        if (rep)
            freeReplyObject(rep);
        return -1;
    }
    freeReplyObject(rep);
    return 0;
}

/* ---- probe ---- */

dq_probe *dq_bg_color_probe(const dq_bluegreen *bg, const char *color, char *err, size_t errlen)
{
    int ci = color_index(color);
    cJSON *obj = ci >= 0 ? cJSON_Duplicate(bg->probe, 1) : NULL;
    const char *url = ci >= 0 ? dq_json_str(bg->colors[ci], "probe_url") : NULL;
    char *u = NULL, where[600];
    dq_probe *p = NULL;

    if (!obj) {
        snprintf(err, errlen, "%s", ci < 0 ? "unknown color" : "out of memory");
        goto out;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "attempts");
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "interval");
    if (!cJSON_GetObjectItemCaseSensitive(obj, "name"))
        cJSON_AddStringToObject(obj, "name", color);
    u = subst(bg, url ? url : dq_json_str(obj, "url"), color);
    if (!u) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "url");
    cJSON_AddStringToObject(obj, "url", u);
    snprintf(where, sizeof where, "%s.probe", bg->where);
    p = dq_probe_from_json(obj, where, 5000, err, errlen);
out:
    free(u);
    cJSON_Delete(obj);
    return p;
}

int dq_bg_probe(const dq_bluegreen *bg, const char *color, int (*should_continue)(void *),
                void *ctx, char *detail, size_t detaillen)
{
    dq_probe *p = dq_bg_color_probe(bg, color, detail, detaillen);
    int rc = -1;

    if (!p)
        return -1;
    for (int i = 0; i < bg->attempts; i++) {
        dq_sample s;

        if (i > 0) {
            /* wait in small steps so a shutdown is seen */
            for (int64_t waited = 0; waited < bg->interval_ms; waited += 100) {
                if (should_continue && !should_continue(ctx)) {
                    rc = 1;
                    goto out;
                }
                dq_sleep_ms(bg->interval_ms - waited < 100 ? bg->interval_ms - waited : 100);
            }
        }
        dq_probe_run(p, &s);
        if (s.outcome == DQ_SAMPLE_PASS) {
            rc = 0;
            goto out;
        }
        snprintf(detail, detaillen, "%s", s.detail);
    }
out:
    dq_probe_free(p);
    return rc;
}

/* ---- the router ---- */

static int switch_http(const dq_bluegreen *bg, const char *color, int64_t fence, char *err,
                       size_t errlen)
{
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(bg->router, "headers"), *h;
    const char *method = dq_json_str(bg->router, "method");
    const char *body_t = dq_json_str(bg->router, "body");
    const char *headers[34];
    char *hbuf[32] = {0}, fence_h[64];
    char *url = subst(bg, dq_json_str(bg->router, "url"), color);
    char *body = subst(bg, body_t ? body_t : "{\"color\":\"{color}\"}", color);
    dq_http_opts o = {0};
    dq_http_response resp = {0};
    size_t nh = 0, nb = 0;
    int rc = -1;

    if (!url || !body) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    headers[nh++] = "Content-Type: application/json";
    snprintf(fence_h, sizeof fence_h, "X-Deployq-Fence: %lld", (long long)fence);
    headers[nh++] = fence_h;
    /* configured headers (their values may be credentials: never copied into err) */
    cJSON_ArrayForEach(h, hs)
    {
        size_t len;

        if (nb >= 32 || !cJSON_IsString(h) || !h->string)
            continue;
        len = strlen(h->string) + strlen(h->valuestring) + 3;
        hbuf[nb] = malloc(len);
        if (!hbuf[nb])
            continue;
        snprintf(hbuf[nb], len, "%s: %s", h->string, h->valuestring);
        headers[nh++] = hbuf[nb++];
    }
    headers[nh] = NULL;
    o.method = method ? method : "POST";
    o.url = url;
    o.headers = headers;
    o.body = body;
    o.timeout_ms = (long)bg->router_timeout_ms;
    o.max_retries = 2;              /* connection errors only: idempotent stays 0 */
    o.retry_budget_ms = bg->router_timeout_ms * 3;
    if (dq_http_request(&o, &resp) != 0) {
        snprintf(err, errlen, "router %s: %s", bg->router_name, resp.errstr);
        goto out;
    }
    if (resp.status < 200 || resp.status > 299) {
        snprintf(err, errlen, "router %s answered HTTP %ld", bg->router_name, resp.status);
        goto out;
    }
    rc = 0;
out:
    dq_http_response_free(&resp);
    for (size_t i = 0; i < 32; i++)
        free(hbuf[i]);
    free(url);
    free(body);
    return rc;
}

static int switch_command(const dq_bluegreen *bg, const char *color, int64_t fence, char *err,
                          size_t errlen)
{
    const cJSON *argv_j = cJSON_GetObjectItemCaseSensitive(bg->router, "argv"), *a;
    char *argv[MAX_ARGV + 1] = {0}, **env = NULL, f[32], why[512], *text;
    dq_proc_result res = {0};
    dq_proc_status ps;
    size_t n = 0;
    int rc = -1;

    cJSON_ArrayForEach(a, argv_j)
    {
        argv[n] = subst(bg, a->valuestring, color);
        if (!argv[n++]) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    snprintf(f, sizeof f, "%lld", (long long)fence);
    /* built here and handed to the spawn: the process environment is never written */
    const dq_proc_var vars[] = {
        {"DEPLOYQ_COLOR", color},
        {"DEPLOYQ_FENCE", f},
        {"DEPLOYQ_SERVICE", bg->service},
        {"DEPLOYQ_ENVIRONMENT", bg->environment},
    };
    env = dq_proc_env(vars, sizeof vars / sizeof vars[0]);
    if (!env) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* No keep_going: a switch that has started is let finish (or time out), never abandoned
     * halfway because the worker is shutting down. */
    const dq_proc_opts o = {
        .argv = argv,
        .envp = env,
        .timeout_ms = bg->router_timeout_ms,
        .out_max = ROUTER_OUTPUT_MAX,
        .out_keep = DQ_PROC_KEEP_TAIL,
    };
    ps = dq_proc_run(&o, &res, why, sizeof why);
    if (ps != DQ_PROC_OK)
        snprintf(err, errlen, "router %s: %s", bg->router_name, why);
    else if (res.stopped == DQ_PROC_STOP_TIMEOUT)
        snprintf(err, errlen, "router %s: the command did not finish within %lld ms", bg->router_name,
                 (long long)bg->router_timeout_ms);
    else if (res.exit_code != 0)
        snprintf(err, errlen, "router %s: the command %s %d", bg->router_name,
                 res.exit_code >= 0 ? "exited with" : "was killed by signal",
                 res.exit_code >= 0 ? res.exit_code : res.term_signal);
    else
        rc = 0;
    /* What it printed goes to the log (redacted), not into err: err lands in events. */
    if (res.out_total > 0 && (text = dq_proc_text(res.out, res.out_len, res.out_total)) != NULL) {
        if (rc != 0)
            dq_warn("router %s: the command printed: %s", bg->router_name, text);
        else
            dq_debug("router %s: the command printed: %s", bg->router_name, text);
        free(text);
    }
out:
    dq_proc_result_free(&res);
    dq_proc_env_free(env);
    for (size_t i = 0; i < n; i++)
        free(argv[i]);
    return rc;
}

int dq_bg_switch(const dq_bluegreen *bg, const char *color, int64_t fence, char *err,
                 size_t errlen)
{
    if (!dq_bg_other(color)) {
        snprintf(err, errlen, "unknown color %s", color ? color : "(none)");
        return -1;
    }
    return bg->router_is_command ? switch_command(bg, color, fence, err, errlen)
                                 : switch_http(bg, color, fence, err, errlen);
}

dq_event *dq_bg_switched_event(const char *deployment_id, const char *service,
                               const char *environment, const char *version, const char *actor,
                               int64_t fence, const char *from_color, const char *to_color,
                               const char *router, const char *id_seed)
{
    dq_event *ev = dq_event_new(DQ_EV_TRAFFIC_SWITCHED, deployment_id, service, environment,
                                version, actor);
    const char *from = from_color && from_color[0] ? from_color : dq_bg_other(to_color);

    if (!ev)
        return NULL;
    dq_event_set_id_from(ev, id_seed);
    ev->fence = fence;
    if (!from || !cJSON_AddStringToObject(ev->data, "from_color", from) ||
        !cJSON_AddStringToObject(ev->data, "to_color", to_color) ||
        !cJSON_AddStringToObject(ev->data, "router", router) ||
        (!(from_color && from_color[0]) && !cJSON_AddTrueToObject(ev->data, "initial"))) {
        dq_event_free(ev);
        return NULL;
    }
    return ev;
}
