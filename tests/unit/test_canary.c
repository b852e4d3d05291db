/*
 * test_canary.c - canary releases (common/domain/canary.c): which deploys are canaries, the
 * `canary:` section with its defaults and each of its errors at its own line, and the
 * rollout itself without Kafka (events into a list): a first deploy goes straight to 100,
 * a good canary walks its steps and is promoted, a failing one is stopped at its first step
 * with its weight set back to 0 and the events in the design's order. The colors are two
 * tests/fakes/health.py; the router a command that keeps the weights in a file.
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
#include "canary.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "testutil.h"

/* A configuration whose target api/prod has the given environment keys (from line 5). */
static dq_config *config_with(const char *env_yaml)
{
    char err[512];
    dq_config *cfg = dq_test_config_env(env_yaml, "canary.yaml", err, sizeof err);

    if (!cfg)
        fail_msg("config: %s", err);
    return cfg;
}

/* blue_green with a weighted router: 6 lines, from line 5 */
static const char bg_yaml[] =
    "        blue_green:\n"
    "          colors:\n"
    "            blue: {providers: [{type: command, name: b, argv: [\"true\"]}]}\n"
    "            green: {providers: [{type: command, name: g, argv: [\"true\"]}]}\n"
    "          probe: {url: \"http://{color}/health\"}\n"
    "          router: {type: haproxy, name: edge, socket: /nonexistent/admin.sock, backend: web, "
    "servers: {blue: web_blue, green: web_green}}\n";

/* dq_canary_load on bg_yaml + the canary section given (from line 11). */
static int load(const char *canary_yaml, dq_canary *c, char *err, size_t errlen)
{
    char env[6144];
    dq_config *cfg;
    int rc;

    snprintf(env, sizeof env, "%s%s", bg_yaml, canary_yaml);
    cfg = config_with(env);
    rc = dq_canary_load(cfg, "api", "prod", c, err, errlen);
    dq_config_free(cfg);
    return rc;
}

static void test_applies(void **state)
{
    dq_config *cfg;

    (void)state;
    cfg = config_with("        strategy: canary\n");
    assert_int_equal(dq_canary_applies(cfg, "api", "prod", NULL), 1);
    /* deploy.validated says "rolling" when the request named no strategy */
    assert_int_equal(dq_canary_applies(cfg, "api", "prod", "rolling"), 1);
    assert_int_equal(dq_canary_applies(cfg, "api", "prod", "blue-green"), 0);
    assert_int_equal(dq_canary_applies(cfg, "api", "plain", NULL), 0);
    assert_int_equal(dq_canary_applies(cfg, "api", "plain", "canary"), 1);
    assert_int_equal(dq_canary_configured(cfg, "api", "prod"), 0);
    dq_config_free(cfg);
    cfg = config_with("        strategy: blue-green\n");
    assert_int_equal(dq_canary_applies(cfg, "api", "prod", "rolling"), 0);
    assert_int_equal(dq_canary_applies(cfg, "api", "prod", "canary"), 1);
    dq_config_free(cfg);
}

