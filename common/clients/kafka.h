/*
 * kafka.h - librdkafka, the way every deployq program uses it.
 *
 * Producer: enable.idempotence=true, acks=all, a small linger.ms; every send has a
 * delivery report, and dq_producer_send() waits for it, so "sent" means "acknowledged by
 * all in-sync replicas". Consumer: enable.auto.offset.store=false; an offset is stored
 * only after its handler returned DQ_HANDLED (at-least-once, so handlers are idempotent);
 * the loop polls with a short timeout so it sees the stop flag and keeps its group
 * membership; a message that cannot be handled goes to deployq.dead with its partition,
 * offset and the error, and the partition moves on. Any kafka.* configuration key is
 * passed to librdkafka untouched (SASL, TLS, ...). librdkafka's own log lines go through
 * log.h, so they are redacted like ours.
 */
#ifndef DQ_KAFKA_H
#define DQ_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define DQ_PARTITIONS_DEFAULT 6

/* queued.max.messages.kbytes of every deployq consumer unless kafka.* sets it: the bound on
 * what librdkafka prefetches (its default, 64 MiB, is what a validator held in a flood).
 * 4 MiB is still thousands of requests, seconds of a validator's work, so the handler does
 * not wait on fetches (docs/performance.md, "Memory"; tests/chaos/flood.sh). The registry
 * keeps librdkafka's default: its group commit needs the fetches to go on while it syncs
 * (workers/registry/main.c). */
#define DQ_KAFKA_PREFETCH_KBYTES "4096"

/* A librdkafka configuration with every cfg->kafka pair applied, plus our log callback.
 * The caller owns the result (pass it to rd_kafka_new, which takes it over).
 * NULL with "kafka.<key>: <reason>" in err. */
rd_kafka_conf_t *dq_kafka_conf(const dq_config *cfg, char *err, size_t errlen);

/* Install deployq's log and error callbacks on conf: librdkafka's log lines go to log.h
 * (levels <= 3 error, 4 warn, 5-6 info, 7 debug), client errors are logged. dq_kafka_conf()
 * already does this; it is for handles built without a dq_config (the mock broker).
 * The callbacks run on librdkafka's threads, so log.h must be thread-safe. */
void dq_kafka_conf_set_logging(rd_kafka_conf_t *conf);

/* Create the deployq topics where they do not exist (Admin API; "already exists" is
 * fine): requests and events with `partitions` partitions, dead with 1. Waits at most
 * timeout_ms. 0 ok, -1 with a reason in err. */
int dq_kafka_ensure_topics(const dq_config *cfg, int partitions, int timeout_ms, char *err,
                           size_t errlen);

/* ---- producer ---- */

typedef struct dq_producer dq_producer;

dq_producer *dq_producer_new(const dq_config *cfg, char *err, size_t errlen);
/* Flushes (up to 10 s), logs what was not delivered, frees. NULL is a no-op. */
void dq_producer_free(dq_producer *p);

/* Produce and wait until the broker acknowledged it (or timeout_ms passed).
 * 0 delivered; -1 with a reason in err (e.g. "broker localhost:9092 unreachable after 5 s"
 * or librdkafka's delivery error). When out_partition/out_offset are not NULL they receive
 * the message's position. On timeout every message still queued on this producer is
 * purged (so none lands later behind the caller's back); async ones count as failed. */
int dq_producer_send(dq_producer *p, const char *topic, const char *key, const void *value,
                     size_t len, int timeout_ms, int32_t *out_partition, int64_t *out_offset,
                     char *err, size_t errlen);

/* Produce without waiting; failures are counted. dq_producer_flush() waits for every
 * outstanding report and returns the number of messages that failed since the last flush
 * (0 means all delivered), or -1 when the timeout passed first. */
int dq_producer_send_async(dq_producer *p, const char *topic, const char *key,
                           const void *value, size_t len);
int dq_producer_flush(dq_producer *p, int timeout_ms);

