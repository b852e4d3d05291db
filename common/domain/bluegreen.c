/*
 * bluegreen.c - blue-green deploys (see bluegreen.h): the configuration, the colors'
 * state in Redis, the idle color's probe, and the router call that moves traffic.
 *
 * The router call is the one step that changes what users see, so it is never retried
 * blindly here: one attempt within its timeout (an HTTP router behind a flaky proxy gets
 * the usual retries only for connection errors, which cannot have switched anything). A
 * router command runs through the process runner (proc.h), like every child of deployq.
 *
 * Routers that take weights (the canary's) are told the weights, then asked for them: a
 * router that says something else than it was told is refused, never trusted. HAProxy's
 * runtime API is a line protocol on a stream socket (one command, the answer up to EOF):
 * a small client of it is here, with a poll deadline on every step.
 */
#include "bluegreen.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "http.h"
#include "json.h"
#include "log.h"
#include "probe.h"
#include "proc.h"
#include "util.h"

#define PICK_TTL_S (7 * 24 * 3600)
#define MAX_ARGV 64
#define ROUTER_OUTPUT_MAX 1024 /* the tail of a router command's output, for the log */
#define HAPROXY_ANSWER_MAX 4096 /* a runtime API answer we read; longer is an error */
#define WEIGHTS_MAX_BYTES 65536 /* a weights document a router answers */

enum router_type { ROUTER_HTTP, ROUTER_COMMAND, ROUTER_HAPROXY };

struct dq_bluegreen {
    char where[512];       /* "deployq.yaml:12: services.api.environments.prod.blue_green" */
    char *service, *environment;
    cJSON *section;        /* the blue_green mapping as JSON (owned) */
    const cJSON *colors[2]; /* blue, green: {providers, probe_url?} (borrowed from section) */
    const cJSON *probe;    /* probe mapping (borrowed) */
    const cJSON *router;   /* router mapping (borrowed) */
    char router_name[64];
    enum router_type router_type;
    int weighted;          /* the router takes weights (bluegreen.h "weights") */
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

/* 0 when the member key of the router is absent or a list of 1 to MAX_ARGV strings. */
static int argv_ok(const dq_bluegreen *bg, const char *key, int required, char *err, size_t errlen)
{
    const cJSON *argv = cJSON_GetObjectItemCaseSensitive(bg->router, key), *a;
    int n = 0;

    if (!argv && !required)
        return 0;
    cJSON_ArrayForEach(a, argv)
    {
        if (!cJSON_IsString(a))
            n = MAX_ARGV + 1;
        n++;
    }
    if (!cJSON_IsArray(argv) || n == 0 || n > MAX_ARGV) {
        snprintf(err, errlen, "%s.router.%s: %sa list of 1 to %d strings", bg->where, key,
                 required ? "required, " : "expected ", MAX_ARGV);
        return -1;
    }
    return 0;
}

/* 0 when the member key of the router is absent (and not required) or an http(s) URL. */
static int url_ok(const dq_bluegreen *bg, const char *key, int required, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(bg->router, key);
    const char *url = cJSON_IsString(v) ? v->valuestring : NULL;

    if (!v && !required)
        return 0;
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        snprintf(err, errlen, "%s.router.%s: %san http:// or https:// URL", bg->where, key,
                 required ? "required, " : "expected ");
        return -1;
    }
    return 0;
}

/* A name HAProxy accepts for a backend or server (letters, digits, - _ . :), so that it
 * cannot carry a second command (';') or a line break into the runtime API. */
static int haproxy_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.' || *s == ':'))
            return 0;
    return 1;
}

