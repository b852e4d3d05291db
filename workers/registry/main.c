/*
 * main.c - deployq-registry: keeps every event of deployq.events in the append-only,
 * hash-chained log of common/domain/reglog.h (docs/registry-format.md), one writer per partition,
 * and folds each stored event into the live state (common/domain/fold.h).
 *
 * Why its own consumer loop instead of dq_consumer: the resume point must come from the
 * log, not from Kafka. On assignment each partition's log is opened (recovering a torn
 * tail) and the consumer is positioned at the log's last offset + 1; a batch of messages
 * is appended, made durable with one dq_reglog_commit (one fdatasync per partition), and
 * only then are the Kafka offsets committed, synchronously. A redelivered message is
 * refused by the log (offset not above the last) and skipped, so nothing is stored twice
 * and a kill -9 anywhere leaves no gap. A failed write or fdatasync, or corruption found
 * on open, ends the process with exit status 1: it is never retried or skipped.
 */
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "config.h"
#include "fold.h"
#include "httpapi.h"
#include "kafka.h"
#include "log.h"
#include "reglog.h"
#include "util.h"
#include "worker.h"

/* HTTP API: the dashboard page, generated at build time from dashboard.html (embed.py). */
#include "dashboard_html.h"

static const char usage[] =
    "Usage: deployq-registry [options]\n"
    "\n"
    "Consume every event of deployq.events and keep it in an append-only, hash-chained log\n"
    "on local disk (one directory per partition; docs/registry-format.md), with group\n"
    "commit: a batch of events, one fdatasync, then the Kafka offsets. A restart resumes\n"
    "exactly where the log ends. Run several in one consumer group to split partitions\n"
    "(each with its own --dir, or sharing one: a partition has one writer at a time).\n"
    "Stops cleanly on SIGTERM/SIGINT; exits 1 on a storage error or corruption.\n"
    "\n"
    "  -d, --dir DIR         registry directory (default: registry.dir, else\n"
    "                        $DEPLOYQ_STATE_DIR/registry, else ./deployq-registry)\n"
    "      --batch N         at most N events per group commit (default registry.batch,\n"
    "                        else 5000)\n"
    "(--redis-url is accepted for uniformity with the other workers; the registry uses no\n"
    "Redis. --health-listen is ignored: /healthz, /readyz and /metrics are served by the\n"
    "HTTP API, on registry.http.listen, default 127.0.0.1:8787.)\n"
    "\n" DQ_WORKER_COMMON_USAGE;

enum { OPT_BATCH = DQ_WORKER_OPT_BASE };

/* The registry's own options: --dir and --batch. */
typedef struct {
    const char *dir, *batch;
} reg_args;

static int reg_opt(void *ctx, int c, const char *arg)
{
    reg_args *a = ctx;

    if (c == 'd')
        a->dir = arg;
    else if (c == OPT_BATCH)
        a->batch = arg;
    else
        return -1;
    return 0;
}

/* One partition this process writes. */
typedef struct {
    dq_reglog *log;    /* NULL when not assigned */
    int64_t appended;  /* offset of the last message appended in this batch, -1 none */
} part;

typedef struct {
    const dq_config *cfg;
    const char *dir;
    dq_reglog_opts log_opts;
    rd_kafka_t *rk;
    part *parts;
    int32_t n_parts;
    /* The live state. The HTTP API (another thread) reads it under fold_lock. */
    pthread_mutex_t fold_lock;
    dq_fold *fold;
    int64_t *folded_upto; /* per partition: last Kafka offset folded, -1 none */
    /* HTTP API (common/domain/httpapi.h): NULL when registry.http.listen is off. Events are staged
     * as they are appended and published once their group commit is durable. */
    dq_httpapi *api;
    int64_t lag_mono; /* when consumer lag was last reported */
    int fatal;
    /* /readyz (ready() below): whether the group gave us an assignment (atomic), and the
     * consumer handle while it may be asked, under ready_mu */
    int joined;
    pthread_mutex_t ready_mu;
    rd_kafka_t *ready_rk;
    /* figures for the log and the benchmark */
    uint64_t n_appended, n_duplicates, n_commits, n_syncs;
    int64_t first_append_mono, last_commit_mono;
} registry;

