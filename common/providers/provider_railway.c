/*
 * provider_railway.c - Railway through its public GraphQL v2 API.
 *
 * Deploy is serviceInstanceDeployV2 (the only deploy mutation that returns the new
 * deployment's id), status is deployment(id){status}, rollback is deploymentRedeploy of
 * the old deployment (it returns a Deployment whose id can be polled) or, when configured,
 * deploymentRollback. GraphQL reports errors inside a 200 response: those are errors here
 * too, never a success.
 *
 * Why a rollback looks for what it started: deploymentRollback answers only `true`, yet
 * it restores nothing by itself: it creates a new deployment of the old image, which
 * builds and deploys like any other while the failing version keeps serving. "true" is
 * therefore not a restore. The adapter lists the service's newest deployments before the
 * call and takes the one that is new after it (deployments(input, first), newest first),
 * so the caller polls it to a real terminal state. When Railway no longer allows a
 * rollback of that deployment (canRollback false) it redeploys it instead, which returns
 * the new deployment directly.
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
static const char Q_CAN_ROLLBACK[] = "query deployqCanRollback($id: String!) { deployment(id: $id) { id status canRollback } }";
static const char Q_DEPLOYMENTS[] =
    "query deployqDeployments($input: DeploymentListInput!, $first: Int) "
    "{ deployments(input: $input, first: $first) { edges { node { id status createdAt } } } }";

/* How many of the newest deployments a rollback compares before and after its call, and
 * how long it waits for the new one to be listed. */
#define RW_RECENT 10
#define RW_FIND_WAIT_MS 10000

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

/* ---- rollback: finding the deployment a rollback created ---- */

typedef struct {
    char id[RW_RECENT][DQ_PROVIDER_ID_LEN];
    size_t n;
} rw_recent;

/* The target's newest deployments: query (Q_DEPLOYMENTS or Q_FIND_DEPLOY, which select
 * different fields) for the first `first` of them. 0 with the answer in *root (the caller
 * deletes it) and its deployments.edges array in *edges, or -1 with *e. */
static int rw_deployments(dq_provider *p, const char *query, int first, int64_t fence, cJSON **root,
                          const cJSON **edges, dq_provider_error *e)
{
    rw_impl *w = p->impl;
    cJSON *vars = cJSON_CreateObject(), *input = cJSON_CreateObject();
    const cJSON *data;

    if (vars == NULL || input == NULL || cJSON_AddStringToObject(input, "serviceId", w->service_id) == NULL ||
        cJSON_AddStringToObject(input, "environmentId", w->environment_id) == NULL) {
        cJSON_Delete(vars);
        cJSON_Delete(input);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    }
    cJSON_AddItemToObject(vars, "input", input); /* input now owned by vars */
    cJSON_AddNumberToObject(vars, "first", first);
    if (rw_gql(p, "deployments", query, vars, 1, fence, root, &data, e) != 0)
        return -1;
    *edges = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(data, "deployments"), "edges");
    if (!cJSON_IsArray(*edges)) {
        cJSON_Delete(*root);
        *root = NULL;
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 200, "deployments: no edges in the answer");
    }
    return 0;
}

/* The ids of the target's newest deployments (newest first, at most RW_RECENT). 0, or -1
 * with *e. */
static int rw_list_recent(dq_provider *p, int64_t fence, rw_recent *out, dq_provider_error *e)
{
    cJSON *root;
    const cJSON *edges, *edge;

    out->n = 0;
    if (rw_deployments(p, Q_DEPLOYMENTS, RW_RECENT, fence, &root, &edges, e) != 0)
        return -1;
    cJSON_ArrayForEach(edge, edges)
    {
        const char *nid = dq_provider_cfg_str(cJSON_GetObjectItemCaseSensitive(edge, "node"), "id");
        if (nid != NULL && nid[0] != '\0' && out->n < RW_RECENT)
            dq_strlcpy(out->id[out->n++], nid, sizeof out->id[0]);
    }
    cJSON_Delete(root);
    return 0;
}

