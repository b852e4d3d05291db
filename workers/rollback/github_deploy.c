/*
 * github_deploy.c - GitHub Deployments (github_deploy.h): the configuration, the request
 * bodies, the order of statuses, and the consumer that posts them.
 *
 * Why a consumer of its own, and the attempts: follow.h (shared with Sentry's recorder).
 * A failure is reported as notification.failed (channel "github"), so one outage costs at
 * most the budget per event, and the next status of the deployment catches up (creating
 * the GitHub deployment if it never was).
 *
 * The token goes only into the Authorization header: errors are built from the status,
 * GitHub's "message" (which never echoes a token) and curl's transport class, and every
 * text that leaves passes dq_redact() as well.
 */
#include "github_deploy.h"

#include "follow.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"
#include "json.h"
#include "log.h"
#include "redis.h"
#include "util.h"

#define DEFAULT_API_URL "https://api.github.com"
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_RETRIES 4
#define DEFAULT_BUDGET_MS 30000
#define STATE_TTL_S (30L * 24 * 3600)
#define DESCRIPTION_MAX 140 /* GitHub refuses a longer status description */

/* ---- configuration ---- */

void dq_gh_config_clear(dq_gh_config *gc)
{
    if (!gc)
        return;
    free(gc->repo);
    free(gc->token);
    free(gc->api_url);
    free(gc->environment_url);
    free(gc->log_url);
    for (size_t i = 0; gc->required_contexts && gc->required_contexts[i]; i++)
        free(gc->required_contexts[i]);
    free(gc->required_contexts);
    memset(gc, 0, sizeof *gc);
}