static void test_config_good(void **state)
{
    dq_canary c;
    char err[512];

    (void)state;
    /* defaults */
    assert_int_equal(load("        canary: {steps: [100]}\n", &c, err, sizeof err), 0);
    assert_int_equal(c.n_steps, 1);
    assert_int_equal(c.max_step_time_ms, 300000);
    assert_int_equal(c.duration_ms, 30000);
    assert_int_equal(c.interval_ms, 500);
    assert_int_equal(c.criteria.min_samples, 20);
    assert_true(c.criteria.error_tolerance == 0.01);
    assert_true(c.criteria.max_error_rate == 0.05);
    assert_true(c.criteria.alpha == 0.05);
    assert_true(c.criteria.latency_tolerance == 0.10);
    assert_int_equal(c.steps[0].weight, 100);
    assert_int_equal(c.steps[0].pause, 0);
    assert_int_equal(c.steps[0].hold_ms, 30000);

    /* the design's example */
    assert_int_equal(load("        canary:\n"
                          "          steps:\n"
                          "            - {weight: 5, analysis: 10s}\n"
                          "            - {weight: 25, analysis: 10s}\n"
                          "            - {weight: 50, pause: 5s}\n"
                          "            - 100\n"
                          "          max_step_time: 2m\n"
                          "          analysis:\n"
                          "            duration: 20s\n"
                          "            interval: 200ms\n"
                          "            min_samples: 10\n"
                          "            error_tolerance: 2%\n"
                          "            max_error_rate: 0.1\n"
                          "            latency: {alpha: 0.01, tolerance: 25%}\n",
                          &c, err, sizeof err),
                     0);
    assert_int_equal(c.n_steps, 4);
    assert_int_equal(c.steps[0].weight, 5);
    assert_int_equal(c.steps[0].hold_ms, 10000);
    assert_int_equal(c.steps[2].weight, 50);
    assert_int_equal(c.steps[2].pause, 1);
    assert_int_equal(c.steps[2].hold_ms, 5000);
    assert_int_equal(c.steps[3].weight, 100);
    assert_int_equal(c.steps[3].pause, 0);
    assert_int_equal(c.steps[3].hold_ms, 20000); /* a bare number: analysis.duration */
    assert_int_equal(c.max_step_time_ms, 120000);
    assert_int_equal(c.interval_ms, 200);
    assert_int_equal(c.criteria.min_samples, 10);
    assert_true(c.criteria.error_tolerance > 0.0199 && c.criteria.error_tolerance < 0.0201);
    assert_true(c.criteria.max_error_rate > 0.0999 && c.criteria.max_error_rate < 0.1001);
    assert_true(c.criteria.alpha == 0.01);
    assert_true(c.criteria.latency_tolerance > 0.2499 && c.criteria.latency_tolerance < 0.2501);
}

