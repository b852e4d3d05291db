/*
 * test_notify.c - notifications (workers/rollback/notify.c): the settings of a target (environment
 * `notify`, else top-level `notifications`, and their errors), the message text, delivery
 * to the Slack double (tests/fakes/slack.py) with retries, and the notification.* event
 * that reports it, never carrying the webhook URL; the kinds a team acts on (failover,
 * approval waiting, rejection) and the signature of the JSON webhook's bodies, checked
 * against a vector computed outside deployq and by the webhook double
 * (tests/fakes/webhook.py), which verifies it as a receiver would.
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
#include "log.h"
#include "notify.h"

#define SECRET_PATH "/services/T1/B1/s3cr3t-hook-path"

static dq_fake slack, receiver;

static int setup(void **state)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dq_log_init("test_notify", DQ_LOG_OFF, 0);
    if (dq_fake_start(&receiver, "webhook") != 0)
        return -1;
    return dq_fake_start(&slack, "slack");
}

static int teardown(void **state)
{
    dq_fake_stop(&receiver);
    dq_fake_stop(&slack);
    curl_global_cleanup();
    return 0;
}

static int reset(void **state) { return dq_fake_reset(&slack); }

static dq_config *load(const char *yaml, char *err, size_t errlen)
{
    return dq_config_load_string(yaml, strlen(yaml), "n.yaml", err, errlen);
}

static void test_config_env_and_defaults(void **state)
{
    char err[512];
    dq_notify_config nc;
    dq_config *cfg;

    setenv("TEST_SLACK_URL", "https://hooks.example/services/T/B/xyz-secret", 1);
    cfg = load("notifications:\n"
               "  webhook: https://hooks.example/all\n"
               "services:\n"
               "  api:\n"
               "    environments:\n"
               "      production:\n"
               "        notify:\n"
               "          slack_webhook: ${TEST_SLACK_URL}\n"
               "          on: [deploy.verified, rollback.failed]\n"
               "          dashboard_url: https://grafana.example/d/{service}\n"
               "          timeout: 2s\n"
               "          retries: 1\n"
               "      staging: {}\n",
               err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(dq_notify_config_load(cfg, "api", "production", &nc, err, sizeof err), 0);
    assert_string_equal(nc.slack_url, "https://hooks.example/services/T/B/xyz-secret");
    assert_null(nc.webhook_url); /* the environment's section replaces the top level */
    assert_int_equal(nc.timeout_ms, 2000);
    assert_int_equal(nc.retries, 1);
    assert_int_equal(nc.retry_budget_ms, 15000);
    assert_true(dq_notify_wants(&nc, "deploy.verified"));
    assert_true(dq_notify_wants(&nc, "rollback.failed"));
    assert_false(dq_notify_wants(&nc, "rollback.requested"));
    assert_false(dq_notify_wants(&nc, "deploy.started"));
    dq_notify_config_clear(&nc);

    /* staging has no `notify`: the top level, with the default `on` */
    assert_int_equal(dq_notify_config_load(cfg, "api", "staging", &nc, err, sizeof err), 0);
    assert_null(nc.slack_url);
    assert_string_equal(nc.webhook_url, "https://hooks.example/all");
    assert_true(dq_notify_wants(&nc, "rollback.requested"));
    assert_true(dq_notify_wants(&nc, "rollback.succeeded"));
    assert_true(dq_notify_wants(&nc, "rollback.failed"));
    assert_true(dq_notify_wants(&nc, "deploy.failed"));
    assert_false(dq_notify_wants(&nc, "deploy.succeeded"));
    assert_false(dq_notify_wants(&nc, "deploy.verified"));
    /* what needs a person is on by default; a rejection (its submitter is told) is not */
    assert_true(dq_notify_wants(&nc, "failover"));
    assert_true(dq_notify_wants(&nc, "deploy.awaiting_approval"));
    assert_true(dq_notify_wants(&nc, "drift.detected"));
    assert_false(dq_notify_wants(&nc, "deploy.rejected"));
    assert_false(dq_notify_wants(&nc, "approval.refused")); /* opt-in: it changes nothing */
    assert_null(nc.webhook_secret);
    dq_notify_config_clear(&nc);
    dq_config_free(cfg);

    /* the new kinds in `on`, and the secret: kept, registered for redaction */
    setenv("TEST_NOTIFY_SECRET", "whsec-0123456789abcdef-s3cr3t", 1);
    cfg = load("services:\n  api:\n    environments:\n      production:\n        notify:\n"
               "          webhook: https://hooks.example/in\n"
               "          webhook_secret: ${TEST_NOTIFY_SECRET}\n"
               "          on: [deploy.rejected, failover, approval.refused]\n",
               err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(dq_notify_config_load(cfg, "api", "production", &nc, err, sizeof err), 0);
    assert_string_equal(nc.webhook_secret, "whsec-0123456789abcdef-s3cr3t");
    assert_true(dq_notify_wants(&nc, "deploy.rejected"));
    assert_true(dq_notify_wants(&nc, "failover"));
    assert_true(dq_notify_wants(&nc, "approval.refused"));
    assert_false(dq_notify_wants(&nc, "deploy.awaiting_approval"));
    assert_false(dq_notify_wants(&nc, "deploy.failed"));
    {
        char line[256];
        dq_redact("secret is whsec-0123456789abcdef-s3cr3t.", line, sizeof line);
        assert_null(strstr(line, "s3cr3t"));
    }
    dq_notify_config_clear(&nc);
    dq_config_free(cfg);

    /* nothing configured: not an error, nothing wanted */
    cfg = load("services:\n  api:\n    environments:\n      production: {}\n", err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(dq_notify_config_load(cfg, "api", "production", &nc, err, sizeof err), 0);
    assert_false(dq_notify_wants(&nc, "rollback.failed"));
    dq_notify_config_clear(&nc);
    dq_config_free(cfg);
}

static void test_config_errors(void **state)
{
    static const struct {
        const char *section;
        const char *expected;
    } cases[] = {
        {"  on: [deploy.started]\n", "deployq.yaml:3: notifications.on: 'deploy.started' is not one of"},
        {"  slack_webhook: ftp://x.example/hook-secret\n",
         "deployq.yaml:2: notifications.slack_webhook: expected an absolute http:// or https:// URL"},
        /* no host, or not one URL: refused (issue 14), never posted to */
        {"  slack_webhook: \"https://\"\n",
         "deployq.yaml:2: notifications.slack_webhook: expected an absolute http:// or https:// URL"},
        {"  slack_webhook: https:///services/hook-secret\n",
         "deployq.yaml:2: notifications.slack_webhook: expected an absolute http:// or https:// URL"},
        {"  webhook: \"https://x.example/hook-secret https://y.example\"\n",
         "deployq.yaml:2: notifications.webhook: expected an absolute http:// or https:// URL"},
        {"  slack_webhook: hooks.slack.com/services/hook-secret\n",
         "deployq.yaml:2: notifications.slack_webhook: expected an absolute http:// or https:// URL"},
        {"  timeout: soon\n", "deployq.yaml:2: notifications.timeout: expected a duration such as 5s"},
        {"  retries: 99\n", "deployq.yaml:2: notifications.retries: expected an integer from 0 to 10"},
        {"  slack: https://x.example\n", "deployq.yaml:2: notifications: unknown key 'slack'"},
        {"  on: [failover, deploy.rejectd]\n", "deployq.yaml:3: notifications.on: 'deploy.rejectd' is not one of"},
        {"  on: [provider.failed]\n", "deployq.yaml:3: notifications.on: 'provider.failed' is not one of"},
        {"  webhook_secret: short-s3cr3t\n",
         "deployq.yaml:3: notifications.webhook_secret: expected at least 16 characters"},
        {"  slack_webhook: https://x.example/h\n  webhook_secret: long-enough-but-s3cr3t\n",
         "deployq.yaml:3: notifications.webhook_secret: set without notifications.webhook"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[512], err[512];
        dq_notify_config nc;
        dq_config *cfg;

        /* `on` is checked once a channel exists, so that case has one on line 2 */
        snprintf(yaml, sizeof yaml, "notifications:\n%s%sservices:\n  api:\n    environments:\n      prod: {}\n",
                 strstr(cases[i].section, "on:") || strstr(cases[i].section, "short-s3cr3t")
                     ? "  webhook: https://x.example/h\n"
                     : "",
                 cases[i].section);
        cfg = load(yaml, err, sizeof err);
        assert_non_null(cfg);
        assert_int_equal(dq_notify_config_load(cfg, "api", "prod", &nc, err, sizeof err), -1);
        assert_memory_equal(err, cases[i].expected, strlen(cases[i].expected));
        assert_null(strstr(err, "hook-secret"));
        dq_config_free(cfg);
    }
}

/* The rollback policy: auto (default) or notify; anything else refused at its line, the
 * same reader deployq-rollback checks at start and `deployq check` calls (issue 14: `maybe`
 * used to act as notify). */
static void test_rollback_policy(void **state)
{
    static const struct {
        const char *value; /* NULL: absent */
        int expected;
    } cases[] = {{NULL, 1}, {"auto", 1}, {"notify", 0}, {"maybe", -1}, {"\"\"", -1}, {"true", -1}, {"7", -1},
                 {"[auto]", -1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[512], err[512] = "";
        dq_config *cfg;

        if (cases[i].value)
            snprintf(yaml, sizeof yaml, "services:\n  api:\n    environments:\n      prod:\n        rollback: %s\n",
                     cases[i].value);
        else
            snprintf(yaml, sizeof yaml, "services:\n  api:\n    environments:\n      prod: {}\n");
        cfg = load(yaml, err, sizeof err);
        assert_non_null(cfg);
        assert_int_equal(dq_rollback_policy_load(cfg, "api", "prod", err, sizeof err), cases[i].expected);
        if (cases[i].expected < 0)
            assert_string_equal(err, "deployq.yaml:5: services.api.environments.prod.rollback: expected auto or notify");
        dq_config_free(cfg);
    }
}

static dq_event *rollback_succeeded(void)
{
    dq_event *ev = dq_event_new("rollback.succeeded", "4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a", "api", "production",
                                "v2", "test@host/1");

    assert_non_null(ev);
    cJSON_AddStringToObject(ev->data, "from_version", "v2");
    cJSON_AddStringToObject(ev->data, "to_version", "v1");
    cJSON_AddStringToObject(ev->data, "method", "redeploy");
    cJSON_AddStringToObject(ev->data, "provider", "primary");
    cJSON_AddStringToObject(ev->data, "detected_at", "2026-11-26T10:00:00.000Z");
    cJSON_AddStringToObject(ev->data, "decided_at", "2026-11-26T10:00:03.000Z");
    cJSON_AddStringToObject(ev->data, "restored_at", "2026-11-26T10:00:07.500Z");
    cJSON_AddNumberToObject(ev->data, "mttr_ms", 7500);
    cJSON_AddStringToObject(ev->data, "reason", "p99 > 800 <ms> & rising");
    return ev;
}

static void test_text(void **state)
{
    dq_notify_config nc = {.dashboard_url = "https://grafana.example/d/{service}?env={environment}"};
    dq_notify_links links = {.ci_run_url = "https://ci.example/run/7", .log_url = "https://logs.example/1"};
    dq_event *ev = rollback_succeeded();
    char *text = dq_notify_text(&nc, ev, &links, "note here");

    assert_non_null(text);
    assert_string_equal(text,
                        "Rolled back api/production from v2 to v1 (redeploy via primary).\n"
                        "MTTR 7.5 s: detected 2026-11-26T10:00:00.000Z, decided 2026-11-26T10:00:03.000Z, "
                        "restored 2026-11-26T10:00:07.500Z.\n"
                        "Why: p99 &gt; 800 &lt;ms&gt; &amp; rising\n"
                        "note here\n"
                        "CI run: https://ci.example/run/7\n"
                        "Provider log: https://logs.example/1\n"
                        "Dashboard: https://grafana.example/d/api?env=production\n"
                        "Deployment 4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a");
    free(text);
    dq_event_free(ev);

    ev = dq_event_new("rollback.failed", NULL, "api", "staging", "v1", "t");
    cJSON_AddStringToObject(ev->data, "reason", "no verified version");
    cJSON_AddStringToObject(ev->data, "from_version", "v1");
    text = dq_notify_text(NULL, ev, NULL, NULL);
    assert_string_equal(text, "Rollback of api/staging FAILED: no verified version\n"
                              "Version v1 may still be serving.\nA person must act.");
    free(text);
    dq_event_free(ev);
}

/* A failover, an approval waiting, a rejection: what each message says, exactly. */
static void test_text_kinds(void **state)
{
    const char *dep = "4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a";
    dq_event *ev = dq_event_new("deploy.started", dep, "api", "production", "v3", "t");
    cJSON *from = cJSON_AddArrayToObject(ev->data, "failed_over_from"), *f;
    dq_notify_links links = {.approvers = "ops-lead, sre-oncall"};
    char *text;

    /* a plain deploy.started is of no kind */
    cJSON_AddStringToObject(ev->data, "provider", "backup");
    cJSON_AddNumberToObject(ev->data, "attempt", 3);
    assert_null(dq_notify_kind(ev));
    f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "provider", "railway-prod");
    cJSON_AddStringToObject(f, "error_class", "http_5xx");
    cJSON_AddStringToObject(f, "detail", "HTTP 503 <upstream>");
    cJSON_AddNumberToObject(f, "http_status", 503);
    cJSON_AddItemToArray(from, f);
    f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "provider", "gh-actions");
    cJSON_AddStringToObject(f, "error_class", "connect");
    cJSON_AddStringToObject(f, "detail", "");
    cJSON_AddItemToArray(from, f);
    assert_string_equal(dq_notify_kind(ev), "failover");
    text = dq_notify_text(NULL, ev, NULL, NULL);
    assert_string_equal(text, "Failover on api/production, version v3: backup took over (provider 3 of the chain).\n"
                              "railway-prod failed: http_5xx (HTTP 503): HTTP 503 &lt;upstream&gt;\n"
                              "gh-actions failed: connect\n"
                              "The deploy goes on; the failed provider needs a look.\n"
                              "Deployment 4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a");
    free(text);
    dq_event_free(ev);

    ev = dq_event_new("deploy.awaiting_approval", dep, "api", "production", "v3", "t");
    cJSON_AddStringToObject(ev->data, "approval_role", "approver");
    cJSON_AddStringToObject(ev->data, "requested_by", "ci@github");
    cJSON_AddStringToObject(ev->data, "expires_at", "2026-12-03T20:00:00.000Z");
    assert_string_equal(dq_notify_kind(ev), "deploy.awaiting_approval");
    text = dq_notify_text(NULL, ev, &links, NULL);
    assert_string_equal(text, "Approval needed: api/production version v3, requested by ci@github.\n"
                              "Who: a holder of a key of role approver (ops-lead, sre-oncall).\n"
                              "Until: 2026-12-03T20:00:00.000Z; without a decision by then nothing is deployed.\n"
                              "Approve: deployq approve 4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a --reason TEXT\n"
                              "Deny: deployq deny 4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a --reason TEXT\n"
                              "Deployment 4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a");
    free(text);
    dq_event_free(ev);

    /* a decision that does not count: who signed it and why, and that the deploy waits */
    ev = dq_event_new("approval.refused", dep, "api", "production", "v3", "t");
    cJSON_AddStringToObject(ev->data, "decision", "approve");
    cJSON_AddStringToObject(ev->data, "key_id", "ci-bot");
    cJSON_AddItemToObject(ev->data, "reasons",
                          cJSON_Parse("[{\"code\":\"approver_is_signer\",\"message\":\"key ci-bot "
                                      "signed the request: approving your own request does not count\"}]"));
    assert_string_equal(dq_notify_kind(ev), "approval.refused");
    text = dq_notify_text(NULL, ev, NULL, NULL);
    assert_string_equal(text, "Approval refused on api/production version v3: the approval signed by key "
                              "ci-bot does not count:\n"
                              "- approver_is_signer: key ci-bot signed the request: approving your own "
                              "request does not count\n"
                              "The deployment still waits for an approver who may decide it (deployq approvals).\n"
                              "Deployment 4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a");
    free(text);
    dq_event_free(ev);

    /* the drift scan's event: names only, no deployment */
    ev = dq_event_new("drift.detected", NULL, "api", "production", NULL, "t");
    cJSON_AddStringToObject(ev->data, "digest", "0123456789abcdef");
    cJSON_AddStringToObject(ev->data, "against", "staging");
    cJSON_AddItemToObject(ev->data, "missing", cJSON_CreateArray());
    cJSON_AddItemToObject(ev->data, "differs", cJSON_Parse("[\"FEATURE_FLAGS\", \"STRIPE_KEY\"]"));
    cJSON_AddItemToObject(ev->data, "since_deploy",
                          cJSON_Parse("{\"version\":\"v3\",\"recorded_at\":\"2026-12-03T10:00:00.000Z\","
                                      "\"changed\":[\"STRIPE_KEY\"]}"));
    assert_string_equal(dq_notify_kind(ev), "drift.detected");
    text = dq_notify_text(NULL, ev, NULL, NULL);
    assert_string_equal(text, "Configuration drift on api/production (compared with staging):\n"
                              "Values differ: FEATURE_FLAGS, STRIPE_KEY\n"
                              "Changed since the deploy of v3: STRIPE_KEY\n"
                              "See: deployq drift --service api --env production");
    free(text);
    dq_event_free(ev);

    ev = dq_event_new("deploy.rejected", dep, "api", "production", "v3", "t");
    {
        cJSON *reasons = cJSON_AddArrayToObject(ev->data, "reasons"), *r;

        r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "code", "freeze");
        cJSON_AddStringToObject(r, "message", "production is frozen until 2026-12-04T08:00:00Z (release week)");
        cJSON_AddItemToArray(reasons, r);
        r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "code", "promotion");
        cJSON_AddStringToObject(r, "message", "v3 was never verified in staging");
        cJSON_AddItemToArray(reasons, r);
    }
    cJSON_AddStringToObject(ev->data, "key_id", "ci-main");
    assert_string_equal(dq_notify_kind(ev), "deploy.rejected");
    text = dq_notify_text(NULL, ev, NULL, NULL);
    assert_string_equal(text, "Deploy of api/production version v3 rejected (signed by key ci-main):\n"
                              "- freeze: production is frozen until 2026-12-04T08:00:00Z (release week)\n"
                              "- promotion: v3 was never verified in staging\n"
                              "Deployment 4f1c9a7e-2b3d-4c5e-8f6a-7b8c9d0e1f2a");
    free(text);
    dq_event_free(ev);

    /* the kinds that are event types; "failover" is not one */
    ev = dq_event_new("provider.failed", dep, "api", "production", "v3", "t");
    assert_null(dq_notify_kind(ev));
    dq_event_free(ev);
}

