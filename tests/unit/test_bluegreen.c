/*
 * test_bluegreen.c - blue-green (common/domain/bluegreen.c): the configuration and its errors,
 * which color a deployment goes to (remembered per deployment, in a redis-server of the
 * test's own), the idle color's probe (against tests/fakes/health.py), the router
 * call as a command (placeholders, environment, exit status, time limit), and routers that
 * take weights: http against tests/fakes/router.py (a router that lies on read-back is
 * refused), command, and HAProxy's runtime API gone or silent (a real HAProxy: 0512).
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
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../fakes/fake_server.h"
#include "bluegreen.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "testutil.h"

typedef struct fixture {
    int port;
    pid_t pid;
    dq_redis *r;
    dq_fake health;
    char dir[256];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char url[64], err[256];

    if (!f || dq_test_redis_start(&f->port, &f->pid) != 0)
        return -1;
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", f->port);
    f->r = dq_redis_connect(url, 2000, err, sizeof err);
    if (!f->r || dq_fake_start(&f->health, "health") != 0 || dq_test_tmpdir(f->dir, sizeof f->dir) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    dq_redis_free(f->r);
    dq_test_redis_stop(f->pid);
    dq_fake_stop(&f->health);
    dq_test_rm_rf(f->dir);
    free(f);
    return 0;
}

/* A configuration whose target api/prod has the given environment keys. */
static dq_config *config_with(const char *env_yaml)
{
    char err[512];
    dq_config *cfg = dq_test_config_env(env_yaml, "bg.yaml", err, sizeof err);

    if (!cfg)
        fail_msg("config: %s", err);
    return cfg;
}

static const char colors_yaml[] =
    "        blue_green:\n"
    "          colors:\n"
    "            blue: {providers: [{type: command, name: b, argv: [\"true\"]}]}\n"
    "            green: {providers: [{type: command, name: g, argv: [\"true\"]}]}\n";

static dq_bluegreen *load(const char *extra, char *err, size_t errlen)
{
    char env[3072];
    dq_config *cfg;
    dq_bluegreen *bg;

    snprintf(env, sizeof env, "%s%s", colors_yaml, extra);
    cfg = config_with(env);
    bg = dq_bg_load(cfg, "api", "prod", err, errlen);
    dq_config_free(cfg);
    return bg;
}

