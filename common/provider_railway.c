/*
 * provider_railway.c - Railway through its public GraphQL v2 API.
 *
 * Deploy is serviceInstanceDeployV2 (the only deploy mutation that returns the new
 * deployment's id), status is deployment(id){status}, rollback is deploymentRedeploy of
 * the old deployment (it returns a Deployment whose id can be polled) or, when configured,
 * deploymentRollback (Boolean only). GraphQL reports errors inside a 200 response: those
 * are errors here too, never a success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "provider.h"
#include "util.h"

typedef struct {
    char *service_id;
    char *environment_id;
    int project_token;     /* Project-Access-Token instead of Authorization: Bearer */
    int send_commit_sha;   /* pass the version as commitSha */
    int rollback_mutation; /* deploymentRollback instead of deploymentRedeploy */
} rw_impl;

static const char Q_DEPLOY[] =
    "mutation deployqDeploy($serviceId: String!, $environmentId: String!, $commitSha: String) "
    "{ serviceInstanceDeployV2(serviceId: $serviceId, environmentId: $environmentId, commitSha: $commitSha) }";
static const char Q_STATUS[] = "query deployqStatus($id: String!) { deployment(id: $id) { id status url staticUrl } }";
static const char Q_REDEPLOY[] =
    "mutation deployqRedeploy($id: String!) { deploymentRedeploy(id: $id, usePreviousImageTag: true) { id status } }";
static const char Q_ROLLBACK[] = "mutation deployqRollback($id: String!) { deploymentRollback(id: $id) }";
static const char Q_CANCEL[] = "mutation deployqCancel($id: String!) { deploymentCancel(id: $id) }";

