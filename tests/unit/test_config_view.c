/*
 * test_config_view.c - the contract between config.c and the section loaders (config.h,
 * "The view"): a loader reads plain cJSON, so it is tested here with JSON and no YAML at
 * all (positions unknown: messages without "file:line: "), unknown keys are refused in one
 * form by dq_config_check_keys(), and the same loaders fed from a YAML file say where in the
 * file a mistake is.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "execute.h"
#include "gates.h"
#include "log.h"
#include "notify.h"
#include "testutil.h"

#define NOTIFY_KNOWN "(known: slack_webhook, webhook, webhook_secret, on, dashboard_url, timeout, retries, retry_budget)"

static int setup(void **state)
{
    (void)state;
    dq_log_init("test_config_view", DQ_LOG_OFF, 0);
    unsetenv("DEPLOYQ_BROKERS");
    unsetenv("DEPLOYQ_REDIS_URL");
    return 0;
}

static cJSON *parse(const char *json)
{
    cJSON *j = cJSON_Parse(json);
    if (j == NULL)
        fail_msg("not JSON: %s", json);
    return j;
}

/* The one check of unknown keys, on JSON built by hand: no position, so no "file:line: ". */
static void test_check_keys(void **state)
{
    (void)state;
    static const char *const allowed[] = {"url", "timeout", NULL};
    char err[512] = "";
    cJSON *ok = parse("{\"url\":\"redis://x\",\"timeout\":\"2s\"}");
    cJSON *bad = parse("{\"url\":\"redis://x\",\"tmeout\":\"2s\",\"other\":1}");
    cJSON *list = parse("[{\"tmeout\":1}]");

    assert_int_equal(dq_config_check_keys(NULL, ok, allowed, "redis", err, sizeof err), 0);
    assert_string_equal(err, "");
    /* not a mapping: nothing to refuse here, the loader checks types */
    assert_int_equal(dq_config_check_keys(NULL, list, allowed, "redis", err, sizeof err), 0);
    assert_int_equal(dq_config_check_keys(NULL, NULL, allowed, "redis", err, sizeof err), 0);
    /* the first unknown key, with the known ones */
    assert_int_equal(dq_config_check_keys(NULL, bad, allowed, "redis", err, sizeof err), -1);
    assert_string_equal(err, "redis: unknown key 'tmeout' (known: url, timeout)");
    assert_int_equal(dq_config_check_keys(NULL, bad, allowed, NULL, err, sizeof err), -1);
    assert_string_equal(err, "unknown top-level key 'tmeout' (known: url, timeout)");

    /* positions of JSON built by hand are unknown */
    char where[64] = "untouched";
    assert_int_equal(dq_config_line(NULL, ok), 0);
    assert_string_equal(dq_config_where(NULL, ok, where, sizeof where), "");
    /* and its scalars have their JSON text */
    char num[32];
    assert_string_equal(dq_config_text(NULL, cJSON_GetObjectItem(bad, "other"), num, sizeof num),
                        "1");
    cJSON_Delete(ok);
    cJSON_Delete(bad);
    cJSON_Delete(list);
}

