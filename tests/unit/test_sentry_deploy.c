/*
 * test_sentry_deploy.c - Sentry release deploys (workers/rollback/sentry_deploy.c): the
 * configuration and its errors, the request bodies, and the handler against the Sentry
 * double (tests/fakes/sentry.py) with a real Redis and the embedded broker: a deploy and a
 * rollback's restored version recorded with the right bodies, a redelivery that records
 * nothing, a deploy made before a crash taken instead of a second one, Sentry down and a
 * refused token reported, never the token in a call or an error.
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
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "mockbroker.h"
#include "sentry_deploy.h"
#include "testredis.h"

#define TOKEN "sntrys_test_s3cr3t_token"
#define DEP "11111111-2222-4333-8444-555555555555"

static dq_fake sentry;
static dq_test_redis_fixture *rf;
static dq_mock_broker *broker;

static int setup(void **state)
{
    char err[256];

    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dq_log_init("test_sentry_deploy", DQ_LOG_OFF, 0);
    if (dq_test_redis_setup((void **)&rf) != 0)
        return -1;
    broker = dq_mock_broker_new(1, 1, err, sizeof err);
    if (!broker)
        return -1;
    return dq_fake_start(&sentry, "sentry");
}

static int teardown(void **state)
{
    (void)state;
    dq_fake_stop(&sentry);
    dq_mock_broker_free(broker);
    dq_test_redis_teardown((void **)&rf);
    curl_global_cleanup();
    return 0;
}

static dq_config *load(const char *yaml, char *err, size_t errlen)
{
    return dq_config_load_string(yaml, strlen(yaml), "sentry.yaml", err, errlen);
}

static void test_config(void **state)
{
    char err[512];
    dq_sentry_config sc;
    dq_config *cfg;
    int found;

    (void)state;
    setenv("TEST_SENTRY_TOKEN", TOKEN, 1);
    cfg = load("services:\n"
               "  api:\n"
               "    sentry:\n"
               "      org: acme\n"
               "      projects: [api, api-worker]\n"
               "      token: ${TEST_SENTRY_TOKEN}\n"
               "      url: https://sentry.example/\n"
               "      deploy_url: https://deployq.example/d/{deployment_id}\n"
               "      retries: 2\n"
               "    environments:\n"
               "      production: {}\n"
               "  web:\n"
               "    environments:\n"
               "      production: {}\n",
               err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(dq_sentry_config_load(cfg, "api", &sc, &found, err, sizeof err), 0);
    assert_int_equal(found, 1);
    assert_string_equal(sc.org, "acme");
    assert_string_equal(sc.projects[0], "api");
    assert_string_equal(sc.projects[1], "api-worker");
    assert_null(sc.projects[2]);
    assert_string_equal(sc.token, TOKEN);
    assert_string_equal(sc.url, "https://sentry.example");
    assert_int_equal(sc.retries, 2);
    assert_int_equal(sc.timeout_ms, 10000);
    assert_int_equal(sc.retry_budget_ms, 30000);
    dq_sentry_config_clear(&sc);
    assert_int_equal(dq_sentry_config_load(cfg, "web", &sc, &found, err, sizeof err), 0);
    assert_int_equal(found, 0);
    dq_config_free(cfg);
}

static void expect_error(const char *section, const char *want)
{
    char yaml[1024], err[512];
    dq_sentry_config sc;
    dq_config *cfg;
    int found;

    snprintf(yaml, sizeof yaml, "services:\n  api:\n    sentry:\n%s", section);
    cfg = load(yaml, err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(dq_sentry_config_load(cfg, "api", &sc, &found, err, sizeof err), -1);
    if (!strstr(err, want))
        fail_msg("error '%s' does not say '%s'", err, want);
    assert_null(strstr(err, TOKEN));
    dq_config_free(cfg);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_error("      projects: [api]\n      token: " TOKEN "\n",
                 "deployq.yaml:3: services.api.sentry.org: required, the organization slug");
    expect_error("      org: Acme\n      projects: [api]\n      token: " TOKEN "\n",
                 "deployq.yaml:4: services.api.sentry.org: required, the organization slug");
    expect_error("      org: acme\n      projects: [api]\n", "deployq.yaml:3: services.api.sentry: token is required");
    expect_error("      org: acme\n      token: " TOKEN "\n",
                 "deployq.yaml:3: services.api.sentry.projects: required, a list of 1 to 32 project slugs");
    expect_error("      org: acme\n      projects: [\"My App\"]\n      token: " TOKEN "\n",
                 "deployq.yaml:5: services.api.sentry.projects[0]: expected a project slug");
    expect_error("      org: acme\n      projects: [api]\n      token: " TOKEN "\n      orgs: x\n",
                 "deployq.yaml:7: services.api.sentry: unknown key 'orgs'");
    expect_error("      org: acme\n      projects: [api]\n      token: " TOKEN "\n      url: sentry.io\n",
                 "deployq.yaml:7: services.api.sentry.url: expected an http:// or https:// URL");
}

static dq_event *event(const char *type, const char *version, const char *data_json)
{
    dq_event *ev = dq_event_new(type, DEP, "api", "production", version, "test");

    assert_non_null(ev);
    if (data_json) {
        cJSON_Delete(ev->data);
        ev->data = cJSON_Parse(data_json);
    }
    return ev;
}

static void test_bodies(void **state)
{
    char *projects[] = {"api", NULL};
    dq_sentry_config sc = {.org = "acme", .projects = projects, .token = TOKEN, .url = "https://sentry.io",
                           .deploy_url = "https://deployq.example/d/{deployment_id}"};
    dq_event *ev = event(DQ_EV_SUCCEEDED, "v2", "{\"provider\":\"railway\",\"duration_ms\":61500}");
    char *body;

    (void)state;
    dq_time_parse("2026-12-03T14:00:00.000Z", &ev->at_ms);
    assert_string_equal(dq_sentry_release_of(ev), "v2");
    body = dq_sentry_release_body(&sc, "v2");
    assert_string_equal(body, "{\"version\":\"v2\",\"projects\":[\"api\"]}");
    free(body);
    body = dq_sentry_deploy_body(&sc, ev);
    assert_string_equal(body, "{\"environment\":\"production\",\"name\":\"" DEP "\","
                              "\"url\":\"https://deployq.example/d/" DEP "\","
                              "\"dateStarted\":\"2026-12-03T13:58:58.500Z\","
                              "\"dateFinished\":\"2026-12-03T14:00:00.000Z\",\"projects\":[\"api\"]}");
    free(body);
    dq_event_free(ev);

    /* a rollback records the version it restored, from the decision to the restore */
    ev = event(DQ_EV_ROLLBACK_SUCCEEDED, "v2", "{\"from_version\":\"v2\",\"to_version\":\"v1\","
               "\"decided_at\":\"2026-12-03T14:01:00.000Z\",\"restored_at\":\"2026-12-03T14:01:03.400Z\"}");
    sc.deploy_url = NULL;
    assert_string_equal(dq_sentry_release_of(ev), "v1");
    body = dq_sentry_deploy_body(&sc, ev);
    assert_string_equal(body, "{\"environment\":\"production\",\"name\":\"" DEP "\","
                              "\"dateStarted\":\"2026-12-03T14:01:00.000Z\","
                              "\"dateFinished\":\"2026-12-03T14:01:03.400Z\",\"projects\":[\"api\"]}");
    free(body);
    dq_event_free(ev);

    /* other events record nothing */
    ev = event(DQ_EV_STARTED, "v2", NULL);
    assert_null(dq_sentry_release_of(ev));
    assert_null(dq_sentry_deploy_body(&sc, ev));
    dq_event_free(ev);
}

