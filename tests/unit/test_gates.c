/*
 * test_gates.c - gates.h: reading an environment's gate keys (and their errors with
 * "path:line: key: message"), the freeze test at its boundaries, the drift gate through a
 * drift_check command and through the Railway double's variables query, the comparison
 * with the `requires` environment (drift_ignore), failing closed when the variables cannot
 * be read, and that variable values never reach a report; values by keyed hash (the HMAC
 * against Python's, drift_allow, names-only lines, the recorded hash sets) and the `drift`
 * section's key and scan interval.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fakes/fake_server.h"
#include "config.h"
#include "gates.h"
#include "json.h"
#include "util.h"

#define HEAD                                                                                   \
    "services:\n"                                                                          \
    "  api:\n"                                                                             \
    "    environments:\n"

static dq_config *load(const char *yaml)
{
    char err[512];
    dq_config *cfg = dq_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof err);

    if (!cfg)
        fail_msg("config: %s", err);
    return cfg;
}

static char *gate_error(const char *yaml, const char *env)
{
    static char err[512];
    dq_config *cfg = load(yaml);
    dq_gates *g = dq_gates_load(cfg, "api", env, err, sizeof err);

    assert_null(g);
    dq_config_free(cfg);
    return err;
}

typedef struct reports {
    int n;
    char msg[8][1024];
    char code[8][32];
} reports;

static void collect(void *ctx, const char *code, const char *message)
{
    reports *r = ctx;

    if (strcmp(code, "drift") != 0 && strcmp(code, "drift_values") != 0)
        fail_msg("unexpected code %s", code);
    if (r->n < 8) {
        dq_strlcpy(r->msg[r->n], message, sizeof r->msg[0]);
        dq_strlcpy(r->code[r->n], code, sizeof r->code[0]);
    }
    r->n++;
}

static void test_empty_environment(void **state)
{
    (void)state;
    dq_config *cfg = load(HEAD "      staging: {}\n      production:\n");
    char err[512];
    dq_gates *g = dq_gates_load(cfg, "api", "staging", err, sizeof err);
    dq_gates *p = dq_gates_load(cfg, "api", "production", err, sizeof err);
    reports r = {0};

    assert_non_null(g);
    assert_non_null(p);
    assert_string_equal(g->target, "api/staging");
    assert_int_equal(g->n_freeze, 0);
    assert_int_equal(g->n_required, 0);
    assert_null(dq_gates_frozen(g, dq_now_ms()));
    assert_int_equal(dq_gates_can_read_vars(g), 0);
    assert_int_equal(g->approval_timeout_ms, 24LL * 3600 * 1000);
    assert_int_equal(g->needs_succeeded, 0);
    /* Nothing declared, nothing to compare: the gate does nothing. */
    assert_int_equal(dq_gates_check_drift(p, g, collect, &r), 0);
    assert_int_equal(r.n, 0);
    assert_null(dq_gates_load(cfg, "api", "nope", err, sizeof err));
    assert_string_equal(err, "(config): service 'api' has no environment 'nope'");
    dq_gates_free(g);
    dq_gates_free(p);
    dq_gates_free(NULL);
    dq_config_free(cfg);
}

