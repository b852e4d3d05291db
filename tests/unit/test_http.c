/*
 * test_http.c - the HTTP client's retry policy against the webhook double: 429 with
 * Retry-After (seconds and HTTP date) waited out, a Retry-After beyond the budget not
 * waited, 5xx retried then given up, connection refused and timeouts classified, POSTs not
 * repeated after a timeout, bodies bounded; libcurl loaded by the first request, not before,
 * and a clear error on every request when it cannot be loaded.
 *
 * This program is not linked with libcurl (tests/unit/meson.build), and the first two
 * tests must run before any other makes a request.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../fakes/fake_server.h"
#include "http.h"
#include "util.h"

static dq_fake fake;

static int setup(void **state) { return dq_fake_start(&fake, "webhook"); }

static int teardown(void **state)
{
    dq_fake_stop(&fake);
    return 0;
}

static int reset(void **state) { return dq_fake_reset(&fake); }

static const char DEPLOY_BODY[] = "{\"deployment_id\":\"d1\",\"service\":\"api\",\"environment\":\"prod\"}";

static void post_deploy(dq_http_opts *o, char *url, size_t urllen)
{
    snprintf(url, urllen, "%s/deploy", fake.base);
    o->method = "POST";
    o->url = url;
    o->body = DEPLOY_BODY;
}

/* 1 when a libcurl file is mapped into this process. */
static int libcurl_mapped(void)
{
    char line[1024];
    int found = 0;
    FILE *f = fopen("/proc/self/maps", "r");

    assert_non_null(f);
    while (fgets(line, sizeof line, f) != NULL)
        if (strstr(line, "/libcurl") != NULL)
            found = 1;
    fclose(f);
    return found;
}

/* Two requests and a Retry-After date in a child that loads soname instead of libcurl (so
 * that this process can still load the real library afterwards). Writes into out: "rc1 rc2
 * error attempts1 attempts2 libcurl-mapped date|errstr1|errstr2". */
static void child_requests(const char *soname, char *out, size_t outlen)
{
    int fds[2];

    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dq_http_opts o = {.url = "http://127.0.0.1:9/x", .max_retries = 3, .backoff_base_ms = 10};
        dq_http_response r1, r2;
        char line[512];

        close(fds[0]);
        dq_http_test_set_library(soname);
        int rc1 = dq_http_request(&o, &r1);
        int rc2 = dq_http_request(&o, &r2);
        int64_t date = dq_http_retry_after_parse("Wed, 21 Oct 2026 07:28:00 GMT", 0);
        int n = snprintf(line, sizeof line, "%d %d %d %d %d %d %lld|%s|%s", rc1, rc2,
                         (int)r1.error, r1.attempts, r2.attempts, libcurl_mapped(),
                         (long long)date, r1.errstr, r2.errstr);
        _exit(write(fds[1], line, (size_t)n) == n ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], out, outlen - 1);
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(got > 0);
    out[got] = '\0';
}

/* With libcurl missing, or another library in its place, each request fails at once with
 * the reason (DQ_HTTP_ERR_OTHER = 3, one attempt, nothing retried), a Retry-After date is
 * unparseable rather than a crash, and libcurl is not mapped. */
static void test_library_missing(void **state)
{
    char out[512];

#define MISSING "cannot load libcurl: libcurl-missing-for-test.so.4: cannot open shared object " \
                "file: No such file or directory (install libcurl4)"
    child_requests("libcurl-missing-for-test.so.4", out, sizeof out);
    assert_string_equal(out, "-1 -1 3 1 1 0 -1|" MISSING "|" MISSING);
#undef MISSING
#define NOT_CURL "libz.so.1 has no curl_global_init: not libcurl?"
    child_requests("libz.so.1", out, sizeof out);
    assert_string_equal(out, "-1 -1 3 1 1 0 -1|" NOT_CURL "|" NOT_CURL);
#undef NOT_CURL
}

static void test_loaded_by_first_request(void **state)
{
    char url[128];
    dq_http_opts o = {.timeout_ms = 5000};
    dq_http_response r;

    assert_int_equal(dq_http_retry_after_parse("120", 0), 120000); /* needs no libcurl */
    assert_false(libcurl_mapped());
    post_deploy(&o, url, sizeof url);
    assert_int_equal(dq_http_request(&o, &r), 0);
    assert_int_equal(r.status, 202);
    dq_http_response_free(&r);
    assert_true(libcurl_mapped());
}

static void test_retry_after_parse(void **state)
{
    assert_int_equal(dq_http_retry_after_parse("120", 0), 120000);
    assert_int_equal(dq_http_retry_after_parse("0", 0), 0);
    /* Wed, 21 Oct 2026 07:28:00 GMT = 1792567680 s */
    assert_int_equal(dq_http_retry_after_parse("Wed, 21 Oct 2026 07:28:00 GMT", 1792567680000LL - 5000), 5000);
    assert_int_equal(dq_http_retry_after_parse("Wed, 21 Oct 2026 07:28:00 GMT", 1792567680000LL + 5000), 0);
    assert_int_equal(dq_http_retry_after_parse("soon", 0), -1);
    assert_int_equal(dq_http_retry_after_parse("12abc", 0), -1);
    assert_int_equal(dq_http_retry_after_parse("", 0), -1);
    assert_int_equal(dq_http_retry_after_parse(NULL, 0), -1);
}