static int load_haproxy(dq_bluegreen *bg, char *err, size_t errlen)
{
    const char *sock = dq_json_str(bg->router, "socket"), *addr = dq_json_str(bg->router, "address");
    const cJSON *servers = cJSON_GetObjectItemCaseSensitive(bg->router, "servers");

    if (!sock == !addr || (sock && !*sock) || (addr && (!strrchr(addr, ':') || strrchr(addr, ':') == addr))) {
        snprintf(err, errlen, "%s.router: haproxy needs socket (a unix socket path) or address "
                              "(host:port), one of them", bg->where);
        return -1;
    }
    if (sock && strlen(sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(err, errlen, "%s.router.socket: longer than a unix socket path can be", bg->where);
        return -1;
    }
    if (!haproxy_name_ok(dq_json_str(bg->router, "backend"))) {
        snprintf(err, errlen, "%s.router.backend: required, a backend name (letters, digits, - _ . :)",
                 bg->where);
        return -1;
    }
    for (int i = 0; i < 2; i++)
        if (!haproxy_name_ok(dq_json_str(servers, colors[i]))) {
            snprintf(err, errlen, "%s.router.servers.%s: required, a server name (letters, digits, - _ . :)",
                     bg->where, colors[i]);
            return -1;
        }
    if (strcmp(dq_json_str(servers, "blue"), dq_json_str(servers, "green")) == 0) {
        snprintf(err, errlen, "%s.router.servers: blue and green name one server", bg->where);
        return -1;
    }
    bg->weighted = 1;
    return 0;
}

/* The router mapping: its type, its request (or command, or HAProxy's runtime API) and,
 * when it takes weights, the weights request and the read-back. */
static int load_router(dq_bluegreen *bg, char *err, size_t errlen)
{
    const char *type;

    bg->router = cJSON_GetObjectItemCaseSensitive(bg->section, "router");
    type = dq_json_str(bg->router, "type");
    if (!type || (strcmp(type, "http") != 0 && strcmp(type, "command") != 0 && strcmp(type, "haproxy") != 0)) {
        snprintf(err, errlen, "%s.router.type: required, http, command or haproxy", bg->where);
        return -1;
    }
    bg->router_type = strcmp(type, "command") == 0 ? ROUTER_COMMAND
                      : strcmp(type, "haproxy") == 0 ? ROUTER_HAPROXY : ROUTER_HTTP;
    if (bg->router_type == ROUTER_HAPROXY) {
        if (load_haproxy(bg, err, errlen) != 0)
            return -1;
    } else if (bg->router_type == ROUTER_COMMAND) {
        const cJSON *wa = cJSON_GetObjectItemCaseSensitive(bg->router, "weights_argv");
        const cJSON *ra = cJSON_GetObjectItemCaseSensitive(bg->router, "read_argv");

        if (argv_ok(bg, "argv", 1, err, errlen) != 0 || argv_ok(bg, "weights_argv", 0, err, errlen) != 0 ||
            argv_ok(bg, "read_argv", 0, err, errlen) != 0)
            return -1;
        if (!wa != !ra) {
            snprintf(err, errlen, "%s.router: weights_argv and read_argv go together (weights are read "
                                  "back after they are set)", bg->where);
            return -1;
        }
        bg->weighted = wa != NULL;
    } else {
        const cJSON *wb = cJSON_GetObjectItemCaseSensitive(bg->router, "weights_body");
        const cJSON *ru = cJSON_GetObjectItemCaseSensitive(bg->router, "read_url");

        if (url_ok(bg, "url", 1, err, errlen) != 0 || url_ok(bg, "weights_url", 0, err, errlen) != 0 ||
            url_ok(bg, "read_url", 0, err, errlen) != 0)
            return -1;
        if (wb && !cJSON_IsString(wb)) {
            snprintf(err, errlen, "%s.router.weights_body: expected a string", bg->where);
            return -1;
        }
        if (!wb != !ru) {
            snprintf(err, errlen, "%s.router: weights_body and read_url go together (weights are read "
                                  "back after they are set)", bg->where);
            return -1;
        }
        bg->weighted = wb != NULL;
    }
    bg->router_timeout_ms = duration_of(bg->router, "timeout", bg->router_type == ROUTER_COMMAND ? 30000 : 5000);
    if (bg->router_timeout_ms <= 0) {
        snprintf(err, errlen, "%s.router.timeout: expected a duration such as 5s", bg->where);
        return -1;
    }
    dq_strlcpy(bg->router_name,
               dq_json_str(bg->router, "name") ? dq_json_str(bg->router, "name") : type,
               sizeof bg->router_name);
    return 0;
}

dq_bluegreen *dq_bg_load(const dq_config *cfg, const char *service, const char *environment,
                         char *err, size_t errlen)
{
    const cJSON *node = env_key(cfg, service, environment, "blue_green");
    dq_bluegreen *bg = calloc(1, sizeof *bg);
    const cJSON *cs, *v;
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
    if (load_router(bg, err, errlen) != 0)
        goto fail;
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

/* in with {color}, {service}, {environment} and, when w is given, {weight_blue} and
 * {weight_green} replaced (a NULL color leaves {color} as it is); malloc'd, NULL on OOM. */
static char *subst_w(const dq_bluegreen *bg, const char *in, const char *color, const int *w)
{
    const char *names[] = {"{color}", "{service}", "{environment}", "{weight_blue}", "{weight_green}"};
    char wb[16] = "", wg[16] = "";
    const char *values[] = {color, bg->service, bg->environment, w ? wb : NULL, w ? wg : NULL};
    const size_t nn = sizeof names / sizeof names[0];
    size_t cap = strlen(in) + 1, len = 0;
    char *out;

    if (w) {
        snprintf(wb, sizeof wb, "%d", w[0]);
        snprintf(wg, sizeof wg, "%d", w[1]);
    }
    for (size_t k = 0; k < nn; k++)
        for (const char *p = values[k] ? strstr(in, names[k]) : NULL; p; p = strstr(p + 1, names[k]))
            cap += strlen(values[k]);
    out = malloc(cap);
    if (!out)
        return NULL;
    while (*in) {
        size_t k;

        for (k = 0; k < nn; k++)
            if (values[k] && strncmp(in, names[k], strlen(names[k])) == 0)
                break;
        if (k < nn) {
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

static char *subst(const dq_bluegreen *bg, const char *in, const char *color)
{
    return subst_w(bg, in, color, NULL);
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

/* One request to an HTTP router: method to url_t, with body_t (NULL: none), both filled
 * in for color and w (either may be NULL); the fence as X-Deployq-Fence when >= 0. 0 when
 * it answered 2xx, with the response in *resp (the caller frees it either way); -1 with
 * a one-line reason in err. */
static int router_http(const dq_bluegreen *bg, const char *method, const char *url_t, const char *body_t,
                       const char *color, const int *w, int64_t fence, dq_http_response *resp, char *err,
                       size_t errlen)
{
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(bg->router, "headers"), *h;
    const char *headers[34];
    char *hbuf[32] = {0}, fence_h[64];
    char *url = subst_w(bg, url_t, color, w);
    char *body = body_t ? subst_w(bg, body_t, color, w) : NULL;
    dq_http_opts o = {0};
    size_t nh = 0, nb = 0;
    int rc = -1;

    if (!url || (body_t && !body)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (body)
        headers[nh++] = "Content-Type: application/json";
    if (fence >= 0) {
        snprintf(fence_h, sizeof fence_h, "X-Deployq-Fence: %lld", (long long)fence);
        headers[nh++] = fence_h;
    }
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
    o.method = method;
    o.url = url;
    o.headers = headers;
    o.body = body;
    o.timeout_ms = (long)bg->router_timeout_ms;
    /* connection errors, 429 and 5xx are tried twice more; a timeout is not (idempotent
     * stays 0). A switch or a weights request sets a state, so a repeat is harmless. */
    o.max_retries = 2;
    o.retry_budget_ms = bg->router_timeout_ms * 3;
    if (dq_http_request(&o, resp) != 0) {
        snprintf(err, errlen, "router %s: %s", bg->router_name, resp->errstr);
        goto out;
    }
    if (resp->status < 200 || resp->status > 299) {
        snprintf(err, errlen, "router %s answered HTTP %ld", bg->router_name, resp->status);
        goto out;
    }
    rc = 0;
out:
    for (size_t i = 0; i < 32; i++)
        free(hbuf[i]);
    free(url);
    free(body);
    return rc;
}

static int switch_http(const dq_bluegreen *bg, const char *color, int64_t fence, char *err,
                       size_t errlen)
{
    const char *method = dq_json_str(bg->router, "method");
    const char *body_t = dq_json_str(bg->router, "body");
    dq_http_response resp = {0};
    int rc = router_http(bg, method ? method : "POST", dq_json_str(bg->router, "url"),
                         body_t ? body_t : "{\"color\":\"{color}\"}", color, NULL, fence, &resp, err, errlen);

    dq_http_response_free(&resp);
    return rc;
}

/* Run the router's command key (argv, weights_argv, read_argv), its items filled in for
 * color and w (either may be NULL), with DEPLOYQ_COLOR, DEPLOYQ_WEIGHT_BLUE/GREEN when
 * given and DEPLOYQ_FENCE when >= 0. With out (read_argv), what it printed on stdout goes
 * there (malloc'd, the caller frees); otherwise it is logged. 0 when it exited 0, -1 with
 * a one-line reason in err. */
static int router_command(const dq_bluegreen *bg, const char *key, const char *color, const int *w,
                          int64_t fence, char **out, char *err, size_t errlen)
{
    const cJSON *argv_j = cJSON_GetObjectItemCaseSensitive(bg->router, key), *a;
    char *argv[MAX_ARGV + 1] = {0}, **env = NULL, f[32], wb[16], wg[16], why[512], *text;
    dq_proc_result res = {0};
    dq_proc_var vars[7];
    dq_proc_status ps;
    size_t n = 0, nv = 0;
    int rc = -1;

    cJSON_ArrayForEach(a, argv_j)
    {
        argv[n] = subst_w(bg, a->valuestring, color, w);
        if (!argv[n++]) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    /* built here and handed to the spawn: the process environment is never written */
    vars[nv++] = (dq_proc_var){"DEPLOYQ_SERVICE", bg->service};
    vars[nv++] = (dq_proc_var){"DEPLOYQ_ENVIRONMENT", bg->environment};
    if (color)
        vars[nv++] = (dq_proc_var){"DEPLOYQ_COLOR", color};
    if (fence >= 0) {
        snprintf(f, sizeof f, "%lld", (long long)fence);
        vars[nv++] = (dq_proc_var){"DEPLOYQ_FENCE", f};
    }
    if (w) {
        snprintf(wb, sizeof wb, "%d", w[0]);
        snprintf(wg, sizeof wg, "%d", w[1]);
        vars[nv++] = (dq_proc_var){"DEPLOYQ_WEIGHT_BLUE", wb};
        vars[nv++] = (dq_proc_var){"DEPLOYQ_WEIGHT_GREEN", wg};
    }
    env = dq_proc_env(vars, nv);
    if (!env) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* No keep_going: a switch that has started is let finish (or time out), never abandoned
     * halfway because the worker is shutting down. A read keeps stdout (its answer) apart
     * from stderr (logged). */
    const dq_proc_opts o = {
        .argv = argv,
        .envp = env,
        .timeout_ms = bg->router_timeout_ms,
        .out_max = out ? WEIGHTS_MAX_BYTES : ROUTER_OUTPUT_MAX,
        .out_keep = out ? DQ_PROC_KEEP_HEAD : DQ_PROC_KEEP_TAIL,
        .stderr_apart = out != NULL,
        .err_max = ROUTER_OUTPUT_MAX,
    };
    ps = dq_proc_run(&o, &res, why, sizeof why);
    if (ps != DQ_PROC_OK)
        snprintf(err, errlen, "router %s: %s", bg->router_name, why);
    else if (res.stopped == DQ_PROC_STOP_TIMEOUT)
        snprintf(err, errlen, "router %s: the command did not finish within %lld ms", bg->router_name,
                 (long long)bg->router_timeout_ms);
    else if (res.stopped == DQ_PROC_STOP_OUTPUT)
        snprintf(err, errlen, "router %s: the command printed more than %d bytes", bg->router_name,
                 WEIGHTS_MAX_BYTES);
    else if (res.exit_code != 0)
        snprintf(err, errlen, "router %s: the command %s %d", bg->router_name,
                 res.exit_code >= 0 ? "exited with" : "was killed by signal",
                 res.exit_code >= 0 ? res.exit_code : res.term_signal);
    else
        rc = 0;
    if (rc == 0 && out) {
        *out = strndup(res.out ? res.out : "", res.out_len);
        if (!*out) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        }
    }
    /* What it printed goes to the log (redacted), not into err: err lands in events. */
    if (out ? res.err_total > 0 : res.out_total > 0) {
        text = out ? dq_proc_text(res.err, res.err_len, res.err_total)
                   : dq_proc_text(res.out, res.out_len, res.out_total);
        if (text && rc != 0)
            dq_warn("router %s: the command printed: %s", bg->router_name, text);
        else if (text)
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

/* ---- HAProxy's runtime API ----
 * One connection per command (the non-interactive mode): connect, write the line, read
 * the answer until HAProxy closes. Every step waits at most until the router's timeout. */

static const char *haproxy_where(const dq_bluegreen *bg)
{
    const char *sock = dq_json_str(bg->router, "socket");

    return sock ? sock : dq_json_str(bg->router, "address");
}

/* Wait until fd is ready for events or deadline (dq_mono_ms) passes: 0 ready, -1 not. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int64_t left = deadline - dq_mono_ms();
        int n;

        if (left <= 0)
            return -1;
        n = poll(&p, 1, (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* A non-blocking socket connected to the runtime API, or -1 with why (a static text or
 * strerror) in *why. */
static int haproxy_connect(const dq_bluegreen *bg, int64_t deadline, const char **why)
{
    const char *sock = dq_json_str(bg->router, "socket");
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL, *it;
    char host[256], *port;
    int fd = -1, e;

    if (sock) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        dq_strlcpy(sa.sun_path, sock, sizeof sa.sun_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            *why = strerror(errno);
            if (fd >= 0)
                close(fd);
            return -1;
        }
        return fd;
    }
    dq_strlcpy(host, dq_json_str(bg->router, "address"), sizeof host);
    port = strrchr(host, ':');
    *port++ = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:9999 */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    if ((e = getaddrinfo(host, port, &hints, &ai)) != 0) {
        *why = gai_strerror(e);
        return -1;
    }
    *why = "no address";
    for (it = ai; it; it = it->ai_next) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;

        fd = socket(it->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            *why = strerror(errno);
            continue;
        }
        if (connect(fd, it->ai_addr, it->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            if (wait_fd(fd, POLLOUT, deadline) != 0) {
                *why = "connect timed out";
            } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
                break;
            } else {
                *why = strerror(soerr ? soerr : errno);
            }
        } else {
            *why = strerror(errno);
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* The answer to cmd with its surrounding white space removed, in ans. 0, -1 with err. */
static int haproxy_cmd(const dq_bluegreen *bg, const char *cmd, char *ans, size_t anslen, char *err,
                       size_t errlen)
{
    int64_t deadline = dq_mono_ms() + bg->router_timeout_ms;
    const char *why = NULL;
    char line[300];
    size_t len = 0, sent = 0, n;
    int fd = haproxy_connect(bg, deadline, &why);

    if (fd < 0) {
        snprintf(err, errlen, "router %s: haproxy %s: connect: %s", bg->router_name, haproxy_where(bg), why);
        return -1;
    }
    n = (size_t)snprintf(line, sizeof line, "%s\n", cmd);
    while (sent < n) {
        ssize_t w = send(fd, line + sent, n - sent, MSG_NOSIGNAL);

        if (w > 0) {
            sent += (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            why = strerror(errno);
            goto fail;
        } else if (wait_fd(fd, POLLOUT, deadline) != 0) {
            why = "no answer";
            goto fail;
        }
    }
    for (;;) {
        ssize_t r;

        if (wait_fd(fd, POLLIN, deadline) != 0) {
            why = "no answer";
            goto fail;
        }
        r = recv(fd, ans + len, anslen - 1 - len, 0);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            why = strerror(errno);
            goto fail;
        }
        len += (size_t)r;
        if (len >= anslen - 1) {
            why = "answer too long";
            goto fail;
        }
    }
    close(fd);
    ans[len] = '\0';
    /* trim, and fold the lines of a several-line answer into one */
    while (len > 0 && (ans[len - 1] == '\n' || ans[len - 1] == ' ' || ans[len - 1] == '\r'))
        ans[--len] = '\0';
    for (size_t i = 0; i < len; i++)
        if (ans[i] == '\n' || ans[i] == '\r' || ans[i] == '\t')
            ans[i] = ' ';
    return 0;
fail:
    close(fd);
    if (strcmp(why, "no answer") == 0)
        snprintf(err, errlen, "router %s: haproxy %s: %s: no answer within %lld ms", bg->router_name,
                 haproxy_where(bg), cmd, (long long)bg->router_timeout_ms);
    else
        snprintf(err, errlen, "router %s: haproxy %s: %s: %s", bg->router_name, haproxy_where(bg), cmd, why);
    return -1;
}

static const char *haproxy_server(const dq_bluegreen *bg, int ci)
{
    return dq_json_str(cJSON_GetObjectItemCaseSensitive(bg->router, "servers"), colors[ci]);
}

static int haproxy_set(const dq_bluegreen *bg, const int w[2], char *err, size_t errlen)
{
    /* the larger weight first: the backend never has both servers at 0 in between */
    int first = w[1] > w[0] ? 1 : 0;

    for (int k = 0; k < 2; k++) {
        int ci = k == 0 ? first : 1 - first;
        char cmd[200], ans[HAPROXY_ANSWER_MAX];

        snprintf(cmd, sizeof cmd, "set server %s/%s weight %d", dq_json_str(bg->router, "backend"),
                 haproxy_server(bg, ci), w[ci]);
        if (haproxy_cmd(bg, cmd, ans, sizeof ans, err, errlen) != 0)
            return -1;
        if (ans[0]) {
            snprintf(err, errlen, "router %s: haproxy %s: %s: %.200s", bg->router_name, haproxy_where(bg), cmd, ans);
            return -1;
        }
    }
    return 0;
}

static int haproxy_read(const dq_bluegreen *bg, int w[2], char *err, size_t errlen)
{
    for (int ci = 0; ci < 2; ci++) {
        char cmd[200], ans[HAPROXY_ANSWER_MAX], *end;
        long v;

        snprintf(cmd, sizeof cmd, "get weight %s/%s", dq_json_str(bg->router, "backend"), haproxy_server(bg, ci));
        if (haproxy_cmd(bg, cmd, ans, sizeof ans, err, errlen) != 0)
            return -1;
        v = strtol(ans, &end, 10);
        if (end == ans || ans[0] == '-' || v > 256 || strncmp(end, " (initial ", 10) != 0) {
            snprintf(err, errlen, "router %s: haproxy %s: %s: %.200s", bg->router_name, haproxy_where(bg), cmd,
                     ans[0] ? ans : "(an empty answer)");
            return -1;
        }
        w[ci] = (int)v;
    }
    return 0;
}

/* {"blue": n, "green": n} or {"weights": {"blue": n, "green": n}} into w. 0, -1 with err. */
static int weights_parse(const dq_bluegreen *bg, const char *text, size_t len, int w[2], char *err,
                         size_t errlen)
{
    char why[256];
    cJSON *doc = dq_json_parse(text, len, WEIGHTS_MAX_BYTES, 8, NULL, why, sizeof why);
    const cJSON *obj = doc, *inner = cJSON_GetObjectItemCaseSensitive(doc, "weights");
    int rc = -1;

    if (!doc) {
        snprintf(err, errlen, "router %s: its weights are not a JSON object: %s", bg->router_name, why);
        return -1;
    }
    if (cJSON_IsObject(inner))
        obj = inner;
    for (int ci = 0; ci < 2; ci++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, colors[ci]);

        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1000 ||
            v->valuedouble != (double)(int)v->valuedouble) {
            snprintf(err, errlen, "router %s: its weights have no whole number for %s", bg->router_name,
                     colors[ci]);
            goto out;
        }
        w[ci] = (int)v->valuedouble;
    }
    rc = 0;
out:
    cJSON_Delete(doc);
    return rc;
}

int dq_bg_router_weighted(const dq_bluegreen *bg)
{
    return bg->weighted;
}

int dq_bg_read_weights(const dq_bluegreen *bg, int w[2], char *err, size_t errlen)
{
    int rc;

    if (!bg->weighted) {
        snprintf(err, errlen, "router %s does not take weights", bg->router_name);
        return -1;
    }
    if (bg->router_type == ROUTER_HAPROXY)
        return haproxy_read(bg, w, err, errlen);
    if (bg->router_type == ROUTER_COMMAND) {
        char *out = NULL;

        rc = router_command(bg, "read_argv", NULL, NULL, -1, &out, err, errlen);
        if (rc == 0)
            rc = weights_parse(bg, out, strlen(out), w, err, errlen);
        free(out);
        return rc;
    }
    dq_http_response resp = {0};

    rc = router_http(bg, "GET", dq_json_str(bg->router, "read_url"), NULL, NULL, NULL, -1, &resp, err, errlen);
    if (rc == 0)
        rc = weights_parse(bg, resp.body, resp.body_len, w, err, errlen);
    dq_http_response_free(&resp);
    return rc;
}

int dq_bg_set_weights(const dq_bluegreen *bg, const int w[2], int64_t fence, char *err,
                      size_t errlen)
{
    int got[2] = {-1, -1}, rc;

    if (!bg->weighted) {
        snprintf(err, errlen, "router %s does not take weights", bg->router_name);
        return -1;
    }
    if (w[0] < 0 || w[1] < 0 || w[0] + w[1] != 100) {
        snprintf(err, errlen, "weights blue=%d green=%d: expected 0 to 100 each, summing to 100", w[0], w[1]);
        return -1;
    }
    if (bg->router_type == ROUTER_HAPROXY) {
        rc = haproxy_set(bg, w, err, errlen);
    } else if (bg->router_type == ROUTER_COMMAND) {
        rc = router_command(bg, "weights_argv", NULL, w, fence, NULL, err, errlen);
    } else {
        const char *url = dq_json_str(bg->router, "weights_url");
        const char *method = dq_json_str(bg->router, "weights_method");
        dq_http_response resp = {0};

        rc = router_http(bg, method ? method : "POST", url ? url : dq_json_str(bg->router, "url"),
                         dq_json_str(bg->router, "weights_body"), NULL, w, fence, &resp, err, errlen);
        dq_http_response_free(&resp);
    }
    if (rc != 0 || dq_bg_read_weights(bg, got, err, errlen) != 0)
        return -1;
    if (got[0] != w[0] || got[1] != w[1]) {
        snprintf(err, errlen, "router %s said blue=%d green=%d after being told blue=%d green=%d",
                 bg->router_name, got[0], got[1], w[0], w[1]);
        return -1;
    }
    return 0;
}

int dq_bg_switch(const dq_bluegreen *bg, const char *color, int64_t fence, char *err,
                 size_t errlen)
{
    if (!dq_bg_other(color)) {
        snprintf(err, errlen, "unknown color %s", color ? color : "(none)");
        return -1;
    }
    if (bg->router_type == ROUTER_HAPROXY) {
        const int w[2] = {color_index(color) == 0 ? 100 : 0, color_index(color) == 1 ? 100 : 0};

        return dq_bg_set_weights(bg, w, fence, err, errlen);
    }
    return bg->router_type == ROUTER_COMMAND ? router_command(bg, "argv", color, NULL, fence, NULL, err, errlen)
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