static int rw_init(dq_provider *p, const cJSON *cfg, char *err, size_t errlen)
{
    rw_impl *w = calloc(1, sizeof *w);
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->impl = w;
    if (p->base_url == NULL && (p->base_url = strdup("https://backboard.railway.com/graphql/v2")) == NULL)
        goto oom;
    const char *svc = dq_provider_cfg_str(cfg, "service_id");
    const char *env = dq_provider_cfg_str(cfg, "environment_id");
    if (svc == NULL || env == NULL) {
        snprintf(err, errlen, "provider %s: \"service_id\" and \"environment_id\" are required", p->name);
        return -1;
    }
    if (p->token == NULL) {
        snprintf(err, errlen, "provider %s: a token (token or token_env) is required", p->name);
        return -1;
    }
    const char *kind = dq_provider_cfg_str(cfg, "token_kind");
    if (kind != NULL && strcmp(kind, "project") != 0 && strcmp(kind, "bearer") != 0) {
        snprintf(err, errlen, "provider %s: token_kind must be \"bearer\" or \"project\"", p->name);
        return -1;
    }
    w->project_token = kind != NULL && strcmp(kind, "project") == 0;
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(cfg, "commit_sha");
    w->send_commit_sha = sha == NULL || cJSON_IsTrue(sha);
    const char *rb = dq_provider_cfg_str(cfg, "rollback");
    if (rb != NULL && strcmp(rb, "redeploy") != 0 && strcmp(rb, "rollback") != 0) {
        snprintf(err, errlen, "provider %s: rollback must be \"redeploy\" or \"rollback\"", p->name);
        return -1;
    }
    w->rollback_mutation = rb != NULL && strcmp(rb, "rollback") == 0;
    w->service_id = strdup(svc);
    w->environment_id = strdup(env);
    if (w->service_id == NULL || w->environment_id == NULL)
        goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static void rw_destroy(dq_provider *p)
{
    rw_impl *w = p->impl;
    if (w == NULL)
        return;
    free(w->service_id);
    free(w->environment_id);
    free(w);
}

/* Run one GraphQL operation; *data gets the "data" member (owned by *root). GraphQL errors
 * become errors: auth and rate-limit messages UNAVAILABLE (nothing ran), others FAILED. */
static int rw_gql(dq_provider *p, const char *op, const char *query, cJSON *vars, int idempotent, int64_t fence,
                  cJSON **root, const cJSON **data, dq_provider_error *e)
{
    rw_impl *w = p->impl;
    char auth[1024];
    const char *hdrs[2] = {auth, NULL};
    cJSON *req = cJSON_CreateObject();
    char *body = NULL;
    dq_http_response r;

    *root = NULL;
    *data = NULL;
    if (req == NULL) {
        cJSON_Delete(vars);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    }
    cJSON_AddStringToObject(req, "query", query);
    cJSON_AddItemToObject(req, "variables", vars); /* vars now owned by req */
    body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (body == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");

    if (w->project_token)
        snprintf(auth, sizeof auth, "Project-Access-Token: %s", p->token);
    else
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", p->token);
    dq_provider_http(p, "POST", p->base_url, hdrs, body, idempotent, fence, &r);
    memset(auth, 0, sizeof auth);
    free(body);
    if (dq_provider_http_error(p, &r, op, e) != 0) {
        dq_http_response_free(&r);
        return -1;
    }
    cJSON *j = dq_provider_parse_body(&r);
    long code = r.status;
    dq_http_response_free(&r);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code, "%s: response is not a JSON object", op);
    }
    const cJSON *errors = cJSON_GetObjectItemCaseSensitive(j, "errors");
    if (cJSON_IsArray(errors) && cJSON_GetArraySize(errors) > 0) {
        const char *msg = dq_provider_cfg_str(cJSON_GetArrayItem(errors, 0), "message");
        char m[300];
        dq_strlcpy(m, msg ? msg : "(no message)", sizeof m);
        cJSON_Delete(j);
        if (strcasestr(m, "not authorized") || strcasestr(m, "unauthorized") || strcasestr(m, "unauthenticated"))
            return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "unauthorized", code, "%s: GraphQL error: %s", op, m);
        if (strcasestr(m, "rate limit"))
            return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "rate_limited", code, "%s: GraphQL error: %s", op, m);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code, "%s: GraphQL error: %s", op, m);
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (!cJSON_IsObject(d)) {
        cJSON_Delete(j);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code, "%s: no data in the response", op);
    }
    *root = j;
    *data = d;
    return 0;
}

static cJSON *id_vars(const char *id)
{
    cJSON *v = cJSON_CreateObject();
    if (v != NULL && cJSON_AddStringToObject(v, "id", id) == NULL) {
        cJSON_Delete(v);
        return NULL;
    }
    return v;
}

static int rw_deploy(dq_provider *p, const dq_provider_request *req, char *id, size_t idlen, dq_provider_error *e)
{
    rw_impl *w = p->impl;
    cJSON *vars = cJSON_CreateObject();
    cJSON *root;
    const cJSON *data;

    if (vars == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    cJSON_AddStringToObject(vars, "serviceId", w->service_id);
    cJSON_AddStringToObject(vars, "environmentId", w->environment_id);
    if (w->send_commit_sha && req->version != NULL)
        cJSON_AddStringToObject(vars, "commitSha", req->version);
    /* A repeated mutation would deploy twice, so it is not retried after a timeout. */
    if (rw_gql(p, "serviceInstanceDeployV2", Q_DEPLOY, vars, 0, req->fence, &root, &data, e) != 0)
        return -1;
    const char *dep = dq_provider_cfg_str(data, "serviceInstanceDeployV2");
    if (dep == NULL || dep[0] == '\0') {
        cJSON_Delete(root);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 200,
                                "serviceInstanceDeployV2 returned no deployment id");
    }
    dq_strlcpy(id, dep, idlen);
    cJSON_Delete(root);
    return 0;
}