/* The notification loader takes its section as cJSON: a good one, then its mistakes. */
static void test_notify_from_json(void **state)
{
    (void)state;
    char err[512] = "";
    dq_notify_config nc;
    cJSON *sec = parse("{\"slack_webhook\":\"https://hooks.example/services/T/B/x\","
                       "\"on\":[\"deploy.failed\",\"rollback.failed\"],\"timeout\":\"2s\","
                       "\"retries\":2,\"retry_budget\":\"9s\"}");

    assert_int_equal(dq_notify_config_read(NULL, sec, "notify", &nc, err, sizeof err), 0);
    assert_string_equal(nc.slack_url, "https://hooks.example/services/T/B/x");
    assert_null(nc.webhook_url);
    assert_int_equal(nc.timeout_ms, 2000);
    assert_int_equal(nc.retries, 2); /* a JSON number: read as its text, "2" */
    assert_int_equal(nc.retry_budget_ms, 9000);
    assert_true(dq_notify_wants(&nc, "deploy.failed"));
    assert_true(dq_notify_wants(&nc, "rollback.failed"));
    assert_false(dq_notify_wants(&nc, "rollback.requested"));
    dq_notify_config_clear(&nc);
    cJSON_Delete(sec);

    /* nothing configured: the defaults, no channel */
    assert_int_equal(dq_notify_config_read(NULL, NULL, "notify", &nc, err, sizeof err), 0);
    assert_null(nc.slack_url);
    assert_int_equal(nc.retries, 3);
    dq_notify_config_clear(&nc);

    static const struct {
        const char *json, *err;
    } bad[] = {
        {"{\"slak_webhook\":\"https://x.example/h\"}",
         "notify: unknown key 'slak_webhook' " NOTIFY_KNOWN},
        {"{\"retries\":11}", "notify.retries: expected an integer from 0 to 10"},
        {"{\"timeout\":\"soon\"}", "notify.timeout: expected a duration such as 5s"},
        {"{\"on\":\"deploy.failed\"}", "notify.on: expected a list of event types"},
        {"[]", "notify: expected a mapping"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sec = parse(bad[i].json);
        err[0] = '\0';
        assert_int_equal(dq_notify_config_read(NULL, sec, "notify", &nc, err, sizeof err), -1);
        assert_string_equal(err, bad[i].err);
        cJSON_Delete(sec);
    }
}

/* A whole configuration from JSON: config.c's own readers and the loaders that take a cfg
 * (executor settings, gates) work on it as on a file. */
static void test_config_from_json(void **state)
{
    (void)state;
    char err[512] = "";
    dq_exec_settings es;
    cJSON *root = parse("{\"redis\":{\"url\":\"redis://r:6379\",\"timeout\":\"3s\"},"
                        "\"executor\":{\"lock_ttl\":\"10s\",\"cancel_on_timeout\":false},"
                        "\"services\":{\"api\":{\"environments\":{\"staging\":{},"
                        "\"production\":{\"requires\":\"staging\",\"approval\":\"required\","
                        "\"freeze\":[{\"from\":\"2027-01-01T00:00:00Z\","
                        "\"until\":\"2027-01-02T00:00:00Z\",\"reason\":\"new year\"}]}}}}}");
    dq_config *cfg = dq_config_from_json(root, "t.json", err, sizeof err);
    cJSON_Delete(root); /* copied */
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(cfg->redis_url, "redis://r:6379");
    assert_int_equal(cfg->redis_timeout_ms, 3000);
    const dq_environment *prod = dq_config_environment(cfg, "api", "production");
    assert_non_null(prod);
    assert_string_equal(prod->requires, "staging");
    assert_int_equal(prod->approval, 1);
    assert_ptr_equal(dq_config_env_view(cfg, "api", "production"), prod->view);

    assert_int_equal(dq_exec_settings_load(cfg, &es, err, sizeof err), 0);
    assert_int_equal(es.lock_ttl_ms, 10000);
    assert_int_equal(es.cancel_on_timeout, 0);
    assert_int_equal(es.orphan_scan_ms, 1000);

    dq_gates *g = dq_gates_load(cfg, "api", "production", err, sizeof err);
    if (g == NULL)
        fail_msg("%s", err);
    assert_int_equal(g->n_freeze, 1);
    assert_string_equal(g->freeze[0].reason, "new year");
    dq_gates_free(g);
    dq_config_free(cfg);

    /* mistakes, said without a position (there is none) */
    root = parse("{\"executor\":{\"lock_tll\":\"10s\"}}");
    cfg = dq_config_from_json(root, "t.json", err, sizeof err);
    cJSON_Delete(root);
    assert_non_null(cfg);
    assert_int_equal(dq_exec_settings_load(cfg, &es, err, sizeof err), -1);
    assert_string_equal(err, "executor: unknown key 'lock_tll' (known: lock_ttl, lock_wait, "
                             "cancel_on_timeout, cancel_wait, orphan_scan)");
    dq_config_free(cfg);

    root = parse("{\"redis\":{\"tmeout\":\"2s\"}}");
    assert_null(dq_config_from_json(root, "t.json", err, sizeof err));
    assert_string_equal(err, "t.json: redis: unknown key 'tmeout' (known: url, timeout)");
    cJSON_Delete(root);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The same loaders on a YAML file: every mistake comes with the file's path and line. */
static void test_yaml_file_positions(void **state)
{
    (void)state;
    char dir[64], path[128], err[512] = "", want[512];
    dq_notify_config nc;
    dq_exec_settings es;

    assert_int_equal(dq_test_tmpdir(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/deployq.yaml", dir);
    write_file(path, "# line 1\n"
                     "notifications:\n"
                     "  webhook: https://hooks.example/all\n"
                     "  slak: https://hooks.example/typo\n"
                     "executor:\n"
                     "  lock_ttl:\n"
                     "    10 minutes\n"
                     "services:\n"
                     "  api:\n"
                     "    environments:\n"
                     "      prod:\n"
                     "        freeze:\n"
                     "          - from: \"2027-01-01T00:00:00Z\"\n"
                     "            until: \"2027-01-02T00:00:00Z\"\n"
                     "            raeson: typo\n");
    dq_config *cfg = dq_config_load(path, err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);

    assert_int_equal(dq_notify_config_load(cfg, "api", "prod", &nc, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:4: notifications: unknown key 'slak' " NOTIFY_KNOWN, path);
    assert_string_equal(err, want);

    /* a value on the line after its key: the value's line */
    assert_int_equal(dq_exec_settings_load(cfg, &es, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:7: executor.lock_ttl: expected a duration such as 30s", path);
    assert_string_equal(err, want);

    /* an unknown key deep in a list: that key's own line */
    assert_null(dq_gates_load(cfg, "api", "prod", err, sizeof err));
    snprintf(want, sizeof want,
             "%s:15: services.api.environments.prod.freeze: entry 1: unknown key 'raeson' "
             "(known: from, until, reason)",
             path);
    assert_string_equal(err, want);
    dq_config_free(cfg);

    /* config.c's own sections: the same form, at the key */
    write_file(path, "redis:\n  url: redis://x\n\n  tmeout: 2s\n");
    assert_null(dq_config_load(path, err, sizeof err));
    snprintf(want, sizeof want, "%s:4: redis: unknown key 'tmeout' (known: url, timeout)", path);
    assert_string_equal(err, want);

    assert_int_equal(dq_test_rm_rf(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_keys),
        cmocka_unit_test(test_notify_from_json),
        cmocka_unit_test(test_config_from_json),
        cmocka_unit_test(test_yaml_file_positions),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
