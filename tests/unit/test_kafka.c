/*
 * test_kafka.c - kafka.h against the embedded broker (librdkafka's mock cluster) that each
 * test starts for itself: a synchronous send returns its position (a new producer's first
 * one without waiting for librdkafka's one-second topic scan), a broker that is not
 * there fails within the timeout with "unreachable", kafka.* keys pass through (and their
 * errors are redacted), the consumer delivers in order, stores an offset only after
 * DQ_HANDLED, redelivers after DQ_RETRY, dead-letters DQ_POISON and exhausted DQ_FAILED
 * messages with their position and error, a second consumer of the group resumes after the
 * last handled offset, topics are created idempotently, and SIGTERM sets the stop flag.
 *
 * The mock broker waits up to a whole session.timeout.ms on a rebalance, so consumers
 * here use session.timeout.ms=6000 and heartbeat.interval.ms=500.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "event.h"
#include "kafka.h"
#include "log.h"
#include "mockbroker.h"
#include "signals.h"
#include "util.h"

#define KEY "api/production"
#define RUN_LIMIT_MS 20000 /* a consumer run that has not finished by then has failed */
#define MAX_SEEN 32

/* ---- helpers ---- */

static dq_config *test_config(const char *bootstraps)
{
    dq_config *cfg = dq_config_new_default();

    assert_non_null(cfg);
    assert_int_equal(dq_config_set_kafka(cfg, "bootstrap.servers", bootstraps), 0);
    return cfg;
}

/* Consumer settings the mock needs to rebalance quickly (see the file comment). */
static dq_config *consumer_config(const char *bootstraps)
{
    dq_config *cfg = test_config(bootstraps);

    assert_int_equal(dq_config_set_kafka(cfg, "session.timeout.ms", "6000"), 0);
    assert_int_equal(dq_config_set_kafka(cfg, "heartbeat.interval.ms", "500"), 0);
    return cfg;
}

static void send_value(dq_producer *p, const char *topic, const char *key, const void *value,
                       size_t len, int64_t want_offset)
{
    char err[256] = "";
    int32_t partition = -1;
    int64_t offset = -1;

    assert_int_equal(
        dq_producer_send(p, topic, key, value, len, 5000, &partition, &offset, err, sizeof err),
        0);
    assert_string_equal(err, "");
    assert_int_equal(partition, 0);
    assert_int_equal(offset, want_offset);
}

static void send_text(dq_producer *p, const char *topic, const char *text, int64_t want_offset)
{
    send_value(p, topic, KEY, text, strlen(text), want_offset);
}

/* What a handler saw, and the script that decides its answers. */
typedef struct seen {
    char values[MAX_SEEN][64];
    int64_t offsets[MAX_SEEN];
    int n;
    int stop_after; /* stop the loop after this many calls */
    volatile sig_atomic_t *stop;
    dq_handle_result (*decide)(struct seen *s, const dq_message *m, char *err, size_t errlen);
    int retries_left; /* for the scripts that retry */
} seen;

static dq_handle_result record(void *ctx, const dq_message *m, char *err, size_t errlen)
{
    seen *s = ctx;
    dq_handle_result r = DQ_HANDLED;

    assert_true(s->n < MAX_SEEN);
    assert_string_equal(m->topic, DQ_TOPIC_REQUESTS);
    assert_int_equal(m->key_len, strlen(KEY));
    assert_memory_equal(m->key, KEY, m->key_len);
    snprintf(s->values[s->n], sizeof s->values[s->n], "%.*s", (int)m->len, m->value);
    s->offsets[s->n] = m->offset;
    s->n++;
    if (s->decide)
        r = s->decide(s, m, err, errlen);
    if (s->n >= s->stop_after)
        *s->stop = 1;
    return r;
}

typedef struct watchdog {
    volatile sig_atomic_t *stop;
    int limit_ms;
    int done;
    int fired;
} watchdog;

static void *watchdog_main(void *arg)
{
    watchdog *w = arg;
    int64_t until = dq_mono_ms() + w->limit_ms;

    while (!__atomic_load_n(&w->done, __ATOMIC_SEQ_CST)) {
        if (dq_mono_ms() >= until) {
            w->fired = 1;
            *w->stop = 1;
            break;
        }
        dq_sleep_ms(20);
    }
    return NULL;
}

/* dq_consumer_run until the handler stops it or limit_ms passed; returns 1 when the
 * limit stopped it. */
