/*
 * provider_webhook.c - a generic HTTP deploy endpoint, for in-house deployers.
 *
 * Deploy is a POST of {"action":"deploy", deployment_id, service, environment, version,
 * fence} to "url". With a "status_url" (a template: {id}, {deployment_id}) the answer's
 * "id" is polled there until its "status" is terminal. Without one the endpoint is
 * synchronous: its answer (2xx, and a "status" that is not a failure word) is the verdict,
 * kept in memory for the status call that follows.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "provider.h"
#include "util.h"

#define WH_VERDICTS 32

typedef struct {
    char *url;
    char *status_url;
    char *rollback_url;
    char *cancel_url;
    /* Synchronous verdicts by id, a small ring: status comes right after deploy. */
    pthread_mutex_t mu;
    struct {
        char id[DQ_PROVIDER_ID_LEN];
        dq_deploy_state state;
        char raw[64];
    } verdicts[WH_VERDICTS];
    size_t next;
} wh_impl;

static int wh_init(dq_provider *p, const cJSON *cfg, char *err, size_t errlen)
{
    wh_impl *w = calloc(1, sizeof *w);
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&w->mu, NULL);
    p->impl = w;
    const char *url = dq_provider_cfg_str(cfg, "url");
    if (url == NULL)
        url = p->base_url;
    if (url == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        snprintf(err, errlen, "provider %s: \"url\" (http:// or https://) is required", p->name);
        return -1;
    }
    const char *su = dq_provider_cfg_str(cfg, "status_url");
    const char *ru = dq_provider_cfg_str(cfg, "rollback_url");
    const char *cu = dq_provider_cfg_str(cfg, "cancel_url");
    if ((w->url = strdup(url)) == NULL || (su && (w->status_url = strdup(su)) == NULL) ||
        (ru && (w->rollback_url = strdup(ru)) == NULL) || (cu && (w->cancel_url = strdup(cu)) == NULL)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void wh_destroy(dq_provider *p)
{
    wh_impl *w = p->impl;
    if (w == NULL)
        return;
    pthread_mutex_destroy(&w->mu);
    free(w->url);
    free(w->status_url);
    free(w->rollback_url);
    free(w->cancel_url);
    free(w);
}

/* Expand {id} and {deployment_id} (URL-escaped) in tmpl into out. */
static void wh_expand(const char *tmpl, const char *id, const char *dep, char *out, size_t outlen)
{
    size_t o = 0;
    while (*tmpl != '\0' && o + 1 < outlen) {
        const char *val = NULL;
        size_t skip = 0;
        if (strncmp(tmpl, "{id}", 4) == 0) {
            val = id;
            skip = 4;
        } else if (strncmp(tmpl, "{deployment_id}", 15) == 0) {
            val = dep;
            skip = 15;
        }
        if (skip > 0) {
            char *esc = dq_http_escape(val ? val : "");
            for (const char *c = esc; c && *c && o + 1 < outlen; c++)
                out[o++] = *c;
            free(esc);
            tmpl += skip;
        } else {
            out[o++] = *tmpl++;
        }
    }
    out[o] = '\0';
}

/* key: an idempotency key for a create (the deployment id), sent as Idempotency-Key so the
 * receiver can deduplicate a retry; NULL for other calls. */
static int wh_call(const dq_provider *p, const char *method, const char *url, const char *body, int idempotent,
                   const char *key, int64_t fence, dq_http_response *r)
{
    char auth[1024], idem[160];
    const char *hdrs[4];
    size_t n = 0;

    if (p->token != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", p->token);
        hdrs[n++] = auth;
    }
    hdrs[n++] = "Accept: application/json";
    if (key != NULL && key[0] != '\0') {
        snprintf(idem, sizeof idem, "Idempotency-Key: %.128s", key);
        hdrs[n++] = idem;
    }
    hdrs[n] = NULL;
    int rc = dq_provider_http(p, method, url, hdrs, body, idempotent, fence, r);
    memset(auth, 0, sizeof auth);
    return rc;
}

/* 1 success, -1 failure, 0 in flight. */
static int wh_verdict(const char *s)
{
    static const char *const ok[] = {"succeeded", "success", "deployed", NULL};
    static const char *const bad[] = {"failed", "failure", "error", "canceled", "cancelled", "crashed", NULL};
    for (size_t i = 0; s && ok[i]; i++)
        if (strcasecmp(s, ok[i]) == 0)
            return 1;
    for (size_t i = 0; s && bad[i]; i++)
        if (strcasecmp(s, bad[i]) == 0)
            return -1;
    return 0;
}

static int wh_post(dq_provider *p, const dq_provider_request *req, const char *action, const char *url,
                   const char *old_id, char *id, size_t idlen, dq_provider_error *e)
{
    wh_impl *w = p->impl;
    cJSON *b = cJSON_CreateObject();
    char *body;
    dq_http_response r;

    if (b == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    cJSON_AddStringToObject(b, "action", action);
    cJSON_AddStringToObject(b, "deployment_id", req->deployment_id ? req->deployment_id : "");
    cJSON_AddStringToObject(b, "service", req->service ? req->service : "");
    cJSON_AddStringToObject(b, "environment", req->environment ? req->environment : "");
    cJSON_AddStringToObject(b, "version", req->version ? req->version : "");
    cJSON_AddNumberToObject(b, "fence", (double)req->fence);
    if (old_id != NULL)
        cJSON_AddStringToObject(b, "provider_id", old_id);
    body = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    if (body == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    /* The receiver deduplicates on the deployment id (Idempotency-Key, and in the body):
     * a 5xx is retried; a timeout is not (docs/providers.md, "webhook"). */
    wh_call(p, "POST", url, body, DQ_HTTP_DEDUPED, req->deployment_id, req->fence, &r);
    free(body);
    if (dq_provider_http_error(p, &r, action, e) != 0) {
        dq_http_response_free(&r);
        return -1;
    }
    cJSON *j = dq_provider_parse_body(&r);
    dq_http_response_free(&r);
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(j, "id");
    if (cJSON_IsString(jid) && jid->valuestring[0] != '\0')
        dq_strlcpy(id, jid->valuestring, idlen);
    else if (cJSON_IsNumber(jid))
        snprintf(id, idlen, "%.0f", jid->valuedouble);
    else
        dq_strlcpy(id, req->deployment_id ? req->deployment_id : "", idlen);

    if (w->status_url == NULL) {
        const char *s = dq_provider_cfg_str(j, "status");
        int v = wh_verdict(s);
        pthread_mutex_lock(&w->mu);
        size_t slot = w->next++ % WH_VERDICTS;
        dq_strlcpy(w->verdicts[slot].id, id, sizeof w->verdicts[slot].id);
        w->verdicts[slot].state = v < 0 ? DQ_DEPLOY_FAILED : DQ_DEPLOY_SUCCEEDED;
        dq_strlcpy(w->verdicts[slot].raw, s ? s : "accepted", sizeof w->verdicts[slot].raw);
        pthread_mutex_unlock(&w->mu);
    }
    cJSON_Delete(j);
    return 0;
}

static int wh_deploy(dq_provider *p, const dq_provider_request *req, char *id, size_t idlen, dq_provider_error *e)
{
    wh_impl *w = p->impl;
    return wh_post(p, req, "deploy", w->url, NULL, id, idlen, e);
}

static int wh_status(dq_provider *p, const dq_provider_request *req, const char *id, dq_deploy_status *st,
                     dq_provider_error *e)
{
    wh_impl *w = p->impl;
    char url[2048];
    dq_http_response r;

    if (w->status_url == NULL) {
        int found = 0;
        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < WH_VERDICTS; i++) {
            if (w->verdicts[i].id[0] != '\0' && strcmp(w->verdicts[i].id, id) == 0) {
                st->state = w->verdicts[i].state;
                dq_strlcpy(st->raw, w->verdicts[i].raw, sizeof st->raw);
                found = 1;
            }
        }
        pthread_mutex_unlock(&w->mu);
        if (!found)
            /* A synchronous answer is not kept across restarts: do not guess it. */
            return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0,
                                    "no status_url and the synchronous answer for %s is not known here", id);
        return 0;
    }
    wh_expand(w->status_url, id, req->deployment_id, url, sizeof url);
    wh_call(p, "GET", url, NULL, DQ_HTTP_SAFE, NULL, req->fence, &r);
    if (dq_provider_http_error(p, &r, "status", e) != 0) {
        dq_http_response_free(&r);
        return -1;
    }
    cJSON *j = dq_provider_parse_body(&r);
    long code = r.status;
    dq_http_response_free(&r);
    const char *s = dq_provider_cfg_str(j, "status");
    if (s == NULL) {
        cJSON_Delete(j);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code, "status: no \"status\" member");
    }
    int v = wh_verdict(s);
    st->state = v > 0 ? DQ_DEPLOY_SUCCEEDED : v < 0 ? DQ_DEPLOY_FAILED : DQ_DEPLOY_IN_FLIGHT;
    dq_strlcpy(st->raw, s, sizeof st->raw);
    const char *u = dq_provider_cfg_str(j, "url");
    const char *lu = dq_provider_cfg_str(j, "log_url");
    dq_strlcpy(st->url, u ? u : "", sizeof st->url);
    dq_strlcpy(st->log_url, lu ? lu : "", sizeof st->log_url);
    cJSON_Delete(j);
    return 0;
}

