/*
 * provider_github.c - GitHub Actions: a workflow_dispatch per deploy, then the run polled.
 *
 * The dispatch asks for return_run_details so the run id comes back at once (200). A
 * server that refuses the field (400, older GitHub Enterprise Server) gets a plain
 * dispatch (204) and the run is found by listing workflow_dispatch runs created since the
 * dispatch whose display_title (the workflow's run-name) carries the deployment id. Only
 * conclusion "success" is a successful deploy.
 *
 * A billing lapse (or disabled Actions) shows up three ways, all "the provider is
 * unavailable": a refused dispatch (403/422 whose message says so), a run that completes
 * startup_failure, or one that stays queued. The run's jobs tell whether anything ran
 * (a job that is in progress or got a runner): a startup_failure without one is
 * DQ_DEPLOY_NOT_STARTED, a queued run without one is reported queued (the chain cancels
 * it past queue_timeout), and a run that did start a job is never either. A dispatch that
 * timed out or got a 5xx is looked up by the same run listing before anything is sent
 * again (gh_find).
 *
 * Cost (provider.h "what a run cost"): once the run ended, its jobs (every attempt, paged)
 * give each job's started_at/completed_at and runner labels; a job is billed by the started
 * minute, as GitHub bills hosted runners, at its label's rate. The run-timing endpoint
 * (billable ms per OS) is being retired and is not used.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "provider.h"
#include "util.h"

#define GH_API_VERSION "2022-11-28"
#define GH_DEFAULT_FIND_TIMEOUT_MS 60000
#define GH_FIND_INTERVAL_MS 2000
/* How far before our dispatch a run may claim to be created (clocks differ). */
#define GH_CLOCK_SKEW_MS 120000

typedef struct {
    char *owner, *repo, *workflow, *ref;
    cJSON *inputs; /* extra static inputs from the config, or NULL */
    int64_t find_timeout_ms;
    int64_t find_interval_ms;
    int use_return_run_details;
} gh_impl;