/* ---- the handler against the double ---- */

typedef struct flow {
    dq_config *cfg;
    dq_producer *producer;
    dq_sentry_handler *h;
    volatile sig_atomic_t stop;
} flow;

static void flow_start(flow *f)
{
    char yaml[4096], err[512];

    memset(f, 0, sizeof *f);
    snprintf(yaml, sizeof yaml,
             "kafka:\n  bootstrap.servers: \"%s\"\n"
             "redis:\n  url: \"%s\"\n"
             "services:\n"
             "  api:\n"
             "    sentry:\n"
             "      org: acme\n"
             "      projects: [api]\n"
             "      token: " TOKEN "\n"
             "      url: %s\n"
             "      deploy_url: https://deployq.example/d/{deployment_id}\n"
             "      retries: 1\n"
             "      timeout: 2s\n"
             "      retry_budget: 5s\n"
             "    environments:\n      production: {}\n"
             "  web:\n"
             "    environments:\n      production: {}\n",
             dq_mock_broker_bootstraps(broker), rf->url, sentry.base);
    f->cfg = load(yaml, err, sizeof err);
    assert_non_null(f->cfg);
    f->producer = dq_producer_new(f->cfg, err, sizeof err);
    assert_non_null(f->producer);
    f->h = dq_sentry_handler_new(f->cfg, f->producer, &f->stop, err, sizeof err);
    assert_non_null(f->h);
    assert_true(dq_sentry_handler_active(f->h));
    assert_int_equal(dq_fake_reset(&sentry), 0);
    assert_int_equal(dq_fake_script(&sentry, "{\"token\":\"" TOKEN "\"}"), 0);
    {
        redisReply *r = dq_redis_command(rf->r, "FLUSHALL");
        freeReplyObject(r);
    }
}

