/*
 * kafka.c - the producer, the consumer loop, dead letters and topic creation (kafka.h).
 *
 * Every deployq program talks to Kafka through this file, so the delivery guarantees are
 * decided once: producers are idempotent with acks=all and a send is only "done" when its
 * delivery report says so; consumers store an offset only after the handler finished with
 * the message (at-least-once), retry transient failures by pausing and rewinding the one
 * partition, and move messages that can never be handled to the dead-letter topic so a
 * partition never blocks. Configuration is layered: our defaults, then the user's kafka.*
 * keys, then the few settings the guarantees depend on, which nobody may override.
 */
#include "kafka.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "log.h"
#include "util.h"

#define SEND_SLICE_MS 100        /* how often a waiting send serves delivery reports */
#define PURGE_WAIT_MS 1000       /* how long a timed-out send waits for its purge report */
#define FREE_FLUSH_MS 10000      /* dq_producer_free's flush budget (kafka.h) */
#define DEAD_SEND_TIMEOUT_MS 5000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define SEEK_TIMEOUT_MS 1000
#define DEFAULT_MAX_ATTEMPTS 3
#define DEFAULT_POLL_MS 100
#define DEFAULT_CLOSE_MS 10000

/* ---- configuration ---- */

typedef struct conf_pair {
    const char *key;
    const char *value;
} conf_pair;

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    dq_log_level l;

    /* syslog levels, as librdkafka uses them */
    if (level <= 3)
        l = DQ_LOG_ERROR;
    else if (level == 4)
        l = DQ_LOG_WARN;
    else if (level <= 6)
        l = DQ_LOG_INFO;
    else
        l = DQ_LOG_DEBUG;
    dq_log_write(l, "librdkafka", 0, "kafka %s: %s: %s", rk ? rd_kafka_name(rk) : "-", fac,
                 buf);
}

/* The latest error librdkafka reported on any handle of this process (a refused TLS
 * handshake, failed SASL authentication, connection refused ...). A send that times out
 * quotes it, so "unreachable" comes with its cause on the same line. Process-wide because
 * handles carry different opaques; it only ever feeds an error message. */
static pthread_mutex_t last_error_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_error[256];

static void last_error_set(const char *reason)
{
    pthread_mutex_lock(&last_error_mu);
    dq_strlcpy(last_error, reason, sizeof last_error);
    pthread_mutex_unlock(&last_error_mu);
}

/* " (last error: ...)" or "" into out. */
static const char *last_error_suffix(char *out, size_t outlen)
{
    pthread_mutex_lock(&last_error_mu);
    if (last_error[0])
        snprintf(out, outlen, " (last error: %s)", last_error);
    else if (outlen > 0)
        out[0] = '\0';
    pthread_mutex_unlock(&last_error_mu);
    return out;
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (reason)
        last_error_set(reason);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof why);
        dq_error("kafka %s: fatal: %s", rd_kafka_name(rk), why);
        return;
    }
    /* librdkafka reconnects by itself; a lost connection is worth a warning, not more. */
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
        err == RD_KAFKA_RESP_ERR__RESOLVE)
        dq_warn("kafka %s: %s", rd_kafka_name(rk), reason);
    else
        dq_error("kafka %s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
}

void dq_kafka_conf_set_logging(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
}

/* Any error text may quote the value, and a value may be a SASL password. */
static void conf_error(char *err, size_t errlen, const char *key, const char *why)
{
    char raw[768];

    snprintf(raw, sizeof raw, "kafka.%s: %s", key, why);
    dq_redact(raw, err, errlen);
}

static int conf_apply(rd_kafka_conf_t *conf, const char *key, const char *value, char *err,
                      size_t errlen)
{
    char why[512];

    if (rd_kafka_conf_set(conf, key, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
        conf_error(err, errlen, key, why);
        return -1;
    }
    return 0;
}

/* defaults, then the user's kafka.* keys, then forced: the layering described on top. */
static rd_kafka_conf_t *conf_build(const dq_config *cfg, const conf_pair *defaults,
                                   const conf_pair *forced, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (!conf) {
        snprintf(err, errlen, "kafka: out of memory");
        return NULL;
    }
    for (const conf_pair *d = defaults; d && d->key; d++)
        if (conf_apply(conf, d->key, d->value, err, errlen) < 0)
            goto fail;
    for (size_t i = 0; cfg && i < cfg->n_kafka; i++)
        if (conf_apply(conf, cfg->kafka[i].key, cfg->kafka[i].value, err, errlen) < 0)
            goto fail;
    for (const conf_pair *f = forced; f && f->key; f++)
        if (conf_apply(conf, f->key, f->value, err, errlen) < 0)
            goto fail;
    dq_kafka_conf_set_logging(conf);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_conf_t *dq_kafka_conf(const dq_config *cfg, char *err, size_t errlen)
{
    return conf_build(cfg, NULL, NULL, err, errlen);
}

/* bootstrap.servers as configured, for messages a person reads; never NULL. */
static char *conf_brokers(const rd_kafka_conf_t *conf)
{
    char buf[1024];
    size_t size = sizeof buf;

    if (rd_kafka_conf_get(conf, "bootstrap.servers", buf, &size) != RD_KAFKA_CONF_OK ||
        !buf[0])
        return strdup("(bootstrap.servers not set)");
    return strdup(buf);
}

/* "5" for 5000 ms, "1.5" for 1500 ms */
static void seconds_text(int ms, char *out, size_t outlen)
{
    if (ms % 1000 == 0)
        snprintf(out, outlen, "%d", ms / 1000);
    else
        snprintf(out, outlen, "%.1f", ms / 1000.0);
}

/* ---- producer ---- */

struct dq_producer {
    rd_kafka_t *rk;
    char *brokers; /* bootstrap.servers, for error messages */
    int failed;    /* async failures since the last flush; touched atomically because
                      delivery reports run in whichever thread polls */
};

/* One synchronous send's delivery report. It lives on the heap because a send that
 * timed out must return before its report arrives: whoever comes second (the report or
 * the abandoning sender) frees it. */
enum { SEND_WAITING = 0, SEND_DONE, SEND_ABANDONED, SEND_CALLBACK };

typedef struct send_status {
    int state;
    rd_kafka_resp_err_t err;
    int32_t partition;
    int64_t offset;
} send_status;

/* The report of a dq_producer_send_cb: state is SEND_CALLBACK for its whole life, which
 * is how dr_msg_cb tells it from a waiting synchronous send. */
typedef struct send_callback {
    send_status st;
    dq_delivery_fn fn;
    void *ctx;
} send_callback;

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    dq_producer *p = opaque;
    send_status *st = m->_private;

    (void)rk;
    if (!st) {
        if (m->err) {
            __atomic_add_fetch(&p->failed, 1, __ATOMIC_SEQ_CST);
            dq_warn("kafka: delivery to %s failed: %s",
                    m->rkt ? rd_kafka_topic_name(m->rkt) : "?", rd_kafka_err2str(m->err));
        }
        return;
    }
    if (__atomic_load_n(&st->state, __ATOMIC_ACQUIRE) == SEND_CALLBACK) {
        send_callback *cb = m->_private;

        cb->fn(cb->ctx, m->err);
        free(cb);
        return;
    }
    st->err = m->err;
    st->partition = m->partition;
    st->offset = m->offset;
    if (__atomic_exchange_n(&st->state, SEND_DONE, __ATOMIC_ACQ_REL) == SEND_ABANDONED)
        free(st);
}

dq_producer *dq_producer_new(const dq_config *cfg, char *err, size_t errlen)
{
    static const conf_pair defaults[] = {{"linger.ms", "5"}, {NULL, NULL}};
    /* "sent" must mean "on every in-sync replica, exactly once" (kafka.h) */
    static const conf_pair forced[] = {
        {"enable.idempotence", "true"}, {"acks", "all"}, {NULL, NULL}};
    rd_kafka_conf_t *conf = NULL;
    dq_producer *p;
    char why[512];
    const char *acks;

    p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "kafka: out of memory");
        goto fail;
    }
    acks = cfg ? dq_config_kafka_get(cfg, "acks") : NULL;
    if (acks && strcmp(acks, "all") != 0 && strcmp(acks, "-1") != 0)
        dq_warn("kafka.acks=%s ignored: deployq producers always use acks=all", acks);
    conf = conf_build(cfg, defaults, forced, err, errlen);
    if (!conf)
        goto fail;
    p->brokers = conf_brokers(conf);
    if (!p->brokers) {
        snprintf(err, errlen, "kafka: out of memory");
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!p->rk) {
        char raw[600];
        snprintf(raw, sizeof raw, "kafka: %s", why);
        dq_redact(raw, err, errlen);
        goto fail;
    }
    conf = NULL; /* now owned by p->rk */
    return p;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (p)
        free(p->brokers);
    free(p);
    return NULL;
}