static void test_config(void **state)
{
    dq_config *cfg;
    dq_bluegreen *bg;
    dq_provider **ps = NULL;
    size_t n = 0;
    char err[512];

    (void)state;
    assert_string_equal(dq_bg_other("blue"), "green");
    assert_string_equal(dq_bg_other("green"), "blue");
    assert_null(dq_bg_other("red"));
    assert_null(dq_bg_other(NULL));

    cfg = config_with("        strategy: blue-green\n");
    assert_int_equal(dq_bg_applies(cfg, "api", "prod", "rolling"), 1);
    assert_int_equal(dq_bg_applies(cfg, "api", "plain", NULL), 0);
    assert_int_equal(dq_bg_applies(cfg, "api", "plain", "blue-green"), 1);
    assert_int_equal(dq_bg_configured(cfg, "api", "prod"), 0);
    assert_null(dq_bg_load(cfg, "api", "prod", err, sizeof err));
    assert_string_equal(err, "deployq.yaml:4: services.api.environments.prod.blue_green: required for strategy blue-green");
    dq_config_free(cfg);

    assert_null(load("          router: {type: http, url: \"http://r/switch\"}\n", err, sizeof err));
    assert_string_equal(err, "deployq.yaml:5: services.api.environments.prod.blue_green.probe: required, a mapping "
                             "with url (or probe_url in each color): the idle color is probed before any traffic moves");
    assert_null(load("          probe: {url: \"http://{color}/health\"}\n"
                     "          router: {type: dns}\n",
                     err, sizeof err));
    assert_string_equal(err, "deployq.yaml:5: services.api.environments.prod.blue_green.router.type: required, http, command or haproxy");
    assert_null(load("          probe: {url: \"http://{color}/health\", attempts: 0}\n"
                     "          router: {type: command, argv: [switch]}\n",
                     err, sizeof err));
    assert_string_equal(err, "deployq.yaml:5: services.api.environments.prod.blue_green.probe.attempts: expected 1 to 1000");
    assert_null(load("          probe: {url: \"http://{color}/health\"}\n"
                     "          router: {type: http, url: \"ftp://r\"}\n",
                     err, sizeof err));
    assert_string_equal(err, "deployq.yaml:5: services.api.environments.prod.blue_green.router.url: required, an http:// or https:// URL");

    bg = load("          probe: {url: \"http://{color}/health\"}\n"
              "          router: {type: command, argv: [switch, \"{color}\"]}\n",
              err, sizeof err);
    assert_non_null(bg);
    assert_string_equal(dq_bg_router_name(bg), "command");
    assert_int_equal(dq_bg_color_chain(bg, "green", &ps, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(dq_provider_name(ps[0]), "g");
    dq_provider_free(ps[0]);
    free(ps);
    assert_int_equal(dq_bg_color_chain(bg, "red", &ps, &n, err, sizeof err), -1);
    assert_int_equal(dq_bg_router_weighted(bg), 0);
    {
        int w[2] = {50, 50};

        assert_int_equal(dq_bg_set_weights(bg, w, 1, err, sizeof err), -1);
        assert_string_equal(err, "router command does not take weights");
    }
    dq_bg_free(bg);
}

/* The weights keys: haproxy's socket or address, names, and the pairs that go together. */
static void test_config_weights(void **state)
{
    static const struct {
        const char *router, *err;
    } bad[] = {
        {"{type: haproxy, backend: web, servers: {blue: b, green: g}}",
         "router: haproxy needs socket (a unix socket path) or address (host:port), one of them"},
        {"{type: haproxy, socket: /s, address: \"h:1\", backend: web, servers: {blue: b, green: g}}",
         "router: haproxy needs socket (a unix socket path) or address (host:port), one of them"},
        {"{type: haproxy, address: h, backend: web, servers: {blue: b, green: g}}",
         "router: haproxy needs socket (a unix socket path) or address (host:port), one of them"},
        {"{type: haproxy, socket: /s, backend: \"web;disable server web/b\", servers: {blue: b, green: g}}",
         "router.backend: required, a backend name (letters, digits, - _ . :)"},
        {"{type: haproxy, socket: /s, backend: web, servers: {blue: b}}",
         "router.servers.green: required, a server name (letters, digits, - _ . :)"},
        {"{type: haproxy, socket: /s, backend: web, servers: {blue: b, green: b}}",
         "router.servers: blue and green name one server"},
        {"{type: http, url: \"http://r/switch\", weights_body: '{}'}",
         "router: weights_body and read_url go together (weights are read back after they are set)"},
        {"{type: http, url: \"http://r/switch\", read_url: \"http://r/w\"}",
         "router: weights_body and read_url go together (weights are read back after they are set)"},
        {"{type: http, url: \"http://r/switch\", weights_body: '{}', read_url: \"r/w\"}",
         "router.read_url: expected an http:// or https:// URL"},
        {"{type: command, argv: [s], weights_argv: [w]}",
         "router: weights_argv and read_argv go together (weights are read back after they are set)"},
        {"{type: command, argv: [s], weights_argv: [], read_argv: [r]}",
         "router.weights_argv: expected a list of 1 to 64 strings"},
    };
    char extra[512], err[512], want[512];
    dq_bluegreen *bg;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(extra, sizeof extra, "          probe: {url: \"http://{color}/health\"}\n          router: %s\n",
                 bad[i].router);
        assert_null(load(extra, err, sizeof err));
        snprintf(want, sizeof want, "deployq.yaml:5: services.api.environments.prod.blue_green.%s", bad[i].err);
        assert_string_equal(err, want);
    }
    bg = load("          probe: {url: \"http://{color}/health\"}\n"
              "          router: {type: haproxy, address: \"127.0.0.1:9\", backend: web, servers: {blue: b, green: g}}\n",
              err, sizeof err);
    assert_non_null(bg);
    assert_string_equal(dq_bg_router_name(bg), "haproxy");
    assert_int_equal(dq_bg_router_weighted(bg), 1);
    dq_bg_free(bg);
    bg = load("          probe: {url: \"http://{color}/health\"}\n"
              "          router: {type: command, name: lb, argv: [s], weights_argv: [w], read_argv: [r]}\n",
              err, sizeof err);
    assert_non_null(bg);
    assert_string_equal(dq_bg_router_name(bg), "lb");
    assert_int_equal(dq_bg_router_weighted(bg), 1);
    dq_bg_free(bg);
}

/* An http router that takes weights (tests/fakes/router.py): set, read back, refused when
 * it says something else than it was told. */
static void test_weights_http(void **state)
{
    fixture *f = *state;
    char extra[1024], err[256];
    dq_bluegreen *bg;
    dq_fake router;
    cJSON *calls;
    const cJSON *set;
    int w[2] = {5, 95}, got[2] = {0, 0};

    (void)f;
    assert_int_equal(dq_fake_start(&router, "router"), 0);
    snprintf(extra, sizeof extra,
             "          probe: {url: \"http://{color}/health\"}\n"
             "          router: {type: http, name: edge, url: \"%s/switch\", weights_url: \"%s/weights\",\n"
             "                   weights_body: '{\"blue\":{weight_blue},\"green\":{weight_green},\"service\":\"{service}\"}',\n"
             "                   read_url: \"%s/weights\"}\n",
             router.base, router.base, router.base);
    bg = load(extra, err, sizeof err);
    assert_non_null(bg);
    assert_int_equal(dq_bg_router_weighted(bg), 1);
    assert_int_equal(dq_bg_set_weights(bg, w, 12, err, sizeof err), 0);
    assert_int_equal(dq_bg_read_weights(bg, got, err, sizeof err), 0);
    assert_int_equal(got[0], 5);
    assert_int_equal(got[1], 95);
    calls = dq_fake_calls(&router);
    set = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(calls, "weight_sets"), 0);
    assert_non_null(set);
    assert_string_equal(dq_json_str(set, "fence"), "12");
    assert_string_equal(dq_json_str(cJSON_GetObjectItemCaseSensitive(set, "body"), "service"), "api");
    cJSON_Delete(calls);

    /* the router answers 200 and does nothing: the read-back shows it */
    assert_int_equal(dq_fake_script(&router, "{\"lie_weights\": true}"), 0);
    w[0] = 75;
    w[1] = 25;
    assert_int_equal(dq_bg_set_weights(bg, w, 12, err, sizeof err), -1);
    assert_string_equal(err, "router edge said blue=5 green=95 after being told blue=75 green=25");
    w[0] = 60;
    assert_int_equal(dq_bg_set_weights(bg, w, 12, err, sizeof err), -1);
    assert_string_equal(err, "weights blue=60 green=25: expected 0 to 100 each, summing to 100");
    dq_bg_free(bg);
    dq_fake_stop(&router);
}

