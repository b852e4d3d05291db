/*
 * test_provider_github.c - the GitHub Actions adapter against the GitHub double: dispatch
 * with return_run_details, the fallback that finds the run by deployment id when the
 * server refuses that field, "no run created", conclusions, refusals and cancel; a billing
 * lapse in each of its shapes (refused dispatch, startup_failure, stuck in queued) told
 * from a run that did start a job; a dispatch that created its run and then answered 502
 * or never answered in time is adopted, not repeated.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "../fakes/fake_server.h"
#include "log.h"
#include "provider.h"

#define TOKEN "ghp-sekret-token-77aa01"

static dq_fake gh;
static const dq_provider_request REQ = {
    .deployment_id = "0b9f3c1e-2d4a-4e8b-9c7d-5a6b7c8d9e0f",
    .service = "web",
    .environment = "staging",
    .version = "v1.4.2",
    .fence = 9,
};
static const dq_chain_options FAST = {.poll_interval_ms = 30};

static int setup(void **state)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dq_log_init("test_provider_github", DQ_LOG_OFF, 0);
    return dq_fake_start(&gh, "github");
}

static int teardown(void **state)
{
    dq_fake_stop(&gh);
    curl_global_cleanup();
    return 0;
}

static int reset(void **state) { return dq_fake_reset(&gh); }

static dq_provider *github(const char *extra)
{
    return dq_fake_provider("{\"type\":\"github-actions\"%s,\"name\":\"gha\",\"base_url\":\"%s/\",\"owner\":\"acme\","
                            "\"repo\":\"shop\",\"workflow\":\"deploy.yml\",\"ref\":\"release\",\"token\":\"" TOKEN
                            "\",\"poll_interval\":\"30ms\",\"deadline\":\"5s\",\"timeout\":\"2s\",\"retries\":1,"
                            "\"find_run_timeout\":\"3s\",\"inputs\":{\"region\":\"eu\"}}",
                            extra ? extra : "", gh.base);
}

static const char *str_at(const cJSON *o, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b != NULL)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void test_success_with_run_details(void **state)
{
    dq_provider *p = github(NULL);
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_non_null(p);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider_status, "success");
    assert_string_equal(res.provider_id, "1001");
    assert_string_equal(res.url, "https://github.com/acme/shop/actions/runs/1001");
    assert_int_equal(ev.started, 1);
    assert_int_equal(res.cost.basis, DQ_COST_NONE); /* no cost: in its config: not priced */

    cJSON *calls = dq_fake_calls(&gh);
    assert_int_equal(dq_fake_count(calls, "POST", "/repos/acme/shop/actions/workflows/deploy.yml/dispatches"), 1);
    /* three polls of the run; the first found it queued and asked whether a job started */
    assert_int_equal(dq_fake_count(calls, "GET", "/repos/acme/shop/actions/runs/1001"), 4);
    assert_int_equal(dq_fake_count(calls, "GET", "/repos/acme/shop/actions/runs/1001/jobs"), 1);
    assert_int_equal(dq_fake_count(calls, "GET", "/runs?"), 0);
    assert_true(dq_fake_all_fenced(calls, 9));
    const cJSON *c = dq_fake_call(calls, "POST", "/dispatches", 0);
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(c, "body");
    assert_string_equal(str_at(body, "ref", NULL), "release");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "return_run_details")));
    assert_string_equal(str_at(body, "inputs", "service"), "web");
    assert_string_equal(str_at(body, "inputs", "environment"), "staging");
    assert_string_equal(str_at(body, "inputs", "version"), "v1.4.2");
    assert_string_equal(str_at(body, "inputs", "deployment_id"), REQ.deployment_id);
    assert_string_equal(str_at(body, "inputs", "fence"), "9");
    assert_string_equal(str_at(body, "inputs", "region"), "eu");
    assert_string_equal(str_at(c, "headers", "Accept"), "application/vnd.github+json");
    assert_string_equal(str_at(c, "headers", "X-GitHub-Api-Version"), "2022-11-28");
    assert_string_equal(str_at(c, "auth", "scheme"), "Bearer");
    assert_int_equal(dq_fake_max_concurrent(calls), 1);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