static void test_freeze_windows(void **state)
{
    (void)state;
    dq_config *cfg = load(HEAD "      production:\n"
                               "        freeze:\n"
                               "          - from: 2026-12-20T00:00:00Z\n"
                               "            until: 2027-01-02T00:00:00Z\n"
                               "            reason: year end\n"
                               "          - {from: \"2026-11-27T16:00:00+01:00\", until: \"2026-11-27T18:00:00+01:00\"}\n"
                               "        promotion_needs: succeeded\n"
                               "        approval_timeout: 2h\n");
    char err[512];
    dq_gates *g = dq_gates_load(cfg, "api", "production", err, sizeof err);
    int64_t from, until, t;

    assert_non_null(g);
    assert_int_equal(g->n_freeze, 2);
    assert_int_equal(g->needs_succeeded, 1);
    assert_int_equal(g->approval_timeout_ms, 2LL * 3600 * 1000);
    assert_int_equal(dq_time_parse("2026-12-20T00:00:00Z", &from), 0);
    assert_int_equal(dq_time_parse("2027-01-02T00:00:00Z", &until), 0);
    assert_null(dq_gates_frozen(g, from - 1));
    assert_ptr_equal(dq_gates_frozen(g, from), &g->freeze[0]);
    assert_string_equal(dq_gates_frozen(g, until - 1)->reason, "year end");
    assert_null(dq_gates_frozen(g, until)); /* until is exclusive */
    assert_int_equal(dq_time_parse("2026-11-27T15:30:00Z", &t), 0);
    assert_ptr_equal(dq_gates_frozen(g, t), &g->freeze[1]);
    assert_string_equal(g->freeze[1].reason, "change freeze"); /* the default */
    assert_int_equal(dq_time_parse("2026-11-27T17:00:00Z", &t), 0);
    assert_null(dq_gates_frozen(g, t));
    dq_gates_free(g);
    dq_config_free(cfg);
}

static void test_errors(void **state)
{
    (void)state;
    assert_string_equal(gate_error(HEAD "      production:\n        freeze: soon\n", "production"),
                        "(config):5: services.api.environments.production.freeze: must be a list of {from, until, reason}");
    assert_string_equal(gate_error(HEAD "      production:\n        freeze:\n          - {from: yesterday, until: \"2027-01-02T00:00:00Z\"}\n",
                                   "production"),
                        "(config):5: services.api.environments.production.freeze: entry 1: from must be an RFC 3339 time");
    assert_string_equal(gate_error(HEAD "      production:\n        freeze:\n          - {from: \"2027-01-02T00:00:00Z\", until: \"2027-01-01T00:00:00Z\"}\n",
                                   "production"),
                        "(config):5: services.api.environments.production.freeze: entry 1: until must be after from");
    assert_string_equal(gate_error(HEAD "      production:\n        freeze:\n          - {form: \"2027-01-02T00:00:00Z\"}\n",
                                   "production"),
                        /* at the unknown key itself (dq_config_check_keys): its own line */
                        "deployq.yaml:6: services.api.environments.production.freeze: entry 1: unknown key 'form' (known: from, until, reason)");
    assert_string_equal(gate_error(HEAD "      production:\n        required_vars: [DATABASE_URL]\n", "production"),
                        "(config):5: services.api.environments.production.required_vars: nothing can read the variables: "
                        "add drift_check or a railway provider with project_id");
    assert_string_equal(gate_error(HEAD "      production:\n        required_vars: [\"A=1\"]\n        drift_check: [env]\n",
                                   "production"),
                        "(config):5: services.api.environments.production.required_vars: entry 1 is not a variable name");
    assert_string_equal(gate_error(HEAD "      production:\n        promotion_needs: deployed\n", "production"),
                        "(config):5: services.api.environments.production.promotion_needs: must be 'verified' or 'succeeded'");
    assert_string_equal(gate_error(HEAD "      production:\n        drift_check: []\n", "production"),
                        "(config):5: services.api.environments.production.drift_check: must be a non-empty list: the program and its arguments");
    assert_string_equal(gate_error(HEAD "      production:\n        approval_timeout: never\n", "production"),
                        "(config):5: services.api.environments.production.approval_timeout: must be a duration such as 30s, 5m, 24h");
    assert_string_equal(gate_error(HEAD "      production:\n        drift_provider: rw\n", "production"),
                        "(config):5: services.api.environments.production.drift_provider: 'rw' is not in this environment's providers");
    assert_string_equal(gate_error(HEAD "      production:\n        required_vars: [A]\n        providers:\n"
                                        "          - {type: railway, service_id: s, environment_id: e, token: t}\n",
                                   "production"),
                        "(config):6: services.api.environments.production.providers: the railway provider needs project_id to read variables (required_vars)");
}

