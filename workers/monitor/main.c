/*
 * main.c - deployq-monitor: watches every successful deploy (and rollback) for its
 * window and decides, with evidence, whether it stays (deploy.verified) or goes
 * (rollback.requested). monitor.c does the work; this file is options, start-up and an
 * orderly shutdown. Run several: they share the consumer group's partitions for starting
 * sessions, and share the sessions themselves through Redis, so a monitor that dies
 * mid-window costs at most one lease, not the verdict.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "kafka.h"
#include "log.h"
#include "monitor.h"
#include "redis.h"
#include "util.h"
#include "worker.h"

static const char usage[] =
    "Usage: deployq-monitor [options]\n"
    "\n"
    "Consume deployq.events; on deploy.succeeded or rollback.succeeded of a target with\n"
    "probes, watch it for its window (HTTP, Prometheus and Sentry probes every interval) and emit\n"
    "monitor.started, health.degraded on each change, then deploy.verified or\n"
    "rollback.requested with the evidence. Sessions live in Redis, so another instance\n"
    "carries on the sessions of one that died. Stops cleanly on SIGTERM/SIGINT.\n"
    "\n"
    DQ_WORKER_COMMON_USAGE;

/* Connect a producer to the cluster now (metadata of every topic), so the first
 * verdict does not pay for the connection: a second saved there is a second of MTTR. */
static void warm_up(dq_producer *p)
{
    const struct rd_kafka_metadata *md = NULL;

    if (rd_kafka_metadata(dq_producer_handle(p), 1, NULL, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
}

int main(int argc, char **argv)
{
    dq_worker w = {.program = "deployq-monitor", .group = "deployq-monitor"};
    const char *group;
    int rc;
    char err[1024];
    dq_config *cfg = NULL;
    dq_monitor mon = {0};
    dq_ticker *tickers = NULL;
    dq_consumer *consumer = NULL;
    volatile sig_atomic_t *stop;

    rc = dq_worker_start(&w, argc, argv, usage, NULL, NULL, NULL, NULL);
    if (rc >= 0) {
        dq_worker_finish(&w);
        return rc;
    }
    rc = 1;
    cfg = w.cfg;
    stop = w.stop;
    group = w.group;
    if (dq_monitor_load(&mon, cfg, err, sizeof err) != 0) {
        dq_error("%s", err);
        goto out;
    }
    mon.stop = stop;
    {
        static const char *const verdict_labels[] = {"service", "env", "verdict", NULL};
        static const char *const probe_labels[] = {"service", "env", "probe", "result", NULL};

        mon.m_watch_verdicts = dq_metrics_counter(
            w.metrics, "deployq_watch_verdicts_total",
            "Watch sessions ended, by verdict (degraded: a rollback was requested).",
            verdict_labels);
        mon.m_probe_results = dq_metrics_counter(w.metrics, "deployq_probe_results_total",
                                                 "Probe samples taken, by result.", probe_labels);
    }
    dq_actor("deployq-monitor", mon.actor, sizeof mon.actor);
    if (mon.n_targets == 0)
        dq_warn("no environment has monitor probes: deploys will not be watched");

    mon.redis = dq_worker_redis(&w);
    if (!mon.redis)
        goto out;
    dq_worker_ensure_topics(&w);
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
        tk->redis = dq_worker_redis(&w);
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
    dq_worker_watch(&w, consumer);
    dq_info("consuming %s as group %s; %zu watched targets, %d tickers, lease %lld ms",
            cfg->topic_events, group, mon.n_targets, mon.n_tickers, (long long)mon.lease_ms);
    rc = dq_consumer_run(consumer, dq_monitor_handle, &mon, stop) == 0 ? 0 : 1;
out:
    dq_worker_health_stop(&w); /* it reads the consumer freed below */
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
    dq_worker_finish(&w);
    return rc;
}