/* The outcome of a dq_producer_send_cb: err is RD_KAFKA_RESP_ERR_NO_ERROR once the message
 * is acknowledged by every in-sync replica, else why it finally failed (a timeout, a purge
 * by a synchronous send that timed out, ...). Runs on the thread that serves this
 * producer's reports: dq_producer_poll, a synchronous send or a flush on it. */
typedef void (*dq_delivery_fn)(void *ctx, rd_kafka_resp_err_t err);

/* Produce without waiting; fn(ctx, err) is called exactly once, later, with the outcome.
 * A full local queue is waited on (serving reports) for up to timeout_ms. 0 queued, -1 not
 * queued (fn is then never called; the reason is logged). */
int dq_producer_send_cb(dq_producer *p, const char *topic, const char *key, const void *value,
                        size_t len, int timeout_ms, dq_delivery_fn fn, void *ctx);

/* Serve the delivery reports that are due, waiting up to timeout_ms for one (0: do not
 * wait). Returns how many were served. */
int dq_producer_poll(dq_producer *p, int timeout_ms);

/* Messages queued or in flight on this producer (not yet reported). */
int dq_producer_outq_len(dq_producer *p);

rd_kafka_t *dq_producer_handle(dq_producer *p);

/* ---- consumer ---- */

typedef struct dq_message {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const char *key; /* not NUL-terminated; may be NULL */
    size_t key_len;
    const char *value; /* not NUL-terminated; may be NULL */
    size_t len;
    int64_t timestamp_ms; /* -1 when unknown */
} dq_message;

typedef enum {
    DQ_HANDLED = 0, /* done: store the offset */
    DQ_RETRY,       /* a transient failure (Redis down, broker busy): retry later with
                       backoff, for as long as it takes; never dead-lettered */
    DQ_FAILED,      /* this message failed: retried up to max_attempts, then dead-lettered */
    DQ_POISON,      /* this message can never be handled: dead-letter it now */
    DQ_DEFERRED,    /* the handler took the message over (e.g. to a thread of its own):
                       its offset is stored once dq_consumer_ack() says it is done, and
                       a partition's offsets are stored only up to the first message not
                       yet done, so a crash redelivers every message not finished */
} dq_handle_result;

/* err receives the reason for DQ_FAILED / DQ_POISON (it goes into deployq.dead, so it must
 * not contain secrets; it is passed through dq_redact() anyway). */
typedef dq_handle_result (*dq_handler_fn)(void *ctx, const dq_message *m, char *err,
                                          size_t errlen);

typedef struct dq_consumer_opts {
    const char *group_id;      /* required */
    const char *const *topics; /* required */
    size_t n_topics;
    int max_attempts;          /* DQ_FAILED retries before dead-letter; default 3 */
    int poll_timeout_ms;       /* default 100: how often the loop sees the stop flag */
    int close_timeout_ms;      /* default 10000: the longest dq_consumer_free waits for the
                                * group to be left (see there) */
} dq_consumer_opts;

typedef struct dq_consumer dq_consumer;

/* Subscribe. dead (may be NULL: then poison messages are only logged and skipped) is the
 * producer used for deployq.dead; it is borrowed, not owned. */
dq_consumer *dq_consumer_new(const dq_config *cfg, const dq_consumer_opts *opts,
                             dq_producer *dead, char *err, size_t errlen);

/* Poll and handle until *stop becomes non-zero (the flag of signals.h, say). Returns 0
 * after a clean stop, -1 on a fatal consumer error (reason logged). */
int dq_consumer_run(dq_consumer *c, dq_handler_fn handler, void *ctx,
                    volatile sig_atomic_t *stop);

/* Say that a message the handler answered DQ_DEFERRED for is done. Callable from any
 * thread, also after the partition was revoked (then it is ignored: the next owner gets
 * the message again). The loop stores the offsets of each partition's contiguous prefix
 * of done messages (DQ_HANDLED ones behind a deferred one wait for it). */
void dq_consumer_ack(dq_consumer *c, const char *topic, int32_t partition, int64_t offset);