static void test_drift_command(void **state)
{
    (void)state;
    /* printf (no shell): staging has A B C D, production A B=secret-value (a value is cut). */
    dq_config *cfg = load(HEAD "      staging:\n"
                               "        drift_check: [printf, \"A\\nB\\nC\\nD\\n\"]\n"
                               "      production:\n"
                               "        requires: staging\n"
                               "        required_vars: [A, B, E, F]\n"
                               "        drift_ignore: [D]\n"
                               "        drift_check: [printf, \"A\\nB=secret-value\\n\\n# comment\\n\"]\n");
    char err[512];
    dq_gates *st = dq_gates_load(cfg, "api", "staging", err, sizeof err);
    dq_gates *pr = dq_gates_load(cfg, "api", "production", err, sizeof err);
    char **names;
    size_t n;
    reports r = {0};

    assert_non_null(st);
    assert_non_null(pr);
    assert_int_equal(dq_gates_read_vars(pr, &names, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "A");
    assert_string_equal(names[1], "B");
    dq_gates_names_free(names, n);
    assert_int_equal(dq_gates_check_drift(pr, st, collect, &r), 2);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.msg[0], "required variables missing in api/production: E, F");
    assert_string_equal(r.msg[1], "variables present in api/staging but missing in api/production: C");
    assert_null(strstr(r.msg[0], "secret-value"));
    /* Without a source only the required variables count. */
    memset(&r, 0, sizeof r);
    assert_int_equal(dq_gates_check_drift(pr, NULL, collect, &r), 1);
    dq_gates_free(st);
    dq_gates_free(pr);
    dq_config_free(cfg);
}

static void test_drift_fails_closed(void **state)
{
    (void)state;
    dq_config *cfg = load(HEAD "      a:\n        required_vars: [A]\n        drift_check: [\"false\"]\n"
                               "      b:\n        required_vars: [A]\n        drift_check: [/nonexistent/program]\n"
                               "      c:\n        required_vars: [A]\n        drift_check: [sleep, \"5\"]\n        drift_timeout: 300ms\n");
    char err[512];
    reports r = {0};
    dq_gates *g;
    int64_t t0;

    g = dq_gates_load(cfg, "api", "a", err, sizeof err);
    assert_int_equal(dq_gates_check_drift(g, NULL, collect, &r), 1);
    assert_string_equal(r.msg[0], "cannot read the variables of api/a: drift_check false failed (exit 1)");
    dq_gates_free(g);
    g = dq_gates_load(cfg, "api", "b", err, sizeof err);
    assert_int_equal(dq_gates_check_drift(g, NULL, collect, &r), 1);
    assert_string_equal(r.msg[1], "cannot read the variables of api/b: drift_check /nonexistent/program could not be run");
    dq_gates_free(g);
    g = dq_gates_load(cfg, "api", "c", err, sizeof err);
    t0 = dq_mono_ms();
    assert_int_equal(dq_gates_check_drift(g, NULL, collect, &r), 1);
    assert_true(dq_mono_ms() - t0 < 3000);
    assert_string_equal(r.msg[2], "cannot read the variables of api/c: drift_check sleep did not finish within 300 ms");
    dq_gates_free(g);
    dq_config_free(cfg);
}