/* The signature against a vector computed outside deployq:
 *   printf '%s' '1764763200.{"id":"e1","type":"deploy.failed"}' |
 *       openssl dgst -sha256 -hmac 'whsec-test-0123456789abcdef'
 * and the same with Python's hmac.new(key, msg, hashlib.sha256).hexdigest(). */
static void test_sign_vector(void **state)
{
    const char *body = "{\"id\":\"e1\",\"type\":\"deploy.failed\"}";
    char sig[DQ_NOTIFY_SIG_LEN];

    assert_int_equal(dq_notify_sign("whsec-test-0123456789abcdef", 1764763200, body, strlen(body), sig), 0);
    assert_string_equal(sig, "t=1764763200,v1=f4dab9d270d1fdeb13c13d51d8d9f4021ca86bffc8b5b4adae374bd97cf382b0");
    /* another timestamp or one byte of the body more: another signature */
    assert_int_equal(dq_notify_sign("whsec-test-0123456789abcdef", 1764763201, body, strlen(body), sig), 0);
    assert_null(strstr(sig, "f4dab9d270d1fdeb"));
    assert_int_equal(dq_notify_sign("whsec-test-0123456789abcdef", 1764763200, "{\"id\":\"e1\"} ", 11, sig), 0);
    assert_null(strstr(sig, "f4dab9d270d1fdeb"));
}