static void test_escape(void **state)
{
    char *s = dq_http_escape("deploy.yml");
    assert_string_equal(s, "deploy.yml");
    free(s);
    s = dq_http_escape(">=2026-01-01T00:00:00Z a/b");
    assert_string_equal(s, "%3E%3D2026-01-01T00%3A00%3A00Z%20a%2Fb");
    free(s);
}

static void test_429_retry_after_honoured(void **state)
{
    char url[128];
    dq_http_opts o = {.max_retries = 3, .retry_budget_ms = 10000, .timeout_ms = 5000};
    dq_http_response r;

    assert_int_equal(dq_fake_script(&fake, "{\"mode\":\"rate_limit\",\"retry_after\":1,\"fail_times\":1}"), 0);
    post_deploy(&o, url, sizeof url);
    int64_t t0 = dq_mono_ms();
    assert_int_equal(dq_http_request(&o, &r), 0);
    int64_t waited = dq_mono_ms() - t0;
    assert_int_equal(r.status, 202);
    assert_int_equal(r.attempts, 2);
    assert_true(waited >= 1000);
    assert_true(waited < 4000);
    assert_non_null(strstr(r.body, "\"accepted\""));
    dq_http_response_free(&r);
}

static void test_429_retry_after_date(void **state)
{
    char url[128];
    dq_http_opts o = {.max_retries = 3, .retry_budget_ms = 10000, .timeout_ms = 5000};
    dq_http_response r;

    assert_int_equal(
        dq_fake_script(&fake, "{\"mode\":\"rate_limit\",\"retry_after\":2,\"retry_after_date\":true,\"fail_times\":1}"),
        0);
    post_deploy(&o, url, sizeof url);
    int64_t t0 = dq_mono_ms();
    assert_int_equal(dq_http_request(&o, &r), 0);
    int64_t waited = dq_mono_ms() - t0;
    assert_int_equal(r.status, 202);
    assert_int_equal(r.attempts, 2);
    /* An HTTP date has whole seconds: 2 s ahead is at least 1 s of waiting. */
    assert_true(waited >= 1000);
    assert_true(waited < 5000);
    dq_http_response_free(&r);
}

static void test_429_beyond_budget_not_waited(void **state)
{
    char url[128];
    dq_http_opts o = {.max_retries = 3, .retry_budget_ms = 1000, .timeout_ms = 5000};
    dq_http_response r;

    assert_int_equal(dq_fake_script(&fake, "{\"mode\":\"rate_limit\",\"retry_after\":30}"), 0);
    post_deploy(&o, url, sizeof url);
    int64_t t0 = dq_mono_ms();
    assert_int_equal(dq_http_request(&o, &r), 0);
    assert_true(dq_mono_ms() - t0 < 900);
    assert_int_equal(r.status, 429);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.budget_exhausted, 1);
    assert_int_equal(r.retry_after_ms, 30000);
    dq_http_response_free(&r);
}

static void test_5xx_retried_then_ok(void **state)
{
    char url[128];
    dq_http_opts o = {.max_retries = 3, .backoff_base_ms = 20, .timeout_ms = 5000};
    dq_http_response r;

    assert_int_equal(dq_fake_script(&fake, "{\"mode\":\"http_5xx\",\"fail_times\":2}"), 0);
    post_deploy(&o, url, sizeof url);
    assert_int_equal(dq_http_request(&o, &r), 0);
    assert_int_equal(r.status, 202);
    assert_int_equal(r.attempts, 3);
    dq_http_response_free(&r);
}

static void test_5xx_gives_up(void **state)
{
    char url[128];
    dq_http_opts o = {.max_retries = 2, .backoff_base_ms = 20, .timeout_ms = 5000};
    dq_http_response r;

    assert_int_equal(dq_fake_script(&fake, "{\"mode\":\"http_5xx\"}"), 0);
    post_deploy(&o, url, sizeof url);
    assert_int_equal(dq_http_request(&o, &r), 0);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.attempts, 3);
    assert_int_equal(r.error, DQ_HTTP_ERR_NONE);
    cJSON *calls = dq_fake_calls(&fake);
    assert_int_equal(dq_fake_count(calls, "POST", "/deploy"), 3);
    cJSON_Delete(calls);
    dq_http_response_free(&r);
}

static void test_4xx_not_retried(void **state)
{
    char url[128];
    dq_http_opts o = {.max_retries = 3, .backoff_base_ms = 20, .timeout_ms = 5000};
    dq_http_response r;

    assert_int_equal(dq_fake_script(&fake, "{\"mode\":\"http_402\"}"), 0);
    post_deploy(&o, url, sizeof url);
    assert_int_equal(dq_http_request(&o, &r), 0);
    assert_int_equal(r.status, 402);
    assert_int_equal(r.attempts, 1);
    dq_http_response_free(&r);
}

