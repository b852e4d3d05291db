/*
 * notifyq.h - the rollback worker's notifications, delivered from a thread of their own.
 *
 * Why a thread: deployq-rollback handles deployq.events on one consumer thread and runs a
 * rollback inside its handler, in partition order. A notification sent there takes up to
 * about a retry budget per channel (15 s by default, two channels) when a webhook is slow
 * or down, and every later event waits for it, a rollback.requested included: a burst of
 * deploy.rejected with a slow webhook would hold a rollback for minutes. So the handler
 * only records what is owed (dq_notifyq_put: a few Redis calls) and this module's thread
 * delivers it.
 *
 * At least once: the record is in Redis before the handler returns, so before the Kafka
 * offset of the event that caused it is stored; it goes only once the delivery was made
 * or given up on and reported (notification.sent / notification.failed). In Redis:
 *   deployq:rb:outbox              ZSET: trigger event id -> when it was recorded (ms)
 *   deployq:rb:outbox:<id>         {"event": <event JSON text>, "note": "...", "force": 0|1}
 *   deployq:rb:outbox:claim:<id>   the sender delivering it now (SET NX PX): two senders
 *                                  (two workers) never deliver one entry at the same time
 *   deployq:rb:notified:<id>       delivered or given up on: not again
 * What is recorded also goes into a bounded in-memory queue that the thread empties in
 * order, rollbacks and failed deploys ahead of the rest. When that queue is full, or the
 * process stopped (or died) before delivering, the entry waits in Redis: every sender, this
 * process's or another worker's, sweeps the outbox for entries older than stale_ms and
 * delivers them. A crash between a delivery and its notified mark sends it again: a
 * duplicate message, never a lost one.
 */
#ifndef DQ_NOTIFYQ_H
#define DQ_NOTIFYQ_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "event.h"
#include "kafka.h"
#include "redis.h"

typedef struct dq_notifyq dq_notifyq;

typedef struct dq_notifyq_opts {
    const dq_config *cfg;   /* borrowed until dq_notifyq_stop */
    dq_producer *producer;  /* borrowed (thread-safe): the notification.* reports */
    const char *actor;      /* copied */
    size_t capacity;        /* in-memory entries; 0: 1024 */
    int64_t sweep_ms;       /* how often the outbox is swept; 0: 5 s */
    int64_t stale_ms;       /* age from which a sweep takes an entry up; 0: 10 s */
    volatile sig_atomic_t *stop; /* the process's stop flag, may be NULL */
} dq_notifyq_opts;

/* Start the sender thread with a Redis connection of its own (Redis being down is not an
 * error: it connects when it can). NULL with a reason in err when the thread could not be
 * started. */
dq_notifyq *dq_notifyq_start(const dq_notifyq_opts *o, char *err, size_t errlen);

/* Stop the thread after the delivery it is making (a delivery is bounded by the channel's
 * retry budget), free. Entries not delivered stay in the outbox for the next sweep. NULL
 * is a no-op. */
void dq_notifyq_stop(dq_notifyq *q);

/* Called by the threads that handle events, with their own Redis connection r: when the
 * configuration of trigger's target wants it notified (force: whenever a channel is
 * configured, whatever `on` says), record it in the outbox with note (may be NULL) and
 * queue it. Returns at once; 0 when recorded or nothing is owed (no channel, not in `on`,
 * notified already, a bad `notify` section: logged), -1 with a reason in err when Redis
 * could not record it: the caller retries the event. Any thread. */
int dq_notifyq_put(dq_notifyq *q, dq_redis *r, const dq_event *trigger, const char *note, int force,
                   char *err, size_t errlen);

/* Deliveries reported so far: made, and given up on. Any thread. */
void dq_notifyq_counts(dq_notifyq *q, uint64_t *sent, uint64_t *failed);

#endif
