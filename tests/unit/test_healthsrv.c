/*
 * test_healthsrv.c - the health and metrics endpoints (common/clients/healthsrv.c) against
 * a real redis-server and the embedded broker: /readyz is 503 until a watched consumer has
 * its assignment, 200 then, 503 (with the reason in one line of JSON) while Redis is down
 * and 200 again when it is back, 503 once the broker is gone; /healthz is 200 throughout;
 * /metrics carries deployq_up, deployq_ready and the consumer lag read from librdkafka's
 * cache (exactly the messages behind a handler that holds the first one). Also: a port in
 * use is refused with a message that says so, and the listen forms.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "event.h"
#include "healthsrv.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "mockbroker.h"
#include "testutil.h"

#define WAIT_MS 30000

/* GET path from 127.0.0.1:port; the status, and the body in body. -1 on a socket error. */
static int http_get(int port, const char *path, char *body, size_t bodylen)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char req[256], *resp = malloc(1 << 20);
    size_t got = 0;
    ssize_t n;
    int fd = socket(AF_INET, SOCK_STREAM, 0), status = -1;
    const char *sep;

    assert_non_null(resp);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        goto out;
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
        goto out;
    while (got < (1 << 20) - 1 && (n = read(fd, resp + got, (1 << 20) - 1 - got)) > 0)
        got += (size_t)n;
    resp[got] = '\0';
    if (sscanf(resp, "HTTP/1.1 %d", &status) != 1)
        status = -1;
    sep = strstr(resp, "\r\n\r\n");
    snprintf(body, bodylen, "%s", sep ? sep + 4 : "");
out:
    if (fd >= 0)
        close(fd);
    free(resp);
    return status;
}

