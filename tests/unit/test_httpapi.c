/*
 * test_httpapi.c - the registry's HTTP API (common/domain/httpapi.c) served on a free port of
 * 127.0.0.1 over a real state fold and a real registry directory: every endpoint's
 * answer, the bearer token, read-only methods, paging with cursors, the SSE stream
 * (live events, resume, the reset after falling behind the ring), the metrics the worker
 * feeds, and the --url client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <poll.h>

#include "event.h"
#include "fold.h"
#include "http.h"
#include "httpapi.h"
#include "json.h"
#include "log.h"
#include "reglog.h"
#include "testutil.h"
#include "util.h"

#define D1 "11111111-1111-4111-8111-111111111111"
#define D2 "22222222-2222-4222-8222-222222222222"
#define TOKEN "tok-3f9a-secret-value"

typedef struct {
    dq_fold *fold;
    pthread_mutex_t lock;
    dq_httpapi *api;
    char dir[64];
    char base[64];
} fixture;

/* An event's JSON text (malloc'd). */
static char *event_text(const char *type, const char *dep, const char *svc, const char *env,
                        const char *ver, const char *at, int64_t fence, const char *data,
                        const char *idname)
{
    dq_event *ev = dq_event_new(type, dep, svc, env, ver, "test@host/1");
    char *txt;

    assert_non_null(ev);
    dq_event_set_id_from(ev, idname);
    assert_int_equal(dq_time_parse(at, &ev->at_ms), 0);
    ev->fence = fence;
    if (data) {
        cJSON_Delete(ev->data);
        ev->data = cJSON_Parse(data);
        assert_non_null(ev->data);
    }
    txt = dq_event_encode(ev);
    assert_non_null(txt);
    dq_event_free(ev);
    return txt;
}

/* The scripted history, stored in the registry dir and folded: D1 on api/staging
 * (validated, started, succeeded, verified), D2 on api/production (validated, started,
 * succeeded, rollback requested with evidence, rollback succeeded). */
static const struct {
    int32_t part;
    const char *type, *dep, *env, *ver, *at, *data;
    int64_t fence;
} history[] = {
    {0, DQ_EV_VALIDATED, D1, "staging", "v1", "2026-01-01T10:00:00Z", NULL, 0},
    {0, DQ_EV_STARTED, D1, "staging", "v1", "2026-01-01T10:00:01Z", NULL, 3},
    {1, DQ_EV_VALIDATED, D2, "production", "v2", "2026-01-01T10:00:02Z", NULL, 0},
    {0, DQ_EV_SUCCEEDED, D1, "staging", "v1", "2026-01-01T10:00:03Z", NULL, 3},
    {1, DQ_EV_STARTED, D2, "production", "v2", "2026-01-01T10:00:04Z", NULL, 5},
    {0, DQ_EV_VERIFIED, D1, "staging", "v1", "2026-01-01T10:00:05Z", NULL, 3},
    {1, DQ_EV_SUCCEEDED, D2, "production", "v2", "2026-01-01T10:00:06Z", NULL, 5},
    {1, DQ_EV_ROLLBACK_REQUESTED, D2, "production", "v2", "2026-01-01T10:01:00Z",
     "{\"reason\":\"error rate 9%\",\"to_version\":\"v1\",\"evidence\":{\"probe\":\"http\","
     "\"first_failure_at\":\"2026-01-01T10:00:30Z\"}}",
     5},
    {1, DQ_EV_ROLLBACK_SUCCEEDED, D2, "production", "v1", "2026-01-01T10:02:30Z",
     "{\"to_version\":\"v1\",\"restored_at\":\"2026-01-01T10:02:30Z\"}", 5},
};
#define N_HISTORY (sizeof history / sizeof history[0])

/* Limits for the hardening tests (0: the defaults). */
static unsigned fx_max_clients, fx_max_per_address;
static int fx_request_timeout_ms, fx_heartbeat_ms = 200;

static int setup_opts(void **state, const char *token, size_t ring_size)
{
    fixture *fx = calloc(1, sizeof *fx);
    dq_reglog *logs[2];
    int64_t next[2] = {0, 0};
    char err[256];
    dq_httpapi_opts o = {0};

    assert_non_null(fx);
    fx->fold = dq_fold_new();
    assert_non_null(fx->fold);
    pthread_mutex_init(&fx->lock, NULL);
    assert_int_equal(dq_test_tmpdir(fx->dir, sizeof fx->dir), 0);
    for (int p = 0; p < 2; p++) {
        logs[p] = dq_reglog_open(fx->dir, p, NULL, err, sizeof err);
        assert_non_null(logs[p]);
    }
    for (size_t i = 0; i < N_HISTORY; i++) {
        char name[32];
        char *t;

        snprintf(name, sizeof name, "ev-%zu", i);
        t = event_text(history[i].type, history[i].dep, "api", history[i].env, history[i].ver,
                       history[i].at, history[i].fence, history[i].data, name);
        assert_int_equal(dq_reglog_append(logs[history[i].part], next[history[i].part], t,
                                          strlen(t)),
                         DQ_REGLOG_OK);
        assert_int_equal(dq_fold_apply(fx->fold, history[i].part, next[history[i].part], t,
                                       strlen(t)),
                         DQ_FOLD_APPLIED);
        next[history[i].part]++;
        free(t);
    }
    for (int p = 0; p < 2; p++) {
        assert_int_equal(dq_reglog_commit(logs[p]), DQ_REGLOG_OK);
        dq_reglog_close(logs[p]);
    }
    o.listen = "127.0.0.1:0";
    o.token = token;
    o.fold = fx->fold;
    o.fold_lock = &fx->lock;
    o.registry_dir = fx->dir;
    o.dashboard_html = "<!doctype html><title>deployq</title>";
    o.ring_size = ring_size;
    o.heartbeat_ms = fx_heartbeat_ms;
    o.max_clients = fx_max_clients;
    o.max_clients_per_address = fx_max_per_address;
    o.request_timeout_ms = fx_request_timeout_ms;
    fx->api = dq_httpapi_start(&o, err, sizeof err);
    assert_non_null(fx->api);
    assert_true(dq_httpapi_port(fx->api) > 0);
    snprintf(fx->base, sizeof fx->base, "http://127.0.0.1:%d", dq_httpapi_port(fx->api));
    *state = fx;
    return 0;
}