/* Say that a message the handler answered DQ_DEFERRED for failed after all (say, its
 * result could not be delivered): it and every later message of its partition are
 * forgotten and read again, in order, after a backoff (as for DQ_RETRY). Callable from any
 * thread; ignored when the partition was revoked (the next owner reads it again) or when
 * an earlier message of the partition is already being read again (it comes with it). */
void dq_consumer_nack(dq_consumer *c, const char *topic, int32_t partition, int64_t offset);

/* One message of a batch and the handler's answer for it (result and, for DQ_FAILED and
 * DQ_POISON, err), as for dq_handler_fn. */
typedef struct dq_batch_item {
    dq_message m;
    dq_handle_result result; /* DQ_RETRY until the handler says otherwise */
    char err[512];
} dq_batch_item;

/* Handle items[0..n) (in the order they were read; several partitions may be mixed) and set
 * each item's result. Called with n == 0 when a poll brought nothing, so that the handler
 * may serve its own queues (delivery reports) while the topic is quiet. Once an item's
 * result is not DQ_HANDLED or DQ_DEFERRED, the later items of its partition are read again
 * whatever their result says, so a handler keeps order by doing nothing visible for them. */
typedef void (*dq_batch_fn)(void *ctx, dq_batch_item *items, size_t n);

/* dq_consumer_run for a handler that judges messages in batches (one Redis round trip for
 * many, say): after a poll returns a message, what is already fetched is taken too, up to
 * max_batch. Every message of a batch counts as not done (dq_consumer_ack) from before the
 * handler runs, so an acknowledgement may come at any time, even from inside the handler.
 * Returns as dq_consumer_run. */
int dq_consumer_run_batch(dq_consumer *c, dq_batch_fn handler, void *ctx, size_t max_batch,
                          volatile sig_atomic_t *stop);

/* Commit stored offsets, leave the group (rd_kafka_consumer_close) and destroy. Deferred
 * messages not acknowledged by then are not committed (they are redelivered).
 *
 * Bounded by close_timeout_ms: closing waits on the group coordinator (a whole
 * session.timeout.ms when the broker is gone) and can hang forever inside librdkafka
 * (issue #4884: rd_kafka_assign(NULL) in the revoke callback during close). Past the
 * bound it logs a warning and returns, leaving the close running on its own thread (it
 * cleans up if it ever finishes); what was not committed is read again by the group,
 * exactly as after a crash. */
void dq_consumer_free(dq_consumer *c);

/* Closes that dq_consumer_free gave up waiting for and that are still running. */
int dq_consumer_closes_pending(void);

rd_kafka_t *dq_consumer_handle(dq_consumer *c);

/* ---- health (clients/healthsrv.c) ---- */

/* 1 when the consumer is in its group and holds the assignment of the last rebalance,
 * which may be empty (a member of a group with more members than partitions is a spare:
 * in the group, ready to take partitions over); 0 before its first assignment, and after
 * a revocation or a lost assignment until the next one. *n_partitions (may be NULL)
 * receives how many partitions it holds. Callable from any thread. */
int dq_consumer_assigned(dq_consumer *c, int *n_partitions);

/* 1 when a broker of rk's cluster answered a metadata request within timeout_ms, else 0
 * with librdkafka's reason in why. One round trip; callable from any thread. */
int dq_kafka_broker_up(rd_kafka_t *rk, int timeout_ms, char *why, size_t whylen);

/* For each partition the consumer holds: fn(ctx, topic, partition, lag), lag being the
 * high watermark librdkafka last saw (rd_kafka_get_watermark_offsets) minus the consumer's
 * position, the next offset it fetches (rd_kafka_position). Both come from librdkafka's
 * cache, refreshed by every fetch: no round trip. A partition with no position or
 * watermark yet is skipped: librdkafka has a position once a message of the partition was
 * read since it was assigned. Callable from any thread; returns how many were reported. */
typedef void (*dq_lag_fn)(void *ctx, const char *topic, int32_t partition, int64_t lag);
int dq_consumer_lag(dq_consumer *c, dq_lag_fn fn, void *ctx);

#endif