static void test_drift_railway(void **state)
{
    (void)state;
    dq_fake f;
    char yaml[2048], err[512];
    dq_config *cfg;
    dq_gates *st, *pr;
    reports r = {0};
    cJSON *calls;
    const cJSON *call;

    if (dq_fake_start(&f, "railway") != 0)
        fail_msg("railway double did not start");
    assert_int_equal(dq_fake_script(&f, "{\"variables\": {"
                                        "\"env-stg\": {\"DATABASE_URL\": \"postgres://stg\", \"REDIS_URL\": \"r\", \"SENTRY_DSN\": \"s\"},"
                                        "\"env-prd/svc-1\": {\"DATABASE_URL\": \"postgres://very-secret\"}}}"),
                     0);
    setenv("DQ_TEST_RAILWAY_TOKEN", "rw-token-123", 1);
    snprintf(yaml, sizeof yaml,
             "providers:\n"
             "  rw-staging: {type: railway, base_url: \"%s/graphql/v2\", token_env: DQ_TEST_RAILWAY_TOKEN,\n"
             "               project_id: prj, service_id: svc-1, environment_id: env-stg}\n"
             HEAD "      staging:\n"
             "        providers: [rw-staging]\n"
             "      production:\n"
             "        requires: staging\n"
             "        required_vars: [DATABASE_URL, STRIPE_KEY]\n"
             "        drift_ignore: [SENTRY_DSN]\n"
             "        providers:\n"
             "          - {type: github-actions, owner: o, repo: r, workflow: w}\n"
             "          - {type: railway, name: rw, base_url: \"%s/graphql/v2\", token_env: DQ_TEST_RAILWAY_TOKEN,\n"
             "             token_kind: project, project_id: prj, service_id: svc-1, environment_id: env-prd}\n"
             "        drift_provider: rw\n",
             f.base, f.base);
    cfg = load(yaml);
    st = dq_gates_load(cfg, "api", "staging", err, sizeof err);
    pr = dq_gates_load(cfg, "api", "production", err, sizeof err);
    assert_non_null(st);
    assert_non_null(pr);
    assert_int_equal(dq_gates_can_read_vars(st), 1);
    /* DATABASE_URL differs in value (postgres://stg, postgres://very-secret): by name only */
    assert_int_equal(dq_gates_check_drift(pr, st, collect, &r), 3);
    assert_string_equal(r.msg[0], "required variables missing in api/production: STRIPE_KEY");
    assert_string_equal(r.msg[1], "variables present in api/staging but missing in api/production: REDIS_URL");
    assert_string_equal(r.code[2], "drift_values");
    assert_string_equal(r.msg[2], "variables whose values differ between api/staging and api/production: "
                                  "DATABASE_URL (list those expected to differ in drift_allow)");
    for (int i = 0; i < 3; i++) {
        assert_null(strstr(r.msg[i], "very-secret"));
        assert_null(strstr(r.msg[i], "postgres://"));
    }
    calls = dq_fake_calls(&f);
    assert_non_null(calls);
    assert_int_equal(dq_fake_count(calls, "POST", "/graphql/v2"), 2);
    call = dq_fake_call(calls, "POST", "/graphql/v2", 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(call, "auth"), "scheme")->valuestring,
                        "Project-Access-Token");
    assert_string_equal(dq_json_str(cJSON_GetObjectItem(cJSON_GetObjectItem(call, "body"), "variables"), "environmentId"),
                        "env-prd");
    call = dq_fake_call(calls, "POST", "/graphql/v2", 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(call, "auth"), "scheme")->valuestring, "Bearer");
    cJSON_Delete(calls);
    /* An environment the API does not know: GraphQL errors in a 200 fail the gate. */
    assert_int_equal(dq_fake_script(&f, "{\"variables\": {}}"), 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(dq_gates_check_drift(pr, NULL, collect, &r), 1);
    assert_string_equal(r.msg[0], "cannot read the variables of api/production: railway variables: Environment not found");
    dq_gates_free(st);
    dq_gates_free(pr);
    dq_config_free(cfg);
    dq_fake_stop(&f);
    unsetenv("DQ_TEST_RAILWAY_TOKEN");
}

/* The keyed hash: 32 hex digits, the same for the same key, service, name and value, and
 * different when any of them changes; the parts cannot run into each other. */
