/*
 * provider_circleci.c - CircleCI API v2: trigger a pipeline, then poll its workflows.
 *
 * A trigger answered 200 with only {"message": ...} created nothing: that is
 * "no_run_created" (the next provider may be tried), never a success. The verdict comes
 * from the workflows of the pipeline: the one named by "workflow" in the config, or all of
 * them, which must all end in "success". failing and on_hold are not terminal; not_run is
 * a failure (nothing was deployed). A pipeline that errored before any workflow existed
 * is a failure too.
 *
 * A trigger that timed out or got a 5xx may have created the pipeline: before anything
 * else, the project's newest pipelines are searched for the one whose trigger_parameters
 * carry this deployment id (cc_find), and that one is adopted.
 *
 * Cost (provider.h "what a run cost"): once the watched workflows ended, their jobs
 * (GET /workflow/{id}/job, paged) and each job's details (GET /project/{slug}/job/{number}:
 * started_at/stopped_at, parallelism, executor.resource_class) are priced at the resource
 * class's rate. CircleCI charges credits by the second (each task rounded up to the second,
 * then to a whole credit); a job is billed here by the started second times its
 * parallelism, at per_minute / 60. The credit rounding (under one credit per task) is not
 * modelled, and a parallel job is billed as if every run lasted as long as the job (the v2
 * API gives no per-run times): an upper bound.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "provider.h"
#include "util.h"

typedef struct {
    char *slug;
    char *branch;
    char *workflow;      /* the deploy workflow to watch, or NULL for all */
    char *definition_id; /* set: use the newer /pipeline/run endpoint */
    char *app_url;
} cc_impl;

static int cc_init(dq_provider *p, const cJSON *cfg, char *err, size_t errlen)
{
    cc_impl *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->impl = c;
    if (p->base_url == NULL && (p->base_url = strdup("https://circleci.com")) == NULL)
        goto oom;
    const char *slug = dq_provider_cfg_str(cfg, "slug");
    if (slug == NULL || strchr(slug, '/') == NULL) {
        snprintf(err, errlen, "provider %s: \"slug\" (like gh/org/repo) is required", p->name);
        return -1;
    }
    if (p->token == NULL) {
        snprintf(err, errlen, "provider %s: a token (token or token_env) is required", p->name);
        return -1;
    }
    const char *branch = dq_provider_cfg_str(cfg, "branch");
    const char *wf = dq_provider_cfg_str(cfg, "workflow");
    const char *def = dq_provider_cfg_str(cfg, "definition_id");
    const char *app = dq_provider_cfg_str(cfg, "app_url");
    c->slug = strdup(slug);
    c->branch = strdup(branch ? branch : "main");
    c->app_url = strdup(app ? app : "https://app.circleci.com");
    if (c->slug == NULL || c->branch == NULL || c->app_url == NULL)
        goto oom;
    if (wf != NULL && (c->workflow = strdup(wf)) == NULL)
        goto oom;
    if (def != NULL && (c->definition_id = strdup(def)) == NULL)
        goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static void cc_destroy(dq_provider *p)
{
    cc_impl *c = p->impl;
    if (c == NULL)
        return;
    free(c->slug);
    free(c->branch);
    free(c->workflow);
    free(c->definition_id);
    free(c->app_url);
    free(c);
}

static int cc_call(const dq_provider *p, const char *method, const char *path, const char *body, int idempotent,
                   int64_t fence, dq_http_response *r)
{
    char url[2048];
    char auth[1024];
    const char *hdrs[] = {auth, "Accept: application/json", NULL};

    snprintf(url, sizeof url, "%s%s", p->base_url, path);
    snprintf(auth, sizeof auth, "Circle-Token: %s", p->token);
    int rc = dq_provider_http(p, method, url, hdrs, body, idempotent, fence, r);
    memset(auth, 0, sizeof auth);
    return rc;
}

static char *cc_trigger_body(const cc_impl *c, const dq_provider_request *req)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *params = cJSON_CreateObject();
    char *out = NULL;

    if (root == NULL || params == NULL) {
        cJSON_Delete(root);
        cJSON_Delete(params);
        return NULL;
    }
    /* The project's config must declare these pipeline parameters (docs/providers.md). */
    cJSON_AddStringToObject(params, "service", req->service ? req->service : "");
    cJSON_AddStringToObject(params, "environment", req->environment ? req->environment : "");
    cJSON_AddStringToObject(params, "version", req->version ? req->version : "");
    cJSON_AddStringToObject(params, "deployment_id", req->deployment_id ? req->deployment_id : "");
    cJSON_AddNumberToObject(params, "fence", (double)req->fence);
    if (c->definition_id != NULL) {
        cJSON *checkout = cJSON_AddObjectToObject(root, "checkout");
        cJSON *config = cJSON_AddObjectToObject(root, "config");
        cJSON_AddStringToObject(root, "definition_id", c->definition_id);
        cJSON_AddStringToObject(checkout, "branch", c->branch);
        cJSON_AddStringToObject(config, "branch", c->branch);
    } else {
        cJSON_AddStringToObject(root, "branch", c->branch);
    }
    cJSON_AddItemToObject(root, "parameters", params);
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static int cc_deploy(dq_provider *p, const dq_provider_request *req, char *id, size_t idlen, dq_provider_error *e)
{
    cc_impl *c = p->impl;
    char path[1024];
    char *body = cc_trigger_body(c, req);
    dq_http_response r;

    if (body == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    snprintf(path, sizeof path, "/api/v2/project/%s/%s", c->slug, c->definition_id ? "pipeline/run" : "pipeline");
    cc_call(p, "POST", path, body, 0, req->fence, &r);
    free(body);
    if (dq_provider_http_error(p, &r, "trigger pipeline", e) != 0) {
        dq_http_response_free(&r);
        return -1;
    }
    cJSON *j = dq_provider_parse_body(&r);
    long code = r.status;
    dq_http_response_free(&r);
    const char *pid = dq_provider_cfg_str(j, "id");
    const char *msg = dq_provider_cfg_str(j, "message");
    if (pid == NULL && msg != NULL) {
        char m[300];
        dq_strlcpy(m, msg, sizeof m);
        cJSON_Delete(j);
        return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "no_run_created", code,
                                "trigger pipeline: HTTP %ld without a pipeline: %s", code, m);
    }
    if (pid == NULL) {
        cJSON_Delete(j);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code, "trigger pipeline: HTTP %ld without an id",
                                code);
    }
    dq_strlcpy(id, pid, idlen);
    cJSON_Delete(j);
    return 0;
}

