/*
 * rollback.h - the work of deployq-rollback, one event of deployq.events at a time.
 *
 * The worker reads the whole events topic in partition order (a target's events are on
 * one partition, so it sees a target's history in the order it happened) and keeps, per
 * target, in Redis:
 *   deployq:rb:verified:<svc>/<env>   list of verified versions, newest first (deploy.verified)
 *   deployq:rb:deploys:<svc>/<env>    hash version -> {"provider","provider_id","deployment_id"}
 *                                     (deploy.succeeded: what a provider rollback needs)
 *   deployq:rb:current:<svc>/<env>    {"version","deployment_id"} now serving
 *   deployq:rb:dep:<deployment_id>    hash of links for notifications (ci_run_url, url,
 *                                     log_url), kept 7 days
 * and, per rollback request, the idempotency record deployq:rb:req:<request event id>
 * ({"state":"started","provider","provider_id","method","to_version","started_at_ms"},
 * then {"state":"done","terminal":<event>}), so a redelivered request resumes polling the
 * provider deployment it started or only re-reports the outcome, never rolls back twice
 * (read and written through runrecord.h, as a deploy's record is);
 * and the outbox of notifications (notifyq.h), with deployq:rb:notified:<event id> once
 * the notifications about an event went out.
 *
 * On rollback.requested it applies the target's policy (`rollback: auto | notify`): with
 * notify it only sends a notification; with auto it takes the target's lock (lock.h),
 * picks the version (data.to_version, else the newest verified one that is not the
 * failing version: never a blind rollback), restores it (a Railway provider rollback of
 * the recorded deployment, else a redeploy of that version through the chain with
 * failover), polls what that started to the provider's terminal state and only then emits
 * rollback.succeeded (restored_at is that moment: the old version is live; a provider
 * answer that gives nothing to poll is never a success). Events: rollback.started, then
 * rollback.succeeded (with detected_at / decided_at / restored_at / mttr_ms) or
 * rollback.failed, each with the lock's fence and an id derived from the request's id.
 * Notifications are owed after those events, and for a deploy's own events that a person
 * acts on (notify.h: failed, failover, awaiting approval, rejected, ...): the handler only
 * records them (notifyq.h) and a thread of their own delivers them, so that no webhook
 * holds up a rollback; their delivery is reported as notification.sent / failed.
 *
 * A rollback that holds its lock is registered as a run (runlease.h, kind "rollback", id
 * the request's event id) until its outcome was delivered, so that when its worker dies
 * another worker's orphan scanner runs the request again (dq_rollback_request) once the
 * lock expired, instead of waiting for Kafka to redeliver it; the record above makes that
 * resume, never roll back twice. Within one process the consumer thread and the scanner
 * thread never run the same request at once (dq_rb_running).
 */
#ifndef DQ_ROLLBACK_H
#define DQ_ROLLBACK_H

#include <signal.h>
#include <stdint.h>

#include "config.h"
#include "execute.h"
#include "kafka.h"
#include "metrics.h"
#include "notifyq.h"
#include "redis.h"

/* The requests running in this process, shared by the threads that run them. */
typedef struct dq_rb_running dq_rb_running;

/* NULL when out of memory. free: NULL is a no-op; no thread may use it any more. */
dq_rb_running *dq_rb_running_new(void);
void dq_rb_running_free(dq_rb_running *rr);
/* 1 when a thread of this process runs request_id now, else 0. Any thread. */
int dq_rb_running_has(dq_rb_running *rr, const char *request_id);

/* One per thread that handles events: the producer and the running set may be shared,
 * the Redis connection and the counters not. */
typedef struct dq_rollbacker {
    const dq_config *cfg;    /* borrowed */
    dq_producer *producer;   /* borrowed: events go to cfg->topic_events (thread-safe) */
    dq_redis *redis;         /* borrowed: state and records; this thread's own */
    dq_exec_settings settings; /* lock_ttl, lock_wait */
    char actor[256];
    volatile sig_atomic_t *stop;
    dq_rb_running *running;  /* borrowed, shared by the process's rollbackers; NULL: none */
    dq_notifyq *notifyq;     /* borrowed, shared: where notifications are owed; NULL: none */
    uint64_t n_succeeded, n_failed;
        /* shared by the process's rollbackers (metrics.h is thread-safe); NULL: not counted */
    dq_metric *m_rollbacks; /* deployq_rollbacks_total{service,env,provider,outcome} */
    dq_metric *m_mttr;      /* deployq_mttr_seconds{service,env} */
    dq_metric *m_lock_wait; /* deployq_lock_wait_seconds{service,env} */
} dq_rollbacker;

/* The consumer handler (kafka.h): ctx is a dq_rollbacker. DQ_HANDLED once the event's
 * effects are done (or it is not ours), DQ_RETRY while Redis, the broker or the target's
 * lock is not available (the partition waits, in order), DQ_POISON for a
 * rollback.requested that names no target. */
dq_handle_result dq_rollback_handle(void *ctx, const dq_message *m, char *err, size_t errlen);

/* Run one rollback.requested, as the handler does: what the orphan scanner calls for a
 * request it adopted. Results as for dq_rollback_handle; DQ_RETRY also when another
 * thread of this process runs the same request now. Unregisters the run once it is done. */
dq_handle_result dq_rollback_request(dq_rollbacker *rb, const dq_event *req, char *err, size_t errlen);

#endif
