/*
 * monitor.h - deployq-monitor's two halves, shared by main.c and monitor.c.
 *
 * The consumer half (dq_monitor_handle) reads deployq.events and starts a watch session
 * in Redis for every deploy.succeeded / rollback.succeeded of a target that has probes.
 * The ticker half (dq_monitor_ticker_run, one or more threads) takes due sessions from
 * Redis under a short lease, probes, folds the samples in (watch.h) and emits
 * health.degraded, deploy.verified or rollback.requested. Each half has its own Redis
 * connection and producer, because neither is thread-safe to share.
 */
#ifndef DQ_MONITOR_H
#define DQ_MONITOR_H

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "config.h"
#include "kafka.h"
#include "metrics.h"
#include "redis.h"
#include "watch.h"

typedef struct dq_monitor_target {
    char *service, *environment;
    dq_watch_config *watch;
    int64_t lease_ms; /* covers one round of this target's probes */
} dq_monitor_target;

typedef struct dq_monitor {
    const dq_config *cfg;
    char actor[256];
    dq_monitor_target *targets;
    size_t n_targets;
    int64_t lease_ms;    /* the longest lease of any target (claims happen before the
                            target is known) */
    int n_tickers;       /* monitor.workers, default 4 */
    volatile sig_atomic_t *stop;
    /* the consumer half */
    dq_redis *redis;
    dq_producer *producer;
    unsigned long long n_started;
    /* set by main (NULL: not counted) */
    dq_metric *m_watch_verdicts; /* deployq_watch_verdicts_total{service,env,verdict} */
    dq_metric *m_probe_results;  /* deployq_probe_results_total{service,env,probe,result} */
} dq_monitor;

/* Read every target's `monitor:` settings (and the top-level `monitor:` defaults) from
 * cfg into m. 0, or -1 with "path:line: key: reason" in err. */
int dq_monitor_load(dq_monitor *m, const dq_config *cfg, char *err, size_t errlen);
/* Free what dq_monitor_load made (not the connections). */
void dq_monitor_unload(dq_monitor *m);
const dq_monitor_target *dq_monitor_target_find(const dq_monitor *m, const char *service,
                                                const char *environment);

/* The consumer handler (kafka.h): starts sessions. */
dq_handle_result dq_monitor_handle(void *ctx, const dq_message *msg, char *err, size_t errlen);

typedef struct dq_ticker {
    dq_monitor *m;
    int index;
    char token[DQ_UUID_LEN + 1]; /* this thread's lease token */
    dq_redis *redis;
    dq_producer *producer;
    pthread_t thread;
    int started;
    unsigned long long n_ticks;
} dq_ticker;

/* Thread body: work due sessions until *m->stop. arg is a dq_ticker whose redis and
 * producer are connected. */
void *dq_monitor_ticker_run(void *arg);

#endif
