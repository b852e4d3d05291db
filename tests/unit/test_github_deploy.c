/*
 * test_github_deploy.c - GitHub Deployments (workers/rollback/github_deploy.c): the
 * configuration and its errors, the request bodies, the order of statuses, and the handler
 * against the GitHub double (tests/fakes/github.py) with a real Redis and the embedded
 * broker: a deploy's statuses in order, a redelivery that posts nothing, the replaced
 * deployment made inactive, a deployment created by a later status, a create that crashed
 * before its record, 202 and 409, and GitHub down.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "../fakes/fake_server.h"
#include "config.h"
#include "event.h"
#include "github_deploy.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "mockbroker.h"
#include "testredis.h"

#define TOKEN "ghp_test_s3cr3t_token"

static dq_fake gh;
static dq_test_redis_fixture *rf;
static dq_mock_broker *broker;

static int setup(void **state)
{
    char err[256];

    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dq_log_init("test_github_deploy", DQ_LOG_OFF, 0);
    if (dq_test_redis_setup((void **)&rf) != 0)
        return -1;
    broker = dq_mock_broker_new(1, 1, err, sizeof err);
    if (!broker)
        return -1;
    return dq_fake_start(&gh, "github");
}

static int teardown(void **state)
{
    (void)state;
    dq_fake_stop(&gh);
    dq_mock_broker_free(broker);
    dq_test_redis_teardown((void **)&rf);
    curl_global_cleanup();
    return 0;
}

static dq_config *load(const char *yaml, char *err, size_t errlen)
{
    return dq_config_load_string(yaml, strlen(yaml), "gh.yaml", err, errlen);
}

/* ---- configuration ---- */