void dq_producer_free(dq_producer *p)
{
    if (!p)
        return;
    if (p->rk) {
        int left;

        rd_kafka_flush(p->rk, FREE_FLUSH_MS);
        left = rd_kafka_outq_len(p->rk);
        if (left > 0) {
            dq_error("kafka: %d message(s) to %s not delivered at shutdown", left, p->brokers);
            /* The purge makes their reports (and so their memory) come back now. */
            rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_flush(p->rk, PURGE_WAIT_MS);
        }
        if (__atomic_load_n(&p->failed, __ATOMIC_SEQ_CST) > 0)
            dq_error("kafka: %d message(s) failed delivery since the last flush",
                     __atomic_load_n(&p->failed, __ATOMIC_SEQ_CST));
        rd_kafka_destroy(p->rk);
    }
    free(p->brokers);
    free(p);
}

rd_kafka_t *dq_producer_handle(dq_producer *p)
{
    return p ? p->rk : NULL;
}

/* The topic goes through rd_kafka_topic_new(), not RD_KAFKA_V_TOPIC(name): only the
 * former asks the cluster about a new topic at once. A topic that producev creates by name
 * waits for the connection's first metadata request to include it, and when that request
 * left before the topic existed (the connection came up first, which a busy machine makes
 * likely), for librdkafka's one-second topic scan: a new producer's first send took about
 * 1.0 s instead of 1 ms (issue 11). The message keeps its own reference to the topic. */
static rd_kafka_resp_err_t produce(dq_producer *p, const char *topic, const void *key,
                                   size_t keylen, const void *value, size_t len, void *opaque)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, topic, NULL);
    rd_kafka_resp_err_t e;

    if (!rkt)
        return rd_kafka_last_error();
    e = rd_kafka_producev(p->rk, RD_KAFKA_V_RKT(rkt),
                          RD_KAFKA_V_KEY((void *)key, key ? keylen : 0),
                          RD_KAFKA_V_VALUE((void *)value, value ? len : 0),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(opaque),
                          RD_KAFKA_V_END);
    rd_kafka_topic_destroy(rkt);
    return e;
}

/* dq_producer_send with a key that need not be NUL-terminated (dead letters reuse the
 * original key bytes). */
static int producer_send(dq_producer *p, const char *topic, const void *key, size_t keylen,
                         const void *value, size_t len, int timeout_ms, int32_t *out_partition,
                         int64_t *out_offset, char *err, size_t errlen)
{
    int64_t deadline;
    rd_kafka_resp_err_t e;
    send_status *st;
    char secs[32], raw[768];

    if (timeout_ms <= 0)
        timeout_ms = 1;
    deadline = dq_mono_ms() + timeout_ms;
    st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "kafka: out of memory");
        return -1;
    }
    for (;;) {
        e = produce(p, topic, key, keylen, value, len, st);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || dq_mono_ms() >= deadline)
            break;
        rd_kafka_poll(p->rk, SEND_SLICE_MS); /* serving reports drains the queue */
    }
    if (e) {
        free(st);
        snprintf(raw, sizeof raw, "kafka: cannot produce to %s: %s", topic, rd_kafka_err2str(e));
        dq_redact(raw, err, errlen);
        return -1;
    }
    while (__atomic_load_n(&st->state, __ATOMIC_ACQUIRE) != SEND_DONE) {
        int64_t left = deadline - dq_mono_ms();
        if (left <= 0)
            break;
        rd_kafka_poll(p->rk, (int)(left < SEND_SLICE_MS ? left : SEND_SLICE_MS));
    }
    seconds_text(timeout_ms, secs, sizeof secs);
    if (__atomic_load_n(&st->state, __ATOMIC_ACQUIRE) != SEND_DONE) {
        /* Not acknowledged in time. Purge it so it cannot land later behind the caller's
         * back (the caller decides: retry, spool or fail); this purges every queued message
         * of this producer, and async ones count as failed. */
        int64_t until = dq_mono_ms() + PURGE_WAIT_MS;
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        while (__atomic_load_n(&st->state, __ATOMIC_ACQUIRE) != SEND_DONE &&
               dq_mono_ms() < until)
            rd_kafka_poll(p->rk, 50);
        if (__atomic_exchange_n(&st->state, SEND_ABANDONED, __ATOMIC_ACQ_REL) != SEND_DONE) {
            /* the report comes later and frees st */
            char why[300];
            snprintf(raw, sizeof raw, "broker %s unreachable after %s s%s", p->brokers, secs,
                     last_error_suffix(why, sizeof why));
            dq_redact(raw, err, errlen);
            return -1;
        }
        if (st->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
            st->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
            char why[300];
            free(st);
            snprintf(raw, sizeof raw, "broker %s unreachable after %s s%s", p->brokers, secs,
                     last_error_suffix(why, sizeof why));
            dq_redact(raw, err, errlen);
            return -1;
        }
        /* else the acknowledgement raced the purge: use it */
    }
    if (st->err) {
        snprintf(raw, sizeof raw, "kafka: delivery to %s failed: %s", topic,
                 rd_kafka_err2str(st->err));
        free(st);
        dq_redact(raw, err, errlen);
        return -1;
    }
    if (out_partition)
        *out_partition = st->partition;
    if (out_offset)
        *out_offset = st->offset;
    free(st);
    return 0;
}

int dq_producer_send(dq_producer *p, const char *topic, const char *key, const void *value,
                     size_t len, int timeout_ms, int32_t *out_partition, int64_t *out_offset,
                     char *err, size_t errlen)
{
    return producer_send(p, topic, key, key ? strlen(key) : 0, value, len, timeout_ms,
                         out_partition, out_offset, err, errlen);
}

/* A message that could not even be queued is counted as failed too, so flush's count
 * covers every send since the last flush. Returns 0 queued, -1 not queued. */
int dq_producer_send_async(dq_producer *p, const char *topic, const char *key,
                           const void *value, size_t len)
{
    rd_kafka_resp_err_t e;
    int64_t deadline = dq_mono_ms() + 5000;

    for (;;) {
        e = produce(p, topic, key, key ? strlen(key) : 0, value, len, NULL);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || dq_mono_ms() >= deadline)
            break;
        rd_kafka_poll(p->rk, SEND_SLICE_MS);
    }
    if (e) {
        __atomic_add_fetch(&p->failed, 1, __ATOMIC_SEQ_CST);
        dq_warn("kafka: cannot produce to %s: %s", topic, rd_kafka_err2str(e));
        return -1;
    }
    rd_kafka_poll(p->rk, 0); /* serve reports that are already due */
    return 0;
}

int dq_producer_flush(dq_producer *p, int timeout_ms)
{
    if (rd_kafka_flush(p->rk, timeout_ms) == RD_KAFKA_RESP_ERR__TIMED_OUT)
        return -1;
    return __atomic_exchange_n(&p->failed, 0, __ATOMIC_SEQ_CST);
}