static int setup(void **state) { return setup_opts(state, NULL, 0); }
static int setup_token(void **state) { return setup_opts(state, TOKEN, 0); }
static int setup_small_ring(void **state) { return setup_opts(state, NULL, 4); }

/* 8 connections in all, 4 per address (so 4 and 2 event streams), 500 ms for a request to
 * arrive, a 30 s heartbeat (longer than any wait below). */
static int setup_limits(void **state)
{
    int rc;

    fx_max_clients = 8;
    fx_max_per_address = 4;
    fx_request_timeout_ms = 500;
    fx_heartbeat_ms = 30000;
    rc = setup_opts(state, NULL, 0);
    fx_max_clients = fx_max_per_address = 0;
    fx_request_timeout_ms = 0;
    fx_heartbeat_ms = 200;
    return rc;
}

static int teardown(void **state)
{
    fixture *fx = *state;

    dq_httpapi_stop(fx->api);
    dq_fold_free(fx->fold);
    pthread_mutex_destroy(&fx->lock);
    dq_test_rm_rf(fx->dir);
    free(fx);
    return 0;
}

/* GET path and return the JSON (asserting the status). */
static cJSON *get_json(fixture *fx, const char *path, const char *token, long want_status)
{
    char err[512];
    long status = -1;
    cJSON *doc = dq_httpapi_get(fx->base, path, token, &status, err, sizeof err);

    assert_int_equal(status, want_status);
    if (want_status == 200)
        assert_non_null(doc);
    else
        assert_null(doc);
    return doc;
}

/* A raw request (any method); body and status into resp. */
static void raw(fixture *fx, const char *method, const char *path, const char *const *headers,
                dq_http_response *resp)
{
    char url[256];
    dq_http_opts o = {.method = method, .url = url, .headers = headers, .timeout_ms = 5000};

    snprintf(url, sizeof url, "%s%s", fx->base, path);
    assert_int_equal(dq_http_request(&o, resp), 0);
}

static void test_targets(void **state)
{
    fixture *fx = *state;
    cJSON *doc = get_json(fx, "/api/targets", NULL, 200), *ts, *t0, *t1;
    char hash[DQ_FOLD_HASH_HEX_LEN + 1];

    dq_fold_state_hash(fx->fold, hash);
    assert_string_equal(dq_json_str(doc, "state_hash"), hash);
    assert_int_equal((int)dq_json_num(doc, "seq", -1), 0);
    assert_int_equal((int)dq_json_num(cJSON_GetObjectItem(doc, "totals"), "events", -1), 9);
    ts = cJSON_GetObjectItem(doc, "targets");
    assert_int_equal(cJSON_GetArraySize(ts), 2);
    /* sorted by key: api/production before api/staging */
    t0 = cJSON_GetArrayItem(ts, 0);
    t1 = cJSON_GetArrayItem(ts, 1);
    assert_string_equal(dq_json_str(t0, "environment"), "production");
    assert_string_equal(dq_json_str(t0, "current_version"), "v1");
    assert_string_equal(
        dq_json_str(cJSON_GetObjectItem(cJSON_GetObjectItem(t0, "last_rollback"), "evidence"),
                    "probe"),
        "http");
    assert_string_equal(dq_json_str(t1, "current_version"), "v1");
    assert_string_equal(dq_json_str(t1, "last_verified_version"), "v1");
    cJSON_Delete(doc);

    doc = get_json(fx, "/api/targets?env=staging", NULL, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "targets")), 1);
    cJSON_Delete(doc);
    doc = get_json(fx, "/api/targets?service=web", NULL, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "targets")), 0);
    cJSON_Delete(doc);
}