static void test_config(void **state)
{
    char err[512];
    dq_gh_config gc;
    dq_config *cfg;
    int found;

    (void)state;
    setenv("TEST_GH_TOKEN", TOKEN, 1);
    cfg = load("services:\n"
               "  api:\n"
               "    github_deployments:\n"
               "      repo: acme/api\n"
               "      token: ${TEST_GH_TOKEN}\n"
               "      api_url: https://ghe.example/api/v3/\n"
               "      production_environment: true\n"
               "      required_contexts: [ci/test]\n"
               "      retries: 2\n"
               "      retry_budget: 5s\n"
               "    environments:\n"
               "      production: {}\n"
               "  web:\n"
               "    environments:\n"
               "      production: {}\n",
               err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(dq_gh_config_load(cfg, "api", &gc, &found, err, sizeof err), 0);
    assert_int_equal(found, 1);
    assert_string_equal(gc.repo, "acme/api");
    assert_string_equal(gc.token, TOKEN);
    assert_string_equal(gc.api_url, "https://ghe.example/api/v3"); /* no trailing slash */
    assert_int_equal(gc.production, 1);
    assert_int_equal(gc.transient, -1);
    assert_int_equal(gc.auto_merge, 0);
    assert_string_equal(gc.required_contexts[0], "ci/test");
    assert_null(gc.required_contexts[1]);
    assert_int_equal(gc.retries, 2);
    assert_int_equal(gc.retry_budget_ms, 5000);
    assert_int_equal(gc.timeout_ms, 10000);
    dq_gh_config_clear(&gc);
    /* a service without the section: not an error, nothing found */
    assert_int_equal(dq_gh_config_load(cfg, "web", &gc, &found, err, sizeof err), 0);
    assert_int_equal(found, 0);
    dq_config_free(cfg);
}

static void expect_error(const char *section, const char *want)
{
    char yaml[1024], err[512];
    dq_gh_config gc;
    dq_config *cfg;
    int found;

    snprintf(yaml, sizeof yaml, "services:\n  api:\n    github_deployments:\n%s", section);
    cfg = load(yaml, err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(dq_gh_config_load(cfg, "api", &gc, &found, err, sizeof err), -1);
    if (!strstr(err, want))
        fail_msg("error '%s' does not say '%s'", err, want);
    assert_null(strstr(err, TOKEN));
    dq_config_free(cfg);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_error("      token: " TOKEN "\n", "deployq.yaml:3: services.api.github_deployments: repo (owner/name) is required");
    expect_error("      repo: acme\n      token: " TOKEN "\n", "deployq.yaml:4: services.api.github_deployments.repo: expected owner/name");
    expect_error("      repo: acme/api\n", "deployq.yaml:3: services.api.github_deployments: token is required");
    expect_error("      repo: acme/api\n      token: " TOKEN "\n      tokn: x\n", "deployq.yaml:6: services.api.github_deployments: unknown key 'tokn'");
    expect_error("      repo: acme/api\n      token: " TOKEN "\n      api_url: ftp://x\n",
                 "deployq.yaml:6: services.api.github_deployments.api_url: expected an http:// or https:// URL");
    expect_error("      repo: acme/api\n      token: " TOKEN "\n      auto_merge: maybe\n",
                 "deployq.yaml:6: services.api.github_deployments.auto_merge: expected true or false");
    expect_error("      repo: acme/api\n      token: " TOKEN "\n      required_contexts: ci\n",
                 "deployq.yaml:6: services.api.github_deployments.required_contexts: expected a list");
}

/* ---- states and bodies ---- */

static void test_states(void **state)
{
    (void)state;
    assert_string_equal(dq_gh_state_for("deploy.validated"), "queued");
    assert_string_equal(dq_gh_state_for("deploy.started"), "in_progress");
    assert_string_equal(dq_gh_state_for("deploy.succeeded"), "success");
    assert_string_equal(dq_gh_state_for("deploy.failed"), "failure");
    assert_string_equal(dq_gh_state_for("rollback.requested"), "failure");
    assert_null(dq_gh_state_for("deploy.verified"));
    assert_null(dq_gh_state_for("deploy.rejected"));
    assert_null(dq_gh_state_for("notification.failed"));

    assert_true(dq_gh_should_post(0, "queued"));
    assert_true(dq_gh_should_post(0, "success")); /* a status whose earlier ones were lost */
    assert_true(dq_gh_should_post(DQ_GH_QUEUED, "in_progress"));
    assert_false(dq_gh_should_post(DQ_GH_QUEUED, "queued"));            /* repeated */
    assert_false(dq_gh_should_post(DQ_GH_IN_PROGRESS, "queued"));       /* stale */
    assert_true(dq_gh_should_post(DQ_GH_QUEUED | DQ_GH_SUCCESS, "failure")); /* rolled back */
    assert_false(dq_gh_should_post(DQ_GH_FAILURE, "success"));          /* stale success */
    assert_true(dq_gh_should_post(DQ_GH_SUCCESS, "inactive"));
    assert_false(dq_gh_should_post(DQ_GH_SUCCESS | DQ_GH_INACTIVE, "inactive"));
    assert_false(dq_gh_should_post(0, "pending")); /* not one of ours */
}

static dq_event *event(const char *type, const char *dep, const char *version)
{
    dq_event *ev = dq_event_new(type, dep, "api", "production", version, "test");

    assert_non_null(ev);
    ev->fence = 3;
    return ev;
}

static void test_bodies(void **state)
{
    dq_gh_config gc = {.repo = "acme/api", .token = TOKEN, .api_url = "https://api.github.com",
                       .environment_url = "https://{environment}.{service}.example",
                       .log_url = "https://deployq.example/d/{deployment_id}?v={version}",
                       .production = -1, .transient = -1};
    char *contexts[] = {"ci/test", NULL};
    dq_event *ev = event(DQ_EV_SUCCEEDED, "11111111-2222-4333-8444-555555555555", "abc123");
    char *body;
    cJSON *j;
    char reason[400];

    (void)state;
    body = dq_gh_deployment_body(&gc, ev);
    assert_non_null(body);
    assert_string_equal(body, "{\"ref\":\"abc123\",\"task\":\"deploy\",\"environment\":\"production\","
                              "\"description\":\"deployq: api abc123 to production\",\"auto_merge\":false,"
                              "\"required_contexts\":[],\"payload\":{\"deployq_deployment_id\":"
                              "\"11111111-2222-4333-8444-555555555555\",\"service\":\"api\",\"version\":\"abc123\"}}");
    free(body);
    gc.required_contexts = contexts;
    gc.auto_merge = 1;
    gc.production = 1;
    gc.transient = 0;
    j = cJSON_Parse(body = dq_gh_deployment_body(&gc, ev));
    free(body);
    assert_true(cJSON_IsTrue(dq_json_get(j, "auto_merge")));
    assert_string_equal(cJSON_GetArrayItem(dq_json_get(j, "required_contexts"), 0)->valuestring, "ci/test");
    assert_true(cJSON_IsTrue(dq_json_get(j, "production_environment")));
    assert_true(cJSON_IsFalse(dq_json_get(j, "transient_environment")));
    cJSON_Delete(j);

    cJSON_AddStringToObject(ev->data, "provider", "railway");
    body = dq_gh_status_body(&gc, ev, "success");
    assert_string_equal(body, "{\"state\":\"success\",\"description\":\"deployq deployed abc123 via railway\","
                              "\"log_url\":\"https://deployq.example/d/11111111-2222-4333-8444-555555555555?v=abc123\","
                              "\"environment_url\":\"https://production.api.example\",\"auto_inactive\":true}");
    free(body);
    /* inactive: no URLs (the deployment no longer serves), no auto_inactive */
    body = dq_gh_status_body(&gc, NULL, "inactive");
    assert_string_equal(body, "{\"state\":\"inactive\",\"description\":\"Replaced by a newer deployment\"}");
    free(body);
    dq_event_free(ev);

    /* a long reason is cut to GitHub's 140 characters, never inside a UTF-8 character */
    ev = event(DQ_EV_FAILED, "11111111-2222-4333-8444-555555555555", "abc123");
    memset(reason, 'x', sizeof reason);
    memcpy(reason + 120, "\xc3\xa9\xc3\xa9\xc3\xa9", 6); /* é at bytes 135..140 of the text */
    reason[sizeof reason - 1] = '\0';
    cJSON_AddStringToObject(ev->data, "reason", reason);
    j = cJSON_Parse(body = dq_gh_status_body(&gc, ev, "failure"));
    free(body);
    {
        const char *d = dq_json_str(j, "description");

        assert_true(strncmp(d, "Deploy failed: xxx", 18) == 0);
        assert_int_equal(strlen(d), 139); /* 140 would split the third é */
    }
    cJSON_Delete(j);
    dq_event_free(ev);
}

/* ---- the handler against the double ---- */

typedef struct flow {
    dq_config *cfg;
    dq_producer *producer;
    dq_gh_handler *h;
    volatile sig_atomic_t stop;
} flow;

static void flow_start(flow *f, const char *extra_api)
{
    char yaml[4096], err[512];

    memset(f, 0, sizeof *f);
    snprintf(yaml, sizeof yaml,
             "kafka:\n  bootstrap.servers: \"%s\"\n"
             "redis:\n  url: \"%s\"\n"
             "services:\n"
             "  api:\n"
             "    github_deployments:\n"
             "      repo: acme/api\n"
             "      token: " TOKEN "\n"
             "      api_url: %s\n"
             "      environment_url: https://{environment}.api.example\n"
             "      retries: 1\n"
             "      timeout: 2s\n"
             "      retry_budget: 5s\n"
             "    environments:\n      production: {}\n      staging: {}\n"
             "  web:\n"
             "    github_deployments:\n"
             "      repo: acme/web\n"
             "      token: " TOKEN "\n"
             "      api_url: %s\n"
             "      auto_merge: true\n"
             "      required_contexts: [ci/test]\n"
             "      retries: 0\n"
             "    environments:\n      production: {}\n",
             dq_mock_broker_bootstraps(broker), rf->url, gh.base, extra_api ? extra_api : gh.base);
    f->cfg = load(yaml, err, sizeof err);
    assert_non_null(f->cfg);
    f->producer = dq_producer_new(f->cfg, err, sizeof err);
    assert_non_null(f->producer);
    f->h = dq_gh_handler_new(f->cfg, f->producer, &f->stop, err, sizeof err);
    assert_non_null(f->h);
    assert_true(dq_gh_handler_active(f->h));
    assert_int_equal(dq_fake_reset(&gh), 0);
    {
        redisReply *r = dq_redis_command(rf->r, "FLUSHALL");
        freeReplyObject(r);
    }
}

static void flow_stop(flow *f)
{
    dq_gh_handler_free(f->h);
    dq_producer_free(f->producer);
    dq_config_free(f->cfg);
}

static dq_handle_result deliver(flow *f, const char *type, const char *service, const char *env, const char *dep,
                                const char *version, const char *data_json)
{
    dq_event *ev = dq_event_new(type, dep, service, env, version, "test");
    char *json, err[256];
    dq_message m = {.topic = "deployq.events"};
    dq_handle_result res;

    assert_non_null(ev);
    if (data_json) {
        cJSON_Delete(ev->data);
        ev->data = cJSON_Parse(data_json);
    }
    {
        char name[200];

        snprintf(name, sizeof name, "%s/%s", dep, type); /* a redelivery has the same id */
        dq_event_set_id_from(ev, name);
    }
    json = dq_event_encode(ev);
    m.value = json;
    m.len = strlen(json);
    res = dq_gh_handle(f->h, &m, err, sizeof err);
    free(json);
    dq_event_free(ev);
    return res;
}

/* GitHub's deployments of repo as the double lists them (newest first). */
static cJSON *gh_get(const char *path)
{
    char url[512];
    const char *headers[] = {"Authorization: Bearer " TOKEN, NULL};
    dq_http_opts o = {.url = url, .headers = headers};
    dq_http_response resp = {0};
    cJSON *j;

    snprintf(url, sizeof url, "%s%s", gh.base, path);
    assert_int_equal(dq_http_request(&o, &resp), 0);
    assert_int_equal(resp.status, 200);
    j = cJSON_Parse(resp.body);
    dq_http_response_free(&resp);
    assert_non_null(j);
    return j;
}

/* The states of GitHub deployment id, oldest first, as "queued,in_progress,success". */
static void states_of(long long id, char *out, size_t outlen)
{
    char path[128];
    cJSON *list;
    int n;

    snprintf(path, sizeof path, "/repos/acme/api/deployments/%lld/statuses", id);
    list = gh_get(path);
    out[0] = '\0';
    n = cJSON_GetArraySize(list);
    for (int i = n - 1; i >= 0; i--) {
        size_t len = strlen(out);
        snprintf(out + len, outlen - len, "%s%s", len ? "," : "", dq_json_str(cJSON_GetArrayItem(list, i), "state"));
    }
    cJSON_Delete(list);
}

static long long gh_id_of(const char *dep)
{
    redisReply *r = dq_redis_command(rf->r, "HGET deployq:gh:dep:%s id", dep);
    long long id = r && r->str ? strtoll(r->str, NULL, 10) : 0;

    freeReplyObject(r);
    return id;
}

static int calls(const char *method, const char *part)
{
    cJSON *c = dq_fake_calls(&gh);
    int n = dq_fake_count(c, method, part);

    cJSON_Delete(c);
    return n;
}

#define DEP_A "aaaaaaaa-0000-4000-8000-000000000001"
#define DEP_B "aaaaaaaa-0000-4000-8000-000000000002"
#define DEP_C "aaaaaaaa-0000-4000-8000-000000000003"
#define DEP_D "aaaaaaaa-0000-4000-8000-000000000004"

static void test_flow(void **state)
{
    flow f;
    char states[256];
    long long a, b;
    int posts;

    (void)state;
    flow_start(&f, NULL);
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "api", "production", DEP_A, "v1", NULL), DQ_HANDLED);
    assert_int_equal(deliver(&f, DQ_EV_STARTED, "api", "production", DEP_A, "v1", NULL), DQ_HANDLED);
    assert_int_equal(deliver(&f, DQ_EV_SUCCEEDED, "api", "production", DEP_A, "v1",
                             "{\"provider\":\"railway\",\"provider_deployment_id\":\"r1\",\"duration_ms\":1}"),
                     DQ_HANDLED);
    a = gh_id_of(DEP_A);
    assert_true(a > 0);
    states_of(a, states, sizeof states);
    assert_string_equal(states, "queued,in_progress,success");
    assert_int_equal(calls("POST", "/repos/acme/api/deployments"), 1 + 3); /* create + 3 statuses */
    {
        char path[96];
        cJSON *d;

        snprintf(path, sizeof path, "/repos/acme/api/deployments/%lld", a);
        d = gh_get(path);
        assert_string_equal(dq_json_str(d, "ref"), "v1");
        assert_string_equal(dq_json_str(d, "environment"), "production");
        assert_true(cJSON_IsFalse(dq_json_get(dq_json_get(d, "_requested"), "auto_merge")));
        assert_int_equal(cJSON_GetArraySize(dq_json_get(dq_json_get(d, "_requested"), "required_contexts")), 0);
        assert_string_equal(dq_json_str(dq_json_get(d, "payload"), "deployq_deployment_id"), DEP_A);
        cJSON_Delete(d);
    }

    /* at least once: the same events again post nothing */
    posts = calls("POST", "/deployments");
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "api", "production", DEP_A, "v1", NULL), DQ_HANDLED);
    assert_int_equal(deliver(&f, DQ_EV_SUCCEEDED, "api", "production", DEP_A, "v1", NULL), DQ_HANDLED);
    assert_int_equal(calls("POST", "/deployments"), posts);

    /* a newer success makes the older one inactive (production: GitHub itself would not) */
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "api", "production", DEP_B, "v2", NULL), DQ_HANDLED);
    assert_int_equal(deliver(&f, DQ_EV_STARTED, "api", "production", DEP_B, "v2", NULL), DQ_HANDLED);
    assert_int_equal(deliver(&f, DQ_EV_SUCCEEDED, "api", "production", DEP_B, "v2", NULL), DQ_HANDLED);
    b = gh_id_of(DEP_B);
    states_of(a, states, sizeof states);
    assert_string_equal(states, "queued,in_progress,success,inactive");
    states_of(b, states, sizeof states);
    assert_string_equal(states, "queued,in_progress,success");
    /* B is rolled back: failure */
    assert_int_equal(deliver(&f, DQ_EV_ROLLBACK_REQUESTED, "api", "production", DEP_B, "v2",
                             "{\"reason\":\"error rate 12% over 5%\"}"),
                     DQ_HANDLED);
    states_of(b, states, sizeof states);
    assert_string_equal(states, "queued,in_progress,success,failure");

    /* a failure whose deployment was never created creates it first */
    assert_int_equal(deliver(&f, DQ_EV_FAILED, "api", "staging", DEP_C, "v3", "{\"reason\":\"provider_failed\"}"),
                     DQ_HANDLED);
    states_of(gh_id_of(DEP_C), states, sizeof states);
    assert_string_equal(states, "failure");

    /* a create whose record was lost (a crash after GitHub's 201) is found, not repeated */
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "api", "staging", DEP_D, "v4", NULL), DQ_HANDLED);
    {
        long long d = gh_id_of(DEP_D);
        redisReply *r = dq_redis_command(rf->r, "DEL deployq:gh:dep:" DEP_D);

        freeReplyObject(r);
        posts = calls("POST", "/repos/acme/api/deployments");
        assert_int_equal(deliver(&f, DQ_EV_STARTED, "api", "staging", DEP_D, "v4", NULL), DQ_HANDLED);
        assert_int_equal(gh_id_of(DEP_D), d);
        /* one status post, no second deployment */
        assert_int_equal(calls("POST", "/repos/acme/api/deployments"), posts + 1);
        states_of(d, states, sizeof states);
        assert_string_equal(states, "queued,in_progress");
    }
    flow_stop(&f);
}