int dq_producer_send_cb(dq_producer *p, const char *topic, const char *key, const void *value,
                        size_t len, int timeout_ms, dq_delivery_fn fn, void *ctx)
{
    rd_kafka_resp_err_t e;
    int64_t deadline = dq_mono_ms() + (timeout_ms > 0 ? timeout_ms : 1);
    send_callback *cb = calloc(1, sizeof *cb);

    if (!cb)
        return -1;
    cb->st.state = SEND_CALLBACK;
    cb->fn = fn;
    cb->ctx = ctx;
    for (;;) {
        e = produce(p, topic, key, key ? strlen(key) : 0, value, len, cb);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || dq_mono_ms() >= deadline)
            break;
        rd_kafka_poll(p->rk, SEND_SLICE_MS); /* serving reports drains the queue */
    }
    if (e) {
        free(cb);
        dq_warn("kafka: cannot produce to %s: %s", topic, rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

int dq_producer_poll(dq_producer *p, int timeout_ms)
{
    return rd_kafka_poll(p->rk, timeout_ms);
}

int dq_producer_outq_len(dq_producer *p)
{
    return rd_kafka_outq_len(p->rk);
}

/* ---- topics ---- */

static const char *topic_or(const char *configured, const char *fallback)
{
    return configured && configured[0] ? configured : fallback;
}

/* Which of names[] the cluster has (exists[i]: its replication factor, the replicas of its
 * first partition; 0 when absent) and how many brokers it has. Asks for all topics,
 * because asking for named ones may auto-create them with the broker's defaults. */
static rd_kafka_resp_err_t topics_exist(rd_kafka_t *rk, const char *const names[], int n,
                                        int exists[], int *brokers, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);

    if (e)
        return e;
    *brokers = md->broker_cnt;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (md->topics[i].err)
            continue;
        for (int j = 0; j < n; j++)
            if (strcmp(md->topics[i].topic, names[j]) == 0)
                exists[j] = md->topics[i].partition_cnt > 0
                                ? md->topics[i].partitions[0].replica_cnt
                                : 1;
    }
    rd_kafka_metadata_destroy(md);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* The replication factor and min.insync.replicas (0: the broker's default) of a topic
 * deployq creates: topics.replication and topics.min_insync_replicas when set, else 3 (or
 * every broker of a smaller cluster) with a min ISR of 2, so that an acks=all write
 * survives one broker down and is on two brokers when acknowledged. */
static void topic_replication(const dq_config *cfg, int brokers, int *rf, int *min_isr)
{
    *rf = cfg && cfg->topic_replication > 0 ? cfg->topic_replication
                                            : (brokers >= 3 ? 3 : (brokers > 0 ? brokers : 1));
    *min_isr = cfg && cfg->topic_min_insync > 0 ? cfg->topic_min_insync
                                                : (*rf >= 3 ? *rf - 1 : 0);
}

int dq_kafka_ensure_topics(const dq_config *cfg, int partitions, int timeout_ms, char *err,
                           size_t errlen)
{
    const char *names[3];
    int counts[3] = {partitions, partitions, 1};
    int exists[3] = {0, 0, 0}; /* replication factor of each, 0: absent */
    int n_brokers = 0, rf, min_isr;
    rd_kafka_NewTopic_t *nt[3] = {NULL, NULL, NULL};
    size_t n_new = 0;
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_resp_err_t e;
    char why[512], raw[768], secs[32], *brokers = NULL;
    int64_t deadline;
    int left, rc = -1;

    if (timeout_ms <= 0)
        timeout_ms = 1;
    deadline = dq_mono_ms() + timeout_ms;
    seconds_text(timeout_ms, secs, sizeof secs);
    names[0] = topic_or(cfg ? cfg->topic_requests : NULL, DQ_TOPIC_REQUESTS);
    names[1] = topic_or(cfg ? cfg->topic_events : NULL, DQ_TOPIC_EVENTS);
    names[2] = topic_or(cfg ? cfg->topic_dead : NULL, DQ_TOPIC_DEAD);
    if (partitions <= 0)
        counts[0] = counts[1] = DQ_PARTITIONS_DEFAULT;

    conf = dq_kafka_conf(cfg, err, errlen);
    if (!conf)
        goto out;
    brokers = conf_brokers(conf);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!rk) {
        snprintf(raw, sizeof raw, "kafka: %s", why);
        dq_redact(raw, err, errlen);
        goto out;
    }
    conf = NULL; /* now owned by rk */

    /* Look before creating: where the topics exist nothing more is asked of the broker, so
     * a program whose credentials may not create topics still starts, and the embedded
     * broker (which has no CreateTopics) is fine too. */
    e = topics_exist(rk, names, 3, exists, &n_brokers, timeout_ms);
    if (e) {
        if (e == RD_KAFKA_RESP_ERR__TIMED_OUT || e == RD_KAFKA_RESP_ERR__TRANSPORT)
            snprintf(raw, sizeof raw, "broker %s unreachable after %s s", brokers, secs);
        else
            snprintf(raw, sizeof raw, "kafka: listing topics on %s: %s", brokers,
                     rd_kafka_err2str(e));
        dq_redact(raw, err, errlen);
        goto out;
    }
    topic_replication(cfg, n_brokers, &rf, &min_isr);
    for (int i = 0; i < 3; i++) {
        char isr[16];

        if (exists[i]) {
            /* not changed here (that is a partition reassignment), but not kept quiet */
            if (exists[i] < rf)
                dq_warn("kafka: topic %s has replication factor %d, below the %d wanted "
                        "(topics.replication): a broker lost can lose its events",
                        names[i], exists[i], rf);
            continue;
        }
        /* The embedded broker answers metadata only, and its topics always exist, so
         * this is a real Kafka, which refuses a factor above its broker count. */
        nt[n_new] = rd_kafka_NewTopic_new(names[i], counts[i], rf, why, sizeof why);
        if (!nt[n_new]) {
            snprintf(err, errlen, "kafka: topic %s: %s", names[i], why);
            goto out;
        }
        n_new++;
        snprintf(isr, sizeof isr, "%d", min_isr);
        if (min_isr > 0 &&
            rd_kafka_NewTopic_set_config(nt[n_new - 1], "min.insync.replicas", isr) != 0) {
            snprintf(err, errlen, "kafka: topic %s: cannot set min.insync.replicas", names[i]);
            goto out;
        }
    }
    if (n_new > 0 && rf < 3 && !(cfg && cfg->topic_replication > 0))
        dq_warn("kafka: creating topics with replication factor %d (%d broker(s) answered): "
                "fine for development; a production cluster wants 3 (topics.replication)",
                rf, n_brokers);
    if (n_new == 0) {
        rc = 0;
        goto out;
    }

    left = (int)(deadline - dq_mono_ms());
    if (left < 1)
        left = 1;
    opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    if (!opts || rd_kafka_AdminOptions_set_request_timeout(opts, left, why, sizeof why) ||
        rd_kafka_AdminOptions_set_operation_timeout(opts, left, why, sizeof why)) {
        snprintf(err, errlen, "kafka: admin options: %s", opts ? why : "out of memory");
        goto out;
    }
    q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, nt, n_new, opts, q);
    /* the request timeout fires first; the margin is for librdkafka to report it */
    ev = rd_kafka_queue_poll(q, left + 1000);
    if (!ev || rd_kafka_event_error(ev)) {
        /* the broker answered the metadata request, so it is not unreachable */
        snprintf(raw, sizeof raw, "kafka: creating topics on %s: %s", brokers,
                 ev ? rd_kafka_event_error_string(ev) : "timed out");
        dq_redact(raw, err, errlen);
        goto out;
    }
    {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t n = 0;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);

        for (size_t i = 0; i < n; i++) {
            rd_kafka_resp_err_t te = rd_kafka_topic_result_error(tr[i]);
            const char *msg = rd_kafka_topic_result_error_string(tr[i]);

            /* another instance may have created it since we looked */
            if (te == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                continue;
            if (te) {
                snprintf(raw, sizeof raw, "kafka: cannot create topic %s: %s",
                         rd_kafka_topic_result_name(tr[i]), msg ? msg : rd_kafka_err2str(te));
                dq_redact(raw, err, errlen);
                goto out;
            }
            if (min_isr > 0)
                dq_info("kafka: created topic %s (replication factor %d, min.insync.replicas %d)",
                        rd_kafka_topic_result_name(tr[i]), rf, min_isr);
            else
                dq_info("kafka: created topic %s (replication factor %d, the broker's "
                        "min.insync.replicas)", rd_kafka_topic_result_name(tr[i]), rf);
        }
    }
    rc = 0;
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (q)
        rd_kafka_queue_destroy(q);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    for (size_t i = 0; i < n_new; i++)
        rd_kafka_NewTopic_destroy(nt[i]);
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (rk)
        rd_kafka_destroy(rk);
    free(brokers);
    return rc;
}

