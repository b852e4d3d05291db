/*
 * worker.h - what every deployq worker does before its own work starts: parse the options
 * all workers share (-c/--config, --brokers, --redis-url, -g/--group, -X key=value,
 * --log-level, -h/--help) plus its own, set up logging and the stop flag, and load
 * the configuration with the precedence of config.h (file < flags < environment). One
 * implementation, so every worker's command line behaves and fails the same way.
 *
 * It also sets the one memory policy of every worker, first thing, before any thread:
 * - at most 2 malloc arenas (glibc's default is one per thread up to 8 per core): librdkafka
 *   allocates a message on a broker thread and the worker frees it on its own thread, so
 *   after a burst the freed buffers would stay spread over a dozen arenas, none of them
 *   empty enough to give memory back. Workers mostly wait on the network: 2 arenas cost
 *   the validator no measurable throughput.
 * - a fixed 1 MiB trim threshold: glibc otherwise raises it, up to 64 MiB, after the first
 *   large free, and keeps that much of a flood's heap for good.
 * The consumers' prefetch bound is kafka.c's (dq_consumer_new's defaults).
 */
#ifndef DQ_WORKER_H
#define DQ_WORKER_H

#include <getopt.h>
#include <signal.h>

#include "config.h"
#include "healthsrv.h"
#include "kafka.h"
#include "metrics.h"
#include "redis.h"

#define DQ_WORKER_MAX_KV 32

/* A worker's own options: getopt_long's return value c (a short option letter, or a
 * DQ_WORKER_OPT_BASE+n value for long-only ones) and its argument. Return 0 when taken,
 * -1 to refuse it (the message already printed: exit 2). */
typedef int (*dq_worker_opt_fn)(void *ctx, int c, const char *arg);

/* Long-only options of a worker are numbered from here. */
#define DQ_WORKER_OPT_BASE 1200

typedef struct dq_worker {
    /* set by the caller before dq_worker_start */
    const char *program;   /* "deployq-monitor": log lines, errors */
    const char *group;     /* the default consumer group, "deployq-<worker>"; --group
                              replaces it, topics.group_prefix replaces its "deployq" */
    /* set by dq_worker_start */
    dq_config *cfg;        /* owned; freed by dq_worker_finish */
    char group_buf[256];   /* the prefixed group, when topics.group_prefix is set */
    volatile sig_atomic_t *stop;
    int log_level;
    const char *name;      /* "validator": the program without "deployq-" */
    dq_metrics *metrics;   /* owned: every series carries {worker="<name>"} */
    dq_healthsrv *health;  /* owned; NULL when off, or when its port was taken (warned) */
    char health_listen[256]; /* the address chosen, "off" when none */
} dq_worker;

/* The usage lines of the shared options, for a worker's usage text. */
#define DQ_WORKER_COMMON_USAGE                                                             \
    "  -c, --config FILE     configuration (default $DEPLOYQ_CONFIG)\n"                    \
    "      --brokers LIST    Kafka bootstrap servers (env DEPLOYQ_BROKERS wins)\n"         \
    "      --redis-url URL   Redis URL (env DEPLOYQ_REDIS_URL wins)\n"                     \
    "  -g, --group ID        consumer group (default <topics.group_prefix>-<worker>)\n"   \
    "  -X KEY=VALUE          any librdkafka property (repeatable)\n"                       \
    "      --log-level L     debug|info|warn|error (default info)\n"                       \
    "      --health-listen A /healthz, /readyz, /metrics on HOST:PORT, :PORT or off\n"     \
    "                        (env DEPLOYQ_HEALTH_LISTEN wins; config health.<worker>;\n"    \
    "                        default 127.0.0.1:9101 validator, 9102 executor,\n"            \
    "                        9103 monitor, 9104 rollback)\n"                                \
    "  -h, --help            this help\n"

/* Parse argv: the shared options, then extra_opts (may be NULL; a {NULL,0,NULL,0}
 * terminated table) with their short letters in extra_short (may be NULL), handed to
 * on_opt. Then start logging, the stop flag, and load the configuration
 * (flags and environment applied; a broker must be configured). Returns -1 when the worker
 * should go on (w->cfg is set), else the exit status to return at once: 0 after --help,
 * 2 on a usage error, 1 when the configuration cannot be loaded (reason logged).
 *
 * It also makes w->metrics and starts the health server (healthsrv.h) on the address of
 * DEPLOYQ_HEALTH_LISTEN, else --health-listen, else the configuration's health.<name>,
 * else the worker's default; "off" starts none. An address already in use is a warning,
 * not a stop: a second copy of a worker on one machine runs without the endpoints. */
int dq_worker_start(dq_worker *w, int argc, char **argv, const char *usage,
                    const struct option *extra_opts, const char *extra_short,
                    dq_worker_opt_fn on_opt, void *ctx);

/* The health address of a worker named name ("validator") by default, or NULL when it has
 * none (the registry serves its own on registry.http.listen). */
const char *dq_worker_health_default(const char *name);

/* Make consumer c part of the worker's readiness and consumer lag (healthsrv.h). A no-op
 * without a health server. c is borrowed: call dq_worker_health_stop before freeing it. */
void dq_worker_watch(dq_worker *w, dq_consumer *c);

/* Stop the health server (first thing on the way out, before the consumers are freed).
 * The metrics stay until dq_worker_finish. Safe to call twice. */
void dq_worker_health_stop(dq_worker *w);

/* Connect to the configured Redis, retrying for up to 30 s while Redis may still be
 * starting (compose, systemd) and the stop flag is clear. NULL (reason logged) when it
 * never answered. Later outages are the caller's, message by message. */
dq_redis *dq_worker_redis(const dq_worker *w);

/* Create the deployq topics where they are missing (a real cluster with auto-creation
 * off). A principal without the right to create them gets a warning, not a stop: the
 * topics may well exist already. */
void dq_worker_ensure_topics(const dq_worker *w);

/* Stop the health server, free the metrics and the configuration. */
void dq_worker_finish(dq_worker *w);

#endif