static void test_refusals(void **state)
{
    flow f;
    redisReply *r;
    int n;

    (void)state;
    flow_start(&f, NULL);
    assert_int_equal(dq_fake_script(&gh, "{\"behind\":[\"v-behind\"],\"conflict\":[\"v-conflict\"],"
                                         "\"failing_contexts\":[\"ci/test\"]}"),
                     0);
    /* 202: GitHub merged instead; recorded, reported once, never asked again */
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "web", "production", DEP_A, "v-behind", NULL), DQ_HANDLED);
    r = dq_redis_command(rf->r, "HGET deployq:gh:dep:" DEP_A " refused");
    assert_string_equal(r->str, "202");
    freeReplyObject(r);
    n = calls("POST", "/repos/acme/web/deployments");
    assert_int_equal(n, 1);
    assert_int_equal(deliver(&f, DQ_EV_STARTED, "web", "production", DEP_A, "v-behind", NULL), DQ_HANDLED);
    assert_int_equal(calls("POST", "/repos/acme/web/deployments"), n);
    /* 409, a merge conflict */
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "web", "production", DEP_B, "v-conflict", NULL), DQ_HANDLED);
    r = dq_redis_command(rf->r, "HGET deployq:gh:dep:" DEP_B " refused");
    assert_string_equal(r->str, "409");
    freeReplyObject(r);
    /* 409, a required context failed */
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "web", "production", DEP_C, "v5", NULL), DQ_HANDLED);
    r = dq_redis_command(rf->r, "HGET deployq:gh:dep:" DEP_C " refused");
    assert_string_equal(r->str, "409");
    freeReplyObject(r);
    /* one attempt each: none of them was retried */
    assert_int_equal(calls("POST", "/repos/acme/web/deployments"), n + 2);
    flow_stop(&f);
}