/* Fetch every workflow of the pipeline (following next_page_token) into a new array. */
static cJSON *cc_workflows(dq_provider *p, const dq_provider_request *req, const char *id, dq_provider_error *e)
{
    cJSON *all = cJSON_CreateArray();
    char token[512] = "";
    char *pid = dq_http_escape(id);

    if (all == NULL || pid == NULL) {
        cJSON_Delete(all);
        free(pid);
        dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
        return NULL;
    }
    for (int page = 0; page < 20; page++) {
        char path[2048];
        dq_http_response r;
        char *tok = dq_http_escape(token);
        snprintf(path, sizeof path, "/api/v2/pipeline/%s/workflow%s%s", pid, token[0] ? "?page-token=" : "",
                 token[0] && tok ? tok : "");
        free(tok);
        cc_call(p, "GET", path, NULL, 1, req->fence, &r);
        if (dq_provider_http_error(p, &r, "list workflows", e) != 0) {
            dq_http_response_free(&r);
            goto fail;
        }
        cJSON *j = dq_provider_parse_body(&r);
        long code = r.status;
        dq_http_response_free(&r);
        cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
        if (!cJSON_IsArray(items)) {
            cJSON_Delete(j);
            dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code, "list workflows: no items array");
            goto fail;
        }
        while (cJSON_GetArraySize(items) > 0)
            cJSON_AddItemToArray(all, cJSON_DetachItemFromArray(items, 0));
        const char *next = dq_provider_cfg_str(j, "next_page_token");
        dq_strlcpy(token, next ? next : "", sizeof token);
        cJSON_Delete(j);
        if (token[0] == '\0')
            break;
    }
    free(pid);
    return all;
fail:
    free(pid);
    cJSON_Delete(all);
    return NULL;
}