/* A port nobody listens on: bind, read the port, close. */
static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    bind(s, (struct sockaddr *)&a, sizeof a);
    getsockname(s, (struct sockaddr *)&a, &l);
    close(s);
    return ntohs(a.sin_port);
}

static void test_connect_refused(void **state)
{
    char url[128];
    dq_http_opts o = {.url = url, .max_retries = 2, .backoff_base_ms = 10, .timeout_ms = 2000};
    dq_http_response r;

    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", closed_port());
    assert_int_equal(dq_http_request(&o, &r), -1);
    assert_int_equal(r.error, DQ_HTTP_ERR_CONNECT);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.attempts, 3);
    assert_true(strlen(r.errstr) > 0);
    dq_http_response_free(&r);
}

static void test_timeout_get_retried(void **state)
{
    char url[128];
    dq_http_opts o = {.url = url, .max_retries = 1, .backoff_base_ms = 10, .timeout_ms = 300};
    dq_http_response r;

    assert_int_equal(dq_fake_script(&fake, "{\"delay_ms\":1500}"), 0);
    snprintf(url, sizeof url, "%s/slow", fake.base);
    assert_int_equal(dq_http_request(&o, &r), -1);
    assert_int_equal(r.error, DQ_HTTP_ERR_TIMEOUT);
    assert_int_equal(r.attempts, 2);
    dq_http_response_free(&r);
}

static void test_timeout_post_not_repeated(void **state)
{
    char url[128];
    dq_http_opts o = {.max_retries = 3, .backoff_base_ms = 10, .timeout_ms = 300};
    dq_http_response r;

    assert_int_equal(dq_fake_script(&fake, "{\"delay_ms\":1000}"), 0);
    post_deploy(&o, url, sizeof url);
    assert_int_equal(dq_http_request(&o, &r), -1);
    assert_int_equal(r.error, DQ_HTTP_ERR_TIMEOUT);
    assert_int_equal(r.attempts, 1);
    dq_http_response_free(&r);
    dq_sleep_ms(800); /* let the slow handler finish before the next test resets */
}

static void test_body_bounded(void **state)
{
    char url[128];
    dq_http_opts o = {.url = url, .timeout_ms = 10000};
    dq_http_response r;

    assert_int_equal(dq_fake_script(&fake, "{\"size\":2100000}"), 0);
    snprintf(url, sizeof url, "%s/big", fake.base);
    assert_int_equal(dq_http_request(&o, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.truncated, 1);
    assert_int_equal(r.body_len, DQ_HTTP_MAX_BODY);
    assert_int_equal(strlen(r.body), DQ_HTTP_MAX_BODY);
    dq_http_response_free(&r);
}

static void test_headers_sent(void **state)
{
    char url[128];
    const char *hdrs[] = {"Authorization: Bearer tok-123456", "X-Deployq-Fence: 7", NULL};
    dq_http_opts o = {.headers = hdrs, .timeout_ms = 5000};
    dq_http_response r;

    post_deploy(&o, url, sizeof url);
    assert_int_equal(dq_http_request(&o, &r), 0);
    assert_int_equal(r.status, 202);
    dq_http_response_free(&r);
    cJSON *calls = dq_fake_calls(&fake);
    const cJSON *c = dq_fake_call(calls, "POST", "/deploy", 0);
    assert_non_null(c);
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(c, "auth");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(auth, "present")));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(auth, "scheme")->valuestring, "Bearer");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "fence")->valuestring, "7");
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(c, "body");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(body, "deployment_id")->valuestring, "d1");
    cJSON_Delete(calls);
}

static void test_no_url(void **state)
{
    dq_http_opts o = {0};
    dq_http_response r;
    assert_int_equal(dq_http_request(&o, &r), -1);
    assert_int_equal(r.error, DQ_HTTP_ERR_OTHER);
    dq_http_response_free(&r);
    dq_http_response_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* these two first: no request may have been made before them */
        cmocka_unit_test(test_library_missing),
        cmocka_unit_test(test_loaded_by_first_request), /* no reset: that is a request */
        cmocka_unit_test(test_retry_after_parse),
        cmocka_unit_test(test_escape),
        cmocka_unit_test_setup(test_429_retry_after_honoured, reset),
        cmocka_unit_test_setup(test_429_retry_after_date, reset),
        cmocka_unit_test_setup(test_429_beyond_budget_not_waited, reset),
        cmocka_unit_test_setup(test_5xx_retried_then_ok, reset),
        cmocka_unit_test_setup(test_5xx_gives_up, reset),
        cmocka_unit_test_setup(test_4xx_not_retried, reset),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test_setup(test_timeout_get_retried, reset),
        cmocka_unit_test_setup(test_timeout_post_not_repeated, reset),
        cmocka_unit_test_setup(test_body_bounded, reset),
        cmocka_unit_test_setup(test_headers_sent, reset),
        cmocka_unit_test(test_no_url),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