static part *part_get(registry *r, int32_t p)
{
    if (p < 0 || p > 65535)
        return NULL;
    if (p >= r->n_parts) {
        int32_t n = p + 1;
        part *np = realloc(r->parts, (size_t)n * sizeof *np);
        int64_t *nf = realloc(r->folded_upto, (size_t)n * sizeof *nf);

        if (np)
            r->parts = np;
        if (nf)
            r->folded_upto = nf;
        if (!np || !nf)
            return NULL;
        for (int32_t i = r->n_parts; i < n; i++) {
            r->parts[i] = (part){.log = NULL, .appended = -1};
            r->folded_upto[i] = -1;
        }
        r->n_parts = n;
    }
    return &r->parts[p];
}

/* Fold what the logs of the given partitions hold beyond what the live state has seen
 * (everything on the first assignment; after a partition came back, what another
 * instance appended meanwhile). The iterator reads the whole directory; records of other
 * partitions are skipped. */
static int fold_catch_up(registry *r, const rd_kafka_topic_partition_list_t *parts)
{
    char err[512];
    dq_reglog_iter *it;
    dq_reglog_entry e;
    int rc;
    uint64_t n = 0;
    int want = 0;

    for (int i = 0; i < parts->cnt; i++) {
        part *p = part_get(r, parts->elems[i].partition);

        if (p && p->log &&
            dq_reglog_last_offset(p->log) > r->folded_upto[parts->elems[i].partition])
            want = 1;
    }
    if (!want)
        return 0;
    it = dq_reglog_iter_open(r->dir, err, sizeof err);
    if (!it) {
        dq_error("replay for the live state: %s", err);
        return -1;
    }
    pthread_mutex_lock(&r->fold_lock);
    while ((rc = dq_reglog_iter_next(it, &e, err, sizeof err)) == 1) {
        int mine = 0;

        for (int i = 0; i < parts->cnt && !mine; i++)
            mine = parts->elems[i].partition == e.partition;
        if (!mine || e.partition >= r->n_parts ||
            e.kafka_offset <= r->folded_upto[e.partition])
            continue;
        if (dq_fold_apply(r->fold, e.partition, e.kafka_offset, e.payload, e.len) ==
            DQ_FOLD_ENOMEM) {
            rc = -1;
            snprintf(err, sizeof err, "out of memory");
            break;
        }
        r->folded_upto[e.partition] = e.kafka_offset;
        n++;
    }
    pthread_mutex_unlock(&r->fold_lock);
    dq_reglog_iter_close(it);
    if (rc < 0) {
        dq_error("replay for the live state: %s", err);
        return -1;
    }
    if (n)
        dq_info("live state: folded %llu stored events", (unsigned long long)n);
    return 0;
}

/* ---- HTTP API (common/domain/httpapi.h) ---------------------------------------------------- */