/* Each bad section: the message, at the line of what is wrong. */
static void test_config_bad(void **state)
{
    static const struct {
        const char *yaml, *err;
    } cases[] = {
        {"        strategy: canary\n",
         "deployq.yaml:4: services.api.environments.prod.canary: required for strategy canary"},
        {"        canary: [5, 100]\n",
         "deployq.yaml:11: services.api.environments.prod.canary: expected a mapping with steps"},
        {"        canary:\n"
         "          max_step_time: 2m\n",
         "deployq.yaml:11: services.api.environments.prod.canary.steps: required, a list of 1 to 32 steps ending with 100"},
        {"        canary:\n"
         "          steps: [5, 100]\n"
         "          colour: green\n",
         "deployq.yaml:13: services.api.environments.prod.canary: unknown key 'colour' (known: steps, max_step_time, analysis)"},
        {"        canary:\n"
         "          steps:\n"
         "            - 5\n"
         "            - 0\n"
         "            - 100\n",
         "deployq.yaml:14: services.api.environments.prod.canary.steps[1]: expected a whole number 1 to 100 (the canary's % of traffic)"},
        {"        canary:\n"
         "          steps:\n"
         "            - {weight: 2.5, analysis: 10s}\n"
         "            - 100\n",
         "deployq.yaml:13: services.api.environments.prod.canary.steps[0].weight: expected a whole number 1 to 100 (the canary's % of traffic)"},
        {"        canary:\n"
         "          steps:\n"
         "            - 25\n"
         "            - 5\n"
         "            - 100\n",
         "deployq.yaml:14: services.api.environments.prod.canary.steps[1]: weight 5 after 25: the weights must increase"},
        {"        canary:\n"
         "          steps:\n"
         "            - 5\n"
         "            - 50\n",
         "deployq.yaml:14: services.api.environments.prod.canary.steps: the last step must be 100 (the canary takes all traffic)"},
        {"        canary:\n"
         "          steps:\n"
         "            - {weight: 5, analysis: 10s, pause: 5s}\n"
         "            - 100\n",
         "deployq.yaml:13: services.api.environments.prod.canary.steps[0]: analysis or pause, not both"},
        {"        canary:\n"
         "          steps:\n"
         "            - {weight: 5, analysis: soon}\n"
         "            - 100\n",
         "deployq.yaml:13: services.api.environments.prod.canary.steps[0].analysis: expected a duration such as 10s"},
        {"        canary:\n"
         "          steps:\n"
         "            - {weight: 5, hold: 10s}\n"
         "            - 100\n",
         "deployq.yaml:13: services.api.environments.prod.canary.steps[0]: unknown key 'hold' (known: weight, analysis, pause)"},
        {"        canary:\n"
         "          steps:\n"
         "            - {weight: 5, analysis: 10m}\n"
         "            - 100\n",
         "deployq.yaml:13: services.api.environments.prod.canary.steps[0]: holds 600000 ms, longer than max_step_time (300000 ms)"},
        {"        canary:\n"
         "          steps: [100]\n"
         "          max_step_time: forever\n",
         "deployq.yaml:13: services.api.environments.prod.canary.max_step_time: expected a duration such as 5m"},
        {"        canary:\n"
         "          steps: [100]\n"
         "          analysis:\n"
         "            interval: 200ms\n"
         "            min_samples: 3\n",
         "deployq.yaml:15: services.api.environments.prod.canary.analysis.min_samples: expected a whole number 8 to 100000"},
        {"        canary:\n"
         "          steps: [100]\n"
         "          analysis:\n"
         "            error_tolerance: lots\n",
         "deployq.yaml:14: services.api.environments.prod.canary.analysis.error_tolerance: expected a percentage such as 1% (or a fraction 0 to 1)"},
        {"        canary:\n"
         "          steps: [100]\n"
         "          analysis:\n"
         "            max_error_rate: 5\n",
         "deployq.yaml:14: services.api.environments.prod.canary.analysis.max_error_rate: expected a percentage such as 1% (or a fraction 0 to 1)"},
        {"        canary:\n"
         "          steps: [100]\n"
         "          analysis:\n"
         "            latency: {alpha: 0.7}\n",
         "deployq.yaml:14: services.api.environments.prod.canary.analysis.latency.alpha: expected a number above 0 and below 0.5"},
        {"        canary:\n"
         "          steps: [100]\n"
         "          analysis:\n"
         "            latency: {tolerance: fast}\n",
         "deployq.yaml:14: services.api.environments.prod.canary.analysis.latency.tolerance: expected a percentage such as 10%"},
        {"        canary:\n"
         "          steps: [100]\n"
         "          analysis:\n"
         "            interval: 1ms\n",
         "deployq.yaml:14: services.api.environments.prod.canary.analysis.interval: expected a duration such as 500ms"},
    };
    char env[6144], err[512];
    dq_canary c;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dq_config *cfg;

        /* the first case has no canary section at all */
        snprintf(env, sizeof env, "%s%s", i == 0 ? "" : bg_yaml, cases[i].yaml);
        cfg = config_with(env);
        err[0] = '\0';
        if (dq_canary_load(cfg, "api", "prod", &c, err, sizeof err) != -1)
            fail_msg("case %zu loaded", i);
        if (strcmp(err, cases[i].err) != 0)
            fail_msg("case %zu:\n  got  %s\n  want %s", i, err, cases[i].err);
        dq_config_free(cfg);
    }
}

/* A router that takes no weights is refused at load; a broken blue_green says why. */
static void test_config_router(void **state)
{
    dq_config *cfg;
    dq_canary c;
    char err[512];

    (void)state;
    cfg = config_with("        blue_green:\n"
                      "          colors:\n"
                      "            blue: {providers: [{type: command, name: b, argv: [\"true\"]}]}\n"
                      "            green: {providers: [{type: command, name: g, argv: [\"true\"]}]}\n"
                      "          probe: {url: \"http://{color}/health\"}\n"
                      "          router: {type: http, url: \"http://r/switch\"}\n"
                      "        canary:\n"
                      "          steps: [5, 100]\n");
    assert_int_equal(dq_canary_load(cfg, "api", "prod", &c, err, sizeof err), -1);
    assert_string_equal(err, "deployq.yaml:11: services.api.environments.prod.canary: needs a router that takes "
                             "weights (blue_green.router type haproxy, or weights for an http or command router)");
    dq_config_free(cfg);
    cfg = config_with("        canary:\n"
                      "          steps: [5, 100]\n");
    assert_int_equal(dq_canary_load(cfg, "api", "prod", &c, err, sizeof err), -1);
    assert_string_equal(err, "deployq.yaml:4: services.api.environments.prod.blue_green: required for strategy blue-green");
    dq_config_free(cfg);
}