static void test_down(void **state)
{
    flow f;
    char states[256];
    int n;

    (void)state;
    flow_start(&f, NULL);
    assert_int_equal(dq_fake_script(&gh, "{\"deployments_down\":true}"), 0);
    /* bounded: retries 1 means two attempts, then handled (reported), not retried forever */
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "api", "production", DEP_A, "v1", NULL), DQ_HANDLED);
    n = calls("GET", "/repos/acme/api/deployments");
    assert_int_equal(n, 2);
    assert_int_equal(gh_id_of(DEP_A), 0);
    /* GitHub back: the next status creates the deployment and posts */
    assert_int_equal(dq_fake_script(&gh, "{}"), 0);
    assert_int_equal(deliver(&f, DQ_EV_STARTED, "api", "production", DEP_A, "v1", NULL), DQ_HANDLED);
    states_of(gh_id_of(DEP_A), states, sizeof states);
    assert_string_equal(states, "in_progress");
    flow_stop(&f);

    /* connection refused: the same bounded attempts */
    flow_start(&f, "http://127.0.0.1:1");
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "web", "production", DEP_B, "v1", NULL), DQ_HANDLED);
    assert_int_equal(gh_id_of(DEP_B), 0);
    flow_stop(&f);
}

/* The seconds between the first two calls the double recorded. */
static double first_gap(void)
{
    cJSON *c = dq_fake_calls(&gh);
    const cJSON *calls = dq_json_get(c, "calls");
    double gap = dq_json_num(cJSON_GetArrayItem(calls, 1), "time", 0) - dq_json_num(cJSON_GetArrayItem(calls, 0), "time", 0);

    cJSON_Delete(c);
    return gap;
}