static void test_deployment_and_rollbacks(void **state)
{
    fixture *fx = *state;
    cJSON *doc = get_json(fx, "/api/deployments/" D1, NULL, 200), *tl, *rb;
    char err[512];
    long status;

    assert_string_equal(dq_json_str(doc, "outcome"), "verified");
    tl = cJSON_GetObjectItem(doc, "timeline");
    assert_int_equal(cJSON_GetArraySize(tl), 4);
    assert_string_equal(dq_json_str(cJSON_GetArrayItem(tl, 3), "type"), "deploy.verified");
    assert_int_equal((int)dq_json_num(cJSON_GetArrayItem(tl, 3), "offset", -1), 3);
    cJSON_Delete(doc);

    assert_null(dq_httpapi_get(fx->base, "/api/deployments/nope", NULL, &status, err, sizeof err));
    assert_int_equal(status, 404);
    assert_string_equal(err, "HTTP 404: no deployment nope in the registry");

    doc = get_json(fx, "/api/rollbacks", NULL, 200);
    rb = cJSON_GetObjectItem(doc, "rollbacks");
    assert_int_equal(cJSON_GetArraySize(rb), 1);
    assert_string_equal(dq_json_str(cJSON_GetArrayItem(rb, 0), "status"), "succeeded");
    assert_string_equal(dq_json_str(cJSON_GetArrayItem(rb, 0), "reason"), "error rate 9%");
    /* trouble began 10:00:30, restored 10:02:30 */
    assert_int_equal((int)dq_json_num(cJSON_GetArrayItem(rb, 0), "time_to_restore_ms", -1),
                     120000);
    cJSON_Delete(doc);
    cJSON_Delete(get_json(fx, "/api/rollbacks?limit=0", NULL, 400));
}

static void test_events_paging(void **state)
{
    fixture *fx = *state;
    cJSON *doc = get_json(fx, "/api/events?limit=4", NULL, 200), *ev;
    char path[256];
    const char *next;
    static const char *const want_types[] = {DQ_EV_VALIDATED, DQ_EV_STARTED, DQ_EV_VALIDATED,
                                             DQ_EV_SUCCEEDED};

    ev = cJSON_GetObjectItem(doc, "events");
    assert_int_equal(cJSON_GetArraySize(ev), 4);
    /* time order across partitions */
    for (int i = 0; i < 4; i++)
        assert_string_equal(
            dq_json_str(cJSON_GetObjectItem(cJSON_GetArrayItem(ev, i), "event"), "type"),
            want_types[i]);
    assert_int_equal((int)dq_json_num(cJSON_GetArrayItem(ev, 2), "partition", -1), 1);
    assert_int_equal((int)dq_json_num(cJSON_GetArrayItem(ev, 2), "offset", -1), 0);
    next = dq_json_str(doc, "next_cursor");
    assert_non_null(next);
    assert_string_equal(next, "1767261603000.0.2");
    snprintf(path, sizeof path, "/api/events?limit=4&cursor=%s", next);
    cJSON_Delete(doc);

    doc = get_json(fx, path, NULL, 200);
    ev = cJSON_GetObjectItem(doc, "events");
    assert_int_equal(cJSON_GetArraySize(ev), 4);
    assert_string_equal(
        dq_json_str(cJSON_GetObjectItem(cJSON_GetArrayItem(ev, 0), "event"), "at"),
        "2026-01-01T10:00:04.000Z");
    next = dq_json_str(doc, "next_cursor");
    assert_non_null(next);
    snprintf(path, sizeof path, "/api/events?limit=4&cursor=%s", next);
    cJSON_Delete(doc);
    doc = get_json(fx, path, NULL, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "events")), 1);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(doc, "next_cursor")));
    cJSON_Delete(doc);

    /* filters */
    doc = get_json(fx, "/api/events?env=production&type=deploy.started", NULL, 200);
    ev = cJSON_GetObjectItem(doc, "events");
    assert_int_equal(cJSON_GetArraySize(ev), 1);
    assert_string_equal(
        dq_json_str(cJSON_GetObjectItem(cJSON_GetArrayItem(ev, 0), "event"), "deployment_id"),
        D2);
    cJSON_Delete(doc);
    doc = get_json(fx,
                   "/api/events?since=2026-01-01T10:00:03Z&until=2026-01-01T10:00:06Z&order=desc",
                   NULL, 200);
    ev = cJSON_GetObjectItem(doc, "events");
    assert_int_equal(cJSON_GetArraySize(ev), 3);
    assert_string_equal(
        dq_json_str(cJSON_GetObjectItem(cJSON_GetArrayItem(ev, 0), "event"), "type"),
        DQ_EV_VERIFIED);
    cJSON_Delete(doc);
    doc = get_json(fx, "/api/events?deployment=" D1 "&order=desc&limit=1", NULL, 200);
    ev = cJSON_GetObjectItem(doc, "events");
    assert_string_equal(
        dq_json_str(cJSON_GetObjectItem(cJSON_GetArrayItem(ev, 0), "event"), "type"),
        DQ_EV_VERIFIED);
    cJSON_Delete(doc);

    cJSON_Delete(get_json(fx, "/api/events?cursor=garbage", NULL, 400));
    cJSON_Delete(get_json(fx, "/api/events?limit=5000", NULL, 400));
    cJSON_Delete(get_json(fx, "/api/events?since=yesterday", NULL, 400));
    cJSON_Delete(get_json(fx, "/api/events?order=sideways", NULL, 400));
}