/* ---- consumer ---- */

/* A partition held back on one message: retried after a backoff, or waiting for its dead
 * letter to be delivered. At most one per partition, because a partition does not move
 * past a message that is being retried. */
typedef struct part_state {
    char *topic;
    int32_t partition;
    int64_t offset;     /* the message held back */
    int attempts;       /* DQ_FAILED results for it */
    int backoff_ms;     /* the next wait */
    int64_t resume_at;  /* monotonic ms; 0 when the partition is not paused */
    char *dead_error;   /* set once the handler gave up and only the dead letter is due */
} part_state;

/* Messages of one partition whose handling is not finished, in delivery order: deferred
 * ones until acknowledged, and handled ones that arrived behind a deferred one. Only the
 * done prefix may be stored. */
typedef struct pend_part {
    char *topic;
    int32_t partition;
    int64_t *offsets;
    unsigned char *done;
    size_t head, n, cap; /* live entries are [head, n) */
} pend_part;

struct dq_consumer {
    rd_kafka_t *rk;
    dq_producer *dead; /* borrowed */
    char *topic_dead;
    int max_attempts;
    int poll_timeout_ms;
    int close_timeout_ms;
    part_state *parts;
    size_t n_parts, cap_parts;
    /* deferred acknowledgements: written by any thread, hence the mutex */
    pthread_mutex_t pend_mu;
    pend_part *pend;
    size_t n_pend, cap_pend;
    /* partitions to rewind, asked for by dq_consumer_nack (any thread) and done by the
     * loop's thread, which owns the part_states; under pend_mu */
    struct rewind {
        char *topic;
        int32_t partition;
        int64_t offset;
    } *rewinds;
    size_t n_rewinds, cap_rewinds;
    int rebalances; /* rebalance callbacks so far (the loop's thread only) */
    /* what the group gave us, for readiness and lag (read by the health thread) */
    pthread_mutex_t asg_mu;
    rd_kafka_topic_partition_list_t *assigned; /* NULL: not in the group */
};

static part_state *part_find(dq_consumer *c, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < c->n_parts; i++)
        if (c->parts[i].partition == partition && strcmp(c->parts[i].topic, topic) == 0)
            return &c->parts[i];
    return NULL;
}

static part_state *part_get(dq_consumer *c, const char *topic, int32_t partition, int64_t offset)
{
    part_state *ps = part_find(c, topic, partition);

    if (ps)
        return ps;
    if (c->n_parts == c->cap_parts) {
        size_t cap = c->cap_parts ? c->cap_parts * 2 : 8;
        part_state *np = realloc(c->parts, cap * sizeof *np);
        if (!np)
            return NULL;
        c->parts = np;
        c->cap_parts = cap;
    }
    ps = &c->parts[c->n_parts];
    memset(ps, 0, sizeof *ps);
    ps->topic = strdup(topic);
    if (!ps->topic)
        return NULL;
    ps->partition = partition;
    ps->offset = offset;
    ps->backoff_ms = BACKOFF_MIN_MS;
    c->n_parts++;
    return ps;
}

static void part_drop(dq_consumer *c, part_state *ps)
{
    size_t i = (size_t)(ps - c->parts);

    free(ps->topic);
    free(ps->dead_error);
    c->parts[i] = c->parts[c->n_parts - 1];
    c->n_parts--;
}

/* ---- deferred acknowledgements (pend_mu held by the callers) ---- */

static pend_part *pend_find(dq_consumer *c, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < c->n_pend; i++)
        if (c->pend[i].partition == partition && strcmp(c->pend[i].topic, topic) == 0)
            return &c->pend[i];
    return NULL;
}

static pend_part *pend_get(dq_consumer *c, const char *topic, int32_t partition)
{
    pend_part *pp = pend_find(c, topic, partition);

    if (pp)
        return pp;
    if (c->n_pend == c->cap_pend) {
        size_t cap = c->cap_pend ? c->cap_pend * 2 : 8;
        pend_part *np = realloc(c->pend, cap * sizeof *np);
        if (!np)
            return NULL;
        c->pend = np;
        c->cap_pend = cap;
    }
    pp = &c->pend[c->n_pend];
    memset(pp, 0, sizeof *pp);
    pp->topic = strdup(topic);
    if (!pp->topic)
        return NULL;
    pp->partition = partition;
    c->n_pend++;
    return pp;
}

static void pend_drop(dq_consumer *c, pend_part *pp)
{
    size_t i = (size_t)(pp - c->pend);

    free(pp->topic);
    free(pp->offsets);
    free(pp->done);
    c->pend[i] = c->pend[c->n_pend - 1];
    c->n_pend--;
}

/* Append offset to the partition's list. 0, or -1 out of memory. */
static int pend_add(pend_part *pp, int64_t offset, int done)
{
    if (pp->head > 0 && pp->head == pp->n) {
        pp->head = pp->n = 0;
    } else if (pp->n == pp->cap && pp->head > 0) {
        memmove(pp->offsets, pp->offsets + pp->head, (pp->n - pp->head) * sizeof *pp->offsets);
        memmove(pp->done, pp->done + pp->head, pp->n - pp->head);
        pp->n -= pp->head;
        pp->head = 0;
    }
    if (pp->n == pp->cap) {
        size_t cap = pp->cap ? pp->cap * 2 : 16;
        int64_t *no = realloc(pp->offsets, cap * sizeof *no);
        unsigned char *nd;
        if (!no)
            return -1;
        pp->offsets = no;
        nd = realloc(pp->done, cap);
        if (!nd)
            return -1;
        pp->done = nd;
        pp->cap = cap;
    }
    pp->offsets[pp->n] = offset;
    pp->done[pp->n] = (unsigned char)done;
    pp->n++;
    return 0;
}

/* Forget offset and the entries after it (they will be read again), when offset is there
 * and not done. 1 when it was forgotten. */
static int pend_truncate(pend_part *pp, int64_t offset)
{
    for (size_t i = pp->head; i < pp->n; i++) {
        if (pp->offsets[i] == offset && !pp->done[i]) {
            pp->n = i;
            return 1;
        }
    }
    return 0;
}

static void one_partition(rd_kafka_topic_partition_list_t **list, const char *topic,
                          int32_t partition, int64_t offset)
{
    *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(*list, topic, partition)->offset = offset;
}

