/*
 * follow.h - what the rollback worker's recorders share: a thread that follows
 * deployq.events as a consumer group of its own, the bounded attempts at one event's work
 * against a remote API, the notification.failed that reports giving up, and the URL
 * templates of their settings.
 *
 * A recorder tells another system what deployq did (github_deploy.h: GitHub Deployments;
 * sentry_deploy.h: Sentry release deploys). Such a system can be slow or down for an hour;
 * inside the rollback worker's handler it would hold up every later event of a target,
 * rollbacks included. On its own thread and consumer group it reads the same events at
 * its own pace: a slow remote delays only what that remote shows. Each event gets a
 * bounded number of attempts (retries within a retry budget, the remote's Retry-After
 * winning over our backoff); then the failure is reported as notification.failed and the
 * consumer moves on. A failure of our own state (Redis) is not the remote's: the event is
 * read again (DQ_RETRY), so nothing is dropped for it.
 */
#ifndef DQ_FOLLOW_H
#define DQ_FOLLOW_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "event.h"
#include "kafka.h"

/* ---- the thread ---- */

typedef struct dq_follow dq_follow;

/* Start a thread that runs handler(ctx, ...) on every message of cfg->topic_events as the
 * consumer group `group`. name ("github", "sentry") prefixes its log lines. ctx stays the
 * caller's (free it after dq_follow_stop()). Returns NULL with the reason in err. */
dq_follow *dq_follow_start(const dq_config *cfg, const char *name, const char *group, dq_handler_fn handler,
                           void *ctx, volatile sig_atomic_t *stop, char *err, size_t errlen);
/* Set *stop, join the thread (it leaves once its current event's attempt ends), close the
 * consumer and free. NULL is a no-op. */
void dq_follow_stop(dq_follow *f);

/* ---- attempts ---- */

typedef enum {
    DQ_FOLLOW_OK = 0,  /* done (or nothing to do) */
    DQ_FOLLOW_DOWN,    /* no answer, 5xx, rate limited: worth another attempt */
    DQ_FOLLOW_REFUSED, /* the remote said no (4xx): reported, never retried */
    DQ_FOLLOW_STATE,   /* our state (Redis) is unreachable: the event is read again later */
} dq_follow_rc;

typedef struct dq_follow_outcome {
    long http_status;
    int64_t retry_after_ms; /* the remote's Retry-After of the last answer, -1 without one */
    int attempts;
    char error[512];        /* one line; never a token */
} dq_follow_outcome;

typedef struct dq_follow_policy {
    int retries;             /* attempts after the first */
    int64_t timeout_ms;      /* one attempt's bound */
    int64_t retry_budget_ms; /* no attempt starts that could end past it */
} dq_follow_policy;

/* One attempt at an event's work; fills out (error, http_status, retry_after_ms). */
typedef dq_follow_rc (*dq_follow_try_fn)(void *arg, dq_follow_outcome *out);

/* Call attempt until it is not DQ_FOLLOW_DOWN, or the retries or the budget are spent,
 * sleeping between attempts (500 ms doubling to 5 s, or the remote's Retry-After when
 * longer). Returns the last attempt's result, with out->attempts counted; *stopped is set
 * to 1 (and DQ_FOLLOW_DOWN returned) when *stop was raised during a pause. */
dq_follow_rc dq_follow_attempts(const dq_follow_policy *pol, volatile sig_atomic_t *stop, dq_follow_try_fn attempt,
                                void *arg, dq_follow_outcome *out, int *stopped);

/* Sleep ms, waking early when *stop is raised. 1 when it was. */
int dq_follow_nap(volatile sig_atomic_t *stop, int64_t ms);

/* Send notification.failed about trigger on cfg->topic_events: channel, trigger_event_id,
 * trigger_type, attempts, http_status, error (redacted) and the members of extra (may be
 * NULL; borrowed). Its id derives from "<channel>:<trigger id>:<what>", so a redelivered
 * trigger reports with the same id. 0 sent (acknowledged), -1 not. */
int dq_follow_report(const dq_config *cfg, dq_producer *producer, const char *actor, const char *channel,
                     const dq_event *trigger, const char *what, const dq_follow_outcome *o, const cJSON *extra);

/* tmpl with {service} {environment} {version} {deployment_id} filled in from ev (each
 * value cut at 255 bytes); malloc'd, NULL on OOM. */
char *dq_follow_fill(const char *tmpl, const dq_event *ev);

#endif