static int gh_init(dq_provider *p, const cJSON *cfg, char *err, size_t errlen)
{
    gh_impl *g = calloc(1, sizeof *g);
    const char *keys[] = {"owner", "repo", "workflow"};

    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->impl = g;
    if (p->base_url == NULL && (p->base_url = strdup("https://api.github.com")) == NULL)
        goto oom;
    for (size_t i = 0; i < 3; i++) {
        if (dq_provider_cfg_str(cfg, keys[i]) == NULL) {
            snprintf(err, errlen, "provider %s: \"%s\" is required", p->name, keys[i]);
            return -1;
        }
    }
    if (p->token == NULL) {
        snprintf(err, errlen, "provider %s: a token (token or token_env) is required", p->name);
        return -1;
    }
    const char *ref = dq_provider_cfg_str(cfg, "ref");
    g->owner = strdup(dq_provider_cfg_str(cfg, "owner"));
    g->repo = strdup(dq_provider_cfg_str(cfg, "repo"));
    g->workflow = strdup(dq_provider_cfg_str(cfg, "workflow"));
    g->ref = strdup(ref ? ref : "main");
    if (!g->owner || !g->repo || !g->workflow || !g->ref)
        goto oom;
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(cfg, "inputs");
    if (inputs != NULL) {
        if (!cJSON_IsObject(inputs)) {
            snprintf(err, errlen, "provider %s: \"inputs\" must be an object", p->name);
            return -1;
        }
        if ((g->inputs = cJSON_Duplicate(inputs, 1)) == NULL)
            goto oom;
    }
    g->find_timeout_ms = dq_provider_cfg_duration(cfg, "find_run_timeout", GH_DEFAULT_FIND_TIMEOUT_MS);
    if (g->find_timeout_ms <= 0) {
        snprintf(err, errlen, "provider %s: find_run_timeout must be a positive duration", p->name);
        return -1;
    }
    g->find_interval_ms = p->poll_interval_ms < GH_FIND_INTERVAL_MS ? p->poll_interval_ms : GH_FIND_INTERVAL_MS;
    const cJSON *rrd = cJSON_GetObjectItemCaseSensitive(cfg, "return_run_details");
    g->use_return_run_details = rrd == NULL || cJSON_IsTrue(rrd);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static void gh_destroy(dq_provider *p)
{
    gh_impl *g = p->impl;
    if (g == NULL)
        return;
    free(g->owner);
    free(g->repo);
    free(g->workflow);
    free(g->ref);
    cJSON_Delete(g->inputs);
    free(g);
}

/* The auth and API headers; auth points into buf. */
static void gh_headers(const dq_provider *p, char *auth, size_t authlen, const char *hdrs[4])
{
    snprintf(auth, authlen, "Authorization: Bearer %s", p->token);
    hdrs[0] = auth;
    hdrs[1] = "Accept: application/vnd.github+json";
    hdrs[2] = "X-GitHub-Api-Version: " GH_API_VERSION;
    hdrs[3] = NULL;
}

static int gh_call(const dq_provider *p, const char *method, const char *path_fmt_result, const char *body,
                   int idempotent, int64_t fence, dq_http_response *r)
{
    char url[2048];
    char auth[1024];
    const char *hdrs[4];

    snprintf(url, sizeof url, "%s%s", p->base_url, path_fmt_result);
    gh_headers(p, auth, sizeof auth, hdrs);
    int rc = dq_provider_http(p, method, url, hdrs, body, idempotent, fence, r);
    memset(auth, 0, sizeof auth);
    return rc;
}

static char *gh_dispatch_body(const gh_impl *g, const dq_provider_request *req, int with_details)
{
    char fence[32];
    cJSON *root = cJSON_CreateObject();
    cJSON *in = g->inputs ? cJSON_Duplicate(g->inputs, 1) : cJSON_CreateObject();
    char *out = NULL;

    if (root == NULL || in == NULL) {
        cJSON_Delete(root);
        cJSON_Delete(in);
        return NULL;
    }
    snprintf(fence, sizeof fence, "%lld", (long long)req->fence);
    cJSON_AddStringToObject(root, "ref", g->ref);
    /* workflow_dispatch inputs are strings on the wire, whatever the declared type. */
    cJSON_AddStringToObject(in, "service", req->service ? req->service : "");
    cJSON_AddStringToObject(in, "environment", req->environment ? req->environment : "");
    cJSON_AddStringToObject(in, "version", req->version ? req->version : "");
    cJSON_AddStringToObject(in, "deployment_id", req->deployment_id ? req->deployment_id : "");
    cJSON_AddStringToObject(in, "fence", fence);
    cJSON_AddItemToObject(root, "inputs", in);
    if (with_details)
        cJSON_AddTrueToObject(root, "return_run_details");
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static void json_id(const cJSON *v, char *out, size_t outlen)
{
    if (cJSON_IsNumber(v))
        snprintf(out, outlen, "%.0f", v->valuedouble);
    else if (cJSON_IsString(v))
        dq_strlcpy(out, v->valuestring, outlen);
    else
        out[0] = '\0';
}

/* Look for the run our dispatch created: a workflow_dispatch run on our ref, created since
 * the dispatch, whose display_title (or echoed inputs) carry the deployment id. */
static int gh_find_run(dq_provider *p, const dq_provider_request *req, int64_t dispatched_ms, char *id,
                       size_t idlen, dq_provider_error *e)
{
    gh_impl *g = p->impl;
    char since[DQ_TIME_LEN + 1];
    char path[1536];
    char *wf = dq_http_escape(g->workflow);
    char *ref = dq_http_escape(g->ref);
    int64_t until = dq_mono_ms() + g->find_timeout_ms;
    const char *dep = req->deployment_id ? req->deployment_id : "";

    if (wf == NULL || ref == NULL || dep[0] == '\0') {
        free(wf);
        free(ref);
        /* Without a deployment id no run can be told to be ours. */
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0,
                                dep[0] ? "out of memory" : "no deployment id to find the run by");
    }
    /* Seconds precision is all the created qualifier takes. */
    dq_time_format((dispatched_ms - GH_CLOCK_SKEW_MS) / 1000 * 1000, since);
    since[19] = 'Z';
    since[20] = '\0';
    snprintf(path, sizeof path,
             "/repos/%s/%s/actions/workflows/%s/runs?event=workflow_dispatch&branch=%s&created=%%3E%%3D%s&per_page=50",
             g->owner, g->repo, wf, ref, since);
    free(wf);
    free(ref);

    int listed = 0;
    dq_provider_error last;
    memset(&last, 0, sizeof last);
    for (;;) {
        dq_http_response r;
        gh_call(p, "GET", path, NULL, 1, req->fence, &r);
        if (dq_provider_http_error(p, &r, "list workflow runs", e) != 0) {
            dq_http_response_free(&r);
            if (e->kind == DQ_PROV_FAILED)
                return -1;
            /* The dispatch was accepted: keep looking until find_run_timeout. */
            dq_warn("provider %s: %s", p->name, e->detail);
            last = *e;
            memset(e, 0, sizeof *e);
            if (dq_mono_ms() + g->find_interval_ms > until)
                break;
            dq_sleep_ms(g->find_interval_ms);
            continue;
        }
        cJSON *root = dq_provider_parse_body(&r);
        long code = r.status;
        dq_http_response_free(&r);
        listed = 1;
        const cJSON *runs = cJSON_GetObjectItemCaseSensitive(root, "workflow_runs");
        if (!cJSON_IsArray(runs)) {
            cJSON_Delete(root);
            return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code,
                                    "list workflow runs: no workflow_runs array");
        }
        const cJSON *run;
        cJSON_ArrayForEach(run, runs)
        {
            const char *title = dq_provider_cfg_str(run, "display_title");
            const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(run, "inputs");
            const char *in_dep = dq_provider_cfg_str(inputs, "deployment_id");
            if ((title && dep[0] && strstr(title, dep)) || (in_dep && strcmp(in_dep, dep) == 0)) {
                json_id(cJSON_GetObjectItemCaseSensitive(run, "id"), id, idlen);
                cJSON_Delete(root);
                if (id[0] == '\0')
                    return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", 0, "matching run has no id");
                return 0;
            }
        }
        cJSON_Delete(root);
        if (dq_mono_ms() + g->find_interval_ms > until)
            break;
        dq_sleep_ms(g->find_interval_ms);
    }
    if (!listed) {
        /* Not one listing answered: whether a run exists cannot be told. */
        *e = last;
        return -1;
    }
    return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "no_run_created", 0,
                            "workflow %s was dispatched but no run carrying deployment %s appeared within %lld ms",
                            g->workflow, dep, (long long)g->find_timeout_ms);
}