/* The newest deployment of the target that is not in before, other than old: what the
 * rollback just created. 1 with its id, 0 when none is listed yet, -1 with *e. */
static int rw_find_new(dq_provider *p, int64_t fence, const rw_recent *before, const char *old, char *id,
                       size_t idlen, dq_provider_error *e)
{
    rw_recent now;

    if (rw_list_recent(p, fence, &now, e) != 0)
        return -1;
    for (size_t i = 0; i < now.n; i++) {
        int seen = strcmp(now.id[i], old) == 0;
        for (size_t j = 0; !seen && j < before->n; j++)
            seen = strcmp(now.id[i], before->id[j]) == 0;
        if (!seen) {
            dq_strlcpy(id, now.id[i], idlen);
            return 1;
        }
    }
    return 0;
}

/* After deploymentRollback accepted (or may have: an ambiguous answer), wait up to
 * RW_FIND_WAIT_MS for the new deployment to be listed. 1 with its id, 0 none, -1 with *e
 * when the list could not be read. */
static int rw_await_new(dq_provider *p, int64_t fence, const rw_recent *before, const char *old, char *id,
                        size_t idlen, dq_provider_error *e)
{
    int64_t end = dq_mono_ms() + RW_FIND_WAIT_MS;
    int64_t pause = p->poll_interval_ms < 1000 ? p->poll_interval_ms : 1000;
    int found;

    if (pause < 50)
        pause = 50;
    while ((found = rw_find_new(p, fence, before, old, id, idlen, e)) == 0 && dq_mono_ms() + pause < end)
        dq_sleep_ms(pause);
    return found;
}

/* canRollback of deployment id: 1 allowed, 0 not, -1 with *e. */
static int rw_can_rollback(dq_provider *p, int64_t fence, const char *id, dq_provider_error *e)
{
    cJSON *vars = id_vars(id);
    cJSON *root;
    const cJSON *data;

    if (vars == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    if (rw_gql(p, "deployment", Q_CAN_ROLLBACK, vars, 1, fence, &root, &data, e) != 0)
        return -1;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(data, "deployment");
    const cJSON *can = cJSON_GetObjectItemCaseSensitive(d, "canRollback");
    int rc = cJSON_IsTrue(can) ? 1 : 0;
    if (!cJSON_IsBool(can))
        rc = dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 200, "deployment %s: no canRollback", id);
    cJSON_Delete(root);
    return rc;
}

/* deploymentRollback of id, and the deployment it created in new_id. 0, or -1 with *e. */
static int rw_rollback_mutation(dq_provider *p, const dq_provider_request *req, const char *id, char *new_id,
                                size_t new_idlen, dq_provider_error *e)
{
    rw_recent before;
    cJSON *root, *vars;
    const cJSON *data;
    int found;

    if (rw_list_recent(p, req->fence, &before, e) != 0)
        return -1; /* nothing was started */
    if ((vars = id_vars(id)) == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    /* Not repeated after a timeout: a second call could start a second deployment. */
    if (rw_gql(p, "deploymentRollback", Q_ROLLBACK, vars, 0, req->fence, &root, &data, e) != 0) {
        dq_provider_error le;
        char why[DQ_PROVIDER_DETAIL_LEN];

        if (strcmp(e->error_class, "timeout") != 0 && strcmp(e->error_class, "http_5xx") != 0)
            return -1;
        /* No clear answer: Railway may have started it. Adopt what it started, if anything. */
        dq_strlcpy(why, e->detail, sizeof why);
        found = rw_await_new(p, req->fence, &before, id, new_id, new_idlen, &le);
        if (found == 1) {
            dq_warn("provider %s: deploymentRollback(%s) answered %s, but deployment %s was created: following it",
                    p->name, id, e->error_class, new_id);
            return 0;
        }
        if (found < 0)
            return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 0,
                                    "deploymentRollback(%s): %s; whether it started a deployment is unknown (%s)", id,
                                    why, le.detail);
        return -1; /* nothing was created: *e stands, and a redeploy elsewhere is safe */
    }
    int accepted = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "deploymentRollback"));
    cJSON_Delete(root);
    if (!accepted)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 200, "deploymentRollback(%s) returned false", id);
    found = rw_await_new(p, req->fence, &before, id, new_id, new_idlen, e);
    if (found == 1)
        return 0;
    if (found == 0)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 200,
                                "deploymentRollback(%s) accepted, but no new deployment was listed within %d s", id,
                                RW_FIND_WAIT_MS / 1000);
    dq_provider_error le = *e; /* dq_provider_fail writes *e: keep what it formats from */
    return dq_provider_fail(p, e, DQ_PROV_FAILED, le.error_class, le.http_status,
                            "deploymentRollback(%s) accepted, but its deployment could not be found: %s", id,
                            le.detail);
}