static void test_report_and_series(void **state)
{
    fixture *fx = *state;
    cJSON *doc = get_json(fx, "/api/report", NULL, 200), *b;

    assert_int_equal((int)dq_json_num(cJSON_GetObjectItem(doc, "deployments"), "total", -1), 2);
    assert_int_equal((int)dq_json_num(cJSON_GetObjectItem(doc, "deployments"), "succeeded", -1),
                     2);
    assert_int_equal((int)dq_json_num(cJSON_GetObjectItem(doc, "mttr_ms"), "median", -1),
                     120000);
    cJSON_Delete(doc);
    doc = get_json(fx, "/api/report?env=staging", NULL, 200);
    assert_int_equal((int)dq_json_num(cJSON_GetObjectItem(doc, "deployments"), "total", -1), 1);
    cJSON_Delete(doc);

    doc = get_json(fx, "/api/series?buckets=2", NULL, 200);
    b = cJSON_GetObjectItem(doc, "buckets");
    assert_int_equal(cJSON_GetArraySize(b), 2);
    /* window 10:00:00 .. 10:02:30.001: both deploys in the first half, the rollback too */
    assert_int_equal((int)dq_json_num(cJSON_GetArrayItem(b, 0), "deploys", -1), 2);
    assert_int_equal((int)dq_json_num(cJSON_GetArrayItem(b, 0), "rollbacks", -1), 1);
    assert_int_equal((int)dq_json_num(cJSON_GetArrayItem(b, 1), "deploys", -1), 0);
    cJSON_Delete(doc);
}