/* GitHub explains refusals in {"message": ...}; billing and disabled Actions come as 422
 * or 403. */
static int gh_refusal(dq_provider *p, const dq_http_response *r, dq_provider_error *e)
{
    if (r->error == DQ_HTTP_ERR_NONE && (r->status == 422 || r->status == 403)) {
        long code = r->status;
        cJSON *j = dq_provider_parse_body(r);
        const char *msg = dq_provider_cfg_str(j, "message");
        char m[256];
        dq_strlcpy(m, msg ? msg : "", sizeof m);
        cJSON_Delete(j);
        if (strcasestr(m, "billing") || strcasestr(m, "spending limit") || strcasestr(m, "payment"))
            return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "payment_required", code, "dispatch: HTTP %ld: %s",
                                    code, m);
        if (strcasestr(m, "disabled"))
            return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "forbidden", code, "dispatch: HTTP %ld: %s", code, m);
    }
    return dq_provider_http_error(p, r, "dispatch", e);
}

static int gh_deploy(dq_provider *p, const dq_provider_request *req, char *id, size_t idlen, dq_provider_error *e)
{
    gh_impl *g = p->impl;
    char path[1024];
    char *wf = dq_http_escape(g->workflow);
    int with_details = g->use_return_run_details;
    dq_http_response r;

    if (wf == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    snprintf(path, sizeof path, "/repos/%s/%s/actions/workflows/%s/dispatches", g->owner, g->repo, wf);
    free(wf);

    for (;;) {
        char *body = gh_dispatch_body(g, req, with_details);
        if (body == NULL)
            return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
        int64_t dispatched = dq_now_ms();
        gh_call(p, "POST", path, body, 0, req->fence, &r);
        free(body);
        if (with_details && r.error == DQ_HTTP_ERR_NONE && r.status == 400) {
            dq_info("provider %s: server refused return_run_details; dispatching without it", p->name);
            dq_http_response_free(&r);
            with_details = 0;
            continue;
        }
        if (gh_refusal(p, &r, e) != 0) {
            dq_http_response_free(&r);
            return -1;
        }
        if (r.status == 204 || !with_details) {
            dq_http_response_free(&r);
            return gh_find_run(p, req, dispatched, id, idlen, e);
        }
        cJSON *j = dq_provider_parse_body(&r);
        long status = r.status;
        dq_http_response_free(&r);
        json_id(cJSON_GetObjectItemCaseSensitive(j, "workflow_run_id"), id, idlen);
        cJSON_Delete(j);
        if (id[0] == '\0')
            /* The dispatch was accepted, so a run may exist: not safe to fail over. */
            return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", status,
                                    "dispatch: HTTP %ld without workflow_run_id", status);
        return 0;
    }
}

