/*
 * main.c - deployq-monitor: watches every successful deploy (and rollback) for its
 * window and decides, with evidence, whether it stays (deploy.verified) or goes
 * (rollback.requested). monitor.c does the work; this file is options, start-up and an
 * orderly shutdown. Run several: they share the consumer group's partitions for starting
 * sessions, and share the sessions themselves through Redis, so a monitor that dies
 * mid-window costs at most one lease, not the verdict.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "kafka.h"
#include "log.h"
#include "monitor.h"
#include "redis.h"
#include "util.h"

static const char usage[] =
    "Usage: deployq-monitor [options]\n"
    "\n"
    "Consume deployq.events; on deploy.succeeded or rollback.succeeded of a target with\n"
    "probes, watch it for its window (HTTP and Prometheus probes every interval) and emit\n"
    "monitor.started, health.degraded on each change, then deploy.verified or\n"
    "rollback.requested with the evidence. Sessions live in Redis, so another instance\n"
    "carries on the sessions of one that died. Stops cleanly on SIGTERM/SIGINT.\n"
    "\n"
    "  -c, --config FILE     configuration (default $DEPLOYQ_CONFIG)\n"
    "      --brokers LIST    Kafka bootstrap servers (env DEPLOYQ_BROKERS wins)\n"
    "      --redis-url URL   Redis for sessions (env DEPLOYQ_REDIS_URL wins)\n"
    "  -g, --group ID        consumer group (default deployq-monitor)\n"
    "  -X KEY=VALUE          any librdkafka property (repeatable)\n"
    "      --log-level L     debug|info|warn|error (default info)\n"
    "  -h, --help            this help\n";

enum { OPT_BROKERS = 1000, OPT_REDIS, OPT_LOG_LEVEL };

/* Connect a producer to the cluster now (metadata of every topic), so the first
 * verdict does not pay for the connection: a second saved there is a second of MTTR. */