/* Verdict of one workflow: 1 success, -1 failed, 0 still going. */
static int cc_verdict(const char *status)
{
    static const char *const bad[] = {"failed", "error", "canceled", "unauthorized", "not_run", NULL};
    if (strcmp(status, "success") == 0)
        return 1;
    for (size_t i = 0; bad[i]; i++)
        if (strcmp(status, bad[i]) == 0)
            return -1;
    return 0; /* running, failing, on_hold and anything new */
}

static int cc_pipeline_state(dq_provider *p, const dq_provider_request *req, const char *id, dq_deploy_status *st,
                             dq_provider_error *e)
{
    char path[1024];
    char *pid = dq_http_escape(id);
    dq_http_response r;

    if (pid == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    snprintf(path, sizeof path, "/api/v2/pipeline/%s", pid);
    free(pid);
    cc_call(p, "GET", path, NULL, 1, req->fence, &r);
    if (dq_provider_http_error(p, &r, "get pipeline", e) != 0) {
        dq_http_response_free(&r);
        return -1;
    }
    cJSON *j = dq_provider_parse_body(&r);
    dq_http_response_free(&r);
    const char *state = dq_provider_cfg_str(j, "state");
    dq_strlcpy(st->raw, state ? state : "pending", sizeof st->raw);
    st->state = state && strcmp(state, "errored") == 0 ? DQ_DEPLOY_FAILED : DQ_DEPLOY_IN_FLIGHT;
    cJSON_Delete(j);
    return 0;
}

static int cc_status(dq_provider *p, const dq_provider_request *req, const char *id, dq_deploy_status *st,
                     dq_provider_error *e)
{
    cc_impl *c = p->impl;
    cJSON *wfs = cc_workflows(p, req, id, e);
    int watched = 0, succeeded = 0, failed = 0;
    char failed_status[64] = "", running_status[64] = "";

    if (wfs == NULL)
        return -1;
    const cJSON *wf;
    cJSON_ArrayForEach(wf, wfs)
    {
        const char *name = dq_provider_cfg_str(wf, "name");
        const char *wid = dq_provider_cfg_str(wf, "id");
        if (wid == NULL || (c->workflow != NULL && (name == NULL || strcmp(name, c->workflow) != 0)))
            continue;
        /* The listing may lag; the workflow itself is the authority on its status. */
        char path[1024];
        char *ew = dq_http_escape(wid);
        dq_http_response r;
        if (ew == NULL) {
            cJSON_Delete(wfs);
            return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
        }
        snprintf(path, sizeof path, "/api/v2/workflow/%s", ew);
        free(ew);
        cc_call(p, "GET", path, NULL, 1, req->fence, &r);
        if (dq_provider_http_error(p, &r, "get workflow", e) != 0) {
            dq_http_response_free(&r);
            cJSON_Delete(wfs);
            return -1;
        }
        cJSON *j = dq_provider_parse_body(&r);
        long code = r.status;
        dq_http_response_free(&r);
        const char *status = dq_provider_cfg_str(j, "status");
        if (status == NULL) {
            cJSON_Delete(j);
            cJSON_Delete(wfs);
            return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code, "workflow %s: no status", wid);
        }
        int v = cc_verdict(status);
        watched++;
        if (v > 0)
            succeeded++;
        if (v < 0 && failed++ == 0) {
            dq_strlcpy(failed_status, status, sizeof failed_status);
            snprintf(st->log_url, sizeof st->log_url, "%s/pipelines/workflows/%s", c->app_url, wid);
        }
        if (v == 0) {
            dq_strlcpy(running_status, status, sizeof running_status);
            if (st->log_url[0] == '\0')
                snprintf(st->log_url, sizeof st->log_url, "%s/pipelines/workflows/%s", c->app_url, wid);
        }
        if (st->url[0] == '\0') {
            const char *slug = dq_provider_cfg_str(j, "project_slug");
            const cJSON *num = cJSON_GetObjectItemCaseSensitive(j, "pipeline_number");
            if (slug != NULL && cJSON_IsNumber(num))
                snprintf(st->url, sizeof st->url, "%s/pipelines/%s/%.0f", c->app_url, slug, num->valuedouble);
        }
        cJSON_Delete(j);
    }
    cJSON_Delete(wfs);

    if (watched == 0)
        return cc_pipeline_state(p, req, id, st, e);
    if (failed > 0) {
        /* A failed workflow is final even while others still run: the deploy failed. */
        st->state = DQ_DEPLOY_FAILED;
        dq_strlcpy(st->raw, failed_status, sizeof st->raw);
    } else if (succeeded == watched) {
        st->state = DQ_DEPLOY_SUCCEEDED;
        dq_strlcpy(st->raw, "success", sizeof st->raw);
    } else {
        st->state = DQ_DEPLOY_IN_FLIGHT;
        dq_strlcpy(st->raw, running_status, sizeof st->raw);
    }
    return 0;
}