/* GET /repos/{owner}/{repo}/actions/runs/{id}<suffix> (what names the call in errors):
 * 0 with the parsed body in *out (NULL when not JSON; the caller frees it) and the HTTP
 * status in *code, or -1 with *e. */
static int gh_get_run(dq_provider *p, const dq_provider_request *req, const char *id, const char *suffix,
                      const char *what, cJSON **out, long *code, dq_provider_error *e)
{
    gh_impl *g = p->impl;
    char path[1024];
    char *rid = dq_http_escape(id);
    dq_http_response r;

    *out = NULL;
    if (rid == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    snprintf(path, sizeof path, "/repos/%s/%s/actions/runs/%s%s", g->owner, g->repo, rid, suffix);
    free(rid);
    gh_call(p, "GET", path, NULL, 1, req->fence, &r);
    if (dq_provider_http_error(p, &r, what, e) != 0) {
        dq_http_response_free(&r);
        return -1;
    }
    *out = dq_provider_parse_body(&r);
    *code = r.status;
    dq_http_response_free(&r);
    return 0;
}

/* Whether any job of run id started: *started 1 (in progress, or a runner took it) or
 * 0. Returns 0, or -1 with *e. */
static int gh_jobs_started(dq_provider *p, const dq_provider_request *req, const char *id, int *started,
                           dq_provider_error *e)
{
    long code;
    cJSON *j;

    *started = 0;
    if (gh_get_run(p, req, id, "/jobs?filter=all&per_page=100", "list run jobs", &j, &code, e) != 0)
        return -1;
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(j, "jobs");
    if (!cJSON_IsArray(jobs)) {
        cJSON_Delete(j);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code, "list run jobs: no jobs array");
    }
    const cJSON *job;
    cJSON_ArrayForEach(job, jobs)
    {
        const char *status = dq_provider_cfg_str(job, "status");
        const char *runner = dq_provider_cfg_str(job, "runner_name");
        if ((status && strcmp(status, "in_progress") == 0) || (runner && runner[0]))
            *started = 1;
    }
    /* More jobs than one page: one that started may be on another page; assume so. */
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(j, "total_count");
    if (cJSON_IsNumber(total) && total->valuedouble > cJSON_GetArraySize(jobs))
        *started = 1;
    cJSON_Delete(j);
    return 0;
}