/* ---- the rollout, events into a list ---- */

typedef struct fixture {
    dq_fake colors[2]; /* blue, green */
    char dir[256], weights[300];
    dq_event *events[32];
    size_t n_events;
    int cancel; /* what cancel_requested says */
    int continues; /* should_continue says 1 this many times, then 0; < 0: always 1 */
    int lock_lost; /* what lock_held says, negated */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);

    if (!f || dq_fake_start(&f->colors[0], "health") != 0 || dq_fake_start(&f->colors[1], "health") != 0 ||
        dq_test_tmpdir(f->dir, sizeof f->dir) != 0)
        return -1;
    snprintf(f->weights, sizeof f->weights, "%s/weights", f->dir);
    *state = f;
    return 0;
}

static void events_clear(fixture *f)
{
    for (size_t i = 0; i < f->n_events; i++)
        dq_event_free(f->events[i]);
    f->n_events = 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    events_clear(f);
    dq_fake_stop(&f->colors[0]);
    dq_fake_stop(&f->colors[1]);
    dq_test_rm_rf(f->dir);
    free(f);
    return 0;
}

/* The sink: a copy of each event, in order. */
static int list_sink(void *ctx, const dq_event *ev, char *err, size_t errlen)
{
    fixture *f = ctx;
    char *json = dq_event_encode(ev);

    (void)err;
    (void)errlen;
    if (!json || f->n_events == sizeof f->events / sizeof f->events[0])
        return -1;
    f->events[f->n_events++] = dq_event_decode(json, strlen(json), NULL, 0);
    free(json);
    return 0;
}

static int cancel_asked(void *ctx, char *by, size_t bylen)
{
    fixture *f = ctx;

    snprintf(by, bylen, "op-test");
    return f->cancel;
}

static int continue_some(void *ctx)
{
    fixture *f = ctx;

    if (f->continues < 0)
        return 1;
    return f->continues-- > 0;
}

static int lock_held(void *ctx)
{
    return !((fixture *)ctx)->lock_lost;
}

/* "canary.step,canary.analysis,..." */
static void event_types(const fixture *f, char *out, size_t len)
{
    out[0] = '\0';
    for (size_t i = 0; i < f->n_events; i++)
        snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? "," : "", f->events[i]->type);
}

static const dq_event *event_of(const fixture *f, const char *type)
{
    for (size_t i = 0; i < f->n_events; i++)
        if (strcmp(f->events[i]->type, type) == 0)
            return f->events[i];
    return NULL;
}

/* A target whose colors are the fixture's doubles and whose router is a command keeping
 * the weights in a file; steps: 50 (analysis 150ms), 100 (pause 50ms). */
static dq_config *rollout_config(const fixture *f)
{
    char env[4096];

    snprintf(env, sizeof env,
             "        blue_green:\n"
             "          colors:\n"
             "            blue: {providers: [{type: command, name: b, argv: [\"true\"]}], probe_url: \"%s/health\"}\n"
             "            green: {providers: [{type: command, name: g, argv: [\"true\"]}], probe_url: \"%s/health\"}\n"
             "          probe: {expect_status: 200, timeout: 1s}\n"
             "          router: {type: command, name: lb, argv: [\"true\"],\n"
             "                   weights_argv: [sh, -c, 'printf \"{\\\"blue\\\": %%s, \\\"green\\\": %%s}\" \"$1\" \"$2\" > %s', x, "
             "\"{weight_blue}\", \"{weight_green}\"],\n"
             "                   read_argv: [cat, \"%s\"]}\n"
             "        canary:\n"
             "          steps: [{weight: 50, analysis: 150ms}, {weight: 100, pause: 50ms}]\n"
             "          max_step_time: 2s\n"
             "          analysis: {interval: 10ms, min_samples: 8}\n",
             f->colors[0].base, f->colors[1].base, f->weights, f->weights);
    return config_with(env);
}

typedef struct run_env {
    dq_config *cfg;
    dq_canary c;
    dq_bluegreen *bg;
    dq_canary_rollout ro;
} run_env;

