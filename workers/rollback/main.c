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
 *
 * Notifications are delivered by a thread of their own (notifyq.h): the handler only
 * records what is owed, so a slow webhook never holds up a rollback.
 *
 * Another thread, the orphan scanner (runlease.h), runs the rollbacks whose worker died:
 * every executor.orphan_scan it looks for registered rollbacks whose lock expired and runs
 * one it claimed right there, with its own Redis connection (the consumer thread's is
 * not shared) and the shared producer, one at a time. So a killed worker's rollback goes
 * on within lock_ttl + orphan_scan rather than after Kafka's session.timeout.ms; the
 * request's record makes it resume, never restore twice, and Kafka's later redelivery of
 * the request finds it concluded.
 *
 * A third thread, only when a service configures github_deployments, records deploys as
 * GitHub Deployments (github_deploy.h) as a consumer group of its own, so that GitHub's
 * pace never becomes the rollbacks' pace; a fourth, only when a service configures sentry,
 * records them as Sentry release deploys (sentry_deploy.h) the same way (follow.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "execute.h"
#include "github_deploy.h"
#include "sentry_deploy.h"
#include "kafka.h"
#include "json.h"
#include "log.h"
#include "notify.h"
#include "notifyq.h"
#include "redis.h"
#include "rollback.h"
#include "runlease.h"
#include "util.h"
#include "worker.h"

static const char usage[] =
    "Usage: deployq-rollback [options]\n"
    "\n"
    "Consume deployq.events; on rollback.requested take the target's lock and restore its\n"
    "last verified version (a provider rollback, or a redeploy through the provider chain),\n"
    "emitting rollback.started and rollback.succeeded (with MTTR) or rollback.failed; send\n"
    "notifications (Slack-compatible and JSON webhooks, the JSON bodies signed with\n"
    "notify.webhook_secret) as configured per environment: by default rollbacks, failed\n"
    "deploys, failovers and approvals waiting; rejections on request (notify.on). They go\n"
    "out from a thread of their own, recorded in Redis first, so a slow webhook never\n"
    "delays a rollback and a restart loses none.\n"
    "For services with github_deployments, record each deploy as a GitHub Deployment and\n"
    "post its statuses, on a thread and consumer group of its own (<group>-github), so\n"
    "GitHub being down never delays a rollback (docs/github.md).\n"
    "For services with a sentry section, record each deploy and each rollback's restored\n"
    "version as a Sentry release deploy, on a thread and consumer group of its own\n"
    "(<group>-sentry) (docs/configuration.md, \"Sentry\").\n"
    "Stops cleanly on SIGTERM/SIGINT (an interrupted rollback is resumed, not repeated).\n"
    "\n"
    DQ_WORKER_COMMON_USAGE;

/* Read every target's notification settings once at start, so that a mistake in one
 * (an unknown kind in `on`, a short webhook_secret) is said with its file:line now rather
 * than when that target first has something to report. Not fatal: rollbacks matter more
 * than their messages, and that target's notifications are logged as not sent. */
static void check_notify(const dq_config *cfg)
{
    char err[512];
    dq_notify_config nc;

    if (dq_notify_config_read(cfg, dq_config_view(cfg, "notifications"), "notifications", &nc, err, sizeof err) != 0)
        dq_error("%s", err);
    dq_notify_config_clear(&nc);
    for (size_t i = 0; i < cfg->n_services; i++)
        for (size_t j = 0; j < cfg->services[i].n_envs; j++) {
            const dq_environment *e = &cfg->services[i].envs[j];
            const cJSON *sec = dq_json_get(e->view, "notify");

            if (sec && dq_notify_config_read(cfg, sec, "notify", &nc, err, sizeof err) != 0)
                dq_error("%s (%s/%s: its notifications will not be sent)", err, cfg->services[i].name, e->name);
            dq_notify_config_clear(&nc);
        }
}

/* ---- orphaned rollbacks (runlease.h), run on the scanner's thread ---- */

/* dq_runlease_skip_fn: a request a thread of this process runs is not an orphan. */
static int orphan_skip(void *ctx, const char *id)
{
    dq_rollbacker *rb = ctx;
    return dq_rb_running_has(rb->running, id);
}

/* dq_runlease_adopt_fn: run the request now with the scanner's connection. ctx is the
 * scanner's own rollbacker. */
static void orphan_adopt(void *ctx, dq_redis *r, const char *id, const char *event_json)
{
    dq_rollbacker *rb = ctx;
    dq_event *ev;
    dq_handle_result res;
    char why[512], err[1024] = "";

    ev = dq_event_decode(event_json, strlen(event_json), why, sizeof why);
    if (!ev || strcmp(ev->type, DQ_EV_ROLLBACK_REQUESTED) != 0 || strcmp(ev->id, id) != 0 || !ev->service ||
        !ev->environment) {
        /* not something a rollback worker registered: leave it (it expires with its keys) */
        dq_error("run %s registered for adoption is not that rollback.requested: %s", id,
                 ev ? "wrong type or fields" : why);
        dq_event_free(ev);
        return;
    }
    dq_info("rollback %s of %s/%s: orphaned (lock expired), resuming", id, ev->service, ev->environment);
    rb->redis = r;
    res = dq_rollback_request(rb, ev, err, sizeof err);
    rb->redis = NULL;
    if (res == DQ_RETRY && !*rb->stop)
        dq_warn("rollback %s: adopted but not concluded (%s); adopted again once its lock is free", id, err);
    else if (res == DQ_POISON)
        dq_error("rollback %s: adopted but cannot be handled: %s", id, err);
    dq_event_free(ev);
}

int main(int argc, char **argv)
{
    dq_worker w = {.program = "deployq-rollback", .group = "deployq-rollback"};
    const char *group;
    int rc;
    volatile sig_atomic_t *stop;
    char err[1024];
    dq_config *cfg = NULL;
    dq_rollbacker rb, orphans; /* the consumer thread's, the scanner thread's */
    dq_consumer *consumer = NULL;
    dq_runlease_scanner *scanner = NULL;
    dq_gh_worker *github = NULL;
    dq_sentry_worker *sentry = NULL;
    char gh_group[300], sentry_group[300];
    dq_notifyq *notifyq = NULL;
    uint64_t n_sent = 0, n_unsent = 0;

    memset(&rb, 0, sizeof rb);
    memset(&orphans, 0, sizeof orphans);
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
    /* A rollback policy that is neither auto nor notify is refused here, with its
     * file:line, as `deployq check` refuses it: read as notify it would silently leave a
     * broken deploy serving. */
    for (size_t i = 0; i < cfg->n_services; i++)
        for (size_t j = 0; j < cfg->services[i].n_envs; j++)
            if (dq_rollback_policy_load(cfg, cfg->services[i].name, cfg->services[i].envs[j].name, err,
                                        sizeof err) < 0) {
                dq_error("%s", err);
                goto out;
            }
    check_notify(cfg);
    dq_actor("deployq-rollback", rb.actor, sizeof rb.actor);
    {
        static const char *const outcome_labels[] = {"service", "env", "provider", "outcome", NULL};
        static const char *const target_labels[] = {"service", "env", NULL};

        rb.m_rollbacks = dq_metrics_counter(w.metrics, "deployq_rollbacks_total",
                                            "Rollback requests concluded, by outcome (skipped: "
                                            "the policy or a rollback loop left it to a person).",
                                            outcome_labels);
        rb.m_mttr = dq_metrics_histogram(w.metrics, "deployq_mttr_seconds",
                                         "Time to restore: first failing probe (or the request) "
                                         "to the old version live, for succeeded rollbacks.",
                                         target_labels, dq_mttr_buckets, DQ_MTTR_BUCKETS);
        rb.m_lock_wait = dq_metrics_histogram(w.metrics, "deployq_lock_wait_seconds",
                                              "Time spent taking a target's lock.", target_labels,
                                              dq_lock_wait_buckets, DQ_LOCK_WAIT_BUCKETS);
    }
    rb.running = dq_rb_running_new();
    if (!rb.running) {
        dq_error("out of memory");
        goto out;
    }
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
    dq_worker_watch(&w, consumer);
    {
        dq_notifyq_opts no = {.cfg = cfg, .producer = rb.producer, .actor = rb.actor, .stop = stop};

        notifyq = dq_notifyq_start(&no, err, sizeof err);
        if (!notifyq) {
            dq_error("%s", err);
            goto out;
        }
        rb.notifyq = notifyq;
    }
    /* GitHub Deployments on a thread and a consumer group of their own (github_deploy.h): a
     * slow or absent GitHub never holds up a rollback. */
    snprintf(gh_group, sizeof gh_group, "%s-github", group);
    github = dq_gh_worker_start(cfg, rb.producer, gh_group, stop, err, sizeof err);
    if (!github && err[0]) {
        dq_error("%s", err);
        goto out;
    }
    /* Sentry release deploys, the same way (sentry_deploy.h) */
    snprintf(sentry_group, sizeof sentry_group, "%s-sentry", group);
    sentry = dq_sentry_worker_start(cfg, rb.producer, sentry_group, stop, err, sizeof err);
    if (!sentry && err[0]) {
        dq_error("%s", err);
        goto out;
    }
    if (rb.settings.orphan_scan_ms > 0) {
        dq_runlease_opts so = {.redis_url = cfg->redis_url,
                               .redis_timeout_ms = cfg->redis_timeout_ms,
                               .kind = DQ_RUNLEASE_KIND_ROLLBACK,
                               .claimant = rb.actor,
                               .interval_ms = rb.settings.orphan_scan_ms,
                               .claim_ms = rb.settings.lock_ttl_ms,
                               .skip = orphan_skip,
                               .adopt = orphan_adopt,
                               .ctx = &orphans,
                               .stop = stop};

        orphans = rb;
        orphans.redis = NULL; /* the scanner's own, set for each adoption */
        scanner = dq_runlease_scanner_start(&so, err, sizeof err);
        if (!scanner) {
            dq_error("%s", err);
            goto out;
        }
    }
    dq_info("consuming %s as group %s (orphan scan every %lld ms)", cfg->topic_events, group,
            (long long)rb.settings.orphan_scan_ms);
    rc = dq_consumer_run(consumer, dq_rollback_handle, &rb, rb.stop) == 0 ? 0 : 1;
    /* a fatal consumer error also stops the scanner and the rollback it may be running;
     * it is joined before the producer goes (an adopted rollback emits through it) */
    *stop = 1;
    dq_runlease_scanner_stop(scanner);
    dq_gh_worker_stop(github);
    github = NULL;
    dq_sentry_worker_stop(sentry);
    sentry = NULL;
    dq_notifyq_counts(notifyq, &n_sent, &n_unsent);
    dq_info("stopping: %llu rollbacks succeeded, %llu failed; %llu notifications sent, %llu failed",
            (unsigned long long)(rb.n_succeeded + orphans.n_succeeded),
            (unsigned long long)(rb.n_failed + orphans.n_failed), (unsigned long long)n_sent,
            (unsigned long long)n_unsent);
out:
    dq_gh_worker_stop(github);
    dq_sentry_worker_stop(sentry);
    dq_worker_health_stop(&w); /* it reads the consumer freed below */
    dq_consumer_free(consumer);
    /* after the consumer and the scanner (which record into it), before the producer (its
     * reports go through it) */
    dq_notifyq_stop(notifyq);
    dq_producer_free(rb.producer);
    dq_redis_free(rb.redis);
    dq_rb_running_free(rb.running);
    dq_worker_finish(&w);
    return rc;
}