static int oom(char *err, size_t errlen)
{
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* A string member; absent leaves *out NULL. url: must be http(s). */
static int str_key(const dq_config *cfg, const cJSON *sec, const char *where, const char *key, int url,
                   char **out, char *err, size_t errlen)
{
    const cJSON *v = dq_json_get(sec, key);
    char num[32];
    const char *text = dq_config_text(cfg, v, num, sizeof num);

    if (!v)
        return 0;
    if (!text || !text[0])
        return dq_config_fail(cfg, v, err, errlen, "%s.%s: expected a non-empty string", where, key);
    if (url && strncmp(text, "http://", 7) != 0 && strncmp(text, "https://", 8) != 0)
        return dq_config_fail(cfg, v, err, errlen, "%s.%s: expected an http:// or https:// URL", where, key);
    if (!(*out = strdup(text)))
        return oom(err, errlen);
    return 0;
}

/* A boolean member: 1/0, or -1 when absent (*out left alone). */
static int bool_key(const dq_config *cfg, const cJSON *sec, const char *where, const char *key, int *out,
                    char *err, size_t errlen)
{
    const cJSON *v = dq_json_get(sec, key);
    char num[32];
    const char *text = dq_config_text(cfg, v, num, sizeof num);

    if (!v)
        return 0;
    if (text && strcasecmp(text, "true") == 0)
        *out = 1;
    else if (text && strcasecmp(text, "false") == 0)
        *out = 0;
    else
        return dq_config_fail(cfg, v, err, errlen, "%s.%s: expected true or false", where, key);
    return 0;
}

/* owner/name as GitHub allows them: letters, digits, '-', '_', '.'. */
static int valid_repo(const char *s)
{
    const char *slash = s ? strchr(s, '/') : NULL;

    if (!slash || slash == s || !slash[1] || strchr(slash + 1, '/'))
        return 0;
    for (const char *p = s; *p; p++)
        if (p != slash && !isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return 0;
    return 1;
}

int dq_gh_config_read(const dq_config *cfg, const cJSON *sec, const char *where, dq_gh_config *gc, char *err,
                      size_t errlen)
{
    static const char *const known[] = {"repo",      "token",   "api_url",      "environment_url",
                                        "log_url",   "auto_merge", "required_contexts",
                                        "production_environment", "transient_environment",
                                        "timeout",   "retries", "retry_budget", NULL};
    const cJSON *v;
    char num[32];

    memset(gc, 0, sizeof *gc);
    gc->production = gc->transient = -1;
    gc->timeout_ms = DEFAULT_TIMEOUT_MS;
    gc->retries = DEFAULT_RETRIES;
    gc->retry_budget_ms = DEFAULT_BUDGET_MS;
    if (!cJSON_IsObject(sec))
        return dq_config_fail(cfg, sec, err, errlen, "%s: expected a mapping with repo and token", where);
    if (dq_config_check_keys(cfg, sec, known, where, err, errlen) != 0)
        goto fail;
    if (str_key(cfg, sec, where, "repo", 0, &gc->repo, err, errlen) != 0 ||
        str_key(cfg, sec, where, "token", 0, &gc->token, err, errlen) != 0 ||
        str_key(cfg, sec, where, "api_url", 1, &gc->api_url, err, errlen) != 0 ||
        str_key(cfg, sec, where, "environment_url", 1, &gc->environment_url, err, errlen) != 0 ||
        str_key(cfg, sec, where, "log_url", 1, &gc->log_url, err, errlen) != 0)
        goto fail;
    if (gc->token)
        dq_log_redact(gc->token); /* written literally, it is still a credential */
    if (!gc->repo) {
        dq_config_fail(cfg, sec, err, errlen, "%s: repo (owner/name) is required", where);
        goto fail;
    }
    if (!valid_repo(gc->repo)) {
        dq_config_fail(cfg, dq_json_get(sec, "repo"), err, errlen, "%s.repo: expected owner/name", where);
        goto fail;
    }
    if (!gc->token) {
        dq_config_fail(cfg, sec, err, errlen, "%s: token is required (e.g. token: ${GITHUB_TOKEN})", where);
        goto fail;
    }
    if (!gc->api_url && !(gc->api_url = strdup(DEFAULT_API_URL))) {
        oom(err, errlen);
        goto fail;
    }
    for (size_t n = strlen(gc->api_url); n > 0 && gc->api_url[n - 1] == '/'; n--)
        gc->api_url[n - 1] = '\0';
    if (bool_key(cfg, sec, where, "auto_merge", &gc->auto_merge, err, errlen) != 0 ||
        bool_key(cfg, sec, where, "production_environment", &gc->production, err, errlen) != 0 ||
        bool_key(cfg, sec, where, "transient_environment", &gc->transient, err, errlen) != 0 ||
        dq_config_duration_key(cfg, sec, where, "timeout", 1, "10s", &gc->timeout_ms, err, errlen) != 0 ||
        dq_config_duration_key(cfg, sec, where, "retry_budget", 1, "10s", &gc->retry_budget_ms, err, errlen) != 0)
        goto fail;
    if ((v = dq_json_get(sec, "retries")) != NULL) {
        long long n;

        if (dq_parse_int(dq_config_text(cfg, v, num, sizeof num), 0, 20, &n) != 0) {
            dq_config_fail(cfg, v, err, errlen, "%s.retries: expected an integer from 0 to 20", where);
            goto fail;
        }
        gc->retries = (int)n;
    }
    if ((v = dq_json_get(sec, "required_contexts")) != NULL) {
        const cJSON *item;
        size_t n = 0;

        if (!cJSON_IsArray(v)) {
            dq_config_fail(cfg, v, err, errlen, "%s.required_contexts: expected a list of status check names",
                           where);
            goto fail;
        }
        if (!(gc->required_contexts = calloc((size_t)cJSON_GetArraySize(v) + 1, sizeof(char *)))) {
            oom(err, errlen);
            goto fail;
        }
        cJSON_ArrayForEach(item, v) {
            const char *t = dq_config_text(cfg, item, num, sizeof num);

            if (!t || !t[0]) {
                dq_config_fail(cfg, item, err, errlen, "%s.required_contexts: expected names", where);
                goto fail;
            }
            if (!(gc->required_contexts[n++] = strdup(t))) {
                oom(err, errlen);
                goto fail;
            }
        }
    }
    return 0;
fail:
    dq_gh_config_clear(gc);
    return -1;
}

int dq_gh_config_load(const dq_config *cfg, const char *service, dq_gh_config *gc, int *found, char *err,
                      size_t errlen)
{
    const dq_service *svc = dq_config_service(cfg, service);
    const cJSON *sec = svc && svc->view ? dq_json_get(svc->view, "github_deployments") : NULL;
    char where[128];

    *found = 0;
    memset(gc, 0, sizeof *gc);
    if (!sec || cJSON_IsNull(sec))
        return 0;
    snprintf(where, sizeof where, "services.%s.github_deployments", service);
    if (dq_gh_config_read(cfg, sec, where, gc, err, errlen) != 0)
        return -1;
    *found = 1;
    return 0;
}

/* ---- states and bodies ---- */

static const struct {
    const char *type, *state;
} event_states[] = {
    {DQ_EV_VALIDATED, "queued"},  {DQ_EV_STARTED, "in_progress"},  {DQ_EV_SUCCEEDED, "success"},
    {DQ_EV_FAILED, "failure"},    {DQ_EV_ROLLBACK_REQUESTED, "failure"},
};

/* In posting order: a state's bit also ranks it. */
static const char *const state_names[] = {"queued", "in_progress", "success", "failure", "inactive", NULL};

const char *dq_gh_state_for(const char *event_type)
{
    for (size_t i = 0; event_type && i < sizeof event_states / sizeof event_states[0]; i++)
        if (strcmp(event_states[i].type, event_type) == 0)
            return event_states[i].state;
    return NULL;
}

unsigned dq_gh_state_bit(const char *state)
{
    for (unsigned i = 0; state && state_names[i]; i++)
        if (strcmp(state_names[i], state) == 0)
            return 1u << i;
    return 0;
}

int dq_gh_should_post(unsigned posted, const char *state)
{
    unsigned bit = dq_gh_state_bit(state);

    /* not posted, and nothing of a higher rank (a higher bit) was */
    return bit != 0 && (posted & ~(bit - 1u)) == 0;
}

/* GitHub's limit on a description, cut on a UTF-8 character boundary. */
static void cut_description(char *s)
{
    size_t n = strlen(s);

    if (n <= DESCRIPTION_MAX)
        return;
    n = DESCRIPTION_MAX;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    s[n] = '\0';
}

static void describe(const dq_event *ev, const char *state, char *out, size_t outlen)
{
    const char *ver = ev && ev->version ? ev->version : "?";
    const char *provider = ev ? dq_json_str(ev->data, "provider") : NULL;
    const char *reason = ev ? dq_json_str(ev->data, "reason") : NULL;

    if (strcmp(state, "queued") == 0)
        snprintf(out, outlen, "deployq validated %s; waiting for its turn", ver);
    else if (strcmp(state, "in_progress") == 0)
        snprintf(out, outlen, "deployq is deploying %s", ver);
    else if (strcmp(state, "success") == 0)
        snprintf(out, outlen, "deployq deployed %s%s%s", ver, provider ? " via " : "", provider ? provider : "");
    else if (strcmp(state, "failure") == 0 && ev && strcmp(ev->type, DQ_EV_ROLLBACK_REQUESTED) == 0)
        snprintf(out, outlen, "Rolled back: %s", reason ? reason : "rollback requested");
    else if (strcmp(state, "failure") == 0)
        snprintf(out, outlen, "Deploy failed: %s", reason ? reason : "see deployq");
    else if (strcmp(state, "inactive") == 0)
        snprintf(out, outlen, "Replaced by a newer deployment");
    else
        snprintf(out, outlen, "%s", state);
    cut_description(out);
}

char *dq_gh_deployment_body(const dq_gh_config *gc, const dq_event *ev)
{
    cJSON *o = cJSON_CreateObject(), *ctx = cJSON_CreateArray(), *payload = cJSON_CreateObject();
    char desc[256];
    char *out = NULL;

    if (!o || !ctx || !payload)
        goto done;
    snprintf(desc, sizeof desc, "deployq: %s %s to %s", ev->service ? ev->service : "?",
             ev->version ? ev->version : "?", ev->environment ? ev->environment : "?");
    cut_description(desc);
    for (size_t i = 0; gc->required_contexts && gc->required_contexts[i]; i++)
        if (!cJSON_AddItemToArray(ctx, cJSON_CreateString(gc->required_contexts[i])))
            goto done;
    if (!cJSON_AddStringToObject(payload, "deployq_deployment_id", ev->deployment_id ? ev->deployment_id : "") ||
        !cJSON_AddStringToObject(payload, "service", ev->service ? ev->service : "") ||
        !cJSON_AddStringToObject(payload, "version", ev->version ? ev->version : ""))
        goto done;
    if (!cJSON_AddStringToObject(o, "ref", ev->version ? ev->version : "") ||
        !cJSON_AddStringToObject(o, "task", "deploy") ||
        !cJSON_AddStringToObject(o, "environment", ev->environment ? ev->environment : "") ||
        !cJSON_AddStringToObject(o, "description", desc) ||
        !cJSON_AddBoolToObject(o, "auto_merge", gc->auto_merge ? 1 : 0))
        goto done;
    cJSON_AddItemToObject(o, "required_contexts", ctx); /* now owned by o */
    ctx = NULL;
    cJSON_AddItemToObject(o, "payload", payload);
    payload = NULL;
    if ((gc->production >= 0 && !cJSON_AddBoolToObject(o, "production_environment", gc->production)) ||
        (gc->transient >= 0 && !cJSON_AddBoolToObject(o, "transient_environment", gc->transient)))
        goto done;
    out = cJSON_PrintUnformatted(o);
done:
    cJSON_Delete(o);
    cJSON_Delete(ctx);
    cJSON_Delete(payload);
    return out;
}

char *dq_gh_status_body(const dq_gh_config *gc, const dq_event *ev, const char *state)
{
    cJSON *o = cJSON_CreateObject();
    char desc[512];
    char *log_url = NULL, *env_url = NULL, *out = NULL;

    if (!o)
        return NULL;
    describe(ev, state, desc, sizeof desc);
    /* without the event (an inactive status) the templates have nothing to fill */
    if (ev && gc->log_url && !(log_url = dq_follow_fill(gc->log_url, ev)))
        goto done;
    if (ev && gc->environment_url && !(env_url = dq_follow_fill(gc->environment_url, ev)))
        goto done;
    if (!cJSON_AddStringToObject(o, "state", state) || !cJSON_AddStringToObject(o, "description", desc) ||
        (log_url && !cJSON_AddStringToObject(o, "log_url", log_url)) ||
        (env_url && strcmp(state, "inactive") != 0 && !cJSON_AddStringToObject(o, "environment_url", env_url)))
        goto done;
    /* GitHub's default, said out loud: a success makes the earlier non-production
     * deployments of the environment inactive (production ones get an explicit inactive). */
    if (strcmp(state, "success") == 0 && !cJSON_AddBoolToObject(o, "auto_inactive", 1))
        goto done;
    out = cJSON_PrintUnformatted(o);
done:
    cJSON_Delete(o);
    free(log_url);
    free(env_url);
    return out;
}

/* ---- talking to GitHub ---- */

/* GitHub's "message" of a JSON error body, as one short clean line, or "". */
static void gh_message(const dq_http_response *resp, char *out, size_t outlen)
{
    cJSON *j = resp->body ? cJSON_ParseWithLength(resp->body, resp->body_len) : NULL;
    const char *m = dq_json_str(j, "message");
    size_t o = 0;

    for (const char *p = m ? m : ""; *p && o + 1 < outlen && o < 200; p++)
        out[o++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    out[o] = '\0';
    cJSON_Delete(j);
}

/* One request to GitHub's API (path from the repository on). The response is the
 * caller's to free. Returns DQ_FOLLOW_OK with a response (any status) or DQ_FOLLOW_DOWN without one. */
static dq_follow_rc gh_request(const dq_gh_config *gc, const char *method, const char *path, const char *body,
                        dq_http_response *resp, dq_follow_outcome *out)
{
    char *auth = NULL, *url = NULL;
    size_t n;
    dq_follow_rc rc;

    n = strlen(gc->token) + 32;
    auth = malloc(n);
    if (auth)
        snprintf(auth, n, "Authorization: Bearer %s", gc->token);
    n = strlen(gc->api_url) + strlen(gc->repo) + strlen(path) + 16;
    url = malloc(n);
    if (url)
        snprintf(url, n, "%s/repos/%s%s", gc->api_url, gc->repo, path);
    if (!auth || !url) {
        free(auth);
        free(url);
        snprintf(out->error, sizeof out->error, "out of memory");
        memset(resp, 0, sizeof *resp);
        return DQ_FOLLOW_DOWN;
    }
    {
        const char *headers[] = {"Accept: application/vnd.github+json", "X-GitHub-Api-Version: 2022-11-28",
                                 "Content-Type: application/json", "User-Agent: deployq", auth, NULL};
        dq_http_opts o = {0};

        o.method = method;
        o.url = url;
        o.headers = headers;
        o.body = body;
        o.timeout_ms = (long)gc->timeout_ms;
        o.max_retries = 0; /* the attempts are counted by the caller, per event */
        o.retry_budget_ms = gc->timeout_ms + 1000;
        rc = dq_http_request(&o, resp) == 0 ? DQ_FOLLOW_OK : DQ_FOLLOW_DOWN;
    }
    /* the token is in auth: wipe it before the memory goes back */
    memset(auth, 0, strlen(auth));
    free(auth);
    free(url);
    out->http_status = resp->status;
    if (rc != DQ_FOLLOW_OK)
        snprintf(out->error, sizeof out->error, "%s %s: %s", method, path,
                 resp->error == DQ_HTTP_ERR_CONNECT   ? "connection failed"
                 : resp->error == DQ_HTTP_ERR_TIMEOUT ? "timed out"
                                                      : "request could not be made");
    return rc;
}

/* What a status code means for us; fills out->error for anything but 2xx. */
static dq_follow_rc gh_judge(const char *what, const dq_http_response *resp, dq_follow_outcome *out)
{
    char msg[256];

    if (resp->status >= 200 && resp->status <= 299)
        return DQ_FOLLOW_OK;
    out->retry_after_ms = resp->retry_after_ms;
    gh_message(resp, msg, sizeof msg);
    snprintf(out->error, sizeof out->error, "%s: GitHub answered HTTP %ld%s%s", what, resp->status,
             msg[0] ? ": " : "", msg);
    /* a secondary rate limit is a 403 with Retry-After */
    if (resp->status >= 500 || resp->status == 429 || (resp->status == 403 && resp->retry_after_ms >= 0))
        return DQ_FOLLOW_DOWN;
    return DQ_FOLLOW_REFUSED;
}

/* ---- the handler ---- */

typedef struct svc_gh {
    char *service;
    dq_gh_config gc;
} svc_gh;

struct dq_gh_handler {
    const dq_config *cfg;
    dq_producer *producer;
    volatile sig_atomic_t *stop;
    dq_redis *redis; /* this thread's own, connected on first use */
    svc_gh *svcs;
    size_t n_svcs;
    char actor[256];
};

void dq_gh_handler_free(dq_gh_handler *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_svcs; i++) {
        free(h->svcs[i].service);
        dq_gh_config_clear(&h->svcs[i].gc);
    }
    free(h->svcs);
    dq_redis_free(h->redis);
    free(h);
}

dq_gh_handler *dq_gh_handler_new(const dq_config *cfg, dq_producer *producer, volatile sig_atomic_t *stop,
                                 char *err, size_t errlen)
{
    dq_gh_handler *h = calloc(1, sizeof *h);

    if (!h || (cfg->n_services && !(h->svcs = calloc(cfg->n_services, sizeof *h->svcs)))) {
        free(h);
        oom(err, errlen);
        return NULL;
    }
    h->cfg = cfg;
    h->producer = producer;
    h->stop = stop;
    dq_actor("deployq-rollback", h->actor, sizeof h->actor);
    for (size_t i = 0; i < cfg->n_services; i++) {
        svc_gh *s = &h->svcs[h->n_svcs];
        int found = 0;

        if (dq_gh_config_load(cfg, cfg->services[i].name, &s->gc, &found, err, errlen) != 0)
            goto fail;
        if (!found)
            continue;
        if (!(s->service = strdup(cfg->services[i].name))) {
            dq_gh_config_clear(&s->gc);
            oom(err, errlen);
            goto fail;
        }
        h->n_svcs++;
    }
    return h;
fail:
    dq_gh_handler_free(h);
    return NULL;
}

int dq_gh_handler_active(const dq_gh_handler *h)
{
    return h && h->n_svcs > 0;
}

static const dq_gh_config *config_of(const dq_gh_handler *h, const char *service)
{
    for (size_t i = 0; service && i < h->n_svcs; i++)
        if (strcmp(h->svcs[i].service, service) == 0)
            return &h->svcs[i].gc;
    return NULL;
}

static dq_redis *redis_of(dq_gh_handler *h)
{
    char err[256];

    if (!h->redis) {
        h->redis = dq_redis_connect(h->cfg->redis_url, h->cfg->redis_timeout_ms, err, sizeof err);
        if (!h->redis)
            dq_warn("github: redis: %s", err);
    }
    return h->redis;
}

/* One field of deployq:gh:dep:<dep>: 1 present (*out malloc'd), 0 absent, -1 unreachable. */
static int hget(dq_redis *r, const char *dep, const char *field, char **out)
{
    redisReply *rep = dq_redis_command(r, "HGET deployq:gh:dep:%s %s", dep, field);
    int rc;

    *out = NULL;
    if (!rep)
        return -1;
    if (rep->type == REDIS_REPLY_STRING)
        rc = (*out = strdup(rep->str)) ? 1 : -1;
    else
        rc = rep->type == REDIS_REPLY_NIL ? 0 : -1; /* an error reply: NOPERM, say */
    freeReplyObject(rep);
    return rc;
}

/* What Redis holds about a deployment: GitHub's id (or 0), the statuses posted, and
 * whether GitHub refused to create it. DQ_FOLLOW_OK or DQ_FOLLOW_STATE. One HGET per field, not
 * HGETALL: the rollback worker's Redis ACL (docs/operations.md) allows HGET. */
static dq_follow_rc load_dep(dq_gh_handler *h, const char *dep, long long *id, unsigned *posted, int *refused)
{
    dq_redis *r = redis_of(h);
    char *v = NULL, field[32];
    int rc;

    *id = 0;
    *posted = 0;
    *refused = 0;
    if (!r || (rc = hget(r, dep, "id", &v)) < 0)
        return DQ_FOLLOW_STATE;
    if (rc == 1)
        *id = strtoll(v, NULL, 10);
    free(v);
    if ((rc = hget(r, dep, "refused", &v)) < 0)
        return DQ_FOLLOW_STATE;
    *refused = rc == 1;
    free(v);
    for (unsigned i = 0; state_names[i]; i++) {
        snprintf(field, sizeof field, "s:%s", state_names[i]);
        if ((rc = hget(r, dep, field, &v)) < 0)
            return DQ_FOLLOW_STATE;
        if (rc == 1)
            *posted |= 1u << i;
        free(v);
    }
    return DQ_FOLLOW_OK;
}

/* HSET deployq:gh:dep:<dep> field value, and its TTL. */
static dq_follow_rc save_dep(dq_gh_handler *h, const char *dep, const char *field, const char *value)
{
    dq_redis *r = redis_of(h);
    redisReply *rep;
    int ok;

    if (!r || !(rep = dq_redis_command(r, "HSET deployq:gh:dep:%s %s %s", dep, field, value)))
        return DQ_FOLLOW_STATE;
    ok = rep->type != REDIS_REPLY_ERROR;
    freeReplyObject(rep);
    if (!ok || !(rep = dq_redis_command(r, "EXPIRE deployq:gh:dep:%s %ld", dep, STATE_TTL_S)))
        return DQ_FOLLOW_STATE;
    freeReplyObject(rep);
    return DQ_FOLLOW_OK;
}

/* The GitHub deployment this deployq deployment created earlier (a crash between GitHub's
 * 201 and our record), found by its payload among the newest of its ref and environment. */
static dq_follow_rc find_created(const dq_gh_config *gc, const dq_event *ev, long long *id, dq_follow_outcome *out)
{
    char *env = dq_http_escape(ev->environment), *ref = dq_http_escape(ev->version);
    char path[1024];
    dq_http_response resp = {0};
    cJSON *list = NULL, *d;
    dq_follow_rc rc;

    *id = 0;
    if (!env || !ref) {
        free(env);
        free(ref);
        snprintf(out->error, sizeof out->error, "out of memory");
        return DQ_FOLLOW_DOWN;
    }
    snprintf(path, sizeof path, "/deployments?environment=%s&ref=%s&per_page=100", env, ref);
    free(env);
    free(ref);
    rc = gh_request(gc, "GET", path, NULL, &resp, out);
    if (rc == DQ_FOLLOW_OK)
        rc = gh_judge("list deployments", &resp, out);
    if (rc == DQ_FOLLOW_OK && (list = cJSON_ParseWithLength(resp.body, resp.body_len)) != NULL) {
        cJSON_ArrayForEach(d, list) {
            const char *mine = dq_json_str(dq_json_get(d, "payload"), "deployq_deployment_id");

            if (mine && strcmp(mine, ev->deployment_id) == 0) {
                *id = (long long)dq_json_num(d, "id", 0);
                break;
            }
        }
    }
    cJSON_Delete(list);
    dq_http_response_free(&resp);
    return rc;
}

/* Give dep a GitHub deployment: the one it made before, else a new one. */
static dq_follow_rc create_dep(dq_gh_handler *h, const dq_gh_config *gc, const dq_event *ev, long long *id,
                        dq_follow_outcome *out)
{
    dq_http_response resp = {0};
    char *body;
    char msg[256], num[32];
    dq_follow_rc rc;

    if (!ev->version || !ev->environment) {
        snprintf(out->error, sizeof out->error, "create deployment: the event has no version or environment");
        return DQ_FOLLOW_REFUSED;
    }
    if ((rc = find_created(gc, ev, id, out)) != DQ_FOLLOW_OK)
        return rc;
    if (*id == 0) {
        if (!(body = dq_gh_deployment_body(gc, ev))) {
            snprintf(out->error, sizeof out->error, "out of memory");
            return DQ_FOLLOW_DOWN;
        }
        rc = gh_request(gc, "POST", "/deployments", body, &resp, out);
        free(body);
        if (rc != DQ_FOLLOW_OK)
            return rc;
        if (resp.status == 202 || resp.status == 409) {
            /* 202: GitHub merged the default branch into the ref instead of creating a
             * deployment; 409: a merge conflict or failed required contexts. Neither gets
             * better by asking again: record it so the later statuses do not ask. */
            long status = resp.status;

            gh_message(&resp, msg, sizeof msg);
            snprintf(out->error, sizeof out->error, "create deployment: GitHub answered HTTP %ld%s%s%s", status,
                     status == 202 ? " (auto-merge, no deployment created)" : "", msg[0] ? ": " : "", msg);
            dq_http_response_free(&resp);
            return save_dep(h, ev->deployment_id, "refused", status == 202 ? "202" : "409") == DQ_FOLLOW_OK
                       ? DQ_FOLLOW_REFUSED
                       : DQ_FOLLOW_STATE;
        }
        rc = gh_judge("create deployment", &resp, out);
        if (rc == DQ_FOLLOW_OK) {
            cJSON *j = cJSON_ParseWithLength(resp.body, resp.body_len);

            *id = (long long)dq_json_num(j, "id", 0);
            cJSON_Delete(j);
            if (*id <= 0) {
                snprintf(out->error, sizeof out->error, "create deployment: HTTP %ld without an id", resp.status);
                rc = DQ_FOLLOW_REFUSED;
            }
        }
        dq_http_response_free(&resp);
        if (rc != DQ_FOLLOW_OK)
            return rc;
        dq_info("github: %s/%s deployment %s is GitHub deployment %lld in %s", ev->service, ev->environment,
                ev->deployment_id, *id, gc->repo);
    }
    snprintf(num, sizeof num, "%lld", *id);
    return save_dep(h, ev->deployment_id, "id", num);
}

static dq_follow_rc post_status(dq_gh_handler *h, const dq_gh_config *gc, const char *dep, long long id,
                         const dq_event *ev, const char *state, dq_follow_outcome *out)
{
    dq_http_response resp = {0};
    char path[96], field[32], what[64];
    char *body = dq_gh_status_body(gc, ev, state);
    dq_follow_rc rc;

    if (!body) {
        snprintf(out->error, sizeof out->error, "out of memory");
        return DQ_FOLLOW_DOWN;
    }
    snprintf(path, sizeof path, "/deployments/%lld/statuses", id);
    snprintf(what, sizeof what, "%s status", state);
    rc = gh_request(gc, "POST", path, body, &resp, out);
    free(body);
    if (rc == DQ_FOLLOW_OK)
        rc = gh_judge(what, &resp, out);
    dq_http_response_free(&resp);
    if (rc != DQ_FOLLOW_OK)
        return rc;
    snprintf(field, sizeof field, "s:%s", state);
    return save_dep(h, dep, field, "1");
}

/* After a success: the deployment it replaced gets inactive, and this one becomes the
 * target's current. GitHub's auto_inactive already did that for a non-production,
 * non-transient environment; it leaves production ones alone, so there it is said here
 * (once: a second inactive would only clutter the deployment's history). */
static dq_follow_rc replace_current(dq_gh_handler *h, const dq_gh_config *gc, const dq_event *ev, dq_follow_outcome *out)
{
    dq_redis *r = redis_of(h);
    char key[320];
    char *prev = NULL;
    dq_follow_rc rc = DQ_FOLLOW_OK;

    snprintf(key, sizeof key, "deployq:gh:current:%s/%s", ev->service, ev->environment);
    if (!r || dq_redis_get(r, key, &prev) != 0)
        return DQ_FOLLOW_STATE;
    if (prev && strcmp(prev, ev->deployment_id) != 0) {
        long long pid;
        unsigned posted;
        int refused;

        rc = load_dep(h, prev, &pid, &posted, &refused);
        int production = gc->production >= 0 ? gc->production : strcmp(ev->environment, "production") == 0;

        if (rc == DQ_FOLLOW_OK && production && gc->transient != 1 && pid > 0 && (posted & DQ_GH_SUCCESS) &&
            dq_gh_should_post(posted, "inactive")) {
            rc = post_status(h, gc, prev, pid, NULL, "inactive", out);
            if (rc == DQ_FOLLOW_REFUSED) {
                /* deleted on GitHub, say: nothing to make inactive; not worth a report */
                dq_warn("github: could not mark deployment %lld inactive: %s", pid, out->error);
                rc = DQ_FOLLOW_OK;
            }
        }
    }
    free(prev);
    if (rc == DQ_FOLLOW_OK) {
        redisReply *rep = dq_redis_command(r, "SET %s %s EX %ld", key, ev->deployment_id, STATE_TTL_S);

        if (!rep)
            return DQ_FOLLOW_STATE;
        freeReplyObject(rep);
    }
    return rc;
}

/* One attempt at everything ev asks of GitHub. */
static dq_follow_rc apply(dq_gh_handler *h, const dq_gh_config *gc, const dq_event *ev, const char *state,
                   dq_follow_outcome *out)
{
    long long id;
    unsigned posted;
    int refused, success = strcmp(state, "success") == 0;
    dq_follow_rc rc;

    if ((rc = load_dep(h, ev->deployment_id, &id, &posted, &refused)) != DQ_FOLLOW_OK)
        return rc;
    if (refused) {
        /* GitHub declined it once; that was reported */
        dq_debug("github: %s/%s deployment %s: GitHub declined to create it; %s not posted", ev->service,
                 ev->environment, ev->deployment_id, state);
        return DQ_FOLLOW_OK;
    }
    if (dq_gh_should_post(posted, state)) {
        if (id == 0 && (rc = create_dep(h, gc, ev, &id, out)) != DQ_FOLLOW_OK)
            return rc;
        if ((rc = post_status(h, gc, ev->deployment_id, id, ev, state, out)) != DQ_FOLLOW_OK)
            return rc;
        dq_debug("github: %s/%s deployment %s: %s posted", ev->service, ev->environment, ev->deployment_id,
                 state);
    } else if (!(success && (posted & DQ_GH_SUCCESS))) {
        return DQ_FOLLOW_OK; /* posted before: a redelivery */
    }
    return success ? replace_current(h, gc, ev, out) : DQ_FOLLOW_OK;
}

/* notification.failed (channel "github") about trigger. 0 sent, -1 not. */
static int report(dq_gh_handler *h, const dq_gh_config *gc, const dq_event *trigger, const char *state,
                  const dq_follow_outcome *o)
{
    cJSON *extra = cJSON_CreateObject();
    int rc = -1;

    if (extra && cJSON_AddStringToObject(extra, "github_state", state) &&
        cJSON_AddStringToObject(extra, "github_repo", gc->repo))
        rc = dq_follow_report(h->cfg, h->producer, h->actor, "github", trigger, state, o, extra);
    cJSON_Delete(extra);
    return rc;
}

typedef struct gh_try {
    dq_gh_handler *h;
    const dq_gh_config *gc;
    const dq_event *ev;
    const char *state;
} gh_try;

static dq_follow_rc try_apply(void *arg, dq_follow_outcome *out)
{
    gh_try *t = arg;
    return apply(t->h, t->gc, t->ev, t->state, out);
}

dq_handle_result dq_gh_handle(void *ctx, const dq_message *m, char *err, size_t errlen)
{
    dq_gh_handler *h = ctx;
    dq_event *ev;
    const dq_gh_config *gc;
    const char *state;
    dq_follow_outcome o;
    dq_follow_policy pol;
    dq_follow_rc rc;
    gh_try t;
    char why[256];
    int stopped;
    dq_handle_result res = DQ_HANDLED;

    (void)err;
    (void)errlen;
    /* what is not a readable event is the rollback consumer's to dead-letter, not ours */
    ev = dq_event_decode(m->value ? m->value : "", m->len, why, sizeof why);
    if (!ev)
        return DQ_HANDLED;
    state = dq_gh_state_for(ev->type);
    gc = config_of(h, ev->service);
    if (!state || !gc || !ev->deployment_id || !ev->environment) {
        dq_event_free(ev);
        return DQ_HANDLED;
    }
    pol.retries = gc->retries;
    pol.timeout_ms = gc->timeout_ms;
    pol.retry_budget_ms = gc->retry_budget_ms;
    t.h = h;
    t.gc = gc;
    t.ev = ev;
    t.state = state;
    rc = dq_follow_attempts(&pol, h->stop, try_apply, &t, &o, &stopped);
    if (stopped || rc == DQ_FOLLOW_STATE) {
        res = DQ_RETRY; /* stopping, or our state unreachable: read it again */
    } else if (rc != DQ_FOLLOW_OK) {
        dq_warn("github: %s/%s deployment %s: %s not recorded on GitHub after %d attempt%s: %s", ev->service,
                ev->environment, ev->deployment_id, state, o.attempts, o.attempts == 1 ? "" : "s", o.error);
        if (report(h, gc, ev, state, &o) != 0)
            res = DQ_RETRY;
    }
    dq_event_free(ev);
    return res;
}

/* ---- the thread ---- */

struct dq_gh_worker {
    dq_follow *follow;
    dq_gh_handler *h;
};

dq_gh_worker *dq_gh_worker_start(const dq_config *cfg, dq_producer *producer, const char *group,
                                 volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    dq_gh_worker *w = calloc(1, sizeof *w);

    err[0] = '\0';
    if (!w) {
        oom(err, errlen);
        return NULL;
    }
    if (!(w->h = dq_gh_handler_new(cfg, producer, stop, err, errlen)))
        goto fail;
    if (!dq_gh_handler_active(w->h))
        goto fail; /* err stays "": nothing to do */
    if (!(w->follow = dq_follow_start(cfg, "github", group, dq_gh_handle, w->h, stop, err, errlen)))
        goto fail;
    dq_info("github: recording deploys of %zu service%s on GitHub, consuming %s as group %s", w->h->n_svcs,
            w->h->n_svcs == 1 ? "" : "s", cfg->topic_events, group);
    return w;
fail:
    dq_gh_handler_free(w->h);
    free(w);
    return NULL;
}

void dq_gh_worker_stop(dq_gh_worker *w)
{
    if (!w)
        return;
    dq_follow_stop(w->follow);
    dq_gh_handler_free(w->h);
    free(w);
}