static void test_metrics(void **state)
{
    fixture *fx = *state;
    dq_http_response r = {0};

    dq_httpapi_set_lag(fx->api, 2, 17);
    dq_httpapi_set_lag(fx->api, 0, 0);
    dq_httpapi_observe_fsync(fx->api, 0.003);
    dq_httpapi_observe_fsync(fx->api, 0.0001);
    raw(fx, "GET", "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    /* per target, every line with worker="registry" like every worker's */
    assert_non_null(strstr(r.body, "deployq_deploys_total{worker=\"registry\",service=\"api\",env=\"staging\",outcome=\"succeeded\"} 1\n"));
    assert_non_null(strstr(r.body, "deployq_deploys_total{worker=\"registry\",service=\"api\",env=\"production\",outcome=\"succeeded\"} 1\n"));
    assert_non_null(strstr(r.body, "deployq_deployments{worker=\"registry\",outcome=\"verified\"} 1\n"));
    assert_non_null(strstr(r.body, "deployq_deployments{worker=\"registry\",outcome=\"rolled_back\"} 1\n"));
    assert_non_null(strstr(r.body, "deployq_rollbacks_total{worker=\"registry\",service=\"api\",env=\"production\",result=\"succeeded\"} 1\n"));
    /* MTTR buckets resolve seconds now: 120 s is in le="120", not only in a 300 s bucket */
    assert_non_null(strstr(r.body, "deployq_mttr_seconds_bucket{worker=\"registry\",service=\"api\",env=\"production\",le=\"60\"} 0\n"));
    assert_non_null(strstr(r.body, "deployq_mttr_seconds_bucket{worker=\"registry\",service=\"api\",env=\"production\",le=\"120\"} 1\n"));
    assert_non_null(strstr(r.body, "deployq_mttr_seconds_sum{worker=\"registry\",service=\"api\",env=\"production\"} 120\n"));
    /* report.h's figures per target: D2 succeeded, then rolled back: a failed change that
     * reached production; D1 requested 10:00:00, verified 10:00:05: 5 s to deploy */
    assert_non_null(strstr(r.body, "deployq_report_deployments{worker=\"registry\",service=\"api\",env=\"production\",kind=\"failed_change\"} 1\n"));
    assert_non_null(strstr(r.body, "deployq_report_deployments{worker=\"registry\",service=\"api\",env=\"production\",kind=\"escaped_to_production\"} 1\n"));
    assert_non_null(strstr(r.body, "deployq_report_deployments{worker=\"registry\",service=\"api\",env=\"staging\",kind=\"failed_change\"} 0\n"));
    assert_non_null(strstr(r.body, "deployq_time_to_deploy_seconds{worker=\"registry\",service=\"api\",env=\"staging\",quantile=\"0.9\"} 5\n"));
    assert_null(strstr(r.body, "deployq_time_to_deploy_seconds{worker=\"registry\",service=\"api\",env=\"production\""));
    assert_non_null(strstr(r.body, "deployq_registry_consumer_lag{worker=\"registry\",partition=\"0\"} 0\n"));
    assert_non_null(strstr(r.body, "deployq_registry_consumer_lag{worker=\"registry\",partition=\"2\"} 17\n"));
    assert_null(strstr(r.body, "deployq_registry_consumer_lag{worker=\"registry\",partition=\"1\"}"));
    assert_non_null(strstr(r.body, "deployq_consumer_lag{worker=\"registry\",topic=\"deployq.events\",partition=\"2\"} 17\n"));
    assert_non_null(strstr(r.body, "deployq_registry_fsync_seconds_bucket{worker=\"registry\",le=\"0.0005\"} 1\n"));
    assert_non_null(strstr(r.body, "deployq_registry_fsync_seconds_bucket{worker=\"registry\",le=\"0.0025\"} 1\n"));
    assert_non_null(strstr(r.body, "deployq_registry_fsync_seconds_bucket{worker=\"registry\",le=\"0.005\"} 2\n"));
    assert_non_null(strstr(r.body, "deployq_registry_fsync_seconds_count{worker=\"registry\"} 2\n"));
    assert_non_null(strstr(r.body, "deployq_up{worker=\"registry\"} 1\n"));
    assert_non_null(strstr(r.body, "deployq_ready{worker=\"registry\"} 1\n"));
    assert_non_null(strstr(r.body, "# TYPE deployq_registry_fsync_seconds histogram\n"));
    dq_http_response_free(&r);
}

static void test_read_only_and_pages(void **state)
{
    fixture *fx = *state;
    dq_http_response r = {0};

    raw(fx, "POST", "/api/targets", NULL, &r);
    assert_int_equal(r.status, 405);
    dq_http_response_free(&r);
    raw(fx, "DELETE", "/api/deployments/" D1, NULL, &r);
    assert_int_equal(r.status, 405);
    dq_http_response_free(&r);
    raw(fx, "GET", "/", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "<!doctype html><title>deployq</title>");
    dq_http_response_free(&r);
    raw(fx, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\",\"events\":9,\"seq\":0}\n");
    dq_http_response_free(&r);
    cJSON_Delete(get_json(fx, "/api/nothing", NULL, 404));
}

static void test_token(void **state)
{
    fixture *fx = *state;
    dq_http_response r = {0};
    char err[512];
    long status;
    const char *const wrong[] = {"Authorization: Bearer tok-3f9a-secret-valuX", NULL};
    const char *const basic[] = {"Authorization: Basic " TOKEN, NULL};

    assert_null(dq_httpapi_get(fx->base, "/api/targets", NULL, &status, err, sizeof err));
    assert_int_equal(status, 401);
    assert_string_equal(err, "HTTP 401: a bearer token is required");
    assert_null(strstr(err, TOKEN));
    cJSON_Delete(get_json(fx, "/api/targets", "tok-3f9a-secret-valu", 401));
    cJSON_Delete(get_json(fx, "/api/targets", TOKEN "x", 401));
    cJSON_Delete(get_json(fx, "/api/targets", TOKEN, 200));
    raw(fx, "GET", "/metrics", wrong, &r);
    assert_int_equal(r.status, 401);
    dq_http_response_free(&r);
    raw(fx, "GET", "/metrics", basic, &r);
    assert_int_equal(r.status, 401);
    dq_http_response_free(&r);
    raw(fx, "GET", "/api/stream", NULL, &r);
    assert_int_equal(r.status, 401);
    dq_http_response_free(&r);
    /* liveness and the (data-free) page stay open */
    raw(fx, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    dq_http_response_free(&r);
    raw(fx, "GET", "/", NULL, &r);
    assert_int_equal(r.status, 200);
    dq_http_response_free(&r);
    /* the token is registered as a secret: it never reaches a log line */
    {
        char out[128];

        dq_redact("auth " TOKEN " end", out, sizeof out);
        assert_string_equal(out, "auth *** end");
    }
}

/* ---- SSE over a raw socket: what a browser's EventSource reads ---- */

static int sse_connect(fixture *fx, const char *path)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(dq_httpapi_port(fx->api)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char req[256];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int n;

    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
                 path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    return fd;
}

/* Read from fd into buf until needle appears (1) or timeout_ms passes (0). */
static int sse_wait_for(int fd, char *buf, size_t cap, size_t *len, const char *needle,
                        int timeout_ms)
{
    int64_t end = dq_mono_ms() + timeout_ms;

    while (!strstr(buf, needle)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = end - dq_mono_ms();
        ssize_t n;

        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return 0;
        n = read(fd, buf + *len, cap - *len - 1);
        if (n <= 0)
            return 0;
        *len += (size_t)n;
        buf[*len] = '\0';
    }
    return 1;
}

static void test_stream_live(void **state)
{
    fixture *fx = *state;
    static char buf[65536];
    size_t len = 0;
    int fd;
    char *t = event_text(DQ_EV_VALIDATED, D1, "web", "staging", "v9", "2026-01-02T00:00:00Z", 0,
                         NULL, "live-1");
    char *pretty;
    cJSON *o;

    buf[0] = '\0';
    fd = sse_connect(fx, "/api/stream");
    assert_true(sse_wait_for(fd, buf, sizeof buf, &len, "text/event-stream", 3000));
    assert_true(sse_wait_for(fd, buf, sizeof buf, &len, "deployq event stream from 1", 3000));
    /* idle: a keep-alive comment arrives within the heartbeat */
    assert_true(sse_wait_for(fd, buf, sizeof buf, &len, ": keep-alive", 3000));
    assert_int_equal(dq_httpapi_publish(fx->api, t, strlen(t)), 1);
    /* a pretty-printed event reaches the stream as one line */
    o = cJSON_Parse(t);
    pretty = cJSON_Print(o);
    cJSON_Delete(o);
    assert_non_null(strchr(pretty, '\n'));
    assert_int_equal(dq_httpapi_publish(fx->api, pretty, strlen(pretty)), 2);
    assert_int_equal(dq_httpapi_publish(fx->api, "not json", 8), 0);
    assert_true(sse_wait_for(fd, buf, sizeof buf, &len, "id: 2\ndata: {", 3000));
    {
        char want[4096];

        snprintf(want, sizeof want, "id: 1\ndata: %s\n\n", t);
        assert_non_null(strstr(buf, want));
        snprintf(want, sizeof want, "id: 2\ndata: %s\n\n", t);
        assert_non_null(strstr(buf, want));
    }
    close(fd);
    free(pretty);

    /* the group-commit path: staged events appear only once published */
    dq_httpapi_stage(fx->api, t, strlen(t));
    {
        cJSON *doc = get_json(fx, "/api/targets", NULL, 200);

        assert_int_equal((int)dq_json_num(doc, "seq", -1), 2);
        cJSON_Delete(doc);
    }
    dq_httpapi_publish_staged(fx->api);
    dq_httpapi_stage(fx->api, t, strlen(t));
    dq_httpapi_drop_staged(fx->api);
    dq_httpapi_publish_staged(fx->api);
    {
        cJSON *doc = get_json(fx, "/api/targets", NULL, 200);

        assert_int_equal((int)dq_json_num(doc, "seq", -1), 3);
        cJSON_Delete(doc);
    }

    /* resume after seq 1 with ?after= and with Last-Event-ID */
    len = 0;
    buf[0] = '\0';
    fd = sse_connect(fx, "/api/stream?after=1");
    assert_true(sse_wait_for(fd, buf, sizeof buf, &len, "id: 3\n", 3000));
    assert_null(strstr(buf, "id: 1\n"));
    assert_non_null(strstr(buf, "id: 2\n"));
    close(fd);
    free(t);
}

static void test_stream_reset(void **state)
{
    fixture *fx = *state;
    static char buf[65536];
    size_t len = 0;
    int fd;
    char *t = event_text(DQ_EV_STARTED, D1, "web", "staging", "v9", "2026-01-02T00:00:00Z", 1,
                         NULL, "live-2");

    for (int i = 0; i < 10; i++)
        assert_int_equal(dq_httpapi_publish(fx->api, t, strlen(t)), (uint64_t)i + 1);
    /* the ring holds 7..10: a client resuming after 2 is told to reload */
    buf[0] = '\0';
    fd = sse_connect(fx, "/api/stream?after=2");
    assert_true(sse_wait_for(fd, buf, sizeof buf, &len, "id: 10\n", 3000));
    assert_non_null(strstr(buf, "event: reset\ndata: {\"missed_from\":3,\"resume_at\":7}\n\n"));
    assert_non_null(strstr(buf, "id: 7\n"));
    assert_null(strstr(buf, "id: 6\n"));
    close(fd);
    cJSON_Delete(get_json(fx, "/api/stream?after=x", NULL, 400));
    free(t);
}

/* ---- hardening: hostile arguments, bodies, tokens and slow clients ------------------- */

/* Whether s is well-formed UTF-8 (RFC 3629), checked here independently of httpapi.c. */
static int valid_utf8(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s, n, cp;

        if (c < 0x80) {
            s++;
            continue;
        }
        if ((c & 0xe0) == 0xc0)
            n = 1, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0)
            n = 2, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0)
            n = 3, cp = c & 0x07;
        else
            return 0;
        for (unsigned k = 1; k <= n; k++) {
            if ((s[k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        s += n + 1;
    }
    return 1;
}

/* The probe's GET that corrupted the heap (a since that overflowed the bucket width and a
 * negative bucket index), and its neighbours: each is refused or answered, never a crash
 * (under ASan a single write out of bounds fails the test). */
static void test_series_bounds(void **state)
{
    fixture *fx = *state;
    cJSON *doc, *b;
    double sum = 0;

    cJSON_Delete(get_json(fx,
                          "/api/series?since=9223372036854775807ms&until=9999-12-31T23:59:59Z"
                          "&buckets=1",
                          NULL, 400));
    cJSON_Delete(get_json(fx, "/api/series?since=9223372036854775807ms", NULL, 400));
    cJSON_Delete(get_json(fx, "/api/series?until=9223372036854775807d", NULL, 400));
    cJSON_Delete(get_json(fx, "/api/events?since=106752d", NULL, 400));
    cJSON_Delete(get_json(fx, "/api/report?until=36601d", NULL, 400));
    cJSON_Delete(get_json(fx, "/api/series?buckets=201", NULL, 400));
    cJSON_Delete(get_json(fx, "/api/series?buckets=-1", NULL, 400));
    /* the widest window the bounds allow: 100 years back (before 1970, so 1970) to the end
     * of 9999, one bucket that holds both deployments */
    doc = get_json(fx, "/api/series?since=36600d&until=9999-12-31T23:59:59Z&buckets=1", NULL,
                   200);
    b = cJSON_GetObjectItem(doc, "buckets");
    assert_int_equal(cJSON_GetArraySize(b), 1);
    assert_int_equal((int)dq_json_num(cJSON_GetArrayItem(b, 0), "deploys", -1), 2);
    cJSON_Delete(doc);
    /* the same window in 200 buckets: every deployment counted exactly once */
    doc = get_json(fx, "/api/series?since=1970-01-01T00:00:00.001Z&until=9999-12-31T23:59:59Z"
                       "&buckets=200",
                   NULL, 200);
    b = cJSON_GetObjectItem(doc, "buckets");
    assert_int_equal(cJSON_GetArraySize(b), 200);
    for (int i = 0; i < 200; i++)
        sum += dq_json_num(cJSON_GetArrayItem(b, i), "deploys", -1);
    assert_int_equal((int)sum, 2);
    cJSON_Delete(doc);
    /* a window after every event: empty buckets, not a negative index */
    doc = get_json(fx, "/api/series?since=2030-01-01T00:00:00Z&until=2030-01-02T00:00:00Z", NULL,
                   200);
    b = cJSON_GetObjectItem(doc, "buckets");
    sum = 0;
    for (int i = 0; i < cJSON_GetArraySize(b); i++)
        sum += dq_json_num(cJSON_GetArrayItem(b, i), "deploys", -1);
    assert_int_equal((int)sum, 0);
    cJSON_Delete(doc);
}

/* Error bodies echo what the client sent; invalid UTF-8 in it is replaced, so the body is
 * still JSON text (RFC 8259 requires UTF-8). */
static void test_error_body_utf8(void **state)
{
    fixture *fx = *state;
    static const char *const paths[] = {"/api/deployments/%FF%FEab", "/api/%C3",
                                        "/%ED%A0%80x", "/api/deployments/%F4%90%80%80",
                                        "/nothing/%C0%AF"};

    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        dq_http_response r = {0};

        raw(fx, "GET", paths[i], NULL, &r);
        assert_int_equal(r.status, 404);
        assert_non_null(r.body);
        assert_true(valid_utf8((const unsigned char *)r.body));
        assert_non_null(strstr(r.body, "\xef\xbf\xbd")); /* U+FFFD where the bytes were */
        cJSON_Delete(cJSON_Parse(r.body));
        dq_http_response_free(&r);
    }
}

/* An empty or blank token is a start error, never "no authentication". */
static void test_empty_token(void **state)
{
    dq_fold *f = dq_fold_new();
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    dq_httpapi_opts o = {.fold = f, .fold_lock = &m, .listen = "127.0.0.1:0"};
    static const char *const blanks[] = {"", " ", "\t \n"};
    char err[256];
    (void)state;

    for (size_t i = 0; i < sizeof blanks / sizeof blanks[0]; i++) {
        o.token = blanks[i];
        err[0] = '\0';
        assert_null(dq_httpapi_start(&o, err, sizeof err));
        assert_non_null(strstr(err, "bearer token is empty or blank"));
    }
    dq_fold_free(f);
}

/* Send all of string text on fd; 1 when it went out. */
static int send_str(int fd, const char *text)
{
    size_t n = strlen(text);

    return send(fd, text, n, MSG_NOSIGNAL) == (ssize_t)n;
}

/* A TCP connection to the fixture from source address src (127.0.0.X). */
static int connect_from(fixture *fx, const char *src)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(dq_httpapi_port(fx->api)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in me = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(inet_pton(AF_INET, src, &me.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&me, sizeof me), 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Whether the server closed fd (end of input or a reset) within timeout_ms; while waiting,
 * one byte of a never-ending header is sent every 100 ms, so the connection is never idle. */
static int closed_while_trickling(int fd, int timeout_ms)
{
    int64_t end = dq_mono_ms() + timeout_ms;

    while (dq_mono_ms() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char c;

        if (send(fd, "x", 1, MSG_NOSIGNAL) != 1)
            return 1;
        if (poll(&p, 1, 100) == 1) {
            ssize_t n = recv(fd, &c, 1, 0);

            if (n <= 0)
                return 1;
        }
    }
    return 0;
}

/* 40 slow senders from 8 addresses against 8 slots (4 per address): /healthz still answers
 * at once, and a connection that keeps trickling a header is closed by the request
 * timeout, although it is never idle. */
static void test_slow_clients(void **state)
{
    fixture *fx = *state;
    int fds[40], trickle;
    dq_http_response r = {0};
    char url[96], src[32];
    dq_http_opts ho = {.url = url, .timeout_ms = 2000};

    for (int i = 0; i < 40; i++) {
        snprintf(src, sizeof src, "127.0.0.%d", 2 + i % 8);
        fds[i] = connect_from(fx, src);
        /* a request line and a header that never ends */
        assert_true(send_str(fds[i], "GET /healthz HTTP/1.1\r\nX-Slow: "));
    }
    snprintf(url, sizeof url, "%s/healthz", fx->base);
    for (int k = 0; k < 5; k++) {
        int64_t t0 = dq_mono_ms();

        assert_int_equal(dq_http_request(&ho, &r), 0);
        assert_int_equal(r.status, 200);
        assert_true(dq_mono_ms() - t0 < 1500);
        dq_http_response_free(&r);
    }
    /* never idle, still cut: 500 ms to deliver a request, checked every 125 ms */
    trickle = connect_from(fx, "127.0.0.20");
    assert_true(send_str(trickle, "GET /healthz HTTP/1.1\r\nX-Slow: "));
    assert_true(closed_while_trickling(trickle, 3000));
    close(trickle);
    for (int i = 0; i < 40; i++)
        close(fds[i]);
    /* the cuts are counted */
    {
        dq_http_response m = {0};

        raw(fx, "GET", "/metrics", NULL, &m);
        assert_int_equal(m.status, 200);
        assert_null(strstr(m.body, "deployq_registry_http_connections_cut_total 0\n"));
        dq_http_response_free(&m);
    }
}

/* Event streams take at most half the slots: the 5th of 8 is refused with 503 while
 * /healthz answers; a stream whose client leaves frees its slot within about a second,
 * not at the next heartbeat (30 s here). */
static void test_stream_limits(void **state)
{
    fixture *fx = *state;
    static char buf[4096];
    int fds[4], extra;
    size_t len;
    dq_http_response r = {0};
    int64_t t0;
    int freed = 0;

    for (int i = 0; i < 4; i++) {
        char src[32];

        snprintf(src, sizeof src, "127.0.0.%d", 2 + i / 2); /* 2 per address: that limit */
        fds[i] = connect_from(fx, src);
        assert_true(send_str(fds[i], "GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n"));
        len = 0;
        buf[0] = '\0';
        assert_true(sse_wait_for(fds[i], buf, sizeof buf, &len, "event stream from", 3000));
    }
    /* a third stream from an address that has two, and a fifth in all: refused */
    extra = connect_from(fx, "127.0.0.2");
    assert_true(send_str(extra, "GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n"));
    len = 0;
    buf[0] = '\0';
    assert_true(sse_wait_for(extra, buf, sizeof buf, &len, "HTTP/1.1 503", 3000));
    assert_non_null(strstr(buf, "too many event streams"));
    close(extra);
    raw(fx, "GET", "/api/stream", NULL, &r);
    assert_int_equal(r.status, 503);
    dq_http_response_free(&r);
    raw(fx, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    dq_http_response_free(&r);
    /* the clients leave: their slots are free within about a second */
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    t0 = dq_mono_ms();
    while (dq_mono_ms() - t0 < 3000) {
        raw(fx, "GET", "/metrics", NULL, &r);
        freed = r.body && strstr(r.body, "deployq_registry_stream_clients{worker=\"registry\"} 0\n") != NULL;
        dq_http_response_free(&r);
        if (freed)
            break;
        dq_test_sleep_ms(50);
    }
    assert_true(freed);
    assert_true(dq_mono_ms() - t0 < 2000);
}

/* /readyz asks opts.ready on each request, never behind the token: 503 with the reason as
 * one line of JSON while it says not ready, 200 once it does; /metrics says the same. */
static int fake_ready_flag;
static int fake_ready(void *ctx, char *why, size_t whylen)
{
    (void)ctx;
    snprintf(why, whylen, "kafka: no partitions \"assigned\"");
    return fake_ready_flag;
}

static void test_readyz(void **state)
{
    dq_fold *f = dq_fold_new();
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    dq_httpapi_opts o = {.fold = f, .fold_lock = &m, .listen = "127.0.0.1:0",
                         .token = "sekret-token", .ready = fake_ready};
    char err[256], url[128];
    dq_http_response r = {0};
    dq_http_opts ho = {.url = url, .timeout_ms = 5000};
    const char *auth[] = {"Authorization: Bearer sekret-token", NULL};
    dq_httpapi *a;

    (void)state;
    a = dq_httpapi_start(&o, err, sizeof err);
    assert_non_null(a);
    fake_ready_flag = 0;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", dq_httpapi_port(a));
    assert_int_equal(dq_http_request(&ho, &r), 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"ready\":false,\"reason\":\"kafka: no partitions \\\"assigned\\\"\"}\n");
    dq_http_response_free(&r);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", dq_httpapi_port(a));
    ho.headers = auth;
    assert_int_equal(dq_http_request(&ho, &r), 0);
    assert_non_null(strstr(r.body, "deployq_ready{worker=\"registry\"} 0\n"));
    dq_http_response_free(&r);
    fake_ready_flag = 1;
    ho.headers = NULL;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", dq_httpapi_port(a));
    assert_int_equal(dq_http_request(&ho, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ready\n");
    dq_http_response_free(&r);
    dq_httpapi_stop(a);
    dq_fold_free(f);
}

static void test_start_errors(void **state)
{
    dq_fold *f = dq_fold_new();
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    dq_httpapi_opts o = {.fold = f, .fold_lock = &m};
    char err[256];
    dq_httpapi *a, *b;
    (void)state;

    o.listen = "nonsense";
    assert_null(dq_httpapi_start(&o, err, sizeof err));
    assert_string_equal(err, "http: listen address 'nonsense': expected HOST:PORT");
    o.listen = "127.0.0.1:99999";
    assert_null(dq_httpapi_start(&o, err, sizeof err));
    o.listen = "127.0.0.1:0";
    a = dq_httpapi_start(&o, err, sizeof err);
    assert_non_null(a);
    {
        char busy[64];

        snprintf(busy, sizeof busy, "127.0.0.1:%d", dq_httpapi_port(a));
        o.listen = busy;
        b = dq_httpapi_start(&o, err, sizeof err);
        assert_null(b);
        assert_non_null(strstr(err, "cannot listen on 127.0.0.1:"));
    }
    o.listen = "[::1]:0";
    b = dq_httpapi_start(&o, err, sizeof err);
    /* a host without IPv6 loopback may refuse; when it binds, it serves */
    if (b) {
        dq_http_response r = {0};
        char url[64];
        dq_http_opts ho = {.url = url, .timeout_ms = 5000};

        snprintf(url, sizeof url, "http://[::1]:%d/healthz", dq_httpapi_port(b));
        assert_int_equal(dq_http_request(&ho, &r), 0);
        assert_int_equal(r.status, 200);
        dq_http_response_free(&r);
    }
    dq_httpapi_stop(b);
    dq_httpapi_stop(a);
    dq_httpapi_stop(NULL);
    o.fold = NULL;
    assert_null(dq_httpapi_start(&o, err, sizeof err));
    assert_string_equal(err, "http: no state fold given");
    dq_fold_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_targets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deployment_and_rollbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_and_series, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_and_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token, setup_token, teardown),
        cmocka_unit_test_setup_teardown(test_stream_live, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_reset, setup_small_ring, teardown),
        cmocka_unit_test(test_start_errors),
        cmocka_unit_test_setup_teardown(test_series_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_body_utf8, setup, teardown),
        cmocka_unit_test(test_empty_token),
        cmocka_unit_test(test_readyz),
        cmocka_unit_test_setup_teardown(test_slow_clients, setup_limits, teardown),
        cmocka_unit_test_setup_teardown(test_stream_limits, setup_limits, teardown),
    };
    int rc;

    dq_log_init("test_httpapi", DQ_LOG_ERROR, 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
