/*
 * test_provider_command.c - the local command provider: placeholders expanded without a
 * shell, exit 0 succeeds and anything else fails (no failover), the time limit kills the
 * whole process group, output is kept bounded and redacted, a missing program is
 * "unavailable", an operator's cancel (`deployq cancel`) stops it at the provider.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../fakes/fake_server.h"
#include "log.h"
#include "provider.h"

static const dq_provider_request REQ = {
    .deployment_id = "c0ffee00-1111-4222-8333-444455556666",
    .service = "api",
    .environment = "prod",
    .version = "abc123; rm -rf /",
    .fence = 77,
};
static const dq_chain_options FAST = {.poll_interval_ms = 20};

static int setup(void **state)
{
    dq_log_init("test_provider_command", DQ_LOG_OFF, 0);
    return 0;
}

static void test_success_output_and_placeholders(void **state)
{
    /* sh is the program under test here; deployq itself never runs a shell. The version
     * carries shell syntax that must arrive as one literal argument. */
    dq_provider *p = dq_fake_provider(
        "{\"type\":\"command\",\"name\":\"railway-cli\",\"argv\":[\"/bin/sh\",\"-c\","
        "\"printf '%%s|%%s|%%s|%%s|%%s|' \\\"$1\\\" \\\"$2\\\" \\\"$3\\\" \\\"$4\\\" \\\"$5\\\"; "
        "printf 'env=%%s' \\\"$DEPLOYQ_FENCE\\\"\",\"sh\",\"{service}\",\"{environment}\",\"v={version}\","
        "\"{deployment_id}\",\"{fence}\"],\"timeout\":\"5s\"}");
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_non_null(p);
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.provider, "railway-cli");
    assert_string_equal(res.provider_status, "exit 0");
    assert_non_null(res.output);
    assert_string_equal(res.output, "api|prod|v=abc123; rm -rf /|c0ffee00-1111-4222-8333-444455556666|77|env=77");
    assert_int_equal(strncmp(res.provider_id, "cmd-", 4), 0);
    assert_int_equal(ev.started, 1);
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_failure_is_not_failover(void **state)
{
    dq_provider *ps[2] = {
        dq_fake_provider("{\"type\":\"command\",\"name\":\"first\",\"argv\":[\"/bin/sh\",\"-c\","
                         "\"echo build broke >&2; exit 3\"]}"),
        dq_fake_provider("{\"type\":\"command\",\"name\":\"second\",\"argv\":[\"/bin/true\"]}"),
    };
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_int_equal(dq_chain_run(ps, 2, &REQ, &cb, &FAST, &res), DQ_CHAIN_FAILED);
    assert_string_equal(res.provider, "first");
    assert_string_equal(res.provider_status, "exit 3");
    assert_string_equal(res.output, "build broke\n");
    assert_int_equal(strncmp(res.reason, "first cmd-", 10), 0);
    assert_non_null(strstr(res.reason, " ended with status exit 3"));
    assert_int_equal(ev.failed, 0);
    assert_int_equal(res.providers_tried, 1);
    dq_chain_result_clear(&res);
    dq_provider_free(ps[0]);
    dq_provider_free(ps[1]);
}

