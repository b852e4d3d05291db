/*
 * execute.h - one deploy run: the target's provider chain, idempotency records and the
 * events that tell the world what happened. Shared by deployq-executor (events go to
 * Kafka) and the break-glass `deployq deploy --direct` (events go to a spool file).
 *
 * The caller holds the target's lock (lock.h) and passes its fence; this module never
 * takes locks. A run emits, through the caller's sink and in this order:
 *   provider.failed   for each provider it failed over from (unavailable),
 *   deploy.started    once a provider accepted the deploy,
 *   exactly one of deploy.succeeded / deploy.failed,
 * every one carrying the fence. Event ids are derived from the deployment id, the type,
 * the provider and its position in the chain ("attempt"), and the terminal event's from
 * the deployment id alone, so a run that is resumed or repeated re-emits the same ids:
 * downstream, a repeat is a duplicate, never a second outcome.
 *
 * Idempotency (Redis, when the caller gives a connection): deployq:exec:<deployment_id>
 * holds {"provider","provider_type","provider_id","attempt","started_at_ms","fence"},
 * written when a provider accepted the deploy and before the first status poll. A run
 * that finds it resumes polling that provider deployment (dq_chain_resume) instead of
 * deploying again; once the terminal event was delivered the record becomes
 * {"terminal": "<the event's JSON>"} and a later run only re-emits that event. When a
 * provider that had accepted turns out to have run nothing (provider.h, NOT_STARTED) the
 * chain fails over and the record becomes {"resume_from": <next attempt>, "fence"} until
 * the next provider's start replaces it: a restart carries on from there, never polling or
 * adopting the failed-over provider's deployment again. The record is read and written
 * through runrecord.h: a write Redis refuses is kept and written while the run polls, and
 * a newer record always wins over one still waiting.
 *
 * Unknown outcomes: a deploy.failed whose cancel was not confirmed (or not attempted:
 * cancel_on_timeout false) carries data.cancel and data.outcome = "unknown": the deploy
 * may still go live. The run then sets deployq:unknown:<service>:<environment> =
 * {"deployment_id","version","at"}; the next run of that target logs it and puts it in its
 * deploy.started as data.previous_outcome_unknown; a deploy.succeeded of the target clears
 * it (what runs is known again).
 *
 * The process also keeps that record in memory from the moment the provider accepted
 * until the run concluded (runrecord.h): when Redis is down as the provider accepts, the
 * record cannot be written and the lease is lost, and the next run of the same deployment
 * in this process (after the lock is taken again) finds the record in memory, writes it
 * to Redis and resumes polling, never deploying a second time.
 *
 * Configuration: services.<s>.environments.<e>.providers is the chain, a list whose items
 * are provider objects (docs/providers.md) or names of entries of the top-level
 * `providers:` mapping.
 */
#ifndef DQ_EXECUTE_H
#define DQ_EXECUTE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "event.h"
#include "metrics.h"
#include "provider.h"
#include "redis.h"

#define DQ_EXEC_RECORD_TTL_S (7 * 24 * 3600)

/* Deliver one event. 0 delivered; -1 not (reason in err): the run then stops without
 * concluding (DQ_EXEC_STOPPED), so the caller can retry it later. The event is borrowed. */
typedef int (*dq_exec_sink_fn)(void *ctx, const dq_event *ev, char *err, size_t errlen);