/* A command router that takes weights: placeholders and environment in, JSON out. */
static void test_weights_command(void **state)
{
    fixture *f = *state;
    char extra[1536], err[256], file[300];
    dq_bluegreen *bg;
    int w[2] = {25, 75}, got[2] = {0, 0};

    snprintf(file, sizeof file, "%s/weights", f->dir);
    snprintf(extra, sizeof extra,
             "          probe: {url: \"http://{color}/health\"}\n"
             "          router: {type: command, name: lb, argv: [\"true\"],\n"
             "                   weights_argv: [sh, -c, 'printf \"{\\\"weights\\\": {\\\"blue\\\": %%s, \\\"green\\\": %%s}}\" \"$1\" \"$DEPLOYQ_WEIGHT_GREEN\" > %s', x, \"{weight_blue}\"],\n"
             "                   read_argv: [sh, -c, 'cat %s; echo noise >&2']}\n",
             file, file);
    bg = load(extra, err, sizeof err);
    assert_non_null(bg);
    assert_int_equal(dq_bg_set_weights(bg, w, 3, err, sizeof err), 0);
    assert_int_equal(dq_bg_read_weights(bg, got, err, sizeof err), 0);
    assert_int_equal(got[0], 25);
    assert_int_equal(got[1], 75);
    dq_bg_free(bg);

    bg = load("          probe: {url: \"http://{color}/health\"}\n"
              "          router: {type: command, name: lb, argv: [\"true\"], weights_argv: [\"true\"],\n"
              "                   read_argv: [echo, '{\"blue\": 1.5}']}\n",
              err, sizeof err);
    assert_non_null(bg);
    assert_int_equal(dq_bg_read_weights(bg, got, err, sizeof err), -1);
    assert_string_equal(err, "router lb: its weights have no whole number for blue");
    dq_bg_free(bg);
}