static int wh_rollback(dq_provider *p, const dq_provider_request *req, const char *id, char *new_id,
                       size_t new_idlen, dq_provider_error *e)
{
    wh_impl *w = p->impl;
    return wh_post(p, req, "rollback", w->rollback_url ? w->rollback_url : w->url, id, new_id, new_idlen, e);
}

static int wh_cancel(dq_provider *p, const dq_provider_request *req, const char *id, dq_provider_error *e)
{
    wh_impl *w = p->impl;
    char url[2048];
    dq_http_response r;

    if (w->cancel_url == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "no cancel_url configured");
    wh_expand(w->cancel_url, id, req->deployment_id, url, sizeof url);
    wh_call(p, "POST", url, NULL, DQ_HTTP_SAFE, NULL, req->fence, &r);
    int rc = dq_provider_http_error(p, &r, "cancel", e);
    dq_http_response_free(&r);
    return rc;
}

static const char *const wh_keys[] = {"url", "status_url", "rollback_url", "cancel_url", NULL};

const dq_provider_ops dq_provider_webhook_ops = {
    .type = "webhook",
    .keys = wh_keys,
    .init = wh_init,
    .deploy = wh_deploy,
    .status = wh_status,
    .rollback = wh_rollback,
    .cancel = wh_cancel,
    .destroy = wh_destroy,
};