static double mono_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Report, per partition this process stores, how far the log is behind the partition's
 * high watermark (librdkafka's cached value from the last fetch: no broker round trip). */
static void report_lag(registry *r)
{
    for (int32_t i = 0; i < r->n_parts; i++) {
        int64_t lo, hi, next;

        if (!r->parts[i].log) {
            dq_httpapi_set_lag(r->api, i, -1);
            continue;
        }
        if (rd_kafka_get_watermark_offsets(r->rk, r->cfg->topic_events, i, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        next = dq_reglog_last_offset(r->parts[i].log) + 1;
        if (next < lo)
            next = lo;
        dq_httpapi_set_lag(r->api, i, hi > next ? hi - next : 0);
    }
}

/* registry.http.*: listen (default 127.0.0.1:8787, "off"), token (a ${ENV} secret; empty
 * or blank is an error), dashboard_file, and the connection limits max_clients,
 * max_clients_per_address, request_timeout (httpapi.h). An address given in the file must
 * work; the default one may be taken (another registry on this host), which only costs the
 * API: a warning. 0, or -1. */
static const char *config_registry(const dq_config *cfg, const char *key);
static int ready(void *ctx, char *why, size_t whylen);
static int start_http(registry *r, const dq_config *cfg)
{
    const char *listen = config_registry(cfg, "http.listen");
    const char *token = config_registry(cfg, "http.token");
    dq_httpapi_opts o = {
        .listen = listen ? listen : DQ_HTTPAPI_DEFAULT_LISTEN,
        .token = token,
        .fold = r->fold,
        .fold_lock = &r->fold_lock,
        .registry_dir = r->dir,
        .dashboard_html = dq_dashboard_html,
        .dashboard_path = config_registry(cfg, "http.dashboard_file"),
        .ready = ready,
        .ready_ctx = r,
        .lag_topic = cfg->topic_events,
    };
    char err[512];
    const char *max_clients = config_registry(cfg, "http.max_clients");
    const char *per_address = config_registry(cfg, "http.max_clients_per_address");
    const char *req_timeout = config_registry(cfg, "http.request_timeout");
    long long n;

    if (listen && strcmp(listen, "off") == 0) {
        dq_info("http: off (registry.http.listen)");
        return 0;
    }
    if (max_clients) {
        if (dq_parse_int(max_clients, 2, 4096, &n) != 0) {
            dq_error("registry.http.max_clients: expected a whole number from 2 to 4096, not "
                     "'%.40s'", max_clients);
            return -1;
        }
        o.max_clients = (unsigned)n;
    }
    if (per_address) {
        if (dq_parse_int(per_address, 2, 4096, &n) != 0) {
            dq_error("registry.http.max_clients_per_address: expected a whole number from 2 "
                     "to 4096, not '%.40s'", per_address);
            return -1;
        }
        o.max_clients_per_address = (unsigned)n;
    }
    if (req_timeout) {
        int64_t ms = dq_duration_parse(req_timeout);

        if (ms < 100 || ms > 600000) {
            dq_error("registry.http.request_timeout: expected a duration from 100ms to 10m, "
                     "not '%.40s'", req_timeout);
            return -1;
        }
        o.request_timeout_ms = (int)ms;
    }
    if (token && token[strspn(token, " \t\r\n\f\v")] == '\0') {
        /* never serve without authentication while the operator believes it is on */
        dq_error("registry.http.token is empty or blank (an unset or empty ${VAR}?): set it, "
                 "or leave the key out to serve without a token");
        return -1;
    }
    r->api = dq_httpapi_start(&o, err, sizeof err);
    if (!r->api) {
        if (listen) {
            dq_error("registry.http.listen: %s", err);
            return -1;
        }
        dq_warn("%s; running without the HTTP API (set registry.http.listen)", err);
        return 0;
    }
    if (!token && strncmp(o.listen, "127.", 4) != 0 && strncmp(o.listen, "[::1]", 5) != 0 &&
        strncmp(o.listen, "localhost:", 10) != 0)
        dq_warn("http: %s is not a loopback address and registry.http.token is not set",
                o.listen);
    dq_info("http: serving on %s (port %d), dashboard at /%s", o.listen,
            dq_httpapi_port(r->api), token ? ", bearer token required" : "");
    return 0;
}

/* ---- end of HTTP API ------------------------------------------------------------------ */

/* Make every appended event durable, then commit the Kafka offsets. 0, or -1 (fatal). */
static int flush(registry *r)
{
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(8);
    int rc = 0;

    for (int32_t i = 0; i < r->n_parts; i++) {
        part *p = &r->parts[i];

        if (!p->log || p->appended < 0)
            continue;
        double t0 = mono_seconds(); /* HTTP API: fsync latency metric */

        if (dq_reglog_commit(p->log) != DQ_REGLOG_OK) {
            dq_error("p%d: %s; stopping (a failed fdatasync is never retried)", (int)i,
                     dq_reglog_errstr(p->log));
            rc = -1;
            break;
        }
        r->n_syncs++; /* one fdatasync per partition in the group (two on a segment roll) */
        dq_httpapi_observe_fsync(r->api, mono_seconds() - t0);
        rd_kafka_topic_partition_list_add(offs, r->cfg->topic_events, i)->offset =
            p->appended + 1;
        p->appended = -1;
    }
    if (rc == 0)
        dq_httpapi_publish_staged(r->api); /* HTTP API: durable now, so visible to streams */
    if (rc == 0 && offs->cnt > 0) {
        rd_kafka_resp_err_t e;

        r->n_commits++;
        r->last_commit_mono = dq_mono_ms();
        /* The log is the truth (a restart seeks from it), so a failed offset commit only
         * delays what lag monitors see; it is worth a warning, not a stop. */
        e = rd_kafka_commit(r->rk, offs, 0);
        if (e)
            dq_warn("kafka offset commit: %s", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(offs);
    return rc;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    registry *r = opaque;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    char msg[512];

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &parts->elems[i];
            part *p = part_get(r, tp->partition);

            if (!p) {
                dq_error("p%d: cannot track the partition", (int)tp->partition);
                r->fatal = 1;
                return;
            }
            if (!p->log) {
                p->log = dq_reglog_open(r->dir, tp->partition, &r->log_opts, msg, sizeof msg);
                if (!p->log) {
                    dq_error("%s/%s", r->dir, msg);
                    r->fatal = 1;
                    return;
                }
            }
            /* Resume exactly where the log ends, whatever Kafka's committed offset says. */
            tp->offset = dq_reglog_count(p->log) ? dq_reglog_last_offset(p->log) + 1
                                                 : RD_KAFKA_OFFSET_BEGINNING;
            if (dq_reglog_count(p->log))
                dq_info("p%d: %llu records stored; resuming at offset %lld", (int)tp->partition,
                        (unsigned long long)dq_reglog_count(p->log), (long long)tp->offset);
            else
                dq_info("p%d: empty; resuming at the beginning", (int)tp->partition);
        }
        if (fold_catch_up(r, parts) != 0) {
            r->fatal = 1;
            return;
        }
        if (coop)
            rd_kafka_error_destroy(rd_kafka_incremental_assign(rk, parts));
        else
            rd_kafka_assign(rk, parts);
        __atomic_store_n(&r->joined, 1, __ATOMIC_SEQ_CST);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        /* eager: out of the group until the next assignment; cooperative keeps the rest */
        if (!coop || rd_kafka_assignment_lost(rk))
            __atomic_store_n(&r->joined, 0, __ATOMIC_SEQ_CST);
        if (flush(r) != 0)
            r->fatal = 1;
        for (int i = 0; i < parts->cnt; i++) {
            part *p = part_get(r, parts->elems[i].partition);

            if (p && p->log) {
                dq_info("p%d: revoked after %llu records", (int)parts->elems[i].partition,
                        (unsigned long long)dq_reglog_count(p->log));
                dq_reglog_close(p->log);
                p->log = NULL;
            }
        }
        if (coop)
            rd_kafka_error_destroy(rd_kafka_incremental_unassign(rk, parts));
        else
            rd_kafka_assign(rk, NULL);
    } else {
        dq_error("rebalance: %s", rd_kafka_err2str(err));
        __atomic_store_n(&r->joined, 0, __ATOMIC_SEQ_CST);
        rd_kafka_assign(rk, NULL);
    }
}

/* /readyz of the registry (httpapi.h): in the group with an assignment, and a broker
 * answering (healthsrv.h's rules; the registry uses no Redis). */
static int ready(void *ctx, char *why, size_t whylen)
{
    registry *r = ctx;
    int ok = 0;
    char tmp[400];

    pthread_mutex_lock(&r->ready_mu);
    if (!r->ready_rk)
        snprintf(why, whylen, "kafka: consumer not started");
    else if (!__atomic_load_n(&r->joined, __ATOMIC_SEQ_CST))
        snprintf(why, whylen, "kafka: no partitions assigned (not in its group yet)");
    else if (!dq_kafka_broker_up(r->ready_rk, 1000, tmp, sizeof tmp))
        snprintf(why, whylen, "kafka: %s", tmp);
    else
        ok = 1;
    pthread_mutex_unlock(&r->ready_mu);
    return ok;
}

/* Append one message to its partition's log. 0, or -1 (fatal). */
static int handle(registry *r, const rd_kafka_message_t *m)
{
    part *p;
    int rc;

    if (m->err) {
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            return 0;
        if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
            char reason[256];

            rd_kafka_fatal_error(r->rk, reason, sizeof reason);
            dq_error("kafka: %s", reason);
            return -1;
        }
        dq_warn("kafka: %s", rd_kafka_message_errstr(m));
        return 0;
    }
    p = part_get(r, m->partition);
    if (!p || !p->log) {
        /* A message fetched just before its partition was revoked: the next owner reads it
         * from its own log position. */
        return 0;
    }
    rc = dq_reglog_append(p->log, m->offset, m->payload, m->len);
    if (rc == DQ_REGLOG_EOFFSET) {
        r->n_duplicates++;
        dq_debug("p%d: offset %lld already stored; skipped", (int)m->partition,
                 (long long)m->offset);
        return 0;
    }
    if (rc != DQ_REGLOG_OK) {
        dq_error("p%d: offset %lld: %s", (int)m->partition, (long long)m->offset,
                 dq_reglog_errstr(p->log));
        return -1;
    }
    if (!r->n_appended)
        r->first_append_mono = dq_mono_ms();
    r->n_appended++;
    p->appended = m->offset;
    dq_httpapi_stage(r->api, m->payload, m->len); /* HTTP API: published after the commit */
    pthread_mutex_lock(&r->fold_lock);
    if (dq_fold_apply(r->fold, m->partition, m->offset, m->payload, m->len) == DQ_FOLD_ENOMEM)
        rc = -1;
    r->folded_upto[m->partition] = m->offset;
    pthread_mutex_unlock(&r->fold_lock);
    if (rc != 0)
        dq_error("live state: out of memory");
    return rc;
}

/* registry.<key> ("dir", "http.listen") from the configuration as the text it was written
 * as (owned by cfg), or NULL. */
static const char *config_registry(const dq_config *cfg, const char *key)
{
    char path[64];

    snprintf(path, sizeof path, "registry.%s", key);
    /* no buffer: only a number built by hand needs one, and this worker reads a file */
    return dq_config_text(cfg, dq_config_view(cfg, path), NULL, 0);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"batch", required_argument, NULL, OPT_BATCH},
        {NULL, 0, NULL, 0},
    };
    dq_worker w = {.program = "deployq-registry", .group = "deployq-registry"};
    reg_args ra = {0};
    const char *dir, *batch_arg, *group;
    int rc;
    long long batch = 5000;
    char err[1024], dirbuf[PATH_MAX], hash[DQ_FOLD_HASH_HEX_LEN + 1];
    dq_config *cfg = NULL;
    registry r = {.fold_lock = PTHREAD_MUTEX_INITIALIZER, .ready_mu = PTHREAD_MUTEX_INITIALIZER};
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *topics = NULL;
    volatile sig_atomic_t *stop;

    rc = dq_worker_start(&w, argc, argv, usage, opts, "d:", reg_opt, &ra);
    if (rc >= 0) {
        dq_worker_finish(&w);
        return rc;
    }
    rc = 1;
    cfg = w.cfg;
    stop = w.stop;
    group = w.group;
    dir = ra.dir;
    batch_arg = ra.batch;
    if (!batch_arg)
        batch_arg = config_registry(cfg, "batch");
    if (batch_arg && dq_parse_int(batch_arg, 1, 1000000, &batch) != 0) {
        dq_error("registry.batch / --batch %s: expected a number from 1 to 1000000", batch_arg);
        goto out;
    }
    {
        const char *seg = config_registry(cfg, "segment_bytes");
        long long v;

        if (seg && dq_parse_int(seg, 4096, (long long)1 << 40, &v) != 0) {
            dq_error("registry.segment_bytes %s: expected a number of bytes >= 4096", seg);
            goto out;
        }
        r.log_opts.segment_bytes = seg ? (uint64_t)v : 0;
    }
    if (!dir)
        dir = config_registry(cfg, "dir");
    if (!dir) {
        const char *st = getenv("DEPLOYQ_STATE_DIR");

        if (st && *st) {
            snprintf(dirbuf, sizeof dirbuf, "%s/registry", st);
            dir = dirbuf;
        } else {
            dir = "./deployq-registry";
        }
    }
    r.cfg = cfg;
    r.dir = dir;
    r.fold = dq_fold_new();
    if (!r.fold) {
        dq_error("out of memory");
        goto out;
    }
    if (start_http(&r, cfg) != 0) /* HTTP API */
        goto out;

    if (dq_kafka_ensure_topics(cfg, DQ_PARTITIONS_DEFAULT, 15000, err, sizeof err) != 0)
        dq_warn("could not ensure topics: %s", err);
    conf = dq_kafka_conf(cfg, err, sizeof err);
    if (!conf) {
        dq_error("%s", err);
        goto out;
    }
    /* Offsets are committed by hand after the fdatasync; the start position comes from the
     * log (rebalance_cb), so auto.offset.reset only matters for an empty log. */
    if (rd_kafka_conf_set(conf, "group.id", group, err, sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", err, sizeof err) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof err) !=
            RD_KAFKA_CONF_OK) {
        dq_error("kafka: %s", err);
        goto out;
    }
    if (!dq_config_kafka_get(cfg, "fetch.wait.max.ms"))
        rd_kafka_conf_set(conf, "fetch.wait.max.ms", "50", NULL, 0);
    /* The registry keeps librdkafka's prefetch (queued.max.messages.kbytes, 64 MiB), not
     * the 4 MiB of the other consumers (kafka.h): it appends in group commits, and fetching
     * goes on during each fdatasync only while the queue has room. With 4 MiB it stored
     * 18,500 events/s on a real Kafka, with 64 MiB 52,000-61,000 (tests/bench/registry.sh,
     * alternating; docs/performance.md). Its peak in the flood is its live state either way. */
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, &r);
    r.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    pthread_mutex_lock(&r.ready_mu);
    r.ready_rk = r.rk;
    pthread_mutex_unlock(&r.ready_mu);
    if (!r.rk) {
        dq_error("kafka: %s", err);
        goto out;
    }
    conf = NULL; /* now owned by r.rk */
    rd_kafka_poll_set_consumer(r.rk);
    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, cfg->topic_events, RD_KAFKA_PARTITION_UA);
    if (rd_kafka_subscribe(r.rk, topics) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        dq_error("kafka: cannot subscribe to %s", cfg->topic_events);
        goto out;
    }
    dq_info("storing %s in %s as group %s (group commit of up to %lld events)",
            cfg->topic_events, dir, group, batch);

    rc = 0;
    while (!*stop && !r.fatal) {
        /* The short timeout lets the loop see the stop flag; the zero timeouts after the
         * first message gather what is already fetched into one group commit. */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r.rk, 100);
        long long n = 0;

        while (m) {
            if (handle(&r, m) != 0)
                r.fatal = 1;
            rd_kafka_message_destroy(m);
            if (r.fatal || ++n >= batch)
                break;
            m = rd_kafka_consumer_poll(r.rk, 0);
        }
        if (!r.fatal && n && flush(&r) != 0)
            r.fatal = 1;
        if (r.api && dq_mono_ms() - r.lag_mono >= 1000) { /* HTTP API: lag metric */
            r.lag_mono = dq_mono_ms();
            report_lag(&r);
        }
    }
    if (!r.fatal && flush(&r) != 0)
        r.fatal = 1;
    if (r.fatal)
        rc = 1;
    dq_fold_state_hash(r.fold, hash);
    dq_info("stopping: appended %llu events in %llu group commits (%llu partition "
            "fdatasyncs) over %lld ms, %llu duplicates skipped; state hash %s",
            (unsigned long long)r.n_appended, (unsigned long long)r.n_commits,
            (unsigned long long)r.n_syncs,
            (long long)(r.n_appended ? r.last_commit_mono - r.first_append_mono : 0),
            (unsigned long long)r.n_duplicates, hash);
out:
    pthread_mutex_lock(&r.ready_mu); /* waits for a readiness check that uses r.rk */
    r.ready_rk = NULL;
    pthread_mutex_unlock(&r.ready_mu);
    if (r.rk) {
        /* Leaving the group runs the revoke callback, which closes the logs. */
        rd_kafka_consumer_close(r.rk);
        rd_kafka_destroy(r.rk);
    }
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (topics)
        rd_kafka_topic_partition_list_destroy(topics);
    dq_httpapi_stop(r.api); /* HTTP API: before the fold it reads */
    for (int32_t i = 0; i < r.n_parts; i++)
        dq_reglog_close(r.parts[i].log);
    free(r.parts);
    free(r.folded_upto);
    dq_fold_free(r.fold);
    dq_worker_finish(&w);
    return rc;
}