/* HAProxy's runtime API gone (no socket) or silent (a socket nobody accepts on): one line
 * naming the socket, within the timeout, never a hang; a switch goes through weights. */
static void test_weights_haproxy_unreachable(void **state)
{
    fixture *f = *state;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char extra[1024], err[512], want[600], sock[300];
    dq_bluegreen *bg;
    int w[2] = {5, 95}, fd;
    int64_t t0;

    snprintf(sock, sizeof sock, "%s/admin.sock", f->dir);
    snprintf(extra, sizeof extra,
             "          probe: {url: \"http://{color}/health\"}\n"
             "          router: {type: haproxy, name: edge, socket: \"%s\", backend: web,\n"
             "                   servers: {blue: web_blue, green: web_green}, timeout: 100ms}\n",
             sock);
    bg = load(extra, err, sizeof err);
    assert_non_null(bg);
    assert_int_equal(dq_bg_set_weights(bg, w, 1, err, sizeof err), -1);
    snprintf(want, sizeof want, "router edge: haproxy %s: connect: No such file or directory", sock);
    assert_string_equal(err, want);
    assert_int_equal(dq_bg_switch(bg, "green", 1, err, sizeof err), -1);
    assert_string_equal(err, want);

    /* listening, never accepting: the connection is queued, the answer never comes */
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    dq_strlcpy(sa.sun_path, sock, sizeof sa.sun_path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 8), 0);
    t0 = dq_mono_ms();
    assert_int_equal(dq_bg_read_weights(bg, w, err, sizeof err), -1);
    assert_true(dq_mono_ms() - t0 < 1000);
    snprintf(want, sizeof want, "router edge: haproxy %s: get weight web/web_blue: no answer within 100 ms", sock);
    assert_string_equal(err, want);
    close(fd);
    unlink(sock);
    dq_bg_free(bg);
}

static void test_pick_and_state(void **state)
{
    fixture *f = *state;
    dq_bg_state st;
    char color[DQ_BG_COLOR_LEN], err[256];

    assert_int_equal(dq_bg_state_read(f->r, "api", "prod", &st, err, sizeof err), 0);
    assert_string_equal(st.live, "");
    /* nothing live: the first deployment goes to blue, and stays there when asked again */
    assert_int_equal(dq_bg_pick_idle(f->r, "api", "prod", "dep-1", color, err, sizeof err), 0);
    assert_string_equal(color, "blue");
    assert_int_equal(dq_bg_set_live(f->r, "api", "prod", "blue", "v1", err, sizeof err), 0);
    assert_int_equal(dq_bg_pick_idle(f->r, "api", "prod", "dep-1", color, err, sizeof err), 0);
    assert_string_equal(color, "blue");
    /* the next deployment goes to the idle color */
    assert_int_equal(dq_bg_pick_idle(f->r, "api", "prod", "dep-2", color, err, sizeof err), 0);
    assert_string_equal(color, "green");
    assert_int_equal(dq_bg_set_live(f->r, "api", "prod", "green", "v2", err, sizeof err), 0);
    assert_int_equal(dq_bg_state_read(f->r, "api", "prod", &st, err, sizeof err), 0);
    assert_string_equal(st.live, "green");
    assert_string_equal(dq_bg_state_version(&st, "blue"), "v1");
    assert_string_equal(dq_bg_state_version(&st, "green"), "v2");
    /* a switch back keeps the versions */
    assert_int_equal(dq_bg_set_live(f->r, "api", "prod", "blue", NULL, err, sizeof err), 0);
    assert_int_equal(dq_bg_state_read(f->r, "api", "prod", &st, err, sizeof err), 0);
    assert_string_equal(st.live, "blue");
    assert_string_equal(dq_bg_state_version(&st, "green"), "v2");
    assert_int_equal(dq_bg_set_live(f->r, "api", "prod", "red", NULL, err, sizeof err), -1);
}