static void run_env_init(fixture *f, run_env *e, const char *stable_color)
{
    char err[512];

    events_clear(f);
    f->cancel = 0;
    f->continues = -1;
    f->lock_lost = 0;
    e->cfg = rollout_config(f);
    if (dq_canary_load(e->cfg, "api", "prod", &e->c, err, sizeof err) != 0)
        fail_msg("canary: %s", err);
    e->bg = dq_bg_load(e->cfg, "api", "prod", err, sizeof err);
    assert_non_null(e->bg);
    memset(&e->ro, 0, sizeof e->ro);
    e->ro.canary = &e->c;
    e->ro.bg = e->bg;
    e->ro.deployment_id = "d-1";
    e->ro.service = "api";
    e->ro.environment = "prod";
    e->ro.actor = "test@h/1";
    e->ro.fence = 7;
    e->ro.canary_color = "green";
    e->ro.stable_color = stable_color;
    e->ro.canary_version = "v2";
    e->ro.stable_version = stable_color[0] ? "v1" : NULL;
    e->ro.sink = list_sink;
    e->ro.sink_ctx = f;
    e->ro.cancel_requested = cancel_asked;
    e->ro.should_continue = continue_some;
    e->ro.lock_held = lock_held;
    e->ro.ctx = f;
}

static void run_env_free(run_env *e)
{
    dq_bg_free(e->bg);
    dq_config_free(e->cfg);
}

static void assert_weights(const fixture *f, const char *want)
{
    char *text = dq_read_file(f->weights, 256, NULL);

    assert_non_null(text);
    assert_string_equal(text, want);
    free(text);
}

/* The stable (blue) answers 200, the canary (green) status. */
static void colors_answer(fixture *f, int status)
{
    char script[64];

    snprintf(script, sizeof script, "{\"status\": %d}", status);
    assert_int_equal(dq_fake_script(&f->colors[0], "{\"status\": 200}"), 0);
    assert_int_equal(dq_fake_script(&f->colors[1], script), 0);
}

static void test_rollout_first(void **state)
{
    fixture *f = *state;
    run_env e;
    dq_canary_outcome out;
    char types[512];

    run_env_init(f, &e, "");
    assert_int_equal(dq_canary_run(&e.ro, &out), DQ_CANARY_PROMOTED);
    event_types(f, types, sizeof types);
    assert_string_equal(types, "canary.step,canary.promoted");
    assert_int_equal((int)dq_json_num(f->events[0]->data, "weight", 0), 100);
    assert_int_equal((int)dq_json_num(f->events[0]->data, "steps", 0), 1);
    assert_string_equal(dq_json_str(f->events[0]->data, "stable_color"), "blue");
    assert_weights(f, "{\"blue\": 0, \"green\": 100}");
    run_env_free(&e);
}

static void test_rollout_good(void **state)
{
    fixture *f = *state;
    run_env e;
    dq_canary_outcome out;
    char types[512];
    const dq_event *ev;

    colors_answer(f, 200);
    run_env_init(f, &e, "blue");
    assert_int_equal(dq_canary_run(&e.ro, &out), DQ_CANARY_PROMOTED);
    event_types(f, types, sizeof types);
    assert_string_equal(types, "canary.step,canary.analysis,canary.step,canary.promoted");
    ev = event_of(f, "canary.analysis");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev->data, "passed")));
    assert_string_equal(dq_json_str(ev->data, "result"), "pass");
    assert_true(dq_json_num(dq_json_get(ev->data, "canary"), "samples", 0) >= 8);
    assert_int_equal(f->events[0]->fence, 7);
    assert_string_equal(f->events[0]->version, "v2");
    assert_string_equal(dq_json_str(f->events[0]->data, "kind"), "analysis");
    assert_string_equal(dq_json_str(f->events[2]->data, "kind"), "pause");
    assert_int_equal(out.max_weight, 100);
    assert_weights(f, "{\"blue\": 0, \"green\": 100}");
    run_env_free(&e);
}

