/*
 * main.c - deployq-rollback: reads all of deployq.events in partition order (group
 * deployq-rollback), remembers per target what a rollback needs (the verified versions,
 * the provider deployment of each), turns rollback.requested into a restore of the last
 * verified version under the target's lock, and sends notifications (rollback.c).
 *
 * A rollback runs inside the handler, so a target's later events wait for it: that is
 * the point (a deploy that follows a rollback sees its outcome). librdkafka heartbeats
 * on its own thread; max.poll.interval.ms is raised so a long restore does not cost the
 * group membership.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "execute.h"
#include "kafka.h"
#include "log.h"
#include "redis.h"
#include "rollback.h"
#include "util.h"

static const char usage[] =
    "Usage: deployq-rollback [options]\n"
    "\n"
    "Consume deployq.events; on rollback.requested take the target's lock and restore its\n"
    "last verified version (a provider rollback, or a redeploy through the provider chain),\n"
    "emitting rollback.started and rollback.succeeded (with MTTR) or rollback.failed; send\n"
    "notifications (Slack-compatible and JSON webhooks) as configured per environment.\n"
    "Stops cleanly on SIGTERM/SIGINT (an interrupted rollback is resumed, not repeated).\n"
    "\n"
    "  -c, --config FILE     configuration (default $DEPLOYQ_CONFIG)\n"
    "      --brokers LIST    Kafka bootstrap servers (env DEPLOYQ_BROKERS wins)\n"
    "      --redis-url URL   Redis for target history, locks and records (env DEPLOYQ_REDIS_URL wins)\n"
    "  -g, --group ID        consumer group (default deployq-rollback)\n"
    "  -X KEY=VALUE          any librdkafka property (repeatable)\n"
    "      --log-level L     debug|info|warn|error (default info)\n"
    "  -h, --help            this help\n";

enum { OPT_BROKERS = 1000, OPT_REDIS, OPT_LOG_LEVEL };

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
    const char *group = "deployq-rollback";
    const char *kv[32];
    int n_kv = 0, c, rc = 1, level = DQ_LOG_INFO;
    char err[1024];
    dq_config *cfg = NULL;
    dq_rollbacker rb;
    dq_consumer *consumer = NULL;

    memset(&rb, 0, sizeof rb);
    while ((c = getopt_long(argc, argv, "c:g:X:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case OPT_BROKERS: brokers = optarg; break;
        case OPT_REDIS: redis_url = optarg; break;
        case 'g': group = optarg; break;
        case 'X':
            if (!strchr(optarg, '=') || n_kv >= 32) {
                fprintf(stderr, "deployq-rollback: -X %s: expected KEY=VALUE\n", optarg);
                return 2;
            }
            kv[n_kv++] = optarg;
            break;
        case OPT_LOG_LEVEL:
            level = dq_log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "deployq-rollback: --log-level %s: expected debug, info, warn or error\n",
                        optarg);
                return 2;
            }
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "deployq-rollback: unexpected argument '%s'\n", argv[optind]);
        fputs(usage, stderr);
        return 2;
    }
    dq_log_init("deployq-rollback", (dq_log_level)level, -1);
    /* before any thread: libcurl's global state is not thread-safe to set up */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rb.stop = dq_stop_flag_install();

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
    if (dq_exec_settings_load(cfg, &rb.settings, err, sizeof err) != 0) {
        dq_error("%s", err);
        goto out;
    }
    rb.cfg = cfg;
    dq_actor("deployq-rollback", rb.actor, sizeof rb.actor);
    for (int i = 0; i < 60 && !*rb.stop && !rb.redis; i++) {
        rb.redis = dq_redis_connect(cfg->redis_url, cfg->redis_timeout_ms, err, sizeof err);
        if (!rb.redis) {
            if (i == 0)
                dq_warn("redis: %s; retrying", err);
            dq_sleep_ms(500);
        }
    }
    if (!rb.redis) {
        dq_error("redis: %s", err);
        goto out;
    }
    if (dq_kafka_ensure_topics(cfg, DQ_PARTITIONS_DEFAULT, 15000, err, sizeof err) != 0)
        dq_warn("could not ensure topics: %s", err);
    /* Every event is sent synchronously; batching delay would only add to MTTR. */
    if (!dq_config_kafka_get(cfg, "linger.ms"))
        dq_config_set_kafka(cfg, "linger.ms", "0");
    rb.producer = dq_producer_new(cfg, err, sizeof err);
    if (!rb.producer) {
        dq_error("%s", err);
        goto out;
    }
    /* A restore is polled inside the handler for up to a provider's deadline (20 min by
     * default): do not let that count as a hung consumer. */
    if (!dq_config_kafka_get(cfg, "max.poll.interval.ms"))
        dq_config_set_kafka(cfg, "max.poll.interval.ms", "3600000");
    {
        const char *topics[] = {cfg->topic_events};
        dq_consumer_opts copts = {.group_id = group, .topics = topics, .n_topics = 1};

        consumer = dq_consumer_new(cfg, &copts, rb.producer, err, sizeof err);
    }
    if (!consumer) {
        dq_error("%s", err);
        goto out;
    }
    dq_info("consuming %s as group %s", cfg->topic_events, group);
    rc = dq_consumer_run(consumer, dq_rollback_handle, &rb, rb.stop) == 0 ? 0 : 1;
    dq_info("stopping: %llu rollbacks succeeded, %llu failed; %llu notifications sent, %llu failed",
            (unsigned long long)rb.n_succeeded, (unsigned long long)rb.n_failed,
            (unsigned long long)rb.n_notified, (unsigned long long)rb.n_notify_failed);
out:
    dq_consumer_free(consumer);
    dq_producer_free(rb.producer);
    dq_redis_free(rb.redis);
    dq_config_free(cfg);
    curl_global_cleanup();
    return rc;
}