/* The webhook double checks the signature as a receiver would: signed with its secret, the
 * delivery is accepted; with another secret or none, refused (401, not retried). */
static void test_signed_delivery(void **state)
{
    char url[256];
    dq_notify_config nc = {.timeout_ms = 2000, .retries = 0, .retry_budget_ms = 5000};
    dq_notify_result res[DQ_NOTIFY_MAX_CHANNELS];
    dq_event *ev = rollback_succeeded();
    cJSON *calls;
    const cJSON *c;
    const char *hdr;

    assert_int_equal(dq_fake_reset(&receiver), 0);
    assert_int_equal(dq_fake_script(&receiver, "{\"notify_secret\":\"whsec-right-0123456789abcdef\"}"), 0);
    snprintf(url, sizeof url, "%s/notify/s3cr3t", receiver.base);
    nc.webhook_url = url;
    nc.webhook_secret = "whsec-right-0123456789abcdef";
    assert_int_equal(dq_notify_send(&nc, ev, "x", res), 1);
    assert_int_equal(res[0].ok, 1);
    assert_int_equal(res[0].http_status, 204);
    calls = dq_fake_calls(&receiver);
    c = dq_fake_call(calls, "POST", "/notify/", 0);
    hdr = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "headers"), "X-Deployq-Signature")
              ->valuestring;
    assert_memory_equal(hdr, "t=", 2);
    assert_non_null(strstr(hdr, ",v1="));
    assert_int_equal(strlen(strstr(hdr, ",v1=")), 4 + 64);
    cJSON_Delete(calls);

    nc.webhook_secret = "whsec-wrong-0123456789abcdef";
    assert_int_equal(dq_notify_send(&nc, ev, "x", res), 1);
    assert_int_equal(res[0].ok, 0);
    assert_string_equal(res[0].error, "HTTP 401 after 1 attempt");

    nc.webhook_secret = NULL;
    assert_int_equal(dq_notify_send(&nc, ev, "x", res), 1);
    assert_int_equal(res[0].ok, 0);
    assert_int_equal(res[0].http_status, 401);
    calls = dq_fake_calls(&receiver);
    c = dq_fake_call(calls, "POST", "/notify/", 2);
    assert_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "headers"), "X-Deployq-Signature"));
    cJSON_Delete(calls);
    dq_event_free(ev);
}