/* The run's jobs, with the times and runner labels the double is given, priced per label
 * (provider.h "what a run cost"): each job billed by the started minute. By hand:
 *   build   ubuntu-latest   10:00:00 -> 10:02:30  2.5 min -> 3 min x 0.008 = 0.024
 *   test    windows-latest  10:00:00 -> 10:01:00  1 min   -> 1 min x 0.016 = 0.016
 *   e2e     self-hosted     10:03:00 -> 10:03:01  1 s     -> 1 min x 0.010 (default) = 0.010
 *   notify  ubuntu-latest   skipped (no runner)             0
 *   deploy  ubuntu-latest   10:05:00 -> 10:09:00.5          -> 5 min x 0.008 = 0.040
 * ubuntu-latest 2 jobs 8 min 0.064, windows-latest 1 job 1 min 0.016, default 1 job 1 min
 * 0.010: 10 minutes, 0.090. */
static void test_cost_from_jobs(void **state)
{
    dq_provider *p = github(",\"cost\":{\"per_minute\":{\"ubuntu-latest\":0.008,\"windows-latest\":0.016,"
                            "\"default\":0.01}}");
    dq_chain_result res;

    assert_non_null(p);
    assert_int_equal(
        dq_fake_script(&gh, "{\"steps\":1,\"jobs\":["
                            "{\"name\":\"build\",\"labels\":[\"ubuntu-latest\"],\"started_at\":\"2026-03-01T10:00:00Z\","
                            "\"completed_at\":\"2026-03-01T10:02:30Z\"},"
                            "{\"name\":\"test\",\"labels\":[\"windows-latest\"],\"started_at\":\"2026-03-01T10:00:00Z\","
                            "\"completed_at\":\"2026-03-01T10:01:00Z\"},"
                            "{\"name\":\"e2e\",\"labels\":[\"self-hosted\",\"linux\"],"
                            "\"started_at\":\"2026-03-01T10:03:00Z\",\"completed_at\":\"2026-03-01T10:03:01Z\"},"
                            "{\"name\":\"notify\",\"labels\":[\"ubuntu-latest\"]},"
                            "{\"name\":\"deploy\",\"labels\":[\"ubuntu-latest\"],\"started_at\":\"2026-03-01T10:05:00Z\","
                            "\"completed_at\":\"2026-03-01T10:09:00.500Z\"}]}"),
        0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(res.cost.basis, DQ_COST_PROVIDER);
    assert_true(res.cost.minutes == 10);
    assert_true(res.cost.amount > 0.09 - 1e-9 && res.cost.amount < 0.09 + 1e-9);
    assert_int_equal(res.cost.n_runners, 3);
    assert_string_equal(res.cost.runners[0].label, "ubuntu-latest");
    assert_int_equal(res.cost.runners[0].jobs, 2);
    assert_true(res.cost.runners[0].minutes == 8);
    assert_string_equal(res.cost.runners[1].label, "windows-latest");
    assert_true(res.cost.runners[1].minutes == 1);
    assert_string_equal(res.cost.runners[2].label, "default");
    assert_int_equal(res.cost.runners[2].jobs, 1);
    cJSON *calls = dq_fake_calls(&gh);
    const cJSON *jobs = dq_fake_call(calls, "GET", "/repos/acme/shop/actions/runs/1001/jobs", 1);
    assert_non_null(jobs); /* the first asked whether a job started while queued */
    assert_string_equal(str_at(jobs, "query", "filter"), "all");
    assert_string_equal(str_at(jobs, "query", "per_page"), "100");
    assert_string_equal(str_at(jobs, "query", "page"), "1");
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);

    /* the jobs endpoint fails: the deploy still succeeds, its cost is unknown */
    assert_int_equal(dq_fake_script(&gh, "{\"steps\":1,\"jobs_status\":500}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(res.cost.basis, DQ_COST_UNKNOWN);
    assert_non_null(strstr(res.cost.detail, "list run jobs: HTTP 500"));
    assert_null(strstr(res.cost.detail, TOKEN));
    dq_chain_result_clear(&res);
    /* a job on a runner with no rate and no default: unknown, never a guess */
    dq_provider_free(p);
    p = github(",\"cost\":{\"per_minute\":{\"ubuntu-latest\":0.008}}");
    assert_int_equal(dq_fake_script(&gh, "{\"steps\":1,\"jobs\":[{\"name\":\"mac\",\"labels\":[\"macos-14\"],"
                                         "\"started_at\":\"2026-03-01T10:00:00Z\",\"completed_at\":\"2026-03-01T10:00:10Z\"}]}"),
                     0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(res.cost.basis, DQ_COST_UNKNOWN);
    assert_non_null(strstr(res.cost.detail, "no rate for job mac (runner label macos-14)"));
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_refused_run_details_falls_back(void **state)
{
    dq_provider *p = github(NULL);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    /* Another deploy's run on the same workflow must not be taken for ours. */
    dq_provider_request other = REQ;
    other.deployment_id = "11111111-2222-4333-8444-555555555555";
    assert_int_equal(dq_provider_deploy(p, &other, id, sizeof id, &e), 0);
    assert_string_equal(id, "1001");

    assert_int_equal(dq_fake_script(&gh, "{\"refuse_return_run_details\":true,\"steps\":1}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_string_equal(id, "1002");

    cJSON *calls = dq_fake_calls(&gh);
    assert_int_equal(dq_fake_count(calls, "POST", "/dispatches"), 3);
    const cJSON *second = cJSON_GetObjectItemCaseSensitive(dq_fake_call(calls, "POST", "/dispatches", 1), "body");
    const cJSON *third = cJSON_GetObjectItemCaseSensitive(dq_fake_call(calls, "POST", "/dispatches", 2), "body");
    assert_non_null(cJSON_GetObjectItemCaseSensitive(second, "return_run_details"));
    assert_null(cJSON_GetObjectItemCaseSensitive(third, "return_run_details"));
    const cJSON *list = dq_fake_call(calls, "GET", "/actions/workflows/deploy.yml/runs", 0);
    assert_non_null(list);
    assert_string_equal(str_at(list, "query", "event"), "workflow_dispatch");
    assert_string_equal(str_at(list, "query", "branch"), "release");
    assert_int_equal(strncmp(str_at(list, "query", "created"), ">=20", 4), 0);
    assert_true(dq_fake_all_fenced(calls, 9));
    cJSON_Delete(calls);

    dq_chain_result res;
    assert_int_equal(dq_chain_resume(p, id, 0, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_no_run_created(void **state)
{
    dq_provider *p = github(",\"find_run_timeout\":\"600ms\"");
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"no_run\",\"refuse_return_run_details\":true}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
    assert_string_equal(e.error_class, "no_run_created");
    assert_non_null(strstr(e.detail, REQ.deployment_id));

    /* A server that ignores return_run_details (204) is handled the same way. */
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"no_run\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_string_equal(e.error_class, "no_run_created");
    dq_provider_free(p);
}

static void test_conclusions(void **state)
{
    static const struct {
        const char *script;
        dq_chain_outcome outcome;
        const char *raw;
        const char *failure;
    } cases[] = {
        {"{\"mode\":\"fail_after_building\"}", DQ_CHAIN_FAILED, "failure", "build_failed"},
        /* no job started: the provider was unavailable, and it was the only one */
        {"{\"mode\":\"startup_failure\"}", DQ_CHAIN_FAILED, "", "all_providers_unavailable"},
        /* a job did start: a failed deploy, never tried elsewhere */
        {"{\"mode\":\"startup_failure\",\"job_started\":true}", DQ_CHAIN_FAILED, "startup_failure",
         "build_failed"},
        {"{\"mode\":\"in_flight_forever\"}", DQ_CHAIN_TIMEOUT, "in_progress", "timeout"},
    };
    dq_provider *p = github(",\"deadline\":\"300ms\"");

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dq_chain_result res;
        assert_int_equal(dq_fake_script(&gh, cases[i].script), 0);
        assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), cases[i].outcome);
        assert_string_equal(res.provider_status, cases[i].raw);
        assert_string_equal(res.failure, cases[i].failure);
        dq_chain_result_clear(&res);
    }
    dq_provider_free(p);
}

static void test_refusals(void **state)
{
    static const struct {
        const char *script;
        const char *cls;
    } cases[] = {
        {"{\"mode\":\"http_402\"}", "payment_required"},
        {"{\"mode\":\"http_403\"}", "forbidden"},
        {"{\"mode\":\"http_401\"}", "unauthorized"},
        {"{\"mode\":\"http_5xx\"}", "http_5xx"},
        /* a billing lapse refused as 403 is a payment problem, not a permission one */
        {"{\"mode\":\"http_403\",\"message\":\"The job was not started because recent account payments have "
         "failed or your spending limit needs to be increased. Please check the 'Billing & plans' section.\"}",
         "payment_required"},
    };
    dq_provider *p = github(NULL);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char id[DQ_PROVIDER_ID_LEN];
        dq_provider_error e;
        assert_int_equal(dq_fake_script(&gh, cases[i].script), 0);
        assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
        assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
        assert_string_equal(e.error_class, cases[i].cls);
        assert_null(strstr(e.detail, TOKEN));
    }
    dq_provider_free(p);
}

static void test_cancel(void **state)
{
    dq_provider *p = github(NULL);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;
    dq_deploy_status st;

    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"in_flight_forever\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_int_equal(dq_provider_cancel(p, &REQ, id, &e), 0);
    assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_FAILED);
    assert_string_equal(st.raw, "cancelled");
    dq_provider_status_clear(&st);
    assert_int_equal(dq_provider_status(p, &REQ, "999999", &st, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_FAILED);
    assert_string_equal(e.error_class, "config");
    assert_int_equal(e.http_status, 404);
    dq_provider_free(p);
}

/* The number of runs the double created (dispatches that made a run). */
static int runs_created(const cJSON *calls)
{
    return dq_fake_count(calls, "POST", "/dispatches");
}

static void test_startup_failure_reports_not_started(void **state)
{
    dq_provider *p = github(NULL);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;
    dq_deploy_status st;

    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"startup_failure\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_NOT_STARTED);
    assert_true(st.never_ran);
    assert_non_null(strstr(st.detail, "startup_failure without starting a job"));
    dq_provider_status_clear(&st);
    cJSON *calls = dq_fake_calls(&gh);
    assert_int_equal(dq_fake_count(calls, "GET", "/actions/runs/1001/jobs"), 1);
    cJSON_Delete(calls);

    /* queued without a job: in flight, but queued; with a job that ran: not queued */
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"queued_forever\"}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_IN_FLIGHT);
    assert_string_equal(st.raw, "queued");
    assert_true(st.queued);
    dq_provider_status_clear(&st);
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"queued_forever\",\"job_started\":true}"), 0);
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_IN_FLIGHT);
    assert_false(st.queued);
    dq_provider_status_clear(&st);
    dq_provider_free(p);
}

static void test_queued_past_queue_timeout(void **state)
{
    dq_provider *p = github(",\"queue_timeout\":\"300ms\"");
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    /* Nothing ever starts: cancelled, confirmed, and the provider counts as unavailable. */
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"queued_forever\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), DQ_CHAIN_FAILED);
    assert_string_equal(res.failure, "all_providers_unavailable");
    assert_int_equal(ev.started, 1);
    assert_int_equal(ev.failed, 1);
    assert_string_equal(ev.failed_class, "not_started");
    assert_non_null(strstr(ev.failed_detail, "stayed queued"));
    cJSON *calls = dq_fake_calls(&gh);
    assert_int_equal(dq_fake_count(calls, "POST", "/actions/runs/1001/cancel"), 1);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(calls, "active"),
                                                      "web/staging")->valueint, 0);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);

    /* A run that started a job is never failed over, however long it is queued. */
    assert_int_equal(dq_fake_reset(&gh), 0);
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"queued_forever\",\"job_started\":true}"), 0);
    dq_chain_options o = {.poll_interval_ms = 30, .deadline_ms = 800, .cancel_on_timeout = 1};
    cb = dq_fake_callbacks(&ev);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_int_equal(ev.failed, 0);
    assert_string_equal(res.failure, "timeout");
    assert_string_equal(res.cancel, "confirmed");
    assert_false(res.outcome_unknown);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_create_then_502_is_adopted(void **state)
{
    dq_provider *p = github(NULL);
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_int_equal(dq_fake_script(&gh, "{\"create_then\":\"502\",\"steps\":1}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider_id, "1001");
    assert_int_equal(ev.started, 1);
    assert_int_equal(ev.failed, 0);
    cJSON *calls = dq_fake_calls(&gh);
    assert_int_equal(runs_created(calls), 1); /* never sent twice */
    /* looked it up (a run is listed a moment after its dispatch, so perhaps more than once) */
    assert_true(dq_fake_count(calls, "GET", "/actions/workflows/deploy.yml/runs") >= 1);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);

    /* Created, then no answer within the client's timeout (2 s): adopted as well. */
    assert_int_equal(dq_fake_reset(&gh), 0);
    assert_int_equal(dq_fake_script(&gh, "{\"create_then\":\"hang\",\"hang_ms\":3000,\"steps\":1}"), 0);
    cb = dq_fake_callbacks(&ev);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider_id, "1001");
    assert_int_equal(ev.failed, 0);
    calls = dq_fake_calls(&gh);
    assert_int_equal(runs_created(calls), 1);
    cJSON_Delete(calls);
    dq_chain_result_clear(&res);

    /* A 5xx that created nothing is retried (retries = 1) after looking, then fails over. */
    dq_provider_free(p);
    p = github(",\"find_run_timeout\":\"500ms\"");
    assert_int_equal(dq_fake_reset(&gh), 0);
    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"http_5xx\"}"), 0);
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_UNAVAILABLE);
    assert_string_equal(e.error_class, "http_5xx");
    calls = dq_fake_calls(&gh);
    assert_int_equal(dq_fake_count(calls, "POST", "/dispatches"), 2);
    const cJSON *first_look = dq_fake_call(calls, "GET", "/actions/workflows/deploy.yml/runs", 0);
    const cJSON *second_dispatch = dq_fake_call(calls, "POST", "/dispatches", 1);
    /* the second dispatch only after a lookup found nothing */
    assert_non_null(first_look);
    assert_true(cJSON_GetObjectItemCaseSensitive(first_look, "time")->valuedouble <
                cJSON_GetObjectItemCaseSensitive(second_dispatch, "time")->valuedouble);
    cJSON_Delete(calls);
    dq_provider_free(p);
}