static void test_drift_hash(void **state)
{
    (void)state;
    dq_drift_key k = {.len = 16}, k2 = {.len = 16};
    char a[DQ_DRIFT_HASH_HEX + 1], b[DQ_DRIFT_HASH_HEX + 1];

    memcpy(k.k, "0123456789abcdef", 16);
    memcpy(k2.k, "0123456789abcdeF", 16);
    assert_int_equal(dq_drift_hash(&k, "api", "DB", "postgres://x", 12, a), 0);
    assert_int_equal(strlen(a), DQ_DRIFT_HASH_HEX);
    assert_int_equal(strspn(a, "0123456789abcdef"), DQ_DRIFT_HASH_HEX);
    assert_int_equal(dq_drift_hash(&k, "api", "DB", "postgres://x", 12, b), 0);
    assert_string_equal(a, b);
    assert_int_equal(dq_drift_hash(&k2, "api", "DB", "postgres://x", 12, b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(dq_drift_hash(&k, "web", "DB", "postgres://x", 12, b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(dq_drift_hash(&k, "api", "DB", "postgres://y", 12, b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(dq_drift_hash(&k, "api", "ab", "c", 1, a), 0);
    assert_int_equal(dq_drift_hash(&k, "api", "a", "bc", 2, b), 0);
    assert_string_not_equal(a, b);
    /* HMAC-SHA256("0123456789abcdef", "api\0DB\0postgres://x"), its first 16 bytes, as
     * Python's hmac module computes it */
    assert_int_equal(dq_drift_hash(&k, "api", "DB", "postgres://x", 12, a), 0);
    assert_string_equal(a, "3457a704d8486b4cd1f70baf81ef39ac");
}

/* Values compared through drift_check's NAME=VALUE lines: a value that differs is refused
 * by name (drift_values), drift_allow lets one differ, a name printed without a value is
 * compared by name only, and no value reaches a report or the hashes' record. */
static void test_drift_values(void **state)
{
    (void)state;
    dq_config *cfg = load(HEAD "      staging:\n"
                               "        drift_check: [printf, \"A=1\\nB=canary-stg\\nC=same\\nD=host-stg\\nE\\nG=x\\n\"]\n"
                               "      production:\n"
                               "        requires: staging\n"
                               "        drift_allow: [D]\n"
                               "        drift_ignore: [G]\n"
                               "        drift_check: [printf, \"A=1\\nB=canary-prd\\nC=same\\nD=host-prd\\nE=e\\nG=y\\nX=only\\n\"]\n");
    char err[512], *json;
    dq_gates *st = dq_gates_load(cfg, "api", "staging", err, sizeof err);
    dq_gates *pr = dq_gates_load(cfg, "api", "production", err, sizeof err);
    dq_drift_key k;
    dq_drift_vars pv, sv, back;
    dq_drift_diff d;
    reports r = {0};
    char key_id[17], version[32];
    int64_t at;

    assert_non_null(st);
    assert_non_null(pr);
    dq_drift_key_random(&k);
    assert_int_equal(dq_gates_read_hashed(pr, &k, &pv, err, sizeof err), 0);
    assert_int_equal(dq_gates_read_hashed(st, &k, &sv, err, sizeof err), 0);
    assert_int_equal(pv.n, 7);
    assert_string_equal(pv.v[0].name, "A");
    assert_int_equal(strlen(pv.v[0].hash), DQ_DRIFT_HASH_HEX);
    assert_string_equal(dq_drift_vars_find(&sv, "E")->hash, ""); /* a name only */
    assert_string_equal(dq_drift_vars_find(&pv, "A")->hash, dq_drift_vars_find(&sv, "A")->hash);
    assert_int_equal(dq_drift_compare(&pv, &sv, pr, &d), 0);
    assert_int_equal(d.n_missing, 0);
    assert_int_equal(d.n_differs, 1);
    assert_string_equal(d.differs[0], "B");
    assert_int_equal(d.n_allowed, 1);
    assert_string_equal(d.allowed[0], "D");
    assert_int_equal(d.n_extra, 1);
    assert_string_equal(d.extra[0], "X");
    assert_int_equal(dq_drift_diff_drifted(&d), 1);
    dq_drift_diff_clear(&d);

    /* the record: names and hashes, never a value; read back the same */
    json = dq_drift_record_json(&k, &pv, "v7", 1700000000000LL);
    assert_non_null(json);
    assert_null(strstr(json, "canary"));
    assert_null(strstr(json, "host-prd"));
    assert_int_equal(dq_drift_record_parse(json, &back, &at, version, sizeof version, key_id), 0);
    assert_int_equal(back.n, pv.n);
    assert_string_equal(version, "v7");
    assert_string_equal(key_id, k.id);
    assert_true(at == 1700000000000LL);
    for (size_t i = 0; i < back.n; i++) {
        assert_string_equal(back.v[i].name, pv.v[i].name);
        assert_string_equal(back.v[i].hash, pv.v[i].hash);
    }
    /* the same set compared with itself: no drift */
    assert_int_equal(dq_drift_compare(&pv, &back, NULL, &d), 0);
    assert_int_equal(dq_drift_diff_drifted(&d) + (int)d.n_extra, 0);
    dq_drift_diff_clear(&d);
    free(json);
    dq_drift_vars_clear(&back);
    assert_int_equal(dq_drift_record_parse("{\"vars\":{}}", &back, NULL, NULL, 0, NULL), -1);

    /* the gate: B by name, with code drift_values; the target's hashes handed back */
    assert_int_equal(dq_gates_check_drift_values(pr, st, &k, collect, &r, &back), 1);
    assert_string_equal(r.code[0], "drift_values");
    assert_string_equal(r.msg[0], "variables whose values differ between api/staging and api/production: B "
                                  "(list those expected to differ in drift_allow)");
    assert_null(strstr(r.msg[0], "canary"));
    assert_int_equal(back.n, 7);
    assert_string_equal(dq_drift_vars_find(&back, "B")->hash, dq_drift_vars_find(&pv, "B")->hash);
    dq_drift_vars_clear(&back);
    dq_drift_vars_clear(&pv);
    dq_drift_vars_clear(&sv);
    dq_gates_free(st);
    dq_gates_free(pr);
    dq_config_free(cfg);
}

/* drift.key: from the file (at least 16 characters, file:line otherwise), else
 * DEPLOYQ_DRIFT_KEY, else random and not persistent; scan_interval a duration, 0 off. */
static void test_drift_settings(void **state)
{
    (void)state;
    dq_drift_settings s, s2;
    char err[512];
    dq_config *cfg;

    unsetenv("DEPLOYQ_DRIFT_KEY");
    cfg = load("drift:\n  key: short\n");
    assert_int_equal(dq_drift_settings_load(cfg, &s, err, sizeof err), -1);
    assert_string_equal(err, "deployq.yaml:2: drift.key: expected 16 to 128 characters (e.g. openssl rand -hex 32)");
    dq_config_free(cfg);
    cfg = load("drift:\n  kee: 1\n");
    assert_int_equal(dq_drift_settings_load(cfg, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown key 'kee'"));
    dq_config_free(cfg);
    cfg = load("drift:\n  scan_interval: soon\n");
    assert_int_equal(dq_drift_settings_load(cfg, &s, err, sizeof err), -1);
    dq_config_free(cfg);

    cfg = load("drift:\n  key: 0123456789abcdef0123\n  scan_interval: 10m\n");
    assert_int_equal(dq_drift_settings_load(cfg, &s, err, sizeof err), 0);
    assert_int_equal(s.key.persistent, 1);
    assert_true(s.scan_interval_ms == 600000);
    assert_int_equal(dq_drift_settings_load(cfg, &s2, err, sizeof err), 0);
    assert_string_equal(s.key.id, s2.key.id); /* the same key, the same id */
    dq_config_free(cfg);

    cfg = load("services:\n  api:\n    environments:\n      a: {}\n");
    assert_int_equal(dq_drift_settings_load(cfg, &s, err, sizeof err), 0);
    assert_int_equal(s.key.persistent, 0);
    assert_true(s.scan_interval_ms == 0);
    assert_int_equal(dq_drift_settings_load(cfg, &s2, err, sizeof err), 0);
    assert_string_not_equal(s.key.id, s2.key.id); /* random each time */
    setenv("DEPLOYQ_DRIFT_KEY", "from-the-environment-123", 1);
    assert_int_equal(dq_drift_settings_load(cfg, &s, err, sizeof err), 0);
    assert_int_equal(s.key.persistent, 1);
    setenv("DEPLOYQ_DRIFT_KEY", "short", 1);
    assert_int_equal(dq_drift_settings_load(cfg, &s, err, sizeof err), -1);
    assert_null(strstr(err, "short"));
    unsetenv("DEPLOYQ_DRIFT_KEY");
    dq_drift_settings_clear(&s);
    dq_drift_settings_clear(&s2);
    dq_config_free(cfg);
}

static void test_state_key(void **state)
{
    (void)state;
    char buf[128];

    assert_string_equal(dq_gates_state_key("verified", "api", "staging", "3f2c1ab", buf, sizeof buf),
                        "deployq:verified:api:staging:3f2c1ab");
}

/* A production that needs a version verified in a staging nothing watches can never be
 * promoted: reported at the line of its requires:, with what to add. */
static void test_promotion_unverifiable(void **state)
{
    (void)state;
    char msg[1024] = "";
    dq_config *cfg = load(HEAD "      staging: {}\n"
                               "      production:\n"
                               "        requires: staging\n");

    assert_int_equal(dq_gates_promotion_unverifiable(cfg, "api", "production", msg, sizeof msg), 1);
    /* a file loaded from memory is named deployq.yaml in messages (dq_config_where) */
    assert_string_equal(msg, "deployq.yaml:6: services.api.environments.production.requires: staging: "
                             "staging has no monitor, so nothing ever emits deploy.verified there "
                             "and production can never be promoted; add a monitor with probes to "
                             "services.api.environments.staging (docs/configuration.md, Probes "
                             "and monitoring) or set promotion_needs: succeeded on production");
    assert_int_equal(dq_gates_promotion_unverifiable(cfg, "api", "staging", msg, sizeof msg), 0);
    assert_int_equal(dq_gates_promotion_unverifiable(cfg, "api", "nope", msg, sizeof msg), 0);
    dq_config_free(cfg);

    /* promotion_needs: succeeded asks only for the executor's outcome */
    cfg = load(HEAD "      staging: {}\n"
                    "      production: {requires: staging, promotion_needs: succeeded}\n");
    assert_int_equal(dq_gates_promotion_unverifiable(cfg, "api", "production", msg, sizeof msg), 0);
    dq_config_free(cfg);

    /* a watched staging verifies */
    cfg = load(HEAD "      staging:\n"
                    "        monitor: {probes: [{name: h, type: http, url: \"http://x/h\"}]}\n"
                    "      production: {requires: staging, promotion_needs: verified}\n");
    assert_int_equal(dq_gates_promotion_unverifiable(cfg, "api", "production", msg, sizeof msg), 0);
    dq_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_environment), cmocka_unit_test(test_freeze_windows),
        cmocka_unit_test(test_errors),            cmocka_unit_test(test_drift_command),
        cmocka_unit_test(test_drift_fails_closed), cmocka_unit_test(test_drift_railway),
        cmocka_unit_test(test_drift_hash),        cmocka_unit_test(test_drift_values),
        cmocka_unit_test(test_drift_settings),
        cmocka_unit_test(test_state_key),         cmocka_unit_test(test_promotion_unverifiable),
    };
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