static int rw_rollback(dq_provider *p, const dq_provider_request *req, const char *id, char *new_id,
                       size_t new_idlen, dq_provider_error *e)
{
    rw_impl *w = p->impl;
    cJSON *root;
    const cJSON *data;

    new_id[0] = '\0';
    if (id == NULL || id[0] == '\0')
        return rw_deploy(p, req, new_id, new_idlen, e);
    if (w->rollback_mutation) {
        int can = rw_can_rollback(p, req->fence, id, e);
        if (can < 0)
            return -1;
        if (can)
            return rw_rollback_mutation(p, req, id, new_id, new_idlen, e);
        dq_info("provider %s: deployment %s cannot be rolled back (canRollback false): redeploying it instead",
                p->name, id);
    }
    cJSON *vars = id_vars(id);
    if (vars == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
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

/* ---- deploy: finding what an ambiguous serviceInstanceDeployV2 created ---- */

/* How far before our call Railway's clock may date a deployment we created. */
#define RW_CREATE_SKEW_MS 30000

static const char Q_FIND_DEPLOY[] =
    "query deployqFindDeploy($input: DeploymentListInput!, $first: Int) "
    "{ deployments(input: $input, first: $first) { edges { node { id status createdAt meta } } } }";

/* After a serviceInstanceDeployV2 that timed out or got a 5xx: the newest deployment of
 * the service and environment created since the call (and, when the version is sent as
 * commitSha, of that commit). We hold the target's lock, so no other deploy of ours can
 * be it. 1 with its id, 0 none, -1 with *e. */
static int rw_find(dq_provider *p, const dq_provider_request *req, int64_t since_ms, char *id, size_t idlen,
                   dq_provider_error *e)
{
    rw_impl *w = p->impl;
    cJSON *root;
    const cJSON *edges, *edge;
    int found = 0;

    if (rw_deployments(p, Q_FIND_DEPLOY, 10, req->fence, &root, &edges, e) != 0)
        return -1;
    cJSON_ArrayForEach(edge, edges)
    {
        const cJSON *node = cJSON_GetObjectItemCaseSensitive(edge, "node");
        const char *nid = dq_provider_cfg_str(node, "id");
        const char *created = dq_provider_cfg_str(node, "createdAt");
        const char *commit = dq_provider_cfg_str(cJSON_GetObjectItemCaseSensitive(node, "meta"), "commitHash");
        int64_t at;
        if (nid == NULL || nid[0] == '\0' || created == NULL || dq_time_parse(created, &at) != 0 ||
            at < since_ms - RW_CREATE_SKEW_MS)
            continue;
        if (w->send_commit_sha && req->version != NULL && commit != NULL && strcmp(commit, req->version) != 0)
            continue;
        dq_strlcpy(id, nid, idlen);
        found = 1;
        break; /* newest first */
    }
    cJSON_Delete(root);
    return found;
}

static const char *const rw_keys[] = {"service_id", "environment_id", "project_id", "token_kind", "commit_sha", "rollback", NULL}; /* project_id: read by gates.c for drift */

const dq_provider_ops dq_provider_railway_ops = {
    .type = "railway",
    .keys = rw_keys,
    .init = rw_init,
    .deploy = rw_deploy,
    .status = rw_status,
    .rollback = rw_rollback,
    .cancel = rw_cancel,
    .destroy = rw_destroy,
    .find = rw_find,
};