typedef struct dq_exec {
    const dq_config *cfg; /* borrowed */
    dq_redis *redis;      /* borrowed, used only by this run; NULL: no idempotency records */
    int64_t fence;        /* the lock's fence, or 0 when no lock could be taken */
    const char *actor;    /* program@host/pid */
    int direct;           /* break-glass: every event gets data.direct = true */
    const char *direct_reason; /* the operator's --reason, put in data.direct_reason */
    dq_exec_sink_fn sink;
    void *sink_ctx;
    /* Polled while the run waits; 0 stops it (shutdown, lease lost). NULL: never stop. */
    int (*should_continue)(void *ctx);
    /* A run finds the intent record of an earlier run (another fence) and nothing else:
     * that run asked a provider to deploy and may have had it accepted while Redis was
     * down, its record only in its process's memory (runrecord.h). Wait this long for
     * that process to write it (dq_runrecord_flush: its orphan scanner, within about one
     * scan of Redis' return) before deploying; 0 never waits. */
    int64_t intent_wait_ms;
    /* Called with ctx: 1 when an operator asked for this deployment to be cancelled
     * (`deployq cancel`, opstate.h; the key that asked in by), 0 not. Asked before a
     * fresh run deploys (then it ends at once as deploy.failed reason cancelled, nothing
     * started) and on each status poll (the chain cancels at the provider, provider.h).
     * NULL: never. */
    int (*cancel_requested)(void *ctx, char *by, size_t bylen);
    void *ctx;
    dq_chain_options chain; /* zero: the providers' own poll intervals and deadlines */
    /* Blue-green (bluegreen.h; NULL for every other deploy), called with hook_ctx:
     * chain_load builds the chain instead of the target's `providers` (the idle color's),
     * 0 or -1 with err (the run then ends as deploy.failed, reason internal);
     * before_succeeded runs once the chain succeeded and before deploy.succeeded (probe
     * the idle color, move traffic; a canary's rollout): 0 go on, -1 the run ends as
     * deploy.failed (reason from reason, which holds "internal" unless the hook writes
     * another one of deploy.failed's reasons, e.g. canary_aborted; detail from detail), 1
     * stop without a conclusion (shutdown, lease lost). */
    int (*chain_load)(void *hook_ctx, dq_provider ***providers, size_t *n, char *err, size_t errlen);
    int (*before_succeeded)(void *hook_ctx, const dq_chain_result *res, char *reason,
                            size_t reasonlen, char *detail, size_t detaillen);
    void *hook_ctx;
    /* Counted when set (metrics.h; NULL: not counted): a run that concludes bumps
     * deployq_deploys_total{service,env,provider,outcome} once (outcome succeeded|failed,
     * provider "none" when none ran; a redelivery that finds the outcome recorded does not
     * count again); a provider failing with another after it in the chain bumps
     * deployq_failovers_total{service,env,provider,reason} (provider: the one that failed,
     * reason: its error class). */
    dq_metric *m_deploys;
    dq_metric *m_failovers;
} dq_exec;

typedef enum {
    DQ_EXEC_DONE = 0, /* the terminal event was delivered (now or by an earlier run) */
    DQ_EXEC_STOPPED,  /* stopped before a conclusion (should_continue, sink failure) */
    DQ_EXEC_ERROR,    /* Redis could not be asked about the record; nothing was done */
} dq_exec_status;

typedef struct dq_exec_outcome {
    char type[32];      /* "deploy.succeeded" / "deploy.failed", "" when not DONE */
    char reason[32];    /* deploy.failed's reason, else "" */
    char provider[64];  /* the provider that ran it, or "" */
    char provider_id[DQ_PROVIDER_ID_LEN];
    char detail[DQ_PROVIDER_DETAIL_LEN];
    int resumed;        /* 1 when an earlier run's record was picked up */
} dq_exec_outcome;

/* Run (or resume, or replay the outcome of) the deploy of req on req's target. req's
 * fence is ignored: x->fence is used. out may be NULL. Returns as described above, with
 * a reason in err for STOPPED and ERROR. */
dq_exec_status dq_execute(const dq_exec *x, const dq_provider_request *req, dq_exec_outcome *out,
                          char *err, size_t errlen);

/* Build the provider chain of service/environment from the configuration. On success
 * returns 0 with *providers (an array of *n providers; free with dq_exec_chain_free).
 * -1 with "path:line: message" in err when the target has no providers or one of them
 * is misconfigured (never a token in err). */
int dq_exec_chain_load(const dq_config *cfg, const char *service, const char *environment,
                       dq_provider ***providers, size_t *n, char *err, size_t errlen);
void dq_exec_chain_free(dq_provider **providers, size_t n);

/* The executor section of the configuration (executor: {lock_ttl, lock_wait,
 * cancel_on_timeout, cancel_wait, orphan_scan}); defaults when absent. Durations in ms.
 * Returns 0, or -1 with "path:line: message" in err on a bad value. deployq-rollback reads
 * the same section for its lock and its orphan scan. */
typedef struct dq_exec_settings {
    int64_t lock_ttl_ms;   /* default 30 s */
    int64_t lock_wait_ms;  /* break-glass: how long to wait for a busy lock, default 60 s */
    int cancel_on_timeout; /* default 1: cancel at the provider and confirm it */
    int64_t cancel_wait_ms; /* how long a cancel may take to show, default 60 s */
    /* How often a worker looks for runs whose worker died (runlease.h), default 1 s, at
     * least 100 ms; 0: never (such a run then waits for Kafka to redeliver its event). An
     * orphaned run is resumed at most lock_ttl + orphan_scan after its worker died. */
    int64_t orphan_scan_ms;
} dq_exec_settings;
int dq_exec_settings_load(const dq_config *cfg, dq_exec_settings *s, char *err, size_t errlen);

#endif