static int cc_rollback(dq_provider *p, const dq_provider_request *req, const char *id, char *new_id,
                       size_t new_idlen, dq_provider_error *e)
{
    /* No native rollback: a pipeline for the old version. */
    return cc_deploy(p, req, new_id, new_idlen, e);
}

static int cc_cancel(dq_provider *p, const dq_provider_request *req, const char *id, dq_provider_error *e)
{
    cJSON *wfs = cc_workflows(p, req, id, e);
    int rc = 0;

    if (wfs == NULL)
        return -1;
    const cJSON *wf;
    cJSON_ArrayForEach(wf, wfs)
    {
        const char *wid = dq_provider_cfg_str(wf, "id");
        const char *status = dq_provider_cfg_str(wf, "status");
        if (wid == NULL || (status != NULL && cc_verdict(status) != 0))
            continue;
        char path[1024];
        char *ew = dq_http_escape(wid);
        dq_http_response r;
        if (ew == NULL)
            continue;
        snprintf(path, sizeof path, "/api/v2/workflow/%s/cancel", ew);
        free(ew);
        cc_call(p, "POST", path, NULL, 1, req->fence, &r);
        if (dq_provider_http_error(p, &r, "cancel workflow", e) != 0)
            rc = -1;
        dq_http_response_free(&r);
    }
    cJSON_Delete(wfs);
    return rc;
}

/* 1 when the pipeline's parameters carry deployment id dep (trigger_parameters, or an
 * object one level inside it). */
static int cc_carries(const cJSON *pipeline, const char *dep)
{
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(pipeline, "trigger_parameters");
    const char *v = dq_provider_cfg_str(tp, "deployment_id");
    const cJSON *inner;

    if (v != NULL && strcmp(v, dep) == 0)
        return 1;
    cJSON_ArrayForEach(inner, tp)
    {
        v = cJSON_IsObject(inner) ? dq_provider_cfg_str(inner, "deployment_id") : NULL;
        if (v != NULL && strcmp(v, dep) == 0)
            return 1;
    }
    return 0;
}

/* After an ambiguous trigger: the pipeline of this deployment among the project's newest
 * (two pages), if CircleCI created one. 1 with its id, 0 none, -1 with *e. */
static int cc_find(dq_provider *p, const dq_provider_request *req, int64_t since_ms, char *id, size_t idlen,
                   dq_provider_error *e)
{
    cc_impl *c = p->impl;
    char token[512] = "";
    char *branch = dq_http_escape(c->branch);
    const char *dep = req->deployment_id ? req->deployment_id : "";

    (void)since_ms; /* the deployment id alone says which pipeline is ours */
    if (branch == NULL || dep[0] == '\0') {
        free(branch);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0,
                                dep[0] ? "out of memory" : "no deployment id to find the pipeline by");
    }
    for (int page = 0; page < 2; page++) {
        char path[2048];
        dq_http_response r;
        char *tok = dq_http_escape(token);
        snprintf(path, sizeof path, "/api/v2/project/%s/pipeline?branch=%s%s%s", c->slug, branch,
                 token[0] ? "&page-token=" : "", token[0] && tok ? tok : "");
        free(tok);
        cc_call(p, "GET", path, NULL, 1, req->fence, &r);
        if (dq_provider_http_error(p, &r, "list pipelines", e) != 0) {
            dq_http_response_free(&r);
            free(branch);
            return -1;
        }
        cJSON *j = dq_provider_parse_body(&r);
        long code = r.status;
        dq_http_response_free(&r);
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
        if (!cJSON_IsArray(items)) {
            cJSON_Delete(j);
            free(branch);
            return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code, "list pipelines: no items array");
        }
        const cJSON *pl;
        cJSON_ArrayForEach(pl, items)
        {
            const char *pid = dq_provider_cfg_str(pl, "id");
            if (pid != NULL && cc_carries(pl, dep)) {
                dq_strlcpy(id, pid, idlen);
                cJSON_Delete(j);
                free(branch);
                return 1;
            }
        }
        const char *next = dq_provider_cfg_str(j, "next_page_token");
        dq_strlcpy(token, next ? next : "", sizeof token);
        cJSON_Delete(j);
        if (token[0] == '\0')
            break;
    }
    free(branch);
    return 0;
}