static void test_cancel_confirmed_or_not(void **state)
{
    dq_provider *p = github(",\"deadline\":\"300ms\"");
    dq_chain_result res;
    dq_chain_options o = {.poll_interval_ms = 30, .cancel_on_timeout = 1, .cancel_wait_ms = 400};

    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"in_flight_forever\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_string_equal(res.cancel, "confirmed");
    assert_false(res.outcome_unknown);
    assert_string_equal(res.provider_status, "in_progress"); /* where it stood at the deadline */
    assert_non_null(strstr(res.reason, "cancelled (now cancelled)"));
    dq_chain_result_clear(&res);

    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"in_flight_forever\",\"cancel\":\"refuse\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_string_equal(res.cancel, "unconfirmed");
    assert_true(res.outcome_unknown);
    assert_non_null(strstr(res.reason, "outcome unknown"));
    dq_chain_result_clear(&res);

    assert_int_equal(dq_fake_script(&gh, "{\"mode\":\"in_flight_forever\",\"cancel\":\"ignore\"}"), 0);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_string_equal(res.cancel, "unconfirmed");
    assert_true(res.outcome_unknown);
    dq_chain_result_clear(&res);

    o.cancel_on_timeout = 0;
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &o, &res), DQ_CHAIN_TIMEOUT);
    assert_string_equal(res.cancel, "off");
    assert_true(res.outcome_unknown);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_success_with_run_details, reset),
        cmocka_unit_test_setup(test_cost_from_jobs, reset),
        cmocka_unit_test_setup(test_refused_run_details_falls_back, reset),
        cmocka_unit_test_setup(test_no_run_created, reset),
        cmocka_unit_test_setup(test_conclusions, reset),
        cmocka_unit_test_setup(test_refusals, reset),
        cmocka_unit_test_setup(test_cancel, reset),
        cmocka_unit_test_setup(test_startup_failure_reports_not_started, reset),
        cmocka_unit_test_setup(test_queued_past_queue_timeout, reset),
        cmocka_unit_test_setup(test_create_then_502_is_adopted, reset),
        cmocka_unit_test_setup(test_cancel_confirmed_or_not, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