static void flow_stop(flow *f)
{
    dq_sentry_handler_free(f->h);
    dq_producer_free(f->producer);
    dq_config_free(f->cfg);
}

static dq_handle_result deliver(flow *f, const char *type, const char *service, const char *version,
                                const char *data_json)
{
    dq_event *ev = dq_event_new(type, DEP, service, "production", version, "test");
    char *json, err[256], name[200];
    dq_message m = {.topic = "deployq.events"};
    dq_handle_result res;

    assert_non_null(ev);
    if (data_json) {
        cJSON_Delete(ev->data);
        ev->data = cJSON_Parse(data_json);
    }
    snprintf(name, sizeof name, "%s/%s", DEP, type); /* a redelivery has the same id */
    dq_event_set_id_from(ev, name);
    json = dq_event_encode(ev);
    m.value = json;
    m.len = strlen(json);
    res = dq_sentry_handle(f->h, &m, err, sizeof err);
    free(json);
    dq_event_free(ev);
    return res;
}

/* The calls the double saw of method whose path contains part. */
static int calls(const char *method, const char *part)
{
    cJSON *all = dq_fake_calls(&sentry), *c;
    char *text = cJSON_PrintUnformatted(all);
    int n = 0;

    assert_null(strstr(text, TOKEN)); /* the token never reaches a record */
    free(text);
    cJSON_ArrayForEach(c, dq_json_get(all, "calls")) {
        if (strcmp(dq_json_str(c, "method"), method) == 0 && strstr(dq_json_str(c, "path"), part))
            n++;
    }
    cJSON_Delete(all);
    return n;
}

/* The body of the last call of method whose path contains part (is part, when exact);
 * the caller frees it. */
static cJSON *last_body(const char *method, const char *part, int exact)
{
    cJSON *all = dq_fake_calls(&sentry), *c, *out = NULL;

    cJSON_ArrayForEach(c, dq_json_get(all, "calls")) {
        const char *path = dq_json_str(c, "path");

        if (strcmp(dq_json_str(c, "method"), method) == 0 &&
            (exact ? strcmp(path, part) == 0 : strstr(path, part) != NULL)) {
            cJSON_Delete(out);
            out = cJSON_Duplicate(dq_json_get(c, "body"), 1);
        }
    }
    cJSON_Delete(all);
    return out;
}