static int gh_status(dq_provider *p, const dq_provider_request *req, const char *id, dq_deploy_status *st,
                     dq_provider_error *e)
{
    long code;
    cJSON *j;

    if (gh_get_run(p, req, id, "", "get run", &j, &code, e) != 0)
        return -1;
    const char *status = dq_provider_cfg_str(j, "status");
    const char *conclusion = dq_provider_cfg_str(j, "conclusion");
    if (status == NULL) {
        cJSON_Delete(j);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", code, "get run %s: no status", id);
    }
    const char *html = dq_provider_cfg_str(j, "html_url");
    const char *logs = dq_provider_cfg_str(j, "logs_url");
    dq_strlcpy(st->url, html ? html : "", sizeof st->url);
    dq_strlcpy(st->log_url, logs ? logs : (html ? html : ""), sizeof st->log_url);
    int waiting = strcmp(status, "queued") == 0 || strcmp(status, "waiting") == 0 ||
                  strcmp(status, "requested") == 0 || strcmp(status, "pending") == 0;
    if (strcmp(status, "completed") == 0) {
        dq_strlcpy(st->raw, conclusion ? conclusion : "completed", sizeof st->raw);
        st->state = conclusion && strcmp(conclusion, "success") == 0 ? DQ_DEPLOY_SUCCEEDED : DQ_DEPLOY_FAILED;
    } else {
        dq_strlcpy(st->raw, status, sizeof st->raw);
        st->state = DQ_DEPLOY_IN_FLIGHT;
    }
    cJSON_Delete(j);
    int startup_failure = strcmp(st->raw, "startup_failure") == 0;
    if (waiting || (st->state == DQ_DEPLOY_FAILED && (startup_failure || strcmp(st->raw, "cancelled") == 0))) {
        /* Did anything run? Only the jobs can say; a run that ran a job is never
         * unavailable, whatever its conclusion. */
        int started;
        if (gh_jobs_started(p, req, id, &started, e) != 0)
            return -1;
        if (!started && waiting) {
            st->queued = 1;
        } else if (!started) {
            st->never_ran = 1;
            if (startup_failure) {
                st->state = DQ_DEPLOY_NOT_STARTED;
                snprintf(st->detail, sizeof st->detail,
                         "run %s ended startup_failure without starting a job (billing or spending limit, "
                         "Actions disabled, or an invalid workflow)",
                         id);
            }
        }
    }
    return 0;
}

/* Add one job of a finished run to *out: its billed minutes (GitHub bills each job by the
 * started minute: completed_at - started_at rounded up to a whole minute), priced at the
 * rate of the first of its runner labels that has one, else the default rate. A job that
 * never got a runner costs nothing. 0, or -1 with out->detail. */
static int gh_job_cost(dq_provider *p, const cJSON *job, dq_run_cost *out)
{
    const char *name = dq_provider_cfg_str(job, "name");
    const char *status = dq_provider_cfg_str(job, "status");
    const char *started = dq_provider_cfg_str(job, "started_at");
    const char *completed = dq_provider_cfg_str(job, "completed_at");
    const char *runner = dq_provider_cfg_str(job, "runner_name");
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(job, "labels"), *l;
    const char *label = NULL;
    int64_t t0, t1;
    double rate, minutes;

    if (!name)
        name = "?";
    if (!status || strcmp(status, "completed") != 0) {
        snprintf(out->detail, sizeof out->detail, "job %.100s is %.32s, not completed", name, status ? status : "?");
        return -1;
    }
    if (!runner || !runner[0])
        return 0; /* skipped, or cancelled before a runner took it */
    if (!started || !completed || dq_time_parse(started, &t0) != 0 || dq_time_parse(completed, &t1) != 0) {
        snprintf(out->detail, sizeof out->detail, "job %.100s has no readable started_at/completed_at", name);
        return -1;
    }
    cJSON_ArrayForEach(l, labels)
    {
        double r;
        if (cJSON_IsString(l) && cJSON_IsObject(p->rates) &&
            cJSON_GetObjectItemCaseSensitive(p->rates, l->valuestring) && dq_provider_rate(p, l->valuestring, &r)) {
            label = l->valuestring;
            break;
        }
    }
    if (!dq_provider_rate(p, label, &rate)) {
        const cJSON *first = cJSON_GetArrayItem(labels, 0);
        snprintf(out->detail, sizeof out->detail,
                 "no rate for job %.100s (runner label %.64s): add it, or a default, under cost.per_minute", name,
                 cJSON_IsString(first) ? first->valuestring : "none");
        return -1;
    }
    if (!label)
        label = "default";
    minutes = t1 > t0 ? (double)((t1 - t0 + 59999) / 60000) : 0;
    dq_run_cost_add(out, label, minutes, rate);
    return 0;
}