static void warm_up(dq_producer *p)
{
    const struct rd_kafka_metadata *md = NULL;

    if (rd_kafka_metadata(dq_producer_handle(p), 1, NULL, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
}

/* Redis may still be starting (compose, systemd): wait for it a while at start. */
static dq_redis *connect_redis(const dq_config *cfg, volatile sig_atomic_t *stop)
{
    char err[512];
    dq_redis *r = NULL;

    for (int i = 0; i < 60 && !*stop && !r; i++) {
        r = dq_redis_connect(cfg->redis_url, cfg->redis_timeout_ms, err, sizeof err);
        if (!r) {
            if (i == 0)
                dq_warn("redis: %s; retrying", err);
            dq_sleep_ms(500);
        }
    }
    if (!r)
        dq_error("redis: %s", err);
    return r;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"redis-url", required_argument, NULL, OPT_REDIS},
        {"group", required_argument, NULL, 'g'},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *brokers = NULL, *redis_url = NULL;
    const char *group = "deployq-monitor";
    const char *kv[32];
    int n_kv = 0, c, rc = 1, level = DQ_LOG_INFO;
    char err[1024];
    dq_config *cfg = NULL;
    dq_monitor mon = {0};
    dq_ticker *tickers = NULL;
    dq_consumer *consumer = NULL;
    volatile sig_atomic_t *stop;

    while ((c = getopt_long(argc, argv, "c:g:X:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case OPT_BROKERS: brokers = optarg; break;
        case OPT_REDIS: redis_url = optarg; break;
        case 'g': group = optarg; break;
        case 'X':
            if (!strchr(optarg, '=') || n_kv >= 32) {
                fprintf(stderr, "deployq-monitor: -X %s: expected KEY=VALUE\n", optarg);
                return 2;
            }
            kv[n_kv++] = optarg;
            break;
        case OPT_LOG_LEVEL:
            level = dq_log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "deployq-monitor: --log-level %s: expected debug, info, warn or error\n",
                        optarg);
                return 2;
            }
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "deployq-monitor: unexpected argument '%s'\n", argv[optind]);
        fputs(usage, stderr);
        return 2;
    }
    dq_log_init("deployq-monitor", (dq_log_level)level, -1);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    stop = dq_stop_flag_install();

    cfg = dq_config_load(config_path, err, sizeof err);
    if (!cfg) {
        dq_error("%s", err);
        goto out;
    }
    for (int i = 0; i < n_kv; i++) {
        char key[256];
        const char *eq = strchr(kv[i], '=');
        size_t n = (size_t)(eq - kv[i]) < sizeof key ? (size_t)(eq - kv[i]) : sizeof key - 1;

        memcpy(key, kv[i], n);
        key[n] = '\0';
        dq_config_set_kafka(cfg, key, eq + 1);
    }
    if (brokers)
        dq_config_set_kafka(cfg, "bootstrap.servers", brokers);
    if (redis_url) {
        free(cfg->redis_url);
        cfg->redis_url = strdup(redis_url);
    }
    dq_config_apply_env(cfg);
    if (!dq_config_kafka_get(cfg, "bootstrap.servers")) {
        dq_error("no broker configured: set kafka.bootstrap.servers, --brokers or DEPLOYQ_BROKERS");
        goto out;
    }
    if (dq_monitor_load(&mon, cfg, err, sizeof err) != 0) {
        dq_error("%s", err);
        goto out;
    }
    mon.stop = stop;
    dq_actor("deployq-monitor", mon.actor, sizeof mon.actor);
    if (mon.n_targets == 0)
        dq_warn("no environment has monitor probes: deploys will not be watched");

    mon.redis = connect_redis(cfg, stop);
    if (!mon.redis)
        goto out;
    if (dq_kafka_ensure_topics(cfg, DQ_PARTITIONS_DEFAULT, 15000, err, sizeof err) != 0)
        dq_warn("could not ensure topics: %s", err);
    mon.producer = dq_producer_new(cfg, err, sizeof err);
    if (!mon.producer) {
        dq_error("%s", err);
        goto out;
    }
    warm_up(mon.producer);

    /* the tickers start first: sessions left by a monitor that died are carried on
     * while this one is still joining the consumer group */
    tickers = calloc((size_t)mon.n_tickers, sizeof *tickers);
    if (!tickers) {
        dq_error("out of memory");
        goto out;
    }
    for (int i = 0; i < mon.n_tickers; i++) {
        dq_ticker *tk = &tickers[i];
        tk->m = &mon;
        tk->index = i;
        dq_uuid_v4(tk->token);
        tk->redis = connect_redis(cfg, stop);
        tk->producer = tk->redis ? dq_producer_new(cfg, err, sizeof err) : NULL;
        if (!tk->producer) {
            if (tk->redis)
                dq_error("%s", err);
            goto out;
        }
        warm_up(tk->producer);
        if (pthread_create(&tk->thread, NULL, dq_monitor_ticker_run, tk) != 0) {
            dq_error("cannot start ticker thread %d", i);
            goto out;
        }
        tk->started = 1;
    }
    {
        const char *topics[] = {cfg->topic_events};
        dq_consumer_opts copts = {.group_id = group, .topics = topics, .n_topics = 1};

        consumer = dq_consumer_new(cfg, &copts, mon.producer, err, sizeof err);
    }
    if (!consumer) {
        dq_error("%s", err);
        goto out;
    }
    dq_info("consuming %s as group %s; %zu watched targets, %d tickers, lease %lld ms",
            cfg->topic_events, group, mon.n_targets, mon.n_tickers, (long long)mon.lease_ms);
    rc = dq_consumer_run(consumer, dq_monitor_handle, &mon, stop) == 0 ? 0 : 1;
out:
    *stop = 1; /* ends the tickers after their current tick */
    for (int i = 0; tickers && i < mon.n_tickers; i++) {
        if (tickers[i].started)
            pthread_join(tickers[i].thread, NULL);
    }
    {
        unsigned long long ticks = 0;
        for (int i = 0; tickers && i < mon.n_tickers; i++)
            ticks += tickers[i].n_ticks;
        dq_info("stopping: %llu sessions started, %llu ticks", mon.n_started, ticks);
    }
    dq_consumer_free(consumer);
    for (int i = 0; tickers && i < mon.n_tickers; i++) {
        dq_producer_free(tickers[i].producer);
        dq_redis_free(tickers[i].redis);
    }
    free(tickers);
    dq_producer_free(mon.producer);
    dq_redis_free(mon.redis);
    dq_monitor_unload(&mon);
    dq_config_free(cfg);
    curl_global_cleanup();
    return rc;
}