/* Add one job of an ended workflow (an item of its job listing) to *out: from its details,
 * its started seconds times its parallelism, at its resource class's rate (else the
 * default). An approval job, or one that never started (blocked behind a failure, not
 * run, cancelled first), costs nothing. 0, or -1 with out->detail. */
static int cc_job_cost(dq_provider *p, const dq_provider_request *req, const cJSON *item, dq_run_cost *out)
{
    cc_impl *c = p->impl;
    const char *name = dq_provider_cfg_str(item, "name");
    const char *type = dq_provider_cfg_str(item, "type");
    const cJSON *num = cJSON_GetObjectItemCaseSensitive(item, "job_number");
    char path[1024], what[160];
    dq_http_response r;
    dq_provider_error e;
    int64_t t0, t1;
    double rate;

    if (!name)
        name = "?";
    if ((type && strcmp(type, "approval") == 0) || !dq_provider_cfg_str(item, "started_at"))
        return 0;
    if (!cJSON_IsNumber(num)) {
        snprintf(out->detail, sizeof out->detail, "job %.100s has no job_number", name);
        return -1;
    }
    snprintf(path, sizeof path, "/api/v2/project/%s/job/%.0f", c->slug, num->valuedouble);
    snprintf(what, sizeof what, "get job %.0f", num->valuedouble);
    memset(&e, 0, sizeof e);
    cc_call(p, "GET", path, NULL, 1, req->fence, &r);
    if (dq_provider_http_error(p, &r, what, &e) != 0) {
        dq_http_response_free(&r);
        dq_strlcpy(out->detail, e.detail, sizeof out->detail);
        return -1;
    }
    cJSON *j = dq_provider_parse_body(&r);
    dq_http_response_free(&r);
    const char *status = dq_provider_cfg_str(j, "status");
    const char *started = dq_provider_cfg_str(j, "started_at");
    const char *stopped = dq_provider_cfg_str(j, "stopped_at");
    const char *rc = dq_provider_cfg_str(cJSON_GetObjectItemCaseSensitive(j, "executor"), "resource_class");
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(j, "parallelism");
    if (!started || !stopped || dq_time_parse(started, &t0) != 0 || dq_time_parse(stopped, &t1) != 0) {
        snprintf(out->detail, sizeof out->detail, "job %.100s (%.32s) has no readable started_at/stopped_at", name,
                 status ? status : "no status");
        cJSON_Delete(j);
        return -1;
    }
    /* Its own rate, else the default: the runners[] entry says which was used. */
    const char *label = rc && cJSON_IsObject(p->rates) && cJSON_GetObjectItemCaseSensitive(p->rates, rc) ? rc : NULL;
    if (!dq_provider_rate(p, label, &rate)) {
        snprintf(out->detail, sizeof out->detail,
                 "no rate for job %.100s (resource class %.64s): add it, or a default, under cost.per_minute", name,
                 rc ? rc : "none");
        cJSON_Delete(j);
        return -1;
    }
    int64_t seconds = t1 > t0 ? (t1 - t0 + 999) / 1000 : 0;
    int runs = cJSON_IsNumber(par) && par->valuedouble >= 1 ? (int)par->valuedouble : 1;
    dq_run_cost_add(out, label ? label : "default", (double)(seconds * runs) / 60.0, rate);
    cJSON_Delete(j);
    return 0;
}