static int run_consumer_for(dq_consumer *c, seen *s, int limit_ms)
{
    volatile sig_atomic_t stop = 0;
    watchdog w = {.stop = &stop, .limit_ms = limit_ms};
    pthread_t t;

    s->stop = &stop;
    assert_int_equal(pthread_create(&t, NULL, watchdog_main, &w), 0);
    assert_int_equal(dq_consumer_run(c, record, s, &stop), 0);
    __atomic_store_n(&w.done, 1, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    return w.fired;
}

/* A broken consumer fails the test instead of hanging it. */
static void run_consumer(dq_consumer *c, seen *s)
{
    assert_int_equal(run_consumer_for(c, s, RUN_LIMIT_MS), 0);
}

static dq_consumer *new_consumer(const dq_config *cfg, const char *group, dq_producer *dead,
                                 int max_attempts)
{
    static const char *const topics[] = {DQ_TOPIC_REQUESTS};
    dq_consumer_opts opts = {.group_id = group,
                             .topics = topics,
                             .n_topics = 1,
                             .max_attempts = max_attempts,
                             .poll_timeout_ms = 50};
    char err[256] = "";
    dq_consumer *c = dq_consumer_new(cfg, &opts, dead, err, sizeof err);

    assert_non_null(c);
    assert_string_equal(err, "");
    return c;
}

/* Commit what the consumer stored and return the group's committed offset of
 * DQ_TOPIC_REQUESTS [0]. */
static int64_t committed_offset(dq_consumer *c)
{
    rd_kafka_t *rk = dq_consumer_handle(c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    int64_t off;

    rd_kafka_commit(rk, NULL, 0); /* "no offset" when nothing was stored is fine here */
    rd_kafka_topic_partition_list_add(l, DQ_TOPIC_REQUESTS, 0);
    assert_int_equal(rd_kafka_committed(rk, l, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return off;
}

/* Read want messages of topic [0] from the beginning without joining a group (assign),
 * into values (malloc'd, caller frees) and keys. */
static int read_topic(const char *bootstraps, const char *topic, int want, char **values,
                      char keys[][64])
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_t *rk;
    char why[256];
    int n = 0;
    int64_t until = dq_mono_ms() + 10000;

    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, why, sizeof why),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "group.id", "test-reader", why, sizeof why),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof why),
                     RD_KAFKA_CONF_OK);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    assert_non_null(rk);
    rd_kafka_poll_set_consumer(rk);
    l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);
    while (n < want && dq_mono_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            values[n] = strndup(m->payload, m->len);
            snprintf(keys[n], 64, "%.*s", (int)m->key_len, (const char *)m->key);
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

static int setup(void **state)
{
    (void)state;
    dq_log_init("test_kafka", DQ_LOG_ERROR, 0);
    return 0;
}

/* ---- configuration ---- */

static void test_conf_unknown_key(void **state)
{
    dq_config *cfg = test_config("127.0.0.1:1");
    char err[256] = "";

    (void)state;
    assert_int_equal(dq_config_set_kafka(cfg, "no.such.property", "1"), 0);
    assert_null(dq_kafka_conf(cfg, err, sizeof err));
    assert_string_equal(err, "kafka.no.such.property: No such configuration property: "
                             "\"no.such.property\"");
    err[0] = '\0';
    assert_null(dq_producer_new(cfg, err, sizeof err));
    assert_string_equal(err, "kafka.no.such.property: No such configuration property: "
                             "\"no.such.property\"");
    dq_config_free(cfg);
}

static void test_conf_error_redacts_secret(void **state)
{
    dq_config *cfg = test_config("127.0.0.1:1");
    char err[256] = "";

    (void)state;
    dq_log_redact("s3cr3t-Passw0rd");
    /* librdkafka quotes an invalid value in its error text */
    assert_int_equal(dq_config_set_kafka(cfg, "security.protocol", "s3cr3t-Passw0rd"), 0);
    assert_null(dq_kafka_conf(cfg, err, sizeof err));
    assert_null(strstr(err, "s3cr3t"));
    assert_string_equal(err, "kafka.security.protocol: Invalid value \"***\" for configuration "
                             "property \"security.protocol\"");
    dq_log_redact_clear();
    dq_config_free(cfg);
}

static void test_conf_passes_keys_through(void **state)
{
    dq_config *cfg = test_config("127.0.0.1:1");
    char err[256] = "", buf[64];
    size_t size = sizeof buf;
    rd_kafka_conf_t *conf;

    (void)state;
    assert_int_equal(dq_config_set_kafka(cfg, "client.id", "deployq-test"), 0);
    conf = dq_kafka_conf(cfg, err, sizeof err);
    assert_non_null(conf);
    assert_int_equal(rd_kafka_conf_get(conf, "client.id", buf, &size), RD_KAFKA_CONF_OK);
    assert_string_equal(buf, "deployq-test");
    size = sizeof buf;
    assert_int_equal(rd_kafka_conf_get(conf, "bootstrap.servers", buf, &size), RD_KAFKA_CONF_OK);
    assert_string_equal(buf, "127.0.0.1:1");
    rd_kafka_conf_destroy(conf);
    dq_config_free(cfg);
}

/* queued.max.messages.kbytes of a consumer's rd_kafka_t, "" when it cannot be read. */
static void consumer_prefetch(const dq_config *cfg, char *buf, size_t size)
{
    static const char *const topics[] = {DQ_TOPIC_REQUESTS};
    dq_consumer_opts opts = {.group_id = "prefetch", .topics = topics, .n_topics = 1,
                             .close_timeout_ms = 100};
    char err[256] = "";
    dq_consumer *c = dq_consumer_new(cfg, &opts, NULL, err, sizeof err);

    assert_non_null(c);
    if (rd_kafka_conf_get(rd_kafka_conf(dq_consumer_handle(c)), "queued.max.messages.kbytes",
                          buf, &size) != RD_KAFKA_CONF_OK)
        buf[0] = '\0';
    dq_consumer_free(c);
}

/* A consumer prefetches at most DQ_KAFKA_PREFETCH_KBYTES (librdkafka's own default is
 * 64 MiB: what a worker held after a flood), unless kafka.* says otherwise. */
static void test_consumer_prefetch_bounded(void **state)
{
    dq_config *cfg = test_config("127.0.0.1:1");
    char buf[32];

    (void)state;
    consumer_prefetch(cfg, buf, sizeof buf);
    assert_string_equal(buf, "4096");
    assert_int_equal(dq_config_set_kafka(cfg, "queued.max.messages.kbytes", "65536"), 0);
    consumer_prefetch(cfg, buf, sizeof buf);
    assert_string_equal(buf, "65536");
    dq_config_free(cfg);
}

/* ---- producer ---- */

static void test_mock_broker_bootstraps(void **state)
{
    dq_mock_broker *b;
    char err[256] = "";
    const char *bs;

    (void)state;
    b = dq_mock_broker_new(3, 2, err, sizeof err);
    assert_non_null(b);
    bs = dq_mock_broker_bootstraps(b);
    assert_non_null(bs);
    assert_int_equal(strncmp(bs, "127.0.0.1:", 10), 0);
    /* three brokers, three addresses */
    assert_non_null(strchr(bs, ','));
    assert_non_null(strchr(strchr(bs, ',') + 1, ','));
    assert_null(strchr(strchr(strchr(bs, ',') + 1, ',') + 1, ','));
    dq_mock_broker_free(b);
    dq_mock_broker_free(NULL);
}

static void test_send_returns_position(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg;
    dq_producer *p;
    char err[256] = "";

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = test_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    send_text(p, DQ_TOPIC_REQUESTS, "first", 0);
    send_text(p, DQ_TOPIC_REQUESTS, "second", 1);
    send_value(p, DQ_TOPIC_EVENTS, NULL, "no key", 6, 0);
    dq_producer_free(p);
    dq_producer_free(NULL);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

/* The first send of a producer whose connection is already up, which is how a busy
 * machine schedules `deployq submit`: the broker's first metadata request went out
 * before the topic existed. The send must ask for the topic itself instead of waiting
 * for librdkafka's one-second topic scan (1.0 s instead of about 1 ms: issue 11). */
static void test_first_send_after_connect_is_prompt(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg;
    dq_producer *p;
    char err[256] = "";
    int64_t t0;

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = test_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    /* the controller id comes with the connection's first metadata response, which asked
     * for the brokers only: no topic existed yet */
    assert_true(rd_kafka_controllerid(dq_producer_handle(p), 10000) >= 0);
    t0 = dq_mono_ms();
    /* 500 ms: far above a round trip to the embedded broker, below the scan (1 s after
     * the producer started) that the send used to wait for */
    assert_int_equal(dq_producer_send(p, DQ_TOPIC_REQUESTS, KEY, "x", 1, 500, NULL, NULL, err,
                                      sizeof err), 0);
    assert_true(dq_mono_ms() - t0 < 500);
    dq_producer_free(p);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

static void test_send_async_and_flush(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg;
    dq_producer *p;
    char err[256] = "";
    char *values[10];
    char keys[10][64];

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = test_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    for (int i = 0; i < 10; i++) {
        char v[32];
        snprintf(v, sizeof v, "async-%d", i);
        assert_int_equal(dq_producer_send_async(p, DQ_TOPIC_EVENTS, KEY, v, strlen(v)), 0);
    }
    assert_int_equal(dq_producer_flush(p, 5000), 0);
    assert_int_equal(read_topic(dq_mock_broker_bootstraps(b), DQ_TOPIC_EVENTS, 10, values, keys),
                     10);
    for (int i = 0; i < 10; i++) {
        char v[32];
        snprintf(v, sizeof v, "async-%d", i);
        assert_string_equal(values[i], v);
        assert_string_equal(keys[i], KEY);
        free(values[i]);
    }
    dq_producer_free(p);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

static void test_flush_counts_failures(void **state)
{
    dq_config *cfg = test_config("127.0.0.1:1");
    dq_producer *p;
    char err[256] = "";

    (void)state;
    /* nobody listens on port 1: every message times out after 300 ms */
    assert_int_equal(dq_config_set_kafka(cfg, "message.timeout.ms", "300"), 0);
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(dq_producer_send_async(p, DQ_TOPIC_EVENTS, KEY, "x", 1), 0);
    assert_int_equal(dq_producer_send_async(p, DQ_TOPIC_EVENTS, KEY, "y", 1), 0);
    assert_int_equal(dq_producer_flush(p, 5000), 2);
    assert_int_equal(dq_producer_flush(p, 5000), 0); /* counted since the last flush */
    dq_producer_free(p);
    dq_config_free(cfg);
}

static void test_send_unreachable(void **state)
{
    dq_config *cfg = test_config("127.0.0.1:1");
    dq_producer *p;
    char err[256] = "";
    int64_t start, took;

    (void)state;
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    start = dq_mono_ms();
    assert_int_equal(dq_producer_send(p, DQ_TOPIC_REQUESTS, KEY, "x", 1, 1000, NULL, NULL, err,
                                      sizeof err),
                     -1);
    took = dq_mono_ms() - start;
    assert_int_equal(strncmp(err, "broker 127.0.0.1:1 unreachable after 1 s", 40), 0);
    /* ... and says why, on the same line */
    assert_non_null(strstr(err, " (last error: "));
    assert_non_null(strstr(err, "Connection refused"));
    assert_true(took >= 1000);
    assert_true(took < 2500); /* the timeout, plus the purge's short wait at most */
    start = dq_mono_ms();
    dq_producer_free(p);
    assert_true(dq_mono_ms() - start < 3000); /* nothing left to flush */
    dq_config_free(cfg);
}

/* ---- topics ---- */

static int partition_count(const char *bootstraps, const char *topic)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt;
    rd_kafka_t *rk;
    char why[256];
    int n = -1;

    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, why, sizeof why),
                     RD_KAFKA_CONF_OK);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    assert_non_null(rk);
    rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rd_kafka_metadata(rk, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        md->topic_cnt == 1 && !md->topics[0].err)
        n = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return n;
}

/* The embedded broker has its topics already: nothing to create, and it does not need the
 * CreateTopics request it lacks (librdkafka 2.0's mock has none). */
static void test_ensure_topics_existing(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg;
    char err[256] = "";
    int64_t start;

    (void)state;
    b = dq_mock_broker_new(1, 2, err, sizeof err);
    assert_non_null(b);
    cfg = test_config(dq_mock_broker_bootstraps(b));
    start = dq_mono_ms();
    assert_int_equal(dq_kafka_ensure_topics(cfg, 2, 5000, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_true(dq_mono_ms() - start < 2000);
    assert_int_equal(partition_count(dq_mock_broker_bootstraps(b), DQ_TOPIC_REQUESTS), 2);
    assert_int_equal(partition_count(dq_mock_broker_bootstraps(b), DQ_TOPIC_EVENTS), 2);
    assert_int_equal(partition_count(dq_mock_broker_bootstraps(b), DQ_TOPIC_DEAD), 1);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

/* Creation needs a real Kafka (DEPLOYQ_TEST_BROKERS, as the integration tests use): the
 * replication factor -1 ("the broker's default") must be accepted. */
static void test_ensure_topics_creates(void **state)
{
    const char *brokers = getenv("DEPLOYQ_TEST_BROKERS");
    dq_config *cfg;
    char err[256] = "", suffix[DQ_UUID_LEN + 1], name[3][96];

    (void)state;
    if (!brokers || !brokers[0])
        skip();
    cfg = test_config(brokers);
    assert_int_equal(dq_uuid_v4(suffix), 0);
    snprintf(name[0], sizeof name[0], "test.requests.%s", suffix);
    snprintf(name[1], sizeof name[1], "test.events.%s", suffix);
    snprintf(name[2], sizeof name[2], "test.dead.%s", suffix);
    free(cfg->topic_requests);
    free(cfg->topic_events);
    free(cfg->topic_dead);
    cfg->topic_requests = strdup(name[0]);
    cfg->topic_events = strdup(name[1]);
    cfg->topic_dead = strdup(name[2]);
    assert_int_equal(dq_kafka_ensure_topics(cfg, 3, 10000, err, sizeof err), 0);
    assert_string_equal(err, "");
    /* again: they exist now, which is success */
    assert_int_equal(dq_kafka_ensure_topics(cfg, 3, 10000, err, sizeof err), 0);
    assert_int_equal(partition_count(brokers, name[0]), 3);
    assert_int_equal(partition_count(brokers, name[1]), 3);
    assert_int_equal(partition_count(brokers, name[2]), 1);
    dq_config_free(cfg);
}

static void test_ensure_topics_unreachable(void **state)
{
    dq_config *cfg = test_config("127.0.0.1:1");
    char err[256] = "";
    int64_t start = dq_mono_ms();

    (void)state;
    assert_int_equal(dq_kafka_ensure_topics(cfg, 3, 1000, err, sizeof err), -1);
    assert_int_equal(strncmp(err, "broker 127.0.0.1:1 unreachable after 1 s", 40), 0);
    assert_true(dq_mono_ms() - start < 3000);
    dq_config_free(cfg);
}

/* ---- consumer ---- */

static void test_consume_in_order(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg;
    dq_producer *p;
    dq_consumer *c;
    seen s = {.stop_after = 5};
    char err[256] = "";

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = consumer_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    for (int i = 0; i < 5; i++) {
        char v[32];
        snprintf(v, sizeof v, "m%d", i);
        send_text(p, DQ_TOPIC_REQUESTS, v, i);
    }
    c = new_consumer(cfg, "order", p, 3);
    run_consumer(c, &s);
    assert_int_equal(s.n, 5);
    for (int i = 0; i < 5; i++) {
        char v[32];
        snprintf(v, sizeof v, "m%d", i);
        assert_string_equal(s.values[i], v);
        assert_int_equal(s.offsets[i], i);
    }
    /* every message handled: the next one to read is 5 */
    assert_int_equal(committed_offset(c), 5);
    dq_consumer_free(c);
    dq_consumer_free(NULL);
    dq_producer_free(p);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

/* "a" is handled; "b" asks for a retry twice, then is handled. */
static dq_handle_result retry_b(seen *s, const dq_message *m, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    if (m->len == 1 && m->value[0] == 'b' && s->retries_left > 0) {
        s->retries_left--;
        return DQ_RETRY;
    }
    return DQ_HANDLED;
}

/* "a" is handled, "b" always asks for a retry. */
static dq_handle_result retry_b_forever(seen *s, const dq_message *m, char *err, size_t errlen)
{
    (void)s;
    (void)err;
    (void)errlen;
    return m->len == 1 && m->value[0] == 'b' ? DQ_RETRY : DQ_HANDLED;
}

static void test_retry_redelivers_and_stores_nothing(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg;
    dq_producer *p;
    dq_consumer *c;
    seen s = {.stop_after = 4, .decide = retry_b_forever};
    seen s2 = {.stop_after = 4, .decide = retry_b, .retries_left = 2};
    char err[256] = "";

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = consumer_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    send_text(p, DQ_TOPIC_REQUESTS, "a", 0);
    send_text(p, DQ_TOPIC_REQUESTS, "b", 1);
    send_text(p, DQ_TOPIC_REQUESTS, "c", 2);

    /* "b" comes back after each retry, and "c" is not handled before "b" is */
    c = new_consumer(cfg, "retry", p, 3);
    run_consumer(c, &s);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.values[0], "a");
    for (int i = 1; i < 4; i++) {
        assert_string_equal(s.values[i], "b");
        assert_int_equal(s.offsets[i], 1);
    }
    /* only "a" was handled: the group's position stays on "b" */
    assert_int_equal(committed_offset(c), 1);
    dq_consumer_free(c);

    /* the next member of the group starts at "b": "a" is not handled twice */
    c = new_consumer(cfg, "retry", p, 3);
    run_consumer(c, &s2);
    assert_int_equal(s2.n, 4);
    assert_string_equal(s2.values[0], "b");
    assert_string_equal(s2.values[1], "b");
    assert_string_equal(s2.values[2], "b");
    assert_string_equal(s2.values[3], "c");
    assert_int_equal(s2.offsets[3], 2);
    assert_int_equal(committed_offset(c), 3);
    dq_consumer_free(c);
    dq_producer_free(p);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

/* "a" and "c" are taken over by the handler (DQ_DEFERRED), the others handled at once. */
static dq_handle_result defer_ac(seen *s, const dq_message *m, char *err, size_t errlen)
{
    (void)s;
    (void)err;
    (void)errlen;
    return m->len == 1 && (m->value[0] == 'a' || m->value[0] == 'c') ? DQ_DEFERRED : DQ_HANDLED;
}

/* Deferred messages hold the partition's stored offset back until they are acknowledged,
 * and only the contiguous done prefix is stored (a handled message behind a deferred one
 * waits for it). */
static void test_deferred_ack_stores_done_prefix(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg;
    dq_producer *p;
    dq_consumer *c;
    seen s = {.stop_after = 4, .decide = defer_ac};
    seen idle = {.stop_after = 100};
    char err[256] = "";

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = consumer_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    send_text(p, DQ_TOPIC_REQUESTS, "a", 0);
    send_text(p, DQ_TOPIC_REQUESTS, "b", 1);
    send_text(p, DQ_TOPIC_REQUESTS, "c", 2);
    send_text(p, DQ_TOPIC_REQUESTS, "d", 3);

    c = new_consumer(cfg, "deferred", p, 3);
    run_consumer(c, &s);
    assert_int_equal(s.n, 4);
    /* "a" is still running: nothing may be committed, "b" handled or not */
    assert_int_equal(committed_offset(c), RD_KAFKA_OFFSET_INVALID);

    /* "a" done: "a" and "b" count, "c" still holds the rest back */
    dq_consumer_ack(c, DQ_TOPIC_REQUESTS, 0, 0);
    dq_consumer_ack(c, "some.other.topic", 7, 0); /* not ours: ignored */
    run_consumer_for(c, &idle, 300);
    assert_int_equal(idle.n, 0);
    assert_int_equal(committed_offset(c), 2);

    /* "c" done, from another moment: everything through "d" counts */
    dq_consumer_ack(c, DQ_TOPIC_REQUESTS, 0, 2);
    run_consumer_for(c, &idle, 300);
    assert_int_equal(idle.n, 0);
    assert_int_equal(committed_offset(c), 4);
    dq_consumer_free(c);
    dq_producer_free(p);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

/* ---- batches ---- */

typedef struct batch_seen {
    char values[MAX_SEEN][64];
    int64_t offsets[MAX_SEEN];
    int n, empty_calls, nacked;
    dq_consumer *c;
    volatile sig_atomic_t *stop;
} batch_seen;

/* The first four messages are deferred; once all four are in, "a" is acknowledged and "b"
 * fails (as a verdict whose delivery failed): "b", "c" and "d" must come again, and are
 * then handled. */
static void batch_script(void *ctx, dq_batch_item *items, size_t n)
{
    batch_seen *s = ctx;

    if (n == 0)
        s->empty_calls++;
    for (size_t i = 0; i < n; i++) {
        assert_true(s->n < MAX_SEEN);
        snprintf(s->values[s->n], sizeof s->values[s->n], "%.*s", (int)items[i].m.len,
                 items[i].m.value);
        s->offsets[s->n] = items[i].m.offset;
        s->n++;
        items[i].result = s->n <= 4 ? DQ_DEFERRED : DQ_HANDLED;
    }
    if (s->n == 4 && !s->nacked) {
        s->nacked = 1;
        /* from inside the handler, as a delivery report served by a send would */
        dq_consumer_ack(s->c, DQ_TOPIC_REQUESTS, 0, 0);
        dq_consumer_nack(s->c, DQ_TOPIC_REQUESTS, 0, 1);
    }
    if (s->n >= 7)
        *s->stop = 1;
}

static void test_batch_nack_reads_again(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg;
    dq_producer *p;
    dq_consumer *c;
    batch_seen s = {0};
    volatile sig_atomic_t stop = 0;
    watchdog w = {.stop = &stop, .limit_ms = RUN_LIMIT_MS};
    pthread_t t;
    char err[256] = "";
    static const char *const want[] = {"a", "b", "c", "d", "b", "c", "d"};
    static const int64_t want_offsets[] = {0, 1, 2, 3, 1, 2, 3};

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = consumer_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    send_text(p, DQ_TOPIC_REQUESTS, "a", 0);
    send_text(p, DQ_TOPIC_REQUESTS, "b", 1);
    send_text(p, DQ_TOPIC_REQUESTS, "c", 2);
    send_text(p, DQ_TOPIC_REQUESTS, "d", 3);

    c = new_consumer(cfg, "batch-nack", p, 3);
    s.c = c;
    s.stop = &stop;
    assert_int_equal(pthread_create(&t, NULL, watchdog_main, &w), 0);
    assert_int_equal(dq_consumer_run_batch(c, batch_script, &s, 16, &stop), 0);
    __atomic_store_n(&w.done, 1, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    assert_int_equal(w.fired, 0);
    assert_int_equal(s.n, 7);
    for (int i = 0; i < 7; i++) {
        assert_string_equal(s.values[i], want[i]);
        assert_int_equal(s.offsets[i], want_offsets[i]);
    }
    /* the group joined before anything was there: quiet polls reach the handler too */
    assert_true(s.empty_calls > 0);
    assert_int_equal(committed_offset(c), 4);
    dq_consumer_free(c);
    dq_producer_free(p);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

/* Until the nack of "b" reaches the loop, "c" and "d" (acknowledged) wait behind it; a nack
 * with the partition gone, or of an offset not pending, changes nothing. */
static void test_batch_ack_order_and_stray_nack(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg;
    dq_producer *p;
    dq_consumer *c;
    seen s = {.stop_after = 3, .decide = defer_ac};
    char err[256] = "";

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = consumer_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    send_text(p, DQ_TOPIC_REQUESTS, "a", 0);
    send_text(p, DQ_TOPIC_REQUESTS, "b", 1);
    send_text(p, DQ_TOPIC_REQUESTS, "c", 2);
    c = new_consumer(cfg, "stray-nack", p, 3);
    run_consumer(c, &s);
    assert_int_equal(s.n, 3);
    dq_consumer_nack(c, "some.other.topic", 7, 0); /* not ours: ignored */
    dq_consumer_nack(c, DQ_TOPIC_REQUESTS, 0, 1);  /* handled, not deferred: not pending */
    dq_consumer_ack(c, DQ_TOPIC_REQUESTS, 0, 0);
    dq_consumer_ack(c, DQ_TOPIC_REQUESTS, 0, 2);
    {
        seen idle = {.stop_after = 100};

        run_consumer_for(c, &idle, 300);
        assert_int_equal(idle.n, 0);
    }
    assert_int_equal(committed_offset(c), 3);
    dq_consumer_free(c);
    dq_producer_free(p);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

typedef struct report {
    int calls;
    rd_kafka_resp_err_t err;
} report;

static void on_report(void *ctx, rd_kafka_resp_err_t err)
{
    report *r = ctx;

    r->calls++;
    r->err = err;
}

static void test_send_cb_reports(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg, *down;
    dq_producer *p;
    char err[256] = "";
    report ok = {0}, failed = {0};
    int64_t until;

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = test_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(dq_producer_send_cb(p, DQ_TOPIC_EVENTS, KEY, "v", 1, 1000, on_report, &ok), 0);
    until = dq_mono_ms() + 5000;
    while (ok.calls == 0 && dq_mono_ms() < until)
        dq_producer_poll(p, 50);
    assert_int_equal(ok.calls, 1);
    assert_int_equal(ok.err, RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(dq_producer_outq_len(p), 0);
    dq_producer_free(p);

    /* nobody listens on port 1: the report says it failed, once */
    down = test_config("127.0.0.1:1");
    assert_int_equal(dq_config_set_kafka(down, "message.timeout.ms", "300"), 0);
    p = dq_producer_new(down, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(dq_producer_send_cb(p, DQ_TOPIC_EVENTS, KEY, "v", 1, 1000, on_report, &failed), 0);
    assert_int_equal(dq_producer_flush(p, 5000), 0);
    assert_int_equal(failed.calls, 1);
    assert_int_equal(failed.err, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    dq_producer_free(p);
    dq_config_free(down);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

/* "bad" and the binary message are poison, "x" fails every time, the rest is handled.
 * The error of "bad" carries a secret that must not reach deployq.dead. */
static dq_handle_result judge(seen *s, const dq_message *m, char *err, size_t errlen)
{
    (void)s;
    if (m->len >= 1 && (unsigned char)m->value[0] == 0xff) {
        snprintf(err, errlen, "not JSON");
        return DQ_POISON;
    }
    if (m->len == 3 && memcmp(m->value, "bad", 3) == 0) {
        snprintf(err, errlen, "cannot parse: token=tok-ABCDEF123 rejected");
        return DQ_POISON;
    }
    if (m->len == 1 && m->value[0] == 'x') {
        snprintf(err, errlen, "provider said no");
        return DQ_FAILED;
    }
    return DQ_HANDLED;
}

/* a string member, or "(missing)" so a comparison fails readably */
static const char *member(const cJSON *o, const char *name)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(m) ? m->valuestring : "(missing)";
}

static cJSON *parse_dead(const char *text)
{
    const char *end = NULL;
    /* the length includes the NUL: cJSON checks for it when asked to */
    cJSON *o = cJSON_ParseWithLengthOpts(text, strlen(text) + 1, &end, 1);

    assert_non_null(o);
    return o;
}

/* One consumer run for both ways into deployq.dead (each consumer costs a mock rebalance):
 * DQ_POISON at once, DQ_FAILED after max_attempts; the partition moves on after each. */
static void test_dead_letters(void **state)
{
    static const unsigned char binary[] = {0xff, 0x00, 0x01};
    dq_mock_broker *b;
    dq_config *cfg;
    dq_producer *p;
    dq_consumer *c;
    seen s = {.stop_after = 5, .decide = judge};
    char err[256] = "";
    char *values[3];
    char keys[3][64];
    cJSON *d;
    int64_t ms;

    (void)state;
    dq_log_redact("tok-ABCDEF123");
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = consumer_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    send_text(p, DQ_TOPIC_REQUESTS, "bad", 0);
    send_value(p, DQ_TOPIC_REQUESTS, KEY, binary, sizeof binary, 1);
    send_text(p, DQ_TOPIC_REQUESTS, "x", 2);
    send_text(p, DQ_TOPIC_REQUESTS, "good", 3);

    c = new_consumer(cfg, "dead", p, 2);
    run_consumer(c, &s);
    /* poison is seen once, "x" max_attempts (2) times, and then "good" is handled */
    assert_int_equal(s.n, 5);
    assert_string_equal(s.values[0], "bad");
    assert_int_equal(s.offsets[1], 1);
    assert_string_equal(s.values[2], "x");
    assert_string_equal(s.values[3], "x");
    assert_string_equal(s.values[4], "good");
    assert_int_equal(committed_offset(c), 4);
    dq_consumer_free(c);

    assert_int_equal(read_topic(dq_mock_broker_bootstraps(b), DQ_TOPIC_DEAD, 3, values, keys), 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(keys[i], KEY); /* keyed like the original */

    d = parse_dead(values[0]);
    assert_string_equal(member(d, "schema"), "deployq.dead/v1");
    assert_string_equal(member(d, "topic"), DQ_TOPIC_REQUESTS);
    assert_int_equal(cJSON_GetObjectItem(d, "partition")->valuedouble, 0);
    assert_int_equal(cJSON_GetObjectItem(d, "offset")->valuedouble, 0);
    assert_string_equal(member(d, "key"), KEY);
    assert_string_equal(member(d, "error"), "cannot parse: token=*** rejected");
    assert_string_equal(member(d, "value"), "bad");
    assert_null(cJSON_GetObjectItem(d, "value_encoding"));
    assert_int_equal(dq_time_parse(member(d, "at"), &ms), 0);
    assert_true(ms > dq_now_ms() - 60000 && ms <= dq_now_ms());
    assert_null(strstr(values[0], "ABCDEF123"));
    cJSON_Delete(d);

    d = parse_dead(values[1]);
    assert_int_equal(cJSON_GetObjectItem(d, "offset")->valuedouble, 1);
    assert_string_equal(member(d, "error"), "not JSON");
    assert_string_equal(member(d, "value"), "/wAB");
    assert_string_equal(member(d, "value_encoding"), "base64");
    cJSON_Delete(d);

    d = parse_dead(values[2]);
    assert_int_equal(cJSON_GetObjectItem(d, "offset")->valuedouble, 2);
    assert_string_equal(member(d, "error"), "provider said no");
    assert_string_equal(member(d, "value"), "x");
    assert_int_equal(cJSON_GetObjectItem(d, "attempts")->valuedouble, 2);
    cJSON_Delete(d);

    for (int i = 0; i < 3; i++)
        free(values[i]);
    dq_log_redact_clear();
    dq_producer_free(p);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

/* When deployq.dead cannot be written, the poison message is not passed: the partition
 * waits (the handler is not asked again) and nothing after it is handled or committed. */
static void test_dead_letter_failure_holds_partition(void **state)
{
    dq_mock_broker *b;
    dq_config *cfg, *dead_cfg;
    dq_producer *p, *dead;
    dq_consumer *c;
    seen s = {.stop_after = 100, .decide = judge};
    char err[256] = "";
    int64_t start;

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = consumer_config(dq_mock_broker_bootstraps(b));
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    send_text(p, DQ_TOPIC_REQUESTS, "bad", 0);
    send_text(p, DQ_TOPIC_REQUESTS, "good", 1);
    /* a dead-letter producer whose broker is gone: each attempt fails after 200 ms */
    dead_cfg = test_config("127.0.0.1:1");
    assert_int_equal(dq_config_set_kafka(dead_cfg, "message.timeout.ms", "200"), 0);
    dead = dq_producer_new(dead_cfg, err, sizeof err);
    assert_non_null(dead);

    c = new_consumer(cfg, "deadfail", dead, 3);
    start = dq_mono_ms();
    /* the first join takes about 3 s on the mock; then a dead-letter attempt or two */
    assert_int_equal(run_consumer_for(c, &s, 5000), 1);
    assert_true(dq_mono_ms() - start >= 5000);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.values[0], "bad");
    assert_int_equal(committed_offset(c), RD_KAFKA_OFFSET_INVALID);
    dq_consumer_free(c);
    dq_producer_free(dead);
    dq_producer_free(p);
    dq_config_free(dead_cfg);
    dq_config_free(cfg);
    dq_mock_broker_free(b);
}

/* ---- signals ---- */

static void test_stop_flag(void **state)
{
    volatile sig_atomic_t *stop;

    (void)state;
    stop = dq_stop_flag_install();
    assert_non_null(stop);
    assert_int_equal(*stop, 0);
    raise(SIGPIPE); /* ignored: the process goes on */
    assert_int_equal(*stop, 0);
    raise(SIGTERM);
    assert_int_equal(*stop, 1);
    *stop = 0;
    raise(SIGINT);
    assert_int_equal(*stop, 1);
    assert_ptr_equal(dq_stop_flag_install(), stop); /* one flag per process */
    *stop = 0;
}

/* A consumer whose group coordinator is gone still stops when told: leaving the group
 * waits a whole session.timeout.ms for the coordinator (or forever, librdkafka #4884, seen
 * as a worker that never exited after SIGTERM), and dq_consumer_free bounds that by
 * close_timeout_ms. The close it gave up on finishes on its own thread and cleans up. */
static void test_close_is_bounded(void **state)
{
    static const char *const topics[] = {DQ_TOPIC_REQUESTS};
    dq_consumer_opts opts = {.group_id = "bounded-close",
                             .topics = topics,
                             .n_topics = 1,
                             .poll_timeout_ms = 50,
                             .close_timeout_ms = 1500};
    dq_mock_broker *b;
    dq_config *cfg;
    dq_producer *p;
    dq_consumer *c;
    seen s = {.stop_after = 1};
    char err[256] = "";
    int64_t t0, took;

    (void)state;
    b = dq_mock_broker_new(1, 1, err, sizeof err);
    assert_non_null(b);
    cfg = consumer_config(dq_mock_broker_bootstraps(b));
    /* long enough that waiting for it cannot pass for the bound */
    assert_int_equal(dq_config_set_kafka(cfg, "session.timeout.ms", "15000"), 0);
    p = dq_producer_new(cfg, err, sizeof err);
    assert_non_null(p);
    send_text(p, DQ_TOPIC_REQUESTS, "a", 0);
    c = dq_consumer_new(cfg, &opts, p, err, sizeof err);
    assert_non_null(c);
    run_consumer(c, &s);
    assert_int_equal(s.n, 1);
    dq_mock_broker_free(b); /* the coordinator is gone */

    t0 = dq_mono_ms();
    dq_consumer_free(c);
    took = dq_mono_ms() - t0;
    assert_true(took >= 1400);
    assert_true(took < 5000);
    assert_int_equal(dq_consumer_closes_pending(), 1);

    /* the abandoned close ends once the session times out, and frees what it owns */
    t0 = dq_mono_ms();
    while (dq_consumer_closes_pending() > 0 && dq_mono_ms() - t0 < 60000)
        dq_sleep_ms(100);
    assert_int_equal(dq_consumer_closes_pending(), 0);
    dq_producer_free(p);
    dq_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_unknown_key),
        cmocka_unit_test(test_conf_error_redacts_secret),
        cmocka_unit_test(test_conf_passes_keys_through),
        cmocka_unit_test(test_consumer_prefetch_bounded),
        cmocka_unit_test(test_mock_broker_bootstraps),
        cmocka_unit_test(test_send_returns_position),
        cmocka_unit_test(test_first_send_after_connect_is_prompt),
        cmocka_unit_test(test_send_async_and_flush),
        cmocka_unit_test(test_flush_counts_failures),
        cmocka_unit_test(test_send_unreachable),
        cmocka_unit_test(test_ensure_topics_existing),
        cmocka_unit_test(test_ensure_topics_creates),
        cmocka_unit_test(test_ensure_topics_unreachable),
        cmocka_unit_test(test_consume_in_order),
        cmocka_unit_test(test_retry_redelivers_and_stores_nothing),
        cmocka_unit_test(test_deferred_ack_stores_done_prefix),
        cmocka_unit_test(test_batch_nack_reads_again),
        cmocka_unit_test(test_batch_ack_order_and_stray_nack),
        cmocka_unit_test(test_send_cb_reports),
        cmocka_unit_test(test_dead_letters),
        cmocka_unit_test(test_dead_letter_failure_holds_partition),
        cmocka_unit_test(test_stop_flag),
        cmocka_unit_test(test_close_is_bounded),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