static void test_send_and_report(void **state)
{
    char slack_url[256], hook_url[256];
    dq_notify_config nc = {.timeout_ms = 2000, .retries = 2, .retry_budget_ms = 5000};
    dq_notify_result res[DQ_NOTIFY_MAX_CHANNELS];
    dq_event *ev = rollback_succeeded(), *rep;
    cJSON *calls;
    const cJSON *c;
    char *json;

    snprintf(slack_url, sizeof slack_url, "%s" SECRET_PATH, slack.base);
    snprintf(hook_url, sizeof hook_url, "%s/generic/s3cr3t-two", slack.base);
    nc.slack_url = slack_url;
    nc.webhook_url = hook_url;

    /* one 503, then "ok": delivered on the second attempt; the JSON hook gets the event */
    assert_int_equal(dq_fake_script(&slack, "{\"mode\":\"http_5xx\",\"fail_times\":1}"), 0);
    assert_int_equal(dq_notify_send(&nc, ev, "hello <b>", res), 2);
    assert_string_equal(res[0].channel, "slack");
    assert_int_equal(res[0].ok, 1);
    assert_int_equal(res[0].attempts, 2);
    assert_int_equal(res[0].http_status, 200);
    assert_string_equal(res[0].error, "");
    assert_string_equal(res[1].channel, "webhook");
    assert_int_equal(res[1].ok, 1);
    assert_int_equal(res[1].attempts, 1);
    calls = dq_fake_calls(&slack);
    assert_int_equal(dq_fake_count(calls, "POST", SECRET_PATH), 2);
    c = dq_fake_call(calls, "POST", SECRET_PATH, 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "body"), "text")->valuestring,
                        "hello <b>");
    c = dq_fake_call(calls, "POST", "/generic/", 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "body"), "id")->valuestring,
                        ev->id);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "headers"),
                                                         "X-Deployq-Event")->valuestring,
                        "rollback.succeeded");
    cJSON_Delete(calls);

    rep = dq_notify_event(ev, &res[0], "test@host/1");
    assert_string_equal(rep->type, "notification.sent");
    assert_string_equal(rep->service, "api");
    assert_string_equal(dq_json_str(rep->data, "trigger_event_id"), ev->id);
    assert_int_equal((int)dq_json_num(rep->data, "attempts", 0), 2);
    dq_event_free(rep);

    /* always 503: failed after 1 + retries attempts, the error without the URL */
    assert_int_equal(dq_fake_script(&slack, "{\"mode\":\"http_5xx\"}"), 0);
    nc.webhook_url = NULL;
    assert_int_equal(dq_notify_send(&nc, ev, "x", res), 1);
    assert_int_equal(res[0].ok, 0);
    assert_int_equal(res[0].attempts, 3);
    assert_string_equal(res[0].error, "HTTP 503 (service_unavailable) after 3 attempts");
    rep = dq_notify_event(ev, &res[0], "test@host/1");
    assert_string_equal(rep->type, "notification.failed");
    json = dq_event_encode(rep);
    assert_null(strstr(json, "s3cr3t"));
    assert_string_equal(dq_json_str(rep->data, "error"), "HTTP 503 (service_unavailable) after 3 attempts");
    /* the same trigger and channel: the same report id, whatever the outcome */
    {
        dq_event *again = dq_notify_event(ev, &res[0], "other@host/2");
        assert_string_equal(again->id, rep->id);
        dq_event_free(again);
    }
    free(json);
    dq_event_free(rep);

    /* nobody listening: a connection failure, the URL not named */
    nc.slack_url = "http://127.0.0.1:1/services/s3cr3t";
    nc.retries = 0;
    assert_int_equal(dq_notify_send(&nc, ev, "x", res), 1);
    assert_int_equal(res[0].ok, 0);
    assert_string_equal(res[0].error, "connection failed after 1 attempt");
    dq_event_free(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_env_and_defaults),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_rollback_policy),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_text_kinds),
        cmocka_unit_test(test_sign_vector),
        cmocka_unit_test(test_signed_delivery),
        cmocka_unit_test_setup(test_send_and_report, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