static void partition_resume(dq_consumer *c, part_state *ps)
{
    rd_kafka_topic_partition_list_t *l;

    one_partition(&l, ps->topic, ps->partition, RD_KAFKA_OFFSET_INVALID);
    rd_kafka_resume_partitions(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    ps->resume_at = 0;
}

static void log_partitions(const char *what, const rd_kafka_topic_partition_list_t *l)
{
    char buf[1024];
    size_t used = 0;

    buf[0] = '\0';
    for (int i = 0; l && i < l->cnt && used < sizeof buf; i++) {
        int n = snprintf(buf + used, sizeof buf - used, "%s%s[%" PRId32 "]", i ? " " : "",
                         l->elems[i].topic, l->elems[i].partition);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    dq_info("kafka: %s %d partition(s): %s", what, l ? l->cnt : 0, buf);
}

/* Keep c->assigned as the partitions held: an eager assignment replaces it, an incremental
 * one adds to it; an eager revocation, a lost assignment or a failed rebalance leaves the
 * group (NULL) until the next assignment, an incremental revocation removes its part. */
static void assignment_note(dq_consumer *c, rd_kafka_resp_err_t err,
                            const rd_kafka_topic_partition_list_t *parts, int cooperative)
{
    pthread_mutex_lock(&c->asg_mu);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (!cooperative || !c->assigned) {
            if (c->assigned)
                rd_kafka_topic_partition_list_destroy(c->assigned);
            c->assigned = rd_kafka_topic_partition_list_new(parts->cnt > 0 ? parts->cnt : 1);
        }
        for (int i = 0; c->assigned && i < parts->cnt; i++)
            if (!rd_kafka_topic_partition_list_find(c->assigned, parts->elems[i].topic,
                                                    parts->elems[i].partition))
                rd_kafka_topic_partition_list_add(c->assigned, parts->elems[i].topic,
                                                  parts->elems[i].partition);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && cooperative &&
               !rd_kafka_assignment_lost(c->rk) && c->assigned) {
        for (int i = 0; i < parts->cnt; i++)
            rd_kafka_topic_partition_list_del(c->assigned, parts->elems[i].topic,
                                              parts->elems[i].partition);
    } else if (c->assigned) {
        rd_kafka_topic_partition_list_destroy(c->assigned);
        c->assigned = NULL;
    }
    pthread_mutex_unlock(&c->asg_mu);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque)
{
    dq_consumer *c = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;

    c->rebalances++;
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t re = RD_KAFKA_RESP_ERR_NO_ERROR;

    assignment_note(c, err, partitions, cooperative);
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        log_partitions("assigned", partitions);
        if (cooperative)
            e = rd_kafka_incremental_assign(rk, partitions);
        else
            re = rd_kafka_assign(rk, partitions);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        log_partitions(rd_kafka_assignment_lost(rk) ? "lost" : "revoked", partitions);
        /* Whatever we held back belongs to the next owner now; it starts from the last
         * committed offset, so the held-back message is not lost. Resume first so no pause
         * outlives the assignment. */
        for (int i = 0; i < partitions->cnt; i++) {
            part_state *ps =
                part_find(c, partitions->elems[i].topic, partitions->elems[i].partition);
            if (!ps)
                continue;
            if (ps->resume_at)
                partition_resume(c, ps);
            part_drop(c, ps);
        }
        /* unfinished deferred messages go to the next owner too; late acks are ignored */
        pthread_mutex_lock(&c->pend_mu);
        for (int i = 0; i < partitions->cnt; i++) {
            pend_part *pp =
                pend_find(c, partitions->elems[i].topic, partitions->elems[i].partition);
            if (pp)
                pend_drop(c, pp);
        }
        pthread_mutex_unlock(&c->pend_mu);
        if (cooperative)
            e = rd_kafka_incremental_unassign(rk, partitions);
        else
            re = rd_kafka_assign(rk, NULL);
        break;
    default:
        dq_error("kafka: rebalance failed: %s", rd_kafka_err2str(err));
        while (c->n_parts > 0) {
            if (c->parts[0].resume_at)
                partition_resume(c, &c->parts[0]);
            part_drop(c, &c->parts[0]);
        }
        pthread_mutex_lock(&c->pend_mu);
        while (c->n_pend > 0)
            pend_drop(c, &c->pend[0]);
        pthread_mutex_unlock(&c->pend_mu);
        re = rd_kafka_assign(rk, NULL); /* what librdkafka asks for to resync */
        break;
    }
    if (e) {
        dq_error("kafka: (un)assign failed: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    if (re)
        dq_error("kafka: assign failed: %s", rd_kafka_err2str(re));
}

dq_consumer *dq_consumer_new(const dq_config *cfg, const dq_consumer_opts *opts,
                             dq_producer *dead, char *err, size_t errlen)
{
    static const conf_pair defaults[] = {
        {"enable.auto.commit", "true"},  {"auto.commit.interval.ms", "1000"},
        {"auto.offset.reset", "earliest"}, {"enable.partition.eof", "false"},
        {"fetch.wait.max.ms", "50"},
        {"queued.max.messages.kbytes", DQ_KAFKA_PREFETCH_KBYTES},
        {NULL, NULL}};
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *topics = NULL;
    dq_consumer *c = NULL;
    rd_kafka_resp_err_t e;
    char why[512];

    if (!opts || !opts->group_id || !opts->group_id[0] || !opts->topics || opts->n_topics == 0) {
        snprintf(err, errlen, "kafka: a consumer needs a group id and at least one topic");
        goto fail;
    }
    {
        /* The group comes from the program, not from kafka.group.id: every worker kind
         * needs its own group. Offsets are stored by us only (at-least-once). */
        const conf_pair forced[] = {{"group.id", opts->group_id},
                                    {"enable.auto.offset.store", "false"},
                                    {NULL, NULL}};
        conf = conf_build(cfg, defaults, forced, err, errlen);
    }
    if (!conf)
        goto fail;
    c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "kafka: out of memory");
        goto fail;
    }
    pthread_mutex_init(&c->pend_mu, NULL);
    pthread_mutex_init(&c->asg_mu, NULL);
    c->dead = dead;
    c->max_attempts = opts->max_attempts > 0 ? opts->max_attempts : DEFAULT_MAX_ATTEMPTS;
    c->poll_timeout_ms = opts->poll_timeout_ms > 0 ? opts->poll_timeout_ms : DEFAULT_POLL_MS;
    c->close_timeout_ms = opts->close_timeout_ms > 0 ? opts->close_timeout_ms : DEFAULT_CLOSE_MS;
    c->topic_dead = strdup(topic_or(cfg ? cfg->topic_dead : NULL, DQ_TOPIC_DEAD));
    if (!c->topic_dead) {
        snprintf(err, errlen, "kafka: out of memory");
        goto fail;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, c);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!c->rk) {
        char raw[600];
        snprintf(raw, sizeof raw, "kafka: %s", why);
        dq_redact(raw, err, errlen);
        goto fail;
    }
    conf = NULL; /* now owned by c->rk */
    /* one queue: rebalances, errors and logs are all served by rd_kafka_consumer_poll */
    rd_kafka_poll_set_consumer(c->rk);

    topics = rd_kafka_topic_partition_list_new((int)opts->n_topics);
    for (size_t i = 0; i < opts->n_topics; i++)
        rd_kafka_topic_partition_list_add(topics, opts->topics[i], RD_KAFKA_PARTITION_UA);
    e = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        snprintf(err, errlen, "kafka: subscribe: %s", rd_kafka_err2str(e));
        goto fail;
    }
    return c;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (c && c->rk) {
        rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
    }
    if (c) {
        free(c->topic_dead);
        pthread_mutex_destroy(&c->pend_mu);
        pthread_mutex_destroy(&c->asg_mu);
    }
    free(c);
    return NULL;
}

static void pend_flush(dq_consumer *c);

/* What is left after the handle is gone. */
static void consumer_release(dq_consumer *c)
{
    for (size_t i = 0; i < c->n_parts; i++) {
        free(c->parts[i].topic);
        free(c->parts[i].dead_error);
    }
    free(c->parts);
    while (c->n_pend > 0)
        pend_drop(c, &c->pend[0]);
    free(c->pend);
    for (size_t i = 0; i < c->n_rewinds; i++)
        free(c->rewinds[i].topic);
    free(c->rewinds);
    pthread_mutex_destroy(&c->pend_mu);
    if (c->assigned)
        rd_kafka_topic_partition_list_destroy(c->assigned);
    pthread_mutex_destroy(&c->asg_mu);
    free(c->topic_dead);
    free(c);
}

/* One rd_kafka_consumer_close on its own thread, so that the caller can stop waiting. */
typedef struct closer {
    dq_consumer *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;      /* the close returned */
    int abandoned; /* the caller left: the thread cleans up */
} closer;

static int closes_pending;

int dq_consumer_closes_pending(void)
{
    return __atomic_load_n(&closes_pending, __ATOMIC_SEQ_CST);
}

static void closer_free(closer *cl)
{
    pthread_cond_destroy(&cl->cv);
    pthread_mutex_destroy(&cl->mu);
    free(cl);
}

/* Commit the stored offsets and leave the group; a failure is only logged. */
static void close_logged(rd_kafka_t *rk)
{
    rd_kafka_resp_err_t e = rd_kafka_consumer_close(rk);

    if (e)
        dq_warn("kafka: consumer close: %s", rd_kafka_err2str(e));
}