static void test_retry_after(void **state)
{
    flow f;
    char states[256];

    (void)state;
    flow_start(&f, NULL);
    /* a 429 with Retry-After 2 s: the next attempt waits that long, not the 0.5 s backoff
     * (a lower bound: a slow machine only makes the gap longer) */
    assert_int_equal(dq_fake_script(&gh, "{\"deployments_rate_limit\":1,\"retry_after\":2}"), 0);
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "api", "production", DEP_A, "v1", NULL), DQ_HANDLED);
    states_of(gh_id_of(DEP_A), states, sizeof states);
    assert_string_equal(states, "queued");
    if (first_gap() < 1.9)
        fail_msg("retried %.2f s after a Retry-After of 2 s", first_gap());
    flow_stop(&f);
}

static void test_bad_token(void **state)
{
    flow f;

    (void)state;
    flow_start(&f, NULL);
    assert_int_equal(dq_fake_script(&gh, "{\"token\":\"another\"}"), 0);
    assert_int_equal(deliver(&f, DQ_EV_VALIDATED, "api", "production", DEP_A, "v1", NULL), DQ_HANDLED);
    /* 401 is not retried: one list call, no create */
    assert_int_equal(calls("GET", "/repos/acme/api/deployments"), 1);
    assert_int_equal(calls("POST", "/repos/acme/api/deployments"), 0);
    flow_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),   cmocka_unit_test(test_config_errors), cmocka_unit_test(test_states),
        cmocka_unit_test(test_bodies),   cmocka_unit_test(test_flow),          cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_down),     cmocka_unit_test(test_retry_after), cmocka_unit_test(test_bad_token),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