static void test_flow(void **state)
{
    flow f;
    cJSON *b;

    (void)state;
    flow_start(&f);
    /* events that record nothing, and a service without sentry */
    assert_int_equal(deliver(&f, DQ_EV_STARTED, "api", "v2", NULL), DQ_HANDLED);
    assert_int_equal(deliver(&f, DQ_EV_SUCCEEDED, "web", "v2", "{\"duration_ms\":1000}"), DQ_HANDLED);
    assert_int_equal(calls("POST", "/"), 0);

    assert_int_equal(deliver(&f, DQ_EV_SUCCEEDED, "api", "v2", "{\"duration_ms\":1000}"), DQ_HANDLED);
    assert_int_equal(calls("POST", "/api/0/organizations/acme/releases/"), 2); /* release, deploy */
    b = last_body("POST", "/releases/v2/deploys/", 0);
    assert_non_null(b);
    assert_string_equal(dq_json_str(b, "environment"), "production");
    assert_string_equal(dq_json_str(b, "name"), DEP);
    assert_string_equal(dq_json_str(b, "url"), "https://deployq.example/d/" DEP);
    assert_non_null(dq_json_str(b, "dateStarted"));
    assert_non_null(dq_json_str(b, "dateFinished"));
    cJSON_Delete(b);
    b = last_body("POST", "/api/0/organizations/acme/releases/", 1);
    assert_string_equal(dq_json_str(b, "version"), "v2");
    assert_string_equal(cJSON_GetArrayItem(dq_json_get(b, "projects"), 0)->valuestring, "api");
    cJSON_Delete(b);

    /* a redelivery: our record says it is done, Sentry is not asked */
    assert_int_equal(deliver(&f, DQ_EV_SUCCEEDED, "api", "v2", "{\"duration_ms\":1000}"), DQ_HANDLED);
    assert_int_equal(calls("POST", "/"), 2);
    assert_int_equal(calls("GET", "/"), 1);

    /* the record lost (a crash between Sentry's 201 and our SET): the deploy Sentry has is
     * found by its name, and no second one is made */
    {
        redisReply *r = dq_redis_command(rf->r, "FLUSHALL");
        freeReplyObject(r);
    }
    assert_int_equal(deliver(&f, DQ_EV_SUCCEEDED, "api", "v2", "{\"duration_ms\":1000}"), DQ_HANDLED);
    assert_int_equal(calls("POST", "/deploys/"), 1);
    assert_int_equal(calls("GET", "/releases/v2/deploys/"), 2);

    /* the rollback's restored version is a deploy of that release */
    assert_int_equal(deliver(&f, DQ_EV_ROLLBACK_SUCCEEDED, "api", "v2",
                             "{\"from_version\":\"v2\",\"to_version\":\"v1\",\"decided_at\":\"2026-12-03T14:01:00.000Z\","
                             "\"restored_at\":\"2026-12-03T14:01:03.400Z\"}"),
                     DQ_HANDLED);
    b = last_body("POST", "/releases/v1/deploys/", 0);
    assert_non_null(b);
    assert_string_equal(dq_json_str(b, "dateFinished"), "2026-12-03T14:01:03.400Z");
    cJSON_Delete(b);
    b = last_body("POST", "/api/0/organizations/acme/releases/", 1);
    assert_string_equal(dq_json_str(b, "version"), "v1");
    cJSON_Delete(b);
    flow_stop(&f);
}

/* Sentry down (503 twice: the first attempt and the one retry) and a refused token: the
 * handler gives up after its attempts and reports, the token in no error. */
static void test_down_and_refused(void **state)
{
    flow f;

    (void)state;
    flow_start(&f);
    assert_int_equal(dq_fake_script(&sentry, "{\"http_status\":503}"), 0);
    assert_int_equal(deliver(&f, DQ_EV_SUCCEEDED, "api", "v3", "{\"duration_ms\":1000}"), DQ_HANDLED);
    assert_int_equal(calls("POST", "/releases/"), 2); /* retries: 1 */
    assert_int_equal(dq_fake_reset(&sentry), 0);
    assert_int_equal(dq_fake_script(&sentry, "{\"token\":\"another\"}"), 0);
    assert_int_equal(deliver(&f, DQ_EV_SUCCEEDED, "api", "v4", "{\"duration_ms\":1000}"), DQ_HANDLED);
    assert_int_equal(calls("POST", "/releases/"), 1); /* a 401 is not retried */
    /* 429: Sentry's Retry-After, then it is recorded */
    assert_int_equal(dq_fake_reset(&sentry), 0);
    assert_int_equal(dq_fake_script(&sentry, "{\"rate_limit\":1,\"retry_after\":1}"), 0);
    assert_int_equal(deliver(&f, DQ_EV_SUCCEEDED, "api", "v5", "{\"duration_ms\":1000}"), DQ_HANDLED);
    assert_int_equal(calls("POST", "/releases/v5/deploys/"), 1);
    flow_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config), cmocka_unit_test(test_config_errors), cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_flow),   cmocka_unit_test(test_down_and_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
