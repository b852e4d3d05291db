/*
 * runlease.h - orphaned runs: a deploy or a rollback whose worker died is picked up by
 * another worker once the target's lock has expired, not only when Kafka redelivers.
 *
 * Why: Kafka hands a dead worker's unacknowledged deploy.validated / rollback.requested to
 * another member of the group only after session.timeout.ms (45 s by default), while the
 * target's lease (lock.h) says "nobody works on this" after at most its ttl (30 s by
 * default). So a worker registers every run it holds the lock for, and every worker looks,
 * every `executor.orphan_scan`, for registered runs whose lock key is gone.
 *
 * Keys (kind is "exec" for deploys, "rollback" for rollbacks):
 *   deployq:runs:<kind>             ZSET  id -> wall ms of the registration
 *   deployq:runs:<kind>:job:<id>    HASH  lock  = the lock key of the run's target (dq_lock_key)
 *                                         event = the event that started the run (JSON)
 *   deployq:runs:<kind>:claim:<id>  the adopter's name, PX claim_ms: one adopter at a time
 * The ZSET and the hash expire DQ_RUNLEASE_TTL_S after the last registration, so a run
 * that nobody unregisters (it can only be one that no worker can conclude) does not stay.
 *
 * Protocol:
 *   1. A worker that took a target's lock for a run registers it (one script: hash, ZSET,
 *      and the claim that led to it, if any, deleted).
 *   2. Once the run concluded (its terminal event delivered and recorded) the worker
 *      unregisters it before releasing the lock (one script), so that no scan sees a
 *      concluded run without its lock.
 *   3. A scan reads the registered runs, oldest first. For each one the caller does not
 *      run or hold queued itself (skip), one script checks atomically that the run's lock
 *      key does not exist and takes its claim (SET NX PX claim_ms); the caller then adopts
 *      the event: it runs it through its normal path, lock first. That path registers the
 *      run again and resumes from the run's idempotency records, so an adoption never
 *      deploys twice: at worst it re-emits the terminal event with the same id.
 *
 * What it cannot tell: a run whose lock is missing only because its worker is between two
 * attempts (it released the lock after a broker or Redis failure and retries) looks
 * orphaned too. Then two workers compete for the lock exactly as after a Kafka
 * redelivery, and the loser finds the record and only repeats the same event ids.
 *
 * Cost: a scan is one ZRANGE per 256 registered runs plus two commands per registered run
 * that is not the caller's own (HMGET, the claim script).
 */
#ifndef DQ_RUNLEASE_H
#define DQ_RUNLEASE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "redis.h"

#define DQ_RUNLEASE_TTL_S (7 * 24 * 3600) /* as long as the idempotency records (execute.h) */
#define DQ_RUNLEASE_KIND_EXEC "exec"
#define DQ_RUNLEASE_KIND_ROLLBACK "rollback"

/* Register run id of kind: its worker holds lock_key (dq_lock_key() of the lock it took)
 * and event_json is what an adopter runs again. Registering again refreshes it. 0, or -1
 * with a reason in err (the run then goes on: only its adoption depends on this). */
int dq_runlease_register(dq_redis *r, const char *kind, const char *id, const char *lock_key,
                         const char *event_json, char *err, size_t errlen);

/* Forget run id (it concluded). Unregistering an unknown run is fine. 0, or -1 with a
 * reason in err (the run is then adopted later and concludes again, harmlessly). */
int dq_runlease_unregister(dq_redis *r, const char *kind, const char *id, char *err, size_t errlen);

/* 1 when the caller runs or holds id itself (the scan leaves it alone), else 0. */
typedef int (*dq_runlease_skip_fn)(void *ctx, const char *id);
/* An orphaned run was claimed for the caller: run it (event_json is borrowed; r is the
 * scanning connection, the callback may use it until it returns). */
typedef void (*dq_runlease_adopt_fn)(void *ctx, dq_redis *r, const char *id, const char *event_json);

/* One scan of kind's registered runs (protocol step 3). claimant names the adopter in the
 * claim; claim_ms is how long others leave a claimed run alone (the lock's ttl: the time
 * the adopter has to take the lock). skip may be NULL. Returns the number of runs adopted,
 * or -1 with a reason in err when Redis failed (runs adopted before that were adopted). */
int dq_runlease_scan(dq_redis *r, const char *kind, const char *claimant, int64_t claim_ms,
                     dq_runlease_skip_fn skip, dq_runlease_adopt_fn adopt, void *ctx, char *err,
                     size_t errlen);

/* A thread that scans every interval_ms with a Redis connection of its own. */
typedef struct dq_runlease_opts {
    const char *redis_url; /* as for dq_redis_connect() */
    int redis_timeout_ms;
    const char *kind;
    const char *claimant;  /* the worker's actor (program@host/pid) */
    int64_t interval_ms;   /* between scans (> 0) */
    int64_t claim_ms;      /* as for dq_runlease_scan() */
    dq_runlease_skip_fn skip;
    dq_runlease_adopt_fn adopt; /* called on the scanner's thread */
    void *ctx;
    volatile sig_atomic_t *stop; /* the process's stop flag, may be NULL */
} dq_runlease_opts;

typedef struct dq_runlease_scanner dq_runlease_scanner;

/* Start the thread (the strings of o are copied; ctx is borrowed until stop). Redis being
 * down is not an error: the thread connects when it can. NULL with a reason in err when
 * the thread could not be started. */
dq_runlease_scanner *dq_runlease_scanner_start(const dq_runlease_opts *o, char *err, size_t errlen);

/* Stop scanning, wait for the thread (an adopt callback that is running is waited for:
 * it must itself watch the stop flag), close its connection and free. NULL is a no-op. */
void dq_runlease_scanner_stop(dq_runlease_scanner *s);

#endif