static void test_listen_forms(void **state)
{
    char host[64], port[16];

    (void)state;
    assert_int_equal(dq_listen_split("127.0.0.1:9101", host, sizeof host, port, sizeof port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_string_equal(port, "9101");
    assert_int_equal(dq_listen_split(":9102", host, sizeof host, port, sizeof port), 0);
    assert_string_equal(host, "");
    assert_int_equal(dq_listen_split("[::1]:9103", host, sizeof host, port, sizeof port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(dq_listen_split("9104", host, sizeof host, port, sizeof port), -1);
    assert_int_equal(dq_listen_split("h:70000", host, sizeof host, port, sizeof port), -1);
    assert_int_equal(dq_listen_split("h:", host, sizeof host, port, sizeof port), -1);
}

static void test_port_in_use(void **state)
{
    dq_healthsrv_opts o = {.listen = "127.0.0.1:0"};
    char err[256], addr[64];
    dq_healthsrv *a, *b;

    (void)state;
    a = dq_healthsrv_start(&o, err, sizeof err);
    assert_non_null(a);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", dq_healthsrv_port(a));
    o.listen = addr;
    b = dq_healthsrv_start(&o, err, sizeof err);
    assert_null(b);
    assert_non_null(strstr(err, "cannot listen on 127.0.0.1:"));
    dq_healthsrv_stop(a);
}

/* ---- readiness against real engines ---- */

typedef struct consumer_thread {
    dq_consumer *c;
    volatile sig_atomic_t stop;
    volatile int hold; /* the handler keeps the first message while set */
    int handled;
} consumer_thread;

static dq_handle_result handler(void *ctx, const dq_message *m, char *err, size_t errlen)
{
    consumer_thread *t = ctx;

    (void)m;
    (void)err;
    (void)errlen;
    while (t->hold && !t->stop)
        dq_test_sleep_ms(20);
    t->handled++;
    return DQ_HANDLED;
}

static void *consumer_main(void *arg)
{
    consumer_thread *t = arg;

    dq_consumer_run(t->c, handler, t, &t->stop);
    return NULL;
}

static int wait_ready(dq_healthsrv *h, int want, char *why, size_t whylen)
{
    for (int i = 0; i < WAIT_MS / 100; i++) {
        if (dq_healthsrv_check(h, why, whylen) == want)
            return 1;
        dq_test_sleep_ms(100);
    }
    return 0;
}

static int wait_metric(int port, const char *line)
{
    static char body[1 << 16];

    for (int i = 0; i < WAIT_MS / 100; i++) {
        if (http_get(port, "/metrics", body, sizeof body) == 200 && strstr(body, line))
            return 1;
        dq_test_sleep_ms(100);
    }
    fprintf(stderr, "last /metrics:\n%s\n", body);
    return 0;
}

static void test_readiness(void **state)
{
    char err[512], why[512], url[64], body[4096];
    int rport;
    pid_t rpid;
    dq_mock_broker *mb = dq_mock_broker_new(1, 1, err, sizeof err);
    dq_config *cfg = dq_config_new_default();
    dq_metrics *m = dq_metrics_new("worker", "test");
    dq_producer *p;
    dq_healthsrv *h;
    consumer_thread t = {.hold = 1};
    pthread_t tid;
    const char *topics[] = {DQ_TOPIC_REQUESTS};
    dq_consumer_opts copts = {.group_id = "health-test", .topics = topics, .n_topics = 1};

    (void)state;
    assert_non_null(mb);
    assert_int_equal(dq_test_redis_start(&rport, &rpid), 0);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", rport);
    dq_config_set_kafka(cfg, "bootstrap.servers", dq_mock_broker_bootstraps(mb));
    /* a long session: the consumer keeps its assignment for 45 s after the broker went
     * away, so only the broker check can make /readyz say so within WAIT_MS (one member:
     * the embedded broker's join does not wait for the session) */
    dq_config_set_kafka(cfg, "session.timeout.ms", "45000");
    dq_config_set_kafka(cfg, "heartbeat.interval.ms", "500");

    {
        dq_healthsrv_opts o = {.listen = "127.0.0.1:0", .redis_url = url, .metrics = m};

        h = dq_healthsrv_start(&o, err, sizeof err);
    }
    assert_non_null(h);
    assert_int_equal(dq_healthsrv_check(h, why, sizeof why), 0);
    assert_non_null(strstr(why, "no consumer"));

    /* five messages on the one partition, before the consumer starts */
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    for (int i = 0; i < 5; i++)
        assert_int_equal(dq_producer_send(p, DQ_TOPIC_REQUESTS, "k", "v", 1, 10000, NULL, NULL,
                                          err, sizeof err), 0);
    t.c = dq_consumer_new(cfg, &copts, NULL, err, sizeof err);
    assert_non_null(t.c);
    assert_int_equal(dq_healthsrv_watch(h, t.c), 0);
    assert_int_equal(dq_healthsrv_check(h, why, sizeof why), 0);
    assert_non_null(strstr(why, "no partitions assigned"));
    assert_int_equal(http_get(dq_healthsrv_port(h), "/readyz", body, sizeof body), 503);
    assert_non_null(strstr(body, "\"ready\":false"));

    assert_int_equal(pthread_create(&tid, NULL, consumer_main, &t), 0);
    assert_true(wait_ready(h, 1, why, sizeof why));
    assert_int_equal(http_get(dq_healthsrv_port(h), "/readyz", body, sizeof body), 200);
    assert_string_equal(body, "ready\n");
    assert_int_equal(http_get(dq_healthsrv_port(h), "/healthz", body, sizeof body), 200);
    assert_string_equal(body, "ok\n");
    /* the handler holds offset 0: four messages behind the high watermark (5) */
    assert_true(wait_metric(dq_healthsrv_port(h), "deployq_consumer_lag{worker=\"test\",topic=\""
                                                  DQ_TOPIC_REQUESTS "\",partition=\"0\"} 4\n"));
    assert_true(wait_metric(dq_healthsrv_port(h), "deployq_ready{worker=\"test\"} 1\n"));
    assert_true(wait_metric(dq_healthsrv_port(h), "deployq_up{worker=\"test\"} 1\n"));

    /* Redis goes away, and comes back on the same port */
    dq_test_redis_stop(rpid);
    assert_true(wait_ready(h, 0, why, sizeof why));
    assert_non_null(strstr(why, "redis"));
    assert_int_equal(http_get(dq_healthsrv_port(h), "/readyz", body, sizeof body), 503);
    assert_non_null(strstr(body, "{\"ready\":false,\"reason\":\"redis"));
    assert_ptr_equal(strchr(body, '\n'), body + strlen(body) - 1); /* one line */
    assert_true(wait_metric(dq_healthsrv_port(h), "deployq_ready{worker=\"test\"} 0\n"));
    assert_int_equal(dq_test_redis_start_on(rport, NULL, &rpid), 0);
    assert_true(wait_ready(h, 1, why, sizeof why));

    /* the handler lets go: the lag drains to 0 */
    t.hold = 0;
    assert_true(wait_metric(dq_healthsrv_port(h), "deployq_consumer_lag{worker=\"test\",topic=\""
                                                  DQ_TOPIC_REQUESTS "\",partition=\"0\"} 0\n"));

    /* the broker goes away */
    dq_mock_broker_free(mb);
    mb = NULL;
    assert_true(wait_ready(h, 0, why, sizeof why));
    assert_non_null(strstr(why, "kafka"));
    assert_int_equal(http_get(dq_healthsrv_port(h), "/healthz", body, sizeof body), 200);

    t.stop = 1;
    pthread_join(tid, NULL);
    dq_healthsrv_stop(h); /* before the consumer it reads */
    dq_consumer_free(t.c);
    dq_producer_free(p);
    dq_test_redis_stop(rpid);
    dq_metrics_free(m);
    dq_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listen_forms),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_readiness),
    };
    dq_log_init("test_healthsrv", DQ_LOG_WARN, -1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