static void test_probe(void **state)
{
    fixture *f = *state;
    char extra[512], detail[256];
    dq_bluegreen *bg;
    int64_t t0;

    snprintf(extra, sizeof extra,
             "          probe: {url: \"%s/health?c={color}\", expect_status: 200, attempts: 3, interval: 100ms}\n"
             "          router: {type: command, argv: [\"true\"]}\n",
             f->health.base);
    bg = load(extra, detail, sizeof detail);
    assert_non_null(bg);
    assert_int_equal(dq_fake_script(&f->health, "{\"status\": 200}"), 0);
    assert_int_equal(dq_bg_probe(bg, "green", NULL, NULL, detail, sizeof detail), 0);
    /* failing: every attempt is made, interval apart, and the last sample explains */
    assert_int_equal(dq_fake_script(&f->health, "{\"status\": 503}"), 0);
    t0 = dq_mono_ms();
    assert_int_equal(dq_bg_probe(bg, "blue", NULL, NULL, detail, sizeof detail), -1);
    assert_true(dq_mono_ms() - t0 >= 200);
    assert_string_equal(detail, "status 503, expected 200");
    /* recovering on the second attempt passes */
    assert_int_equal(dq_fake_script(&f->health, "{\"pattern\": [500, 200], \"repeat\": false}"), 0);
    assert_int_equal(dq_bg_probe(bg, "blue", NULL, NULL, detail, sizeof detail), 0);
    dq_bg_free(bg);
}

static void test_switch_command(void **state)
{
    fixture *f = *state;
    char extra[1024], err[256], out[300], *text;
    dq_bluegreen *bg;
    dq_event *ev;

    snprintf(out, sizeof out, "%s/switched", f->dir);
    snprintf(extra, sizeof extra,
             "          probe: {url: \"http://{color}/health\"}\n"
             "          router: {type: command, name: lb, argv: [sh, -c, 'echo \"$DEPLOYQ_COLOR $DEPLOYQ_FENCE $1\" > %s', x, \"{color}-{service}-{environment}\"]}\n",
             out);
    bg = load(extra, err, sizeof err);
    assert_non_null(bg);
    assert_int_equal(dq_bg_switch(bg, "green", 7, err, sizeof err), 0);
    text = dq_read_file(out, 256, NULL);
    assert_non_null(text);
    assert_string_equal(text, "green 7 green-api-prod\n");
    free(text);
    assert_int_equal(dq_bg_switch(bg, "purple", 7, err, sizeof err), -1);
    assert_string_equal(err, "unknown color purple");
    dq_bg_free(bg);

    bg = load("          probe: {url: \"http://{color}/health\"}\n"
              "          router: {type: command, name: lb, argv: [sh, -c, 'exit 3']}\n",
              err, sizeof err);
    assert_non_null(bg);
    assert_int_equal(dq_bg_switch(bg, "blue", 1, err, sizeof err), -1);
    assert_string_equal(err, "router lb: the command exited with 3");
    dq_bg_free(bg);

    bg = load("          probe: {url: \"http://{color}/health\"}\n"
              "          router: {type: command, name: lb, argv: [sleep, \"5\"], timeout: 200ms}\n",
              err, sizeof err);
    assert_non_null(bg);
    assert_int_equal(dq_bg_switch(bg, "blue", 1, err, sizeof err), -1);
    assert_string_equal(err, "router lb: the command did not finish within 200 ms");
    dq_bg_free(bg);

    ev = dq_bg_switched_event("d-1", "api", "prod", "v2", "test@h/1", 9, "", "blue", "lb", "seed-1");
    assert_non_null(ev);
    assert_string_equal(ev->type, "traffic.switched");
    assert_string_equal(dq_json_str(ev->data, "from_color"), "green");
    assert_string_equal(dq_json_str(ev->data, "to_color"), "blue");
    assert_string_equal(dq_json_str(ev->data, "router"), "lb");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev->data, "initial")));
    assert_int_equal(ev->fence, 9);
    {
        dq_event *again = dq_bg_switched_event("d-1", "api", "prod", "v2", "test@h/1", 9, "green", "blue",
                                               "lb", "seed-1");
        assert_string_equal(again->id, ev->id); /* same seed, same id: a repeat is a duplicate */
        assert_null(cJSON_GetObjectItemCaseSensitive(again->data, "initial"));
        dq_event_free(again);
    }
    dq_event_free(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_pick_and_state),
        cmocka_unit_test(test_probe),
        cmocka_unit_test(test_switch_command),
        cmocka_unit_test(test_config_weights),
        cmocka_unit_test(test_weights_http),
        cmocka_unit_test(test_weights_command),
        cmocka_unit_test(test_weights_haproxy_unreachable),
    };
    int rc;

    dq_log_init("test_bluegreen", DQ_LOG_OFF, -1);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
