/*
 * sentry_deploy.c - Sentry release deploys (sentry_deploy.h): the configuration, the
 * request bodies and the consumer that posts them, on follow.h's thread and attempts.
 *
 * The token goes only into the Authorization header: errors are built from the status,
 * Sentry's "detail" (which never echoes a token) and curl's transport class, and every
 * text that leaves passes dq_redact() as well.
 */
#include "sentry_deploy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "follow.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "redis.h"
#include "util.h"

#define DEFAULT_URL "https://sentry.io"
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_RETRIES 4
#define DEFAULT_BUDGET_MS 30000
#define STATE_TTL_S (30L * 24 * 3600)
#define MAX_PROJECTS 32

/* ---- configuration ---- */

void dq_sentry_config_clear(dq_sentry_config *sc)
{
    if (!sc)
        return;
    free(sc->org);
    for (size_t i = 0; sc->projects && sc->projects[i]; i++)
        free(sc->projects[i]);
    free(sc->projects);
    if (sc->token)
        memset(sc->token, 0, strlen(sc->token));
    free(sc->token);
    free(sc->url);
    free(sc->deploy_url);
    memset(sc, 0, sizeof *sc);
}

/* Sentry's slugs: lower-case letters, digits, '-' and '_'. */
static int valid_slug(const char *s)
{
    if (!s || !s[0] || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
            return 0;
    return 1;
}

/* A string member into *out (absent leaves it NULL); url: must be http(s). */
static int text_key(const dq_config *cfg, const cJSON *sec, const char *where, const char *key, int url, char **out,
                    char *err, size_t errlen)
{
    const cJSON *v = dq_json_get(sec, key);
    char num[32];
    const char *text = dq_config_text(cfg, v, num, sizeof num);

    if (!v)
        return 0;
    if (!text || !text[0] || strpbrk(text, "\r\n"))
        return dq_config_fail(cfg, v, err, errlen, "%s.%s: expected a non-empty string", where, key);
    if (url && strncmp(text, "http://", 7) != 0 && strncmp(text, "https://", 8) != 0)
        return dq_config_fail(cfg, v, err, errlen, "%s.%s: expected an http:// or https:// URL", where, key);
    if (!(*out = strdup(text))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int dq_sentry_config_read(const dq_config *cfg, const cJSON *sec, const char *where, dq_sentry_config *sc,
                          char *err, size_t errlen)
{
    static const char *const known[] = {"org",     "projects", "token",        "url", "deploy_url", "timeout",
                                        "retries", "retry_budget", NULL};
    const cJSON *v, *item;
    char num[32];
    size_t n = 0;

    memset(sc, 0, sizeof *sc);
    sc->timeout_ms = DEFAULT_TIMEOUT_MS;
    sc->retries = DEFAULT_RETRIES;
    sc->retry_budget_ms = DEFAULT_BUDGET_MS;
    if (!cJSON_IsObject(sec))
        return dq_config_fail(cfg, sec, err, errlen, "%s: expected a mapping with org, projects and token", where);
    if (dq_config_check_keys(cfg, sec, known, where, err, errlen) != 0 ||
        text_key(cfg, sec, where, "org", 0, &sc->org, err, errlen) != 0 ||
        text_key(cfg, sec, where, "token", 0, &sc->token, err, errlen) != 0 ||
        text_key(cfg, sec, where, "url", 1, &sc->url, err, errlen) != 0 ||
        text_key(cfg, sec, where, "deploy_url", 1, &sc->deploy_url, err, errlen) != 0)
        goto fail;
    if (sc->token)
        dq_log_redact(sc->token); /* written literally, it is still a credential */
    if (!valid_slug(sc->org)) {
        dq_config_fail(cfg, sc->org ? dq_json_get(sec, "org") : sec, err, errlen,
                       "%s.org: required, the organization slug (lower-case letters, digits, - and _)", where);
        goto fail;
    }
    if (!sc->token) {
        dq_config_fail(cfg, sec, err, errlen, "%s: token is required (e.g. token: ${SENTRY_TOKEN})", where);
        goto fail;
    }
    v = dq_json_get(sec, "projects");
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) < 1 || cJSON_GetArraySize(v) > MAX_PROJECTS) {
        dq_config_fail(cfg, v ? v : sec, err, errlen, "%s.projects: required, a list of 1 to %d project slugs",
                       where, MAX_PROJECTS);
        goto fail;
    }
    if (!(sc->projects = calloc((size_t)cJSON_GetArraySize(v) + 1, sizeof(char *)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    cJSON_ArrayForEach(item, v) {
        const char *t = dq_config_text(cfg, item, num, sizeof num);

        if (!valid_slug(t)) {
            dq_config_fail(cfg, item, err, errlen, "%s.projects[%zu]: expected a project slug", where, n);
            goto fail;
        }
        if (!(sc->projects[n++] = strdup(t))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    if (!sc->url && !(sc->url = strdup(DEFAULT_URL))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t k = strlen(sc->url); k > 8 && sc->url[k - 1] == '/'; k--)
        sc->url[k - 1] = '\0';
    if (dq_config_duration_key(cfg, sec, where, "timeout", 1, "10s", &sc->timeout_ms, err, errlen) != 0 ||
        dq_config_duration_key(cfg, sec, where, "retry_budget", 1, "10s", &sc->retry_budget_ms, err, errlen) != 0)
        goto fail;
    if ((v = dq_json_get(sec, "retries")) != NULL) {
        long long r;

        if (dq_parse_int(dq_config_text(cfg, v, num, sizeof num), 0, 20, &r) != 0) {
            dq_config_fail(cfg, v, err, errlen, "%s.retries: expected an integer from 0 to 20", where);
            goto fail;
        }
        sc->retries = (int)r;
    }
    return 0;
fail:
    dq_sentry_config_clear(sc);
    return -1;
}

int dq_sentry_config_load(const dq_config *cfg, const char *service, dq_sentry_config *sc, int *found, char *err,
                          size_t errlen)
{
    const dq_service *svc = dq_config_service(cfg, service);
    const cJSON *sec = svc && svc->view ? dq_json_get(svc->view, "sentry") : NULL;
    char where[128];

    *found = 0;
    memset(sc, 0, sizeof *sc);
    if (!sec || cJSON_IsNull(sec))
        return 0;
    snprintf(where, sizeof where, "services.%s.sentry", service);
    if (dq_sentry_config_read(cfg, sec, where, sc, err, errlen) != 0)
        return -1;
    *found = 1;
    return 0;
}

/* ---- bodies ---- */

const char *dq_sentry_release_of(const dq_event *ev)
{
    if (!ev || !ev->type)
        return NULL;
    if (strcmp(ev->type, DQ_EV_SUCCEEDED) == 0)
        return ev->version;
    if (strcmp(ev->type, DQ_EV_ROLLBACK_SUCCEEDED) == 0)
        return dq_json_str(ev->data, "to_version");
    return NULL;
}

static int add_projects(cJSON *o, const dq_sentry_config *sc)
{
    cJSON *arr = cJSON_AddArrayToObject(o, "projects");

    for (size_t i = 0; arr && sc->projects && sc->projects[i]; i++)
        if (!cJSON_AddItemToArray(arr, cJSON_CreateString(sc->projects[i])))
            return -1;
    return arr ? 0 : -1;
}

char *dq_sentry_release_body(const dq_sentry_config *sc, const char *release)
{
    cJSON *o = cJSON_CreateObject();
    char *out = NULL;

    if (o && cJSON_AddStringToObject(o, "version", release) && add_projects(o, sc) == 0)
        out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

/* A time member of ev->data as ms, or fallback when absent or unreadable. */
static int64_t data_time(const dq_event *ev, const char *name, int64_t fallback)
{
    const char *s = dq_json_str(ev->data, name);
    int64_t ms;

    return s && dq_time_parse(s, &ms) == 0 ? ms : fallback;
}

char *dq_sentry_deploy_body(const dq_sentry_config *sc, const dq_event *ev)
{
    cJSON *o;
    char started[DQ_TIME_LEN + 1], finished[DQ_TIME_LEN + 1];
    char *url = NULL, *out = NULL;
    int64_t start_ms, end_ms;

    if (!dq_sentry_release_of(ev) || !ev->environment || !ev->deployment_id)
        return NULL;
    if (strcmp(ev->type, DQ_EV_SUCCEEDED) == 0) {
        double took = dq_json_num(ev->data, "duration_ms", 0);

        end_ms = ev->at_ms;
        start_ms = took > 0 && took < (double)ev->at_ms ? ev->at_ms - (int64_t)took : ev->at_ms;
    } else {
        end_ms = data_time(ev, "restored_at", ev->at_ms);
        start_ms = data_time(ev, "decided_at", end_ms);
    }
    if (sc->deploy_url && !(url = dq_follow_fill(sc->deploy_url, ev)))
        return NULL;
    if (!(o = cJSON_CreateObject()))
        goto done;
    if (!cJSON_AddStringToObject(o, "environment", ev->environment) ||
        !cJSON_AddStringToObject(o, "name", ev->deployment_id) ||
        (url && !cJSON_AddStringToObject(o, "url", url)) ||
        !cJSON_AddStringToObject(o, "dateStarted", dq_time_format(start_ms, started)) ||
        !cJSON_AddStringToObject(o, "dateFinished", dq_time_format(end_ms, finished)) || add_projects(o, sc) != 0)
        goto done;
    out = cJSON_PrintUnformatted(o);
done:
    cJSON_Delete(o);
    free(url);
    return out;
}

/* ---- talking to Sentry ---- */

/* Sentry's "detail" of a JSON error body, as one short clean line, or "". */
static void sentry_detail(const dq_http_response *resp, char *out, size_t outlen)
{
    cJSON *j = resp->body ? cJSON_ParseWithLength(resp->body, resp->body_len) : NULL;
    const char *m = dq_json_str(j, "detail");
    size_t o = 0;

    for (const char *p = m ? m : ""; *p && o + 1 < outlen && o < 200; p++)
        out[o++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    out[o] = '\0';
    cJSON_Delete(j);
}

/* One request to Sentry's API (path from /api/0 on). The response is the caller's to
 * free. DQ_FOLLOW_OK with a response (any status), DQ_FOLLOW_DOWN without one. */
static dq_follow_rc sentry_request(const dq_sentry_config *sc, const char *method, const char *path,
                                   const char *body, dq_http_response *resp, dq_follow_outcome *out)
{
    size_t n = strlen(sc->token) + 32;
    char *auth = malloc(n), *url;
    dq_follow_rc rc;

    memset(resp, 0, sizeof *resp);
    if (auth)
        snprintf(auth, n, "Authorization: Bearer %s", sc->token);
    n = strlen(sc->url) + strlen(path) + 16;
    if ((url = malloc(n)) != NULL)
        snprintf(url, n, "%s/api/0%s", sc->url, path);
    if (!auth || !url) {
        free(auth);
        free(url);
        snprintf(out->error, sizeof out->error, "out of memory");
        return DQ_FOLLOW_DOWN;
    }
    {
        const char *headers[] = {"Accept: application/json", "Content-Type: application/json",
                                 "User-Agent: deployq", auth, NULL};
        dq_http_opts o = {0};

        o.method = method;
        o.url = url;
        o.headers = headers;
        o.body = body;
        o.timeout_ms = (long)sc->timeout_ms;
        o.max_retries = 0; /* the attempts are counted by follow.h, per event */
        o.retry_budget_ms = sc->timeout_ms + 1000;
        rc = dq_http_request(&o, resp) == 0 ? DQ_FOLLOW_OK : DQ_FOLLOW_DOWN;
    }
    memset(auth, 0, strlen(auth)); /* the token: wiped before the memory goes back */
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

/* What a status means for us; fills out->error for anything but 2xx. */
static dq_follow_rc sentry_judge(const char *what, const dq_http_response *resp, dq_follow_outcome *out)
{
    char msg[256];

    if (resp->status >= 200 && resp->status <= 299)
        return DQ_FOLLOW_OK;
    out->retry_after_ms = resp->retry_after_ms;
    sentry_detail(resp, msg, sizeof msg);
    snprintf(out->error, sizeof out->error, "%s: Sentry answered HTTP %ld%s%s", what, resp->status,
             msg[0] ? ": " : "", msg);
    return resp->status >= 500 || resp->status == 429 ? DQ_FOLLOW_DOWN : DQ_FOLLOW_REFUSED;
}

/* ---- the handler ---- */

typedef struct svc_sentry {
    char *service;
    dq_sentry_config sc;
} svc_sentry;

struct dq_sentry_handler {
    const dq_config *cfg;
    dq_producer *producer;
    volatile sig_atomic_t *stop;
    dq_redis *redis; /* this thread's own, connected on first use */
    svc_sentry *svcs;
    size_t n_svcs;
    char actor[256];
};

void dq_sentry_handler_free(dq_sentry_handler *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_svcs; i++) {
        free(h->svcs[i].service);
        dq_sentry_config_clear(&h->svcs[i].sc);
    }
    free(h->svcs);
    dq_redis_free(h->redis);
    free(h);
}

dq_sentry_handler *dq_sentry_handler_new(const dq_config *cfg, dq_producer *producer, volatile sig_atomic_t *stop,
                                         char *err, size_t errlen)
{
    dq_sentry_handler *h = calloc(1, sizeof *h);

    if (!h || (cfg->n_services && !(h->svcs = calloc(cfg->n_services, sizeof *h->svcs)))) {
        free(h);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->cfg = cfg;
    h->producer = producer;
    h->stop = stop;
    dq_actor("deployq-rollback", h->actor, sizeof h->actor);
    for (size_t i = 0; i < cfg->n_services; i++) {
        svc_sentry *s = &h->svcs[h->n_svcs];
        int found = 0;

        if (dq_sentry_config_load(cfg, cfg->services[i].name, &s->sc, &found, err, errlen) != 0)
            goto fail;
        if (!found)
            continue;
        if (!(s->service = strdup(cfg->services[i].name))) {
            dq_sentry_config_clear(&s->sc);
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        h->n_svcs++;
    }
    return h;
fail:
    dq_sentry_handler_free(h);
    return NULL;
}

int dq_sentry_handler_active(const dq_sentry_handler *h)
{
    return h && h->n_svcs > 0;
}

static const dq_sentry_config *config_of(const dq_sentry_handler *h, const char *service)
{
    for (size_t i = 0; service && i < h->n_svcs; i++)
        if (strcmp(h->svcs[i].service, service) == 0)
            return &h->svcs[i].sc;
    return NULL;
}

static dq_redis *redis_of(dq_sentry_handler *h)
{
    char err[256];

    if (!h->redis) {
        h->redis = dq_redis_connect(h->cfg->redis_url, h->cfg->redis_timeout_ms, err, sizeof err);
        if (!h->redis)
            dq_warn("sentry: redis: %s", err);
    }
    return h->redis;
}

/* The deploy of release in ev's environment named after ev's deployment that an earlier
 * attempt made (it died between Sentry's 201 and our record): its id into id (or ""). */
static dq_follow_rc find_made(const dq_sentry_config *sc, const char *org_path, const dq_event *ev, char *id,
                              size_t idlen, dq_follow_outcome *out)
{
    dq_http_response resp = {0};
    char path[1024];
    cJSON *list = NULL, *d;
    dq_follow_rc rc;

    id[0] = '\0';
    snprintf(path, sizeof path, "%s/deploys/", org_path);
    rc = sentry_request(sc, "GET", path, NULL, &resp, out);
    if (rc == DQ_FOLLOW_OK)
        rc = sentry_judge("list the release's deploys", &resp, out);
    if (rc == DQ_FOLLOW_OK && (list = cJSON_ParseWithLength(resp.body, resp.body_len)) != NULL) {
        cJSON_ArrayForEach(d, list) {
            const char *name = dq_json_str(d, "name"), *env = dq_json_str(d, "environment");
            const char *did = dq_json_str(d, "id");

            if (name && env && did && strcmp(name, ev->deployment_id) == 0 && strcmp(env, ev->environment) == 0) {
                dq_strlcpy(id, did, idlen);
                break;
            }
        }
    }
    cJSON_Delete(list);
    dq_http_response_free(&resp);
    return rc;
}

typedef struct sentry_try {
    dq_sentry_handler *h;
    const dq_sentry_config *sc;
    const dq_event *ev;
    const char *release;
} sentry_try;

/* One attempt at everything ev asks of Sentry. */
static dq_follow_rc record(void *arg, dq_follow_outcome *out)
{
    sentry_try *t = arg;
    const dq_event *ev = t->ev;
    dq_redis *r = redis_of(t->h);
    dq_http_response resp = {0};
    char key[128], path[1024], id[64];
    char *org = dq_http_escape(t->sc->org), *rel = dq_http_escape(t->release), *seen = NULL, *body = NULL;
    redisReply *rep;
    dq_follow_rc rc = DQ_FOLLOW_STATE;

    snprintf(key, sizeof key, "deployq:sentry:rec:%s", ev->id);
    if (!org || !rel) {
        snprintf(out->error, sizeof out->error, "out of memory");
        rc = DQ_FOLLOW_DOWN;
        goto done;
    }
    if (!r || dq_redis_get(r, key, &seen) != 0)
        goto done; /* DQ_FOLLOW_STATE: read again */
    if (seen) {
        rc = DQ_FOLLOW_OK; /* recorded before: a redelivery */
        goto done;
    }
    /* the release first: 201 created, 208 it existed */
    snprintf(path, sizeof path, "/organizations/%s/releases/", org);
    if (!(body = dq_sentry_release_body(t->sc, t->release))) {
        snprintf(out->error, sizeof out->error, "out of memory");
        rc = DQ_FOLLOW_DOWN;
        goto done;
    }
    rc = sentry_request(t->sc, "POST", path, body, &resp, out);
    free(body);
    body = NULL;
    if (rc == DQ_FOLLOW_OK)
        rc = sentry_judge("create the release", &resp, out);
    dq_http_response_free(&resp);
    if (rc != DQ_FOLLOW_OK)
        goto done;
    snprintf(path, sizeof path, "/organizations/%s/releases/%s", org, rel);
    if ((rc = find_made(t->sc, path, ev, id, sizeof id, out)) != DQ_FOLLOW_OK)
        goto done;
    if (!id[0]) {
        cJSON *j;

        if (!(body = dq_sentry_deploy_body(t->sc, ev))) {
            snprintf(out->error, sizeof out->error, "out of memory");
            rc = DQ_FOLLOW_DOWN;
            goto done;
        }
        snprintf(path, sizeof path, "/organizations/%s/releases/%s/deploys/", org, rel);
        rc = sentry_request(t->sc, "POST", path, body, &resp, out);
        if (rc == DQ_FOLLOW_OK)
            rc = sentry_judge("create the deploy", &resp, out);
        j = rc == DQ_FOLLOW_OK ? cJSON_ParseWithLength(resp.body, resp.body_len) : NULL;
        dq_strlcpy(id, dq_json_str(j, "id") ? dq_json_str(j, "id") : "?", sizeof id);
        cJSON_Delete(j);
        dq_http_response_free(&resp);
        if (rc != DQ_FOLLOW_OK)
            goto done;
        dq_info("sentry: %s/%s deployment %s: release %s deployed, Sentry deploy %s in %s", ev->service,
                ev->environment, ev->deployment_id, t->release, id, t->sc->org);
    }
    if (!(rep = dq_redis_command(r, "SET %s %s EX %ld", key, id, STATE_TTL_S))) {
        rc = DQ_FOLLOW_STATE;
        goto done;
    }
    freeReplyObject(rep);
    rc = DQ_FOLLOW_OK;
done:
    free(org);
    free(rel);
    free(seen);
    free(body);
    return rc;
}

dq_handle_result dq_sentry_handle(void *ctx, const dq_message *m, char *err, size_t errlen)
{
    dq_sentry_handler *h = ctx;
    const dq_sentry_config *sc;
    dq_follow_outcome o;
    dq_follow_policy pol;
    dq_follow_rc rc;
    sentry_try t;
    char why[256];
    int stopped;
    dq_event *ev;
    dq_handle_result res = DQ_HANDLED;

    (void)err;
    (void)errlen;
    /* what is not a readable event is the rollback consumer's to dead-letter, not ours */
    if (!(ev = dq_event_decode(m->value ? m->value : "", m->len, why, sizeof why)))
        return DQ_HANDLED;
    t.release = dq_sentry_release_of(ev);
    sc = config_of(h, ev->service);
    if (!t.release || !t.release[0] || !sc || !ev->deployment_id || !ev->environment) {
        dq_event_free(ev);
        return DQ_HANDLED;
    }
    pol.retries = sc->retries;
    pol.timeout_ms = sc->timeout_ms;
    pol.retry_budget_ms = sc->retry_budget_ms;
    t.h = h;
    t.sc = sc;
    t.ev = ev;
    rc = dq_follow_attempts(&pol, h->stop, record, &t, &o, &stopped);
    if (stopped || rc == DQ_FOLLOW_STATE) {
        res = DQ_RETRY; /* stopping, or our state unreachable: read it again */
    } else if (rc != DQ_FOLLOW_OK) {
        cJSON *extra = cJSON_CreateObject();

        dq_warn("sentry: %s/%s deployment %s: release %s deploy not recorded in Sentry after %d attempt%s: %s",
                ev->service, ev->environment, ev->deployment_id, t.release, o.attempts, o.attempts == 1 ? "" : "s",
                o.error);
        if (!extra || !cJSON_AddStringToObject(extra, "sentry_org", sc->org) ||
            !cJSON_AddStringToObject(extra, "sentry_release", t.release) ||
            dq_follow_report(h->cfg, h->producer, h->actor, "sentry", ev, "deploy", &o, extra) != 0)
            res = DQ_RETRY;
        cJSON_Delete(extra);
    }
    dq_event_free(ev);
    return res;
}

/* ---- the thread ---- */

struct dq_sentry_worker {
    dq_follow *follow;
    dq_sentry_handler *h;
};

dq_sentry_worker *dq_sentry_worker_start(const dq_config *cfg, dq_producer *producer, const char *group,
                                         volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    dq_sentry_worker *w = calloc(1, sizeof *w);

    err[0] = '\0';
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!(w->h = dq_sentry_handler_new(cfg, producer, stop, err, errlen)))
        goto fail;
    if (!dq_sentry_handler_active(w->h))
        goto fail; /* err stays "": nothing to do */
    if (!(w->follow = dq_follow_start(cfg, "sentry", group, dq_sentry_handle, w->h, stop, err, errlen)))
        goto fail;
    dq_info("sentry: recording deploys of %zu service%s in Sentry, consuming %s as group %s", w->h->n_svcs,
            w->h->n_svcs == 1 ? "" : "s", cfg->topic_events, group);
    return w;
fail:
    dq_sentry_handler_free(w->h);
    free(w);
    return NULL;
}

void dq_sentry_worker_stop(dq_sentry_worker *w)
{
    if (!w)
        return;
    dq_follow_stop(w->follow);
    dq_sentry_handler_free(w->h);
    free(w);
}