static void test_rollout_bad(void **state)
{
    fixture *f = *state;
    run_env e;
    dq_canary_outcome out;
    char types[512];
    const dq_event *ev;

    colors_answer(f, 500);
    run_env_init(f, &e, "blue");
    assert_int_equal(dq_canary_run(&e.ro, &out), DQ_CANARY_ABORTED);
    event_types(f, types, sizeof types);
    assert_string_equal(types, "canary.step,canary.analysis,canary.aborted,rollback.started,rollback.succeeded");
    assert_string_equal(out.reason, "analysis");
    assert_int_equal(out.step, 1);
    assert_int_equal(out.weight, 50);
    assert_int_equal(out.weight_restored, 1);
    assert_true(out.first_bad_ms > 0 && out.restored_ms >= out.first_bad_ms);
    assert_weights(f, "{\"blue\": 100, \"green\": 0}");
    ev = event_of(f, "canary.analysis");
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev->data, "passed")));
    assert_non_null(dq_json_str(ev->data, "first_bad_at"));
    ev = event_of(f, "canary.aborted");
    assert_string_equal(dq_json_str(ev->data, "reason"), "analysis");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev->data, "weight_restored")));
    assert_int_equal((int)dq_json_num(ev->data, "weight", 0), 50);
    assert_true(dq_json_num(ev->data, "time_to_zero_ms", -1) >= 0);
    ev = event_of(f, "rollback.succeeded");
    assert_string_equal(dq_json_str(ev->data, "method"), "canary_abort");
    assert_string_equal(dq_json_str(ev->data, "from_version"), "v2");
    assert_string_equal(dq_json_str(ev->data, "to_version"), "v1");
    assert_string_equal(dq_json_str(ev->data, "provider"), "lb");
    assert_true(dq_json_num(ev->data, "mttr_ms", -1) >= 0);
    /* what a notification's MTTR line shows: detected, decided, restored */
    assert_non_null(dq_json_str(ev->data, "detected_at"));
    assert_non_null(dq_json_str(ev->data, "decided_at"));
    assert_non_null(dq_json_str(ev->data, "restored_at"));
    run_env_free(&e);
}

static void test_rollout_cancel(void **state)
{
    fixture *f = *state;
    run_env e;
    dq_canary_outcome out;
    char types[512];

    colors_answer(f, 200);
    run_env_init(f, &e, "blue");
    f->cancel = 1;
    assert_int_equal(dq_canary_run(&e.ro, &out), DQ_CANARY_ABORTED);
    event_types(f, types, sizeof types);
    /* an operator's decision, not an incident: no rollback events */
    assert_string_equal(types, "canary.step,canary.aborted");
    assert_string_equal(out.reason, "cancelled");
    assert_string_equal(out.detail, "cancelled by op-test at step 1 (50%)");
    assert_weights(f, "{\"blue\": 100, \"green\": 0}");
    run_env_free(&e);
}

/* Stopped mid-step (a shutdown) while the lock is held: the traffic goes back to the
 * stable version before dq_canary_run returns, with no events; with the lock lost, the
 * router is left as it is (its new holder owns it). */
static void test_rollout_stopped(void **state)
{
    fixture *f = *state;
    run_env e;
    dq_canary_outcome out;
    char types[512];

    colors_answer(f, 200);
    run_env_init(f, &e, "blue");
    f->continues = 4; /* past the step's weights, into its hold */
    assert_int_equal(dq_canary_run(&e.ro, &out), DQ_CANARY_STOPPED);
    event_types(f, types, sizeof types);
    assert_string_equal(types, "canary.step");
    assert_int_equal(out.weight, 50);
    assert_weights(f, "{\"blue\": 100, \"green\": 0}");
    run_env_free(&e);

    run_env_init(f, &e, "blue");
    f->continues = 4;
    f->lock_lost = 1;
    assert_int_equal(dq_canary_run(&e.ro, &out), DQ_CANARY_STOPPED);
    assert_weights(f, "{\"blue\": 50, \"green\": 50}");
    run_env_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_applies),
        cmocka_unit_test(test_config_good),
        cmocka_unit_test(test_config_bad),
        cmocka_unit_test(test_config_router),
        cmocka_unit_test(test_rollout_first),
        cmocka_unit_test(test_rollout_good),
        cmocka_unit_test(test_rollout_bad),
        cmocka_unit_test(test_rollout_cancel),
        cmocka_unit_test(test_rollout_stopped),
    };
    int rc;

    dq_log_init("test_canary", DQ_LOG_OFF, -1);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