static void *closer_main(void *arg)
{
    closer *cl = arg;
    int abandoned;

    close_logged(cl->c->rk);
    pthread_mutex_lock(&cl->mu);
    cl->done = 1;
    abandoned = cl->abandoned;
    pthread_cond_signal(&cl->cv);
    pthread_mutex_unlock(&cl->mu);
    if (abandoned) {
        /* nobody waits any more: finish what dq_consumer_free left */
        dq_info("kafka: the consumer close given up on finished late");
        rd_kafka_destroy(cl->c->rk);
        consumer_release(cl->c);
        closer_free(cl);
        __atomic_sub_fetch(&closes_pending, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

/* Close with a deadline. Returns 0 when the close finished, -1 when it is still running on
 * its own thread, which then owns c. Without a thread to spare it closes here, unbounded. */
static int close_bounded(dq_consumer *c)
{
    closer *cl = calloc(1, sizeof *cl);
    pthread_condattr_t ca;
    pthread_t t;
    struct timespec until;
    int finished;

    if (!cl || pthread_condattr_init(&ca) != 0) {
        free(cl);
        close_logged(c->rk);
        return 0;
    }
    cl->c = c;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cl->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&cl->mu, NULL);
    if (pthread_create(&t, NULL, closer_main, cl) != 0) {
        closer_free(cl);
        close_logged(c->rk);
        return 0;
    }
    dq_mono_deadline(c->close_timeout_ms, &until);
    pthread_mutex_lock(&cl->mu);
    while (!cl->done && pthread_cond_timedwait(&cl->cv, &cl->mu, &until) == 0)
        ;
    finished = cl->done;
    if (!finished) {
        cl->abandoned = 1;
        __atomic_add_fetch(&closes_pending, 1, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&cl->mu);
    if (!finished) {
        pthread_detach(t);
        dq_warn("kafka: consumer close did not finish within %d ms (group coordinator "
                "unreachable, or librdkafka issue #4884); stopping without it: offsets not "
                "committed are read again by the group",
                c->close_timeout_ms);
        return -1;
    }
    pthread_join(t, NULL);
    closer_free(cl);
    return 0;
}

void dq_consumer_free(dq_consumer *c)
{
    if (!c)
        return;
    if (c->rk) {
        /* acks that arrived after the loop stopped (threads finishing) still count */
        pend_flush(c);
        /* commits the stored offsets and leaves the group, so the partitions move on now
         * instead of after a session timeout */
        if (close_bounded(c) != 0)
            return; /* the closing thread owns c now */
        rd_kafka_destroy(c->rk);
    }
    consumer_release(c);
}

rd_kafka_t *dq_consumer_handle(dq_consumer *c)
{
    return c ? c->rk : NULL;
}

int dq_consumer_assigned(dq_consumer *c, int *n_partitions)
{
    int in = 0, n = 0;

    if (c) {
        pthread_mutex_lock(&c->asg_mu);
        in = c->assigned != NULL;
        n = in ? c->assigned->cnt : 0;
        pthread_mutex_unlock(&c->asg_mu);
    }
    if (n_partitions)
        *n_partitions = n;
    return in;
}

int dq_kafka_broker_up(rd_kafka_t *rk, int timeout_ms, char *why, size_t whylen)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e;

    /* all_topics 0 and no topic: the brokers and the topics this handle knows, small */
    e = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (e) {
        snprintf(why, whylen, "no broker answered in %d ms: %s", timeout_ms, rd_kafka_err2str(e));
        return 0;
    }
    rd_kafka_metadata_destroy(md);
    return 1;
}

int dq_consumer_lag(dq_consumer *c, dq_lag_fn fn, void *ctx)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    int n = 0;

    if (!c)
        return 0;
    pthread_mutex_lock(&c->asg_mu);
    if (c->assigned)
        l = rd_kafka_topic_partition_list_copy(c->assigned);
    pthread_mutex_unlock(&c->asg_mu);
    if (!l)
        return 0;
    if (rd_kafka_position(c->rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < l->cnt; i++) {
            int64_t lo = -1, hi = -1;
            const rd_kafka_topic_partition_t *tp = &l->elems[i];

            if (tp->offset < 0 ||
                rd_kafka_get_watermark_offsets(c->rk, tp->topic, tp->partition, &lo, &hi) != 0 ||
                hi < 0)
                continue;
            fn(ctx, tp->topic, tp->partition, hi > tp->offset ? hi - tp->offset : 0);
            n++;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return n;
}

/* rd_kafka_offsets_store stores the offset as given (rdkafka.h: "it will NOT be + 1"), and
 * the committed offset is the next one to read: hence offset + 1. */
static void offset_store(dq_consumer *c, const char *topic, int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_resp_err_t e;

    one_partition(&l, topic, partition, offset + 1);
    e = rd_kafka_offsets_store(c->rk, l);
    if (!e)
        e = l->elems[0].err;
    if (e)
        dq_warn("kafka: cannot store offset %s [%" PRId32 "] %" PRId64 ": %s", topic, partition,
                offset, rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

/* The message is finished: store its offset now, unless deferred messages before it are
 * still running; then it waits in line behind them. */
static void offset_done(dq_consumer *c, const char *topic, int32_t partition, int64_t offset)
{
    pend_part *pp;

    pthread_mutex_lock(&c->pend_mu);
    pp = pend_find(c, topic, partition);
    if (pp && pp->n > pp->head) {
        if (pend_add(pp, offset, 1) != 0)
            dq_error("kafka: out of memory recording %s [%" PRId32 "] %" PRId64, topic,
                     partition, offset);
    } else {
        offset_store(c, topic, partition, offset);
    }
    pthread_mutex_unlock(&c->pend_mu);
}

/* Store the done prefix of every partition's pending list. */
static void pend_flush(dq_consumer *c)
{
    pthread_mutex_lock(&c->pend_mu);
    for (size_t i = 0; i < c->n_pend; i++) {
        pend_part *pp = &c->pend[i];
        int64_t last = -1;

        while (pp->head < pp->n && pp->done[pp->head]) {
            last = pp->offsets[pp->head];
            pp->head++;
        }
        if (last >= 0)
            offset_store(c, pp->topic, pp->partition, last);
    }
    pthread_mutex_unlock(&c->pend_mu);
}

void dq_consumer_ack(dq_consumer *c, const char *topic, int32_t partition, int64_t offset)
{
    pend_part *pp;

    if (!c || !topic)
        return;
    pthread_mutex_lock(&c->pend_mu);
    pp = pend_find(c, topic, partition);
    for (size_t i = pp ? pp->head : 0; pp && i < pp->n; i++) {
        if (pp->offsets[i] == offset) {
            pp->done[i] = 1;
            pp = NULL;
            break;
        }
    }
    if (pp || !pend_find(c, topic, partition))
        dq_debug("kafka: ack of %s [%" PRId32 "] %" PRId64 " ignored (partition revoked)", topic,
                 partition, offset);
    pthread_mutex_unlock(&c->pend_mu);
}

void dq_consumer_nack(dq_consumer *c, const char *topic, int32_t partition, int64_t offset)
{
    pend_part *pp;

    if (!c || !topic)
        return;
    pthread_mutex_lock(&c->pend_mu);
    pp = pend_find(c, topic, partition);
    if (!pp || !pend_truncate(pp, offset)) {
        /* revoked, done already, or an earlier message of the partition is being read
         * again already (and this one with it) */
        dq_debug("kafka: nack of %s [%" PRId32 "] %" PRId64 " ignored", topic, partition, offset);
    } else {
        if (c->n_rewinds == c->cap_rewinds) {
            size_t cap = c->cap_rewinds ? c->cap_rewinds * 2 : 8;
            struct rewind *nr = realloc(c->rewinds, cap * sizeof *nr);

            if (nr) {
                c->rewinds = nr;
                c->cap_rewinds = cap;
            }
        }
        if (c->n_rewinds < c->cap_rewinds &&
            (c->rewinds[c->n_rewinds].topic = strdup(topic)) != NULL) {
            c->rewinds[c->n_rewinds].partition = partition;
            c->rewinds[c->n_rewinds].offset = offset;
            c->n_rewinds++;
        } else {
            /* never stored either way: read again after a restart or a rebalance */
            dq_error("kafka: out of memory rewinding %s [%" PRId32 "] to %" PRId64, topic,
                     partition, offset);
        }
    }
    pthread_mutex_unlock(&c->pend_mu);
}

static void hold_back(dq_consumer *c, part_state *ps, const dq_message *m);

/* Rewind the partitions that dq_consumer_nack asked for (the loop's thread). */
static void rewinds_due(dq_consumer *c)
{
    struct rewind *list;
    size_t n;

    pthread_mutex_lock(&c->pend_mu);
    list = c->rewinds;
    n = c->n_rewinds;
    c->rewinds = NULL;
    c->n_rewinds = c->cap_rewinds = 0;
    pthread_mutex_unlock(&c->pend_mu);
    for (size_t i = 0; i < n; i++) {
        dq_message m = {.topic = list[i].topic, .partition = list[i].partition,
                        .offset = list[i].offset};
        part_state *ps = part_get(c, m.topic, m.partition, m.offset);

        if (!ps) {
            dq_error("kafka: out of memory rewinding %s [%" PRId32 "] to %" PRId64, m.topic,
                     m.partition, m.offset);
        } else {
            ps->offset = m.offset;
            hold_back(c, ps, &m);
        }
        free(list[i].topic);
    }
    free(list);
}

/* Hold the partition back on this message: pause it, rewind to it, and resume after the
 * backoff. Pausing first is what makes the rewind stick (librdkafka #3471), and only this
 * partition waits: the others keep flowing and the loop keeps polling, so the consumer
 * stays in the group. */
static void hold_back(dq_consumer *c, part_state *ps, const dq_message *m)
{
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_error_t *e;

    one_partition(&l, m->topic, m->partition, RD_KAFKA_OFFSET_INVALID);
    rd_kafka_pause_partitions(c->rk, l);
    l->elems[0].offset = m->offset;
    e = rd_kafka_seek_partitions(c->rk, l, SEEK_TIMEOUT_MS);
    if (e) {
        dq_error("kafka: cannot rewind %s [%" PRId32 "] to %" PRId64 ": %s", m->topic,
                 m->partition, m->offset, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (l->elems[0].err) {
        dq_error("kafka: cannot rewind %s [%" PRId32 "] to %" PRId64 ": %s", m->topic,
                 m->partition, m->offset, rd_kafka_err2str(l->elems[0].err));
    }
    rd_kafka_topic_partition_list_destroy(l);

    ps->offset = m->offset;
    ps->resume_at = dq_mono_ms() + ps->backoff_ms;
    dq_debug("kafka: %s [%" PRId32 "] %" PRId64 " held back for %d ms", m->topic, m->partition,
             m->offset, ps->backoff_ms);
    ps->backoff_ms = ps->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ps->backoff_ms * 2;
}

/* Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF) and no NUL, so
 * the bytes survive a round trip through a JSON string unchanged. */
static int utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char b = s[i];
        size_t n;
        uint32_t cp;

        if (b == 0)
            return 0;
        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf) {
            n = 1;
            cp = b & 0x1f;
        } else if (b >= 0xe0 && b <= 0xef) {
            n = 2;
            cp = b & 0x0f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            n = 3;
            cp = b & 0x07;
        } else {
            return 0;
        }
        if (i + n >= len) /* truncated sequence */
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* bytes as a JSON string member when they are text, else base64 plus "<name>_encoding" */
static int add_bytes(cJSON *o, const char *name, const char *bytes, size_t len)
{
    char enc_name[64];

    if (!bytes)
        return cJSON_AddNullToObject(o, name) ? 0 : -1;
    if (utf8_valid((const unsigned char *)bytes, len)) {
        char *s = strndup(bytes, len);
        int rc = s && cJSON_AddStringToObject(o, name, s) ? 0 : -1;
        free(s);
        return rc;
    }
    {
        char *b64 = dq_base64_encode((const unsigned char *)bytes, len);
        int rc = b64 && cJSON_AddStringToObject(o, name, b64) ? 0 : -1;
        free(b64);
        snprintf(enc_name, sizeof enc_name, "%s_encoding", name);
        if (rc == 0 && !cJSON_AddStringToObject(o, enc_name, "base64"))
            rc = -1;
        return rc;
    }
}

static char *dead_letter_json(const dq_message *m, const char *error, int attempts)
{
    cJSON *o = cJSON_CreateObject();
    char safe[1024], at[DQ_TIME_LEN + 1];
    char *out = NULL;

    if (!o)
        return NULL;
    dq_redact(error, safe, sizeof safe);
    if (!cJSON_AddStringToObject(o, "schema", "deployq.dead/v1") ||
        !cJSON_AddStringToObject(o, "topic", m->topic) ||
        !cJSON_AddNumberToObject(o, "partition", m->partition) ||
        !cJSON_AddNumberToObject(o, "offset", (double)m->offset) ||
        add_bytes(o, "key", m->key, m->key_len) < 0 ||
        !cJSON_AddStringToObject(o, "error", safe) ||
        !cJSON_AddNumberToObject(o, "attempts", attempts) ||
        add_bytes(o, "value", m->value, m->len) < 0 ||
        !cJSON_AddStringToObject(o, "at", dq_time_format(dq_now_ms(), at)))
        goto out;
    out = cJSON_PrintUnformatted(o);
out:
    cJSON_Delete(o);
    return out;
}

/* Returns 0 when the message may be passed (dead-lettered, or no dead-letter producer so
 * only logged), -1 when the dead letter could not be delivered and the message must stay. */
static int dead_letter(dq_consumer *c, const dq_message *m, const char *error, int attempts)
{
    char send_err[512], safe[1024];
    char *doc;
    int rc;

    dq_redact(error, safe, sizeof safe);
    if (!c->dead) {
        dq_error("kafka: %s [%" PRId32 "] %" PRId64 " skipped (no dead-letter producer): %s",
                 m->topic, m->partition, m->offset, safe);
        return 0;
    }
    doc = dead_letter_json(m, error, attempts);
    if (!doc) {
        dq_error("kafka: cannot encode dead letter for %s [%" PRId32 "] %" PRId64, m->topic,
                 m->partition, m->offset);
        return -1;
    }
    rc = producer_send(c->dead, c->topic_dead, m->key, m->key_len, doc, strlen(doc),
                       DEAD_SEND_TIMEOUT_MS, NULL, NULL, send_err, sizeof send_err);
    free(doc);
    if (rc < 0) {
        dq_error("kafka: dead letter for %s [%" PRId32 "] %" PRId64
                 " not delivered, will retry: %s",
                 m->topic, m->partition, m->offset, send_err);
        return -1;
    }
    dq_warn("kafka: %s [%" PRId32 "] %" PRId64 " dead-lettered to %s: %s", m->topic, m->partition,
            m->offset, c->topic_dead, safe);
    return 0;
}

static void message_of(const rd_kafka_message_t *rkm, dq_message *m)
{
    m->topic = rd_kafka_topic_name(rkm->rkt);
    m->partition = rkm->partition;
    m->offset = rkm->offset;
    m->key = rkm->key;
    m->key_len = rkm->key_len;
    m->value = rkm->payload;
    m->len = rkm->len;
    m->timestamp_ms = rd_kafka_message_timestamp(rkm, NULL);
}

/* What happens before the handler sees m. 1 when the message is dealt with here (its
 * partition is held back, or only its dead letter was owed), 0 when the handler gets it. */
static int before_handler(dq_consumer *c, const dq_message *m)
{
    part_state *ps = part_find(c, m->topic, m->partition);

    if (ps && ps->resume_at) {
        /* fetched before the pause took effect; the rewind brings it back in order */
        return 1;
    }
    if (ps && ps->offset != m->offset) {
        /* the partition moved (a rebalance handed it back at another offset): the old
         * hold-back no longer applies */
        part_drop(c, ps);
        ps = NULL;
    }
    if (ps && ps->dead_error) {
        /* the handler already gave up; only the dead letter is owed */
        if (dead_letter(c, m, ps->dead_error, ps->attempts) == 0) {
            offset_done(c, m->topic, m->partition, m->offset);
            part_drop(c, ps);
        } else {
            hold_back(c, ps, m);
        }
        return 1;
    }
    return 0;
}

/* Act on the handler's answer r for m. registered: m is already in its partition's pending
 * list (the batch loop puts every message there before the handler runs, so that an ack
 * may come at any moment); then DQ_HANDLED marks it done there, and any other answer
 * forgets it and what follows it in the partition, which is read again. */
static void after_handler(dq_consumer *c, const dq_message *m, dq_handle_result r,
                          const char *err, int registered)
{
    part_state *ps = part_find(c, m->topic, m->partition);
    const char *reason;

    if (registered && ps && ps->resume_at)
        return; /* an earlier message of the partition is read again, and this one after it */
    if (registered && r != DQ_HANDLED && r != DQ_DEFERRED) {
        pend_part *pp;

        pthread_mutex_lock(&c->pend_mu);
        pp = pend_find(c, m->topic, m->partition);
        if (pp)
            pend_truncate(pp, m->offset);
        pthread_mutex_unlock(&c->pend_mu);
    }
    switch (r) {
    case DQ_HANDLED:
        if (registered)
            dq_consumer_ack(c, m->topic, m->partition, m->offset);
        else
            offset_done(c, m->topic, m->partition, m->offset);
        if (ps)
            part_drop(c, ps);
        return;
    case DQ_DEFERRED:
        if (!registered) {
            pend_part *pp;

            pthread_mutex_lock(&c->pend_mu);
            pp = pend_get(c, m->topic, m->partition);
            if (!pp || pend_add(pp, m->offset, 0) != 0)
                /* never stored then: redelivered after a restart, which is safe */
                dq_error("kafka: out of memory deferring %s [%" PRId32 "] %" PRId64, m->topic,
                         m->partition, m->offset);
            pthread_mutex_unlock(&c->pend_mu);
        }
        if (ps)
            part_drop(c, ps);
        return;
    case DQ_RETRY:
        ps = part_get(c, m->topic, m->partition, m->offset);
        break;
    case DQ_POISON:
        ps = part_get(c, m->topic, m->partition, m->offset);
        if (ps)
            ps->attempts++;
        reason = err[0] ? err : "poison message";
        goto dead;
    case DQ_FAILED:
    default:
        ps = part_get(c, m->topic, m->partition, m->offset);
        if (!ps)
            break;
        ps->attempts++;
        reason = err[0] ? err : "handler failed";
        if (ps->attempts >= c->max_attempts)
            goto dead;
        {
            char safe[1024];
            dq_redact(reason, safe, sizeof safe);
            dq_warn("kafka: %s [%" PRId32 "] %" PRId64 " failed (attempt %d of %d): %s",
                    m->topic, m->partition, m->offset, ps->attempts, c->max_attempts, safe);
        }
        break;
    }
    if (!ps) {
        /* out of memory for the bookkeeping: still never skip the message */
        dq_error("kafka: out of memory holding back %s [%" PRId32 "] %" PRId64, m->topic,
                 m->partition, m->offset);
        return;
    }
    hold_back(c, ps, m);
    return;

dead:
    if (!ps) {
        dq_error("kafka: out of memory holding back %s [%" PRId32 "] %" PRId64, m->topic,
                 m->partition, m->offset);
        return;
    }
    if (dead_letter(c, m, reason, ps->attempts) == 0) {
        offset_done(c, m->topic, m->partition, m->offset);
        part_drop(c, ps);
        return;
    }
    free(ps->dead_error);
    ps->dead_error = strdup(reason);
    hold_back(c, ps, m);
}

static void handle_message(dq_consumer *c, const rd_kafka_message_t *rkm, dq_handler_fn handler,
                           void *ctx)
{
    dq_message m;
    dq_handle_result r;
    char err[512];

    message_of(rkm, &m);
    if (before_handler(c, &m))
        return;
    err[0] = '\0';
    r = handler(ctx, &m, err, sizeof err);
    after_handler(c, &m, r, err, 0);
}

/* Resume partitions whose backoff passed; returns how long the next poll may block. */
static int resume_due(dq_consumer *c)
{
    int64_t now = dq_mono_ms();
    int64_t wait = c->poll_timeout_ms;

    for (size_t i = 0; i < c->n_parts; i++) {
        part_state *ps = &c->parts[i];
        if (!ps->resume_at)
            continue;
        if (ps->resume_at <= now)
            partition_resume(c, ps);
        else if (ps->resume_at - now < wait)
            wait = ps->resume_at - now;
    }
    return (int)wait;
}

/* A poll's result that is not a message. -1 when it is fatal (logged). */
static int poll_error(dq_consumer *c, const rd_kafka_message_t *rkm)
{
    if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(c->rk, why, sizeof why);
        dq_error("kafka: fatal consumer error: %s", why);
        return -1;
    }
    if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        dq_debug("kafka: %s [%" PRId32 "] at end (%" PRId64 ")",
                 rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "?", rkm->partition, rkm->offset);
    else
        dq_warn("kafka: consumer: %s", rd_kafka_message_errstr(rkm));
    return 0;
}

int dq_consumer_run(dq_consumer *c, dq_handler_fn handler, void *ctx,
                    volatile sig_atomic_t *stop)
{
    while (!*stop) {
        rd_kafka_message_t *rkm;
        int wait = resume_due(c);

        rewinds_due(c);
        pend_flush(c);
        rkm = rd_kafka_consumer_poll(c->rk, wait);
        if (!rkm)
            continue;
        if (rkm->err) {
            int fatal = poll_error(c, rkm) < 0;

            rd_kafka_message_destroy(rkm);
            if (fatal)
                return -1;
            continue;
        }
        handle_message(c, rkm, handler, ctx);
        rd_kafka_message_destroy(rkm);
    }
    pend_flush(c); /* acks that came in since the last poll count at close */
    return 0;
}

/* Put m in its partition's pending list, not done. -1 out of memory. */
static int pend_register(dq_consumer *c, const dq_message *m)
{
    pend_part *pp;
    int rc = -1;

    pthread_mutex_lock(&c->pend_mu);
    pp = pend_get(c, m->topic, m->partition);
    if (pp)
        rc = pend_add(pp, m->offset, 0);
    pthread_mutex_unlock(&c->pend_mu);
    return rc;
}

int dq_consumer_run_batch(dq_consumer *c, dq_batch_fn handler, void *ctx, size_t max_batch,
                          volatile sig_atomic_t *stop)
{
    rd_kafka_message_t **rkms;
    dq_batch_item *items;
    int rc = 0;

    if (max_batch == 0)
        max_batch = 1;
    rkms = calloc(max_batch, sizeof *rkms);
    items = calloc(max_batch, sizeof *items);
    if (!rkms || !items) {
        dq_error("kafka: out of memory for a batch of %zu", max_batch);
        free(rkms);
        free(items);
        return -1;
    }
    while (!*stop && rc == 0) {
        size_t n_rkm = 0, n = 0;
        int wait = resume_due(c), rebalances = c->rebalances;

        rewinds_due(c);
        pend_flush(c);
        /* The first poll waits; the rest take what is already fetched. A rebalance ends the
         * batch, so that it does not mix partitions from before and after. */
        while (n_rkm < max_batch) {
            rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->rk, n_rkm == 0 ? wait : 0);

            if (!rkm)
                break;
            if (rkm->err) {
                if (poll_error(c, rkm) < 0)
                    rc = -1;
                rd_kafka_message_destroy(rkm);
                if (rc < 0)
                    break;
                continue;
            }
            rkms[n_rkm++] = rkm;
            if (c->rebalances != rebalances)
                break;
        }
        for (size_t i = 0; i < n_rkm; i++) {
            dq_batch_item *it = &items[n];

            message_of(rkms[i], &it->m);
            if (before_handler(c, &it->m))
                continue;
            if (pend_register(c, &it->m) != 0) {
                /* never stored then, and nothing after it in the partition either */
                dq_error("kafka: out of memory registering %s [%" PRId32 "] %" PRId64,
                         it->m.topic, it->m.partition, it->m.offset);
                continue;
            }
            it->result = DQ_RETRY;
            it->err[0] = '\0';
            n++;
        }
        handler(ctx, items, n);
        /* nacks that came during the handler come first: what they rewind is read again */
        rewinds_due(c);
        for (size_t i = 0; i < n; i++)
            after_handler(c, &items[i].m, items[i].result, items[i].err, 1);
        for (size_t i = 0; i < n_rkm; i++)
            rd_kafka_message_destroy(rkms[i]);
    }
    pend_flush(c); /* acks that came in since the last poll count at close */
    free(rkms);
    free(items);
    return rc;
}