#define GH_COST_MAX_PAGES 10 /* 1000 jobs */

/* The cost of run id from its jobs (every attempt: filter=all), page by page. */
static int gh_cost(dq_provider *p, const dq_provider_request *req, const char *id, dq_run_cost *out)
{
    dq_provider_error e;
    int seen = 0;

    for (int page = 1; page <= GH_COST_MAX_PAGES; page++) {
        char suffix[64];
        long code;
        cJSON *j;

        snprintf(suffix, sizeof suffix, "/jobs?filter=all&per_page=100&page=%d", page);
        memset(&e, 0, sizeof e);
        if (gh_get_run(p, req, id, suffix, "list run jobs", &j, &code, &e) != 0) {
            dq_strlcpy(out->detail, e.detail, sizeof out->detail);
            return -1;
        }
        const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(j, "jobs"), *job;
        const cJSON *total = cJSON_GetObjectItemCaseSensitive(j, "total_count");
        if (!cJSON_IsArray(jobs) || !cJSON_IsNumber(total)) {
            cJSON_Delete(j);
            snprintf(out->detail, sizeof out->detail, "list run jobs: HTTP %ld without jobs and total_count", code);
            return -1;
        }
        int here = cJSON_GetArraySize(jobs);
        cJSON_ArrayForEach(job, jobs)
        {
            if (gh_job_cost(p, job, out) != 0) {
                cJSON_Delete(j);
                return -1;
            }
        }
        seen += here;
        double want = total->valuedouble;
        cJSON_Delete(j);
        if (here == 0 || seen >= want) {
            if (seen < want) {
                snprintf(out->detail, sizeof out->detail, "list run jobs: %d of %.0f jobs listed", seen, want);
                return -1;
            }
            return 0;
        }
    }
    snprintf(out->detail, sizeof out->detail, "run %s has more than %d jobs", id, GH_COST_MAX_PAGES * 100);
    return -1;
}

static int gh_rollback(dq_provider *p, const dq_provider_request *req, const char *id, char *new_id,
                       size_t new_idlen, dq_provider_error *e)
{
    /* Actions has no native rollback: run the workflow again with the old version. */
    return gh_deploy(p, req, new_id, new_idlen, e);
}

/* After an ambiguous dispatch: the run carrying the deployment id, if GitHub created one. */
static int gh_find(dq_provider *p, const dq_provider_request *req, int64_t since_ms, char *id, size_t idlen,
                   dq_provider_error *e)
{
    if (gh_find_run(p, req, since_ms, id, idlen, e) == 0)
        return 1;
    if (strcmp(e->error_class, "no_run_created") == 0)
        return 0;
    return -1;
}

static int gh_cancel(dq_provider *p, const dq_provider_request *req, const char *id, dq_provider_error *e)
{
    gh_impl *g = p->impl;
    char path[1024];
    char *rid = dq_http_escape(id);
    dq_http_response r;

    if (rid == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    snprintf(path, sizeof path, "/repos/%s/%s/actions/runs/%s/cancel", g->owner, g->repo, rid);
    free(rid);
    gh_call(p, "POST", path, NULL, 1, req->fence, &r);
    int rc = dq_provider_http_error(p, &r, "cancel run", e);
    dq_http_response_free(&r);
    return rc;
}

static const char *const gh_keys[] = {"owner", "repo", "workflow", "ref", "inputs", "return_run_details", "find_run_timeout", NULL};

const dq_provider_ops dq_provider_github_ops = {
    .type = "github-actions",
    .keys = gh_keys,
    .init = gh_init,
    .deploy = gh_deploy,
    .status = gh_status,
    .rollback = gh_rollback,
    .cancel = gh_cancel,
    .destroy = gh_destroy,
    .find = gh_find,
    .cost = gh_cost,
};
