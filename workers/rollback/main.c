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
#include "worker.h"

static const char usage[] =
    "Usage: deployq-rollback [options]\n"
    "\n"
    "Consume deployq.events; on rollback.requested take the target's lock and restore its\n"
    "last verified version (a provider rollback, or a redeploy through the provider chain),\n"
    "emitting rollback.started and rollback.succeeded (with MTTR) or rollback.failed; send\n"
    "notifications (Slack-compatible and JSON webhooks) as configured per environment.\n"
    "Stops cleanly on SIGTERM/SIGINT (an interrupted rollback is resumed, not repeated).\n"
    "\n"
    DQ_WORKER_COMMON_USAGE;

int main(int argc, char **argv)
{
    dq_worker w = {.program = "deployq-rollback", .group = "deployq-rollback"};
    const char *group;
    int rc;
    volatile sig_atomic_t *stop;
    char err[1024];
    dq_config *cfg = NULL;
    dq_rollbacker rb;
    dq_consumer *consumer = NULL;

    memset(&rb, 0, sizeof rb);
    rc = dq_worker_start(&w, argc, argv, usage, NULL, NULL, NULL, NULL);
    if (rc >= 0) {
        dq_worker_finish(&w);
        return rc;
    }
    rc = 1;
    cfg = w.cfg;
    stop = w.stop;
    group = w.group;
    rb.stop = stop;
    if (dq_exec_settings_load(cfg, &rb.settings, err, sizeof err) != 0) {
        dq_error("%s", err);
        goto out;
    }
    rb.cfg = cfg;
    dq_actor("deployq-rollback", rb.actor, sizeof rb.actor);
    rb.redis = dq_worker_redis(&w);
    if (!rb.redis)
        goto out;
    dq_worker_ensure_topics(&w);
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
    dq_worker_finish(&w);
    return rc;
}