#define CC_COST_MAX_PAGES 20

/* Add every job of ended workflow wid (its listing, page by page) to *out. */
static int cc_workflow_cost(dq_provider *p, const dq_provider_request *req, const char *wid, dq_run_cost *out)
{
    char token[512] = "";
    char *ew = dq_http_escape(wid);

    if (ew == NULL) {
        snprintf(out->detail, sizeof out->detail, "out of memory");
        return -1;
    }
    for (int page = 0; page < CC_COST_MAX_PAGES; page++) {
        char path[2048];
        dq_http_response r;
        dq_provider_error e;
        char *tok = dq_http_escape(token);
        snprintf(path, sizeof path, "/api/v2/workflow/%s/job%s%s", ew, token[0] ? "?page-token=" : "",
                 token[0] && tok ? tok : "");
        free(tok);
        memset(&e, 0, sizeof e);
        cc_call(p, "GET", path, NULL, 1, req->fence, &r);
        if (dq_provider_http_error(p, &r, "list workflow jobs", &e) != 0) {
            dq_http_response_free(&r);
            dq_strlcpy(out->detail, e.detail, sizeof out->detail);
            free(ew);
            return -1;
        }
        cJSON *j = dq_provider_parse_body(&r);
        long code = r.status;
        dq_http_response_free(&r);
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items"), *item;
        if (!cJSON_IsArray(items)) {
            snprintf(out->detail, sizeof out->detail, "list workflow jobs: HTTP %ld without items", code);
            cJSON_Delete(j);
            free(ew);
            return -1;
        }
        cJSON_ArrayForEach(item, items)
        {
            if (cc_job_cost(p, req, item, out) != 0) {
                cJSON_Delete(j);
                free(ew);
                return -1;
            }
        }
        const char *next = dq_provider_cfg_str(j, "next_page_token");
        dq_strlcpy(token, next ? next : "", sizeof token);
        cJSON_Delete(j);
        if (token[0] == '\0') {
            free(ew);
            return 0;
        }
    }
    free(ew);
    snprintf(out->detail, sizeof out->detail, "workflow %.64s has more than %d pages of jobs", wid, CC_COST_MAX_PAGES);
    return -1;
}

/* The cost of pipeline id: the jobs of the workflows it watches (the one named by
 * "workflow", or all), each of which must have ended. A pipeline that errored before any
 * workflow ran nothing: 0. */
static int cc_cost(dq_provider *p, const dq_provider_request *req, const char *id, dq_run_cost *out)
{
    cc_impl *c = p->impl;
    dq_provider_error e;
    int rc = 0;

    memset(&e, 0, sizeof e);
    cJSON *wfs = cc_workflows(p, req, id, &e);
    if (wfs == NULL) {
        dq_strlcpy(out->detail, e.detail, sizeof out->detail);
        return -1;
    }
    const cJSON *wf;
    cJSON_ArrayForEach(wf, wfs)
    {
        const char *name = dq_provider_cfg_str(wf, "name");
        const char *wid = dq_provider_cfg_str(wf, "id");
        const char *status = dq_provider_cfg_str(wf, "status");
        if (wid == NULL || (c->workflow != NULL && (name == NULL || strcmp(name, c->workflow) != 0)))
            continue;
        /* A job of a workflow still going may yet run (or be running): no figure yet. */
        if (status == NULL || cc_verdict(status) == 0) {
            snprintf(out->detail, sizeof out->detail, "workflow %.100s is %.32s, not finished", name ? name : wid,
                     status ? status : "without a status");
            rc = -1;
            break;
        }
        if ((rc = cc_workflow_cost(p, req, wid, out)) != 0)
            break;
    }
    cJSON_Delete(wfs);
    return rc;
}

static const char *const cc_keys[] = {"slug", "branch", "workflow", "definition_id", "app_url", NULL};

const dq_provider_ops dq_provider_circleci_ops = {
    .type = "circleci",
    .keys = cc_keys,
    .init = cc_init,
    .deploy = cc_deploy,
    .status = cc_status,
    .rollback = cc_rollback,
    .cancel = cc_cancel,
    .destroy = cc_destroy,
    .cost = cc_cost,
    .find = cc_find,
};