static int rw_status(dq_provider *p, const dq_provider_request *req, const char *id, dq_deploy_status *st,
                     dq_provider_error *e)
{
    static const char *const ok[] = {"SUCCESS", "SLEEPING", NULL};
    static const char *const bad[] = {"FAILED", "CRASHED", "REMOVED", "REMOVING", "SKIPPED", NULL};
    cJSON *vars = id_vars(id);
    cJSON *root;
    const cJSON *data;

    if (vars == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    if (rw_gql(p, "deployment", Q_STATUS, vars, 1, req->fence, &root, &data, e) != 0)
        return -1;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(data, "deployment");
    const char *status = dq_provider_cfg_str(d, "status");
    if (status == NULL) {
        cJSON_Delete(root);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 200, "deployment %s: no status", id);
    }
    dq_strlcpy(st->raw, status, sizeof st->raw);
    /* Anything unknown stays in flight: the deadline decides, never a guess. SLEEPING is
     * only reached by a deployment that went live (SUCCESS) and then idled. */
    st->state = DQ_DEPLOY_IN_FLIGHT;
    for (size_t i = 0; ok[i]; i++)
        if (strcmp(status, ok[i]) == 0)
            st->state = DQ_DEPLOY_SUCCEEDED;
    for (size_t i = 0; bad[i]; i++)
        if (strcmp(status, bad[i]) == 0)
            st->state = DQ_DEPLOY_FAILED;
    const char *url = dq_provider_cfg_str(d, "url");
    const char *static_url = dq_provider_cfg_str(d, "staticUrl");
    if (url != NULL)
        dq_strlcpy(st->url, url, sizeof st->url);
    else if (static_url != NULL)
        snprintf(st->url, sizeof st->url, "https://%s", static_url);
    cJSON_Delete(root);
    return 0;
}

static int rw_rollback(dq_provider *p, const dq_provider_request *req, const char *id, char *new_id,
                       size_t new_idlen, dq_provider_error *e)
{
    rw_impl *w = p->impl;
    cJSON *root;
    const cJSON *data;

    if (id == NULL || id[0] == '\0')
        return rw_deploy(p, req, new_id, new_idlen, e);
    cJSON *vars = id_vars(id);
    if (vars == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    if (w->rollback_mutation) {
        if (rw_gql(p, "deploymentRollback", Q_ROLLBACK, vars, 0, req->fence, &root, &data, e) != 0)
            return -1;
        int accepted = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "deploymentRollback"));
        cJSON_Delete(root);
        if (!accepted)
            return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 200,
                                    "deploymentRollback(%s) returned false", id);
        return 0; /* Boolean only: nothing to poll, new_id stays "" */
    }
    if (rw_gql(p, "deploymentRedeploy", Q_REDEPLOY, vars, 0, req->fence, &root, &data, e) != 0)
        return -1;
    const char *nid = dq_provider_cfg_str(cJSON_GetObjectItemCaseSensitive(data, "deploymentRedeploy"), "id");
    if (nid == NULL) {
        cJSON_Delete(root);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 200, "deploymentRedeploy returned no id");
    }
    dq_strlcpy(new_id, nid, new_idlen);
    cJSON_Delete(root);
    return 0;
}

static int rw_cancel(dq_provider *p, const dq_provider_request *req, const char *id, dq_provider_error *e)
{
    cJSON *vars = id_vars(id);
    cJSON *root;
    const cJSON *data;

    if (vars == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    if (rw_gql(p, "deploymentCancel", Q_CANCEL, vars, 1, req->fence, &root, &data, e) != 0)
        return -1;
    int ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "deploymentCancel"));
    cJSON_Delete(root);
    if (!ok)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 200, "deploymentCancel(%s) returned false", id);
    return 0;
}

const dq_provider_ops dq_provider_railway_ops = {
    .type = "railway",
    .init = rw_init,
    .deploy = rw_deploy,
    .status = rw_status,
    .rollback = rw_rollback,
    .cancel = rw_cancel,
    .destroy = rw_destroy,
};