static void test_timeout_kills_group(void **state)
{
    /* The child forks a grandchild that would outlive a plain kill of the child. */
    dq_provider *p = dq_fake_provider("{\"type\":\"command\",\"argv\":[\"/bin/sh\",\"-c\","
                                      "\"echo started; sleep 30 & sleep 30; echo never\"],\"timeout\":\"300ms\"}");
    dq_chain_result res;

    assert_non_null(p);
    assert_int_equal(dq_provider_deadline_ms(p), 300 + 3000);
    int64_t t0 = dq_mono_ms();
    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_TIMEOUT);
    int64_t took = dq_mono_ms() - t0;
    assert_true(took >= 300);
    assert_true(took < 2500);
    assert_string_equal(res.provider_status, "timeout after 300 ms");
    assert_string_equal(res.error_class, "timeout");
    assert_string_equal(res.output, "started\n");
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_output_bounded(void **state)
{
    dq_provider *p = dq_fake_provider("{\"type\":\"command\",\"argv\":[\"/bin/sh\",\"-c\","
                                      "\"i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done\"],"
                                      "\"output_limit\":100}");
    dq_chain_result res;

    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(strlen(res.output), 104);
    assert_int_equal(strncmp(res.output, "...\n", 4), 0);
    size_t n = strlen(res.output);
    assert_string_equal(res.output + n - 10, "line-2999\n");
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

static void test_output_redacted(void **state)
{
    dq_log_redact("sekret-in-output-123");
    dq_provider *p = dq_fake_provider("{\"type\":\"command\",\"argv\":[\"/bin/echo\",\"token=sekret-in-output-123\"]}");
    dq_chain_result res;

    assert_int_equal(dq_chain_run(&p, 1, &REQ, NULL, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_string_equal(res.output, "token=***\n");
    dq_chain_result_clear(&res);
    dq_provider_free(p);
    dq_log_redact_clear();
}

static void test_missing_program_unavailable(void **state)
{
    dq_provider *ps[2] = {
        dq_fake_provider("{\"type\":\"command\",\"name\":\"gone\",\"argv\":[\"deployq-no-such-program\",\"up\"]}"),
        dq_fake_provider("{\"type\":\"command\",\"name\":\"ok\",\"argv\":[\"true\"]}"),
    };
    dq_fake_events ev;
    dq_chain_callbacks cb = dq_fake_callbacks(&ev);
    dq_chain_result res;

    assert_int_equal(dq_chain_run(ps, 2, &REQ, &cb, &FAST, &res), DQ_CHAIN_SUCCEEDED);
    assert_int_equal(ev.failed, 1);
    assert_string_equal(ev.failed_provider, "gone");
    assert_string_equal(ev.failed_class, "config");
    assert_string_equal(ev.failed_detail, "cannot start deployq-no-such-program: No such file or directory");
    assert_string_equal(res.provider, "ok");
    dq_chain_result_clear(&res);
    dq_provider_free(ps[0]);
    dq_provider_free(ps[1]);
}

static void test_option_injection_refused(void **state)
{
    dq_provider *p = dq_fake_provider("{\"type\":\"command\",\"argv\":[\"/bin/echo\",\"{version}\"]}");
    dq_provider_request req = REQ;
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;

    req.version = "--upload-everything";
    assert_int_equal(dq_provider_deploy(p, &req, id, sizeof id, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_FAILED);
    assert_string_equal(e.error_class, "config");
    dq_provider_free(p);
}

static void test_cancel_and_unknown(void **state)
{
    dq_provider *p = dq_fake_provider("{\"type\":\"command\",\"argv\":[\"/bin/sleep\",\"30\"]}");
    char id[DQ_PROVIDER_ID_LEN];
    dq_provider_error e;
    dq_deploy_status st;

    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), 0);
    assert_int_equal(st.state, DQ_DEPLOY_IN_FLIGHT);
    assert_string_equal(st.raw, "running");
    assert_int_equal(dq_provider_cancel(p, &REQ, id, &e), 0);
    int64_t until = dq_mono_ms() + 3000;
    do {
        dq_provider_status_clear(&st);
        dq_sleep_ms(20);
        assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), 0);
    } while (st.state == DQ_DEPLOY_IN_FLIGHT && dq_mono_ms() < until);
    assert_int_equal(st.state, DQ_DEPLOY_FAILED);
    assert_string_equal(st.raw, "signal 15");
    dq_provider_status_clear(&st);

    /* Reported once, then forgotten; an unknown run is a failure, not a guess. */
    assert_int_equal(dq_provider_status(p, &REQ, id, &st, &e), -1);
    assert_int_equal(e.kind, DQ_PROV_FAILED);

    /* Freeing the provider stops what still runs. */
    assert_int_equal(dq_provider_deploy(p, &REQ, id, sizeof id, &e), 0);
    int64_t t0 = dq_mono_ms();
    dq_provider_free(p);
    assert_true(dq_mono_ms() - t0 < 1500);
}

/* cancel_requested: yes once the counter reaches 3 polls, by "op-1". */
static int cancel_after_three(void *ctx, char *by, size_t bylen)
{
    int *polls = ctx;

    if (++*polls < 3)
        return 0;
    snprintf(by, bylen, "op-1");
    return 1;
}

static void test_operator_cancel_at_provider(void **state)
{
    dq_provider *p = dq_fake_provider("{\"type\":\"command\",\"name\":\"sleeper\",\"argv\":[\"/bin/sleep\",\"30\"]}");
    int polls = 0;
    dq_chain_callbacks cb = {.ctx = &polls, .cancel_requested = cancel_after_three};
    dq_chain_options opts = {.poll_interval_ms = 20, .cancel_wait_ms = 3000};
    dq_chain_result res;

    (void)state;
    assert_int_equal(dq_chain_run(&p, 1, &REQ, &cb, &opts, &res), DQ_CHAIN_FAILED);
    assert_int_equal(polls, 3);
    assert_string_equal(res.failure, "cancelled");
    assert_string_equal(res.cancel, "confirmed");
    assert_string_equal(res.cancelled_by, "op-1");
    assert_int_equal(res.outcome_unknown, 0);
    /* stopped at the provider: the process got SIGTERM (the 30 s sleep did not end it) */
    assert_non_null(strstr(res.reason, "cancelled by op-1: sleeper cmd-"));
    assert_non_null(strstr(res.reason, "stopped at the provider (now signal 15)"));
    dq_chain_result_clear(&res);
    dq_provider_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success_output_and_placeholders),
        cmocka_unit_test(test_failure_is_not_failover),
        cmocka_unit_test(test_timeout_kills_group),
        cmocka_unit_test(test_output_bounded),
        cmocka_unit_test(test_output_redacted),
        cmocka_unit_test(test_missing_program_unavailable),
        cmocka_unit_test(test_option_injection_refused),
        cmocka_unit_test(test_cancel_and_unknown),
        cmocka_unit_test(test_operator_cancel_at_provider),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
