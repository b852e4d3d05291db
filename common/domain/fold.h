/*
 * fold.h - the state fold: deployq.events, read in log order, folded into what is true now
 * (or at any past moment) for every deploy target and every deployment.
 *
 * The registry folds each event it appends (the live state), `deployq replay` and `status`
 * fold the registry files, the HTTP API serves the same structures. Because every event of
 * one target (and so of one deployment) travels in one Kafka partition, the result depends
 * only on the order within each partition: folding partition after partition (replay) and
 * folding them interleaved (the live registry) give the same state and the same
 * dq_fold_state_hash().
 *
 * Fencing: every side effect carries the target's fencing token (event.h `fence`, 0 before
 * a lock was taken). An event whose fence is > 0 and older than the newest fence already
 * seen for its target comes from a worker that lost its lock: it is recorded (timeline,
 * dq_fold_stale()) but changes no state and no counter except n_stale.
 *
 * What each event type does (schemas/events/<type>.json has the data):
 *   deploy.validated / deploy.awaiting_approval  a deployment begins: in flight on its target
 *   deploy.rejected         the deployment ends rejected; data.reasons[].code gives its
 *                           reject_kind (gate, invalid input, other)
 *   deploy.started          running (provider accepted); provider.failed only moves the step
 *   deploy.succeeded        the target's current version becomes the event's version; with
 *                           data.watch false (no health watch follows) the deployment ends
 *                           deployed (outcome succeeded, unwatched set); with true or without
 *                           the field it stays in flight until verified or rolled back
 *                           (both: data.cost, when given, is the deployment's cost)
 *   deploy.failed           the deployment ends failed; with data.outcome "unknown" (a timeout
 *                           whose cancel was not confirmed) the target's outcome is unknown
 *                           until a deploy or rollback of it succeeds
 *   monitor.started / health.degraded / traffic.switched   move the step
 *   deploy.verified         the target's last verified version; the deployment ends verified
 *   rollback.requested      a rollback record opens on the target, with its evidence; the
 *                           deployment named by the event counts as rolled back
 *   rollback.started/succeeded/failed  update the target's open rollback; succeeded sets the
 *                           current version to data.to_version; failed with data.policy
 *                           "notify" closes it as not attempted (not_attempted, not counted
 *                           in n_rollbacks_failed)
 *   target.paused / target.resumed   the target is paused (by, reason, since) / no longer
 *   target.held / target.released    automatic rollback of the target is held / no longer
 *                           (both pairs: counted in n_events, no other counter)
 *   deploy.validated, deploy.awaiting_approval, deploy.rejected with data.retry_of: the
 *                           deployment retries that one (retry_of)
 *   canary.step             the target's canary (see dq_fold_canary) runs at data.step/steps,
 *                           data.weight, since the event; the deployment's canary_max_weight
 *   canary.promoted         the canary is promoted (weight 100)
 *   canary.aborted          the canary is aborted at data.weight (data.reason, data.detail);
 *                           the deployment's canary_aborted, canary_max_weight (data.max_weight)
 *   canary.analysis         moves the step only (its verdict is in the event)
 *   rollback.started/succeeded without a rollback.requested before them: data.requested_by
 *                           and data.reason are the rollback's, data.detected_at its start
 *                           (a canary abort: the first bad sample)
 *   notification.*, unknown types  timeline only
 * Not thread-safe: a program that reads the fold from other threads (the HTTP API) holds
 * its own lock around dq_fold_apply*() and the readers.
 */
#ifndef DQ_FOLD_H
#define DQ_FOLD_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

#define DQ_FOLD_HASH_HEX_LEN 64

/* What dq_fold_apply() did with a record. */
typedef enum {
    DQ_FOLD_APPLIED = 0,    /* folded into the state */
    DQ_FOLD_STALE = 1,      /* a stale fence: flagged, state unchanged */
    DQ_FOLD_UNREADABLE = 2, /* not a deployq event (bad JSON, missing envelope): counted */
    DQ_FOLD_ENOMEM = -1,    /* allocation failed; the fold is unchanged for this event */
} dq_fold_result;

/* Where a deployment stands (its outcome so far). */
typedef enum {
    DQ_DEPLOY_PENDING = 0,      /* only events before a verdict (or none we know) */
    DQ_DEPLOY_AWAITING_APPROVAL,
    DQ_DEPLOY_VALIDATED,
    DQ_DEPLOY_RUNNING,          /* deploy.started */
    DQ_DEPLOY_SUCCEEDED,        /* deployed, not yet verified */
    DQ_DEPLOY_VERIFIED,
    DQ_DEPLOY_FAILED,
    DQ_DEPLOY_REJECTED,
    DQ_DEPLOY_ROLLED_BACK,      /* a rollback was requested for it */
} dq_deploy_outcome;

/* Why a deployment was rejected, from deploy.rejected data.reasons[].code, for the report's
 * "caught before production" (report.h): a gate that judged the change, or a request that
 * could not be trusted or read. */
typedef enum {
    DQ_REJECT_NONE = 0,  /* not rejected */
    DQ_REJECT_GATE,      /* freeze, drift, drift_values, promotion, denied (an approver said no) */
    DQ_REJECT_INVALID,   /* the request itself: too_large, too_deep, bad_json, schema,
                            bad/missing signature, unknown/retired/wrong-role key, stale,
                            future, replayed_nonce, approval_unsigned, unknown service or
                            environment. Wins over a gate code in the same rejection. */
    DQ_REJECT_OTHER,     /* anything else: internal, approval_expired, codes added later */
} dq_reject_kind;

/* "gate", "invalid", "other" ("" for none). */
const char *dq_reject_kind_name(dq_reject_kind k);

/* "pending", "awaiting_approval", ..., "rolled_back". */
const char *dq_deploy_outcome_name(dq_deploy_outcome o);

/* What a deployment's run cost, from its terminal event's data.cost (report.h, "CI/CD cost
 * per deployment"). */
typedef enum {
    DQ_FOLD_COST_NONE = 0,  /* no data.cost: the provider is not priced (or no terminal yet) */
    DQ_FOLD_COST_PROVIDER,  /* basis provider_jobs: the provider's own figures */
    DQ_FOLD_COST_ESTIMATE,  /* basis wall_time: wall time x rate, an estimate */
    DQ_FOLD_COST_UNKNOWN,   /* basis unknown: priced, the figures could not be read */
} dq_fold_cost;

/* One event of a deployment's timeline. type points to a static string (one of
 * dq_event_types, or "unknown"). */
typedef struct {
    const char *type;
    int64_t at_ms;
    int32_t partition;
    int64_t offset;
    int64_t fence;
    int stale; /* 1: ignored because of a stale fence */
} dq_fold_entry;

typedef struct dq_fold_deployment {
    char *id;
    char *service, *environment, *version; /* from its first event that had them; may be NULL */
    dq_deploy_outcome outcome;
    const char *step;       /* type of the last applied event (static string) */
    int64_t first_at_ms;    /* its first event */
    int64_t last_at_ms;     /* its last applied event */
    int64_t validated_at_ms, commit_at_ms, started_at_ms; /* 0 when not seen / not given */
    int64_t succeeded_at_ms, failed_at_ms, rejected_at_ms, verified_at_ms;
    int64_t rollback_requested_at_ms; /* 0 unless a rollback was requested for it */
    int64_t requested_at_ms; /* deploy.validated data.issued_at (when the request was signed),
                                else its first event; the start of "time to deploy" */
    dq_reject_kind reject_kind; /* why deploy.rejected refused it (DQ_REJECT_NONE if not) */
    int unwatched;          /* 1: its deploy.succeeded said no health watch follows (concluded) */
    dq_fold_cost cost;      /* from its deploy.succeeded/failed data.cost (the last one) */
    char *retry_of;         /* the deployment it retries (deployq retry): data.retry_of of its
                               deploy.validated/awaiting_approval/rejected, or NULL */
    double cost_amount;     /* with DQ_FOLD_COST_PROVIDER or _ESTIMATE */
    int64_t fence;          /* the highest fence among its applied events */
    int canary_max_weight;  /* the largest weight its canary reached (canary.step/aborted); 0:
                               no canary step seen */
    int canary_aborted;     /* 1: its canary.aborted was folded */
    dq_fold_entry *timeline; /* every event of it, applied or stale, in log order */
    size_t n_timeline;
    size_t cap_timeline;
} dq_fold_deployment;

typedef enum {
    DQ_ROLLBACK_REQUESTED = 0,
    DQ_ROLLBACK_STARTED,
    DQ_ROLLBACK_SUCCEEDED,
    DQ_ROLLBACK_FAILED,
} dq_rollback_status;

/* "requested", "started", "succeeded", "failed". */
const char *dq_rollback_status_name(dq_rollback_status s);

typedef struct dq_fold_rollback {
    char *service, *environment;
    char *deployment_id;   /* the deployment rolled back (the requesting event's), or NULL */
    char *from_version;    /* the version being replaced, when known */
    char *to_version;      /* data.to_version of the latest rollback event that had it */
    char *reason, *requested_by;
    cJSON *evidence;       /* rollback.requested data.evidence (owned), or NULL */
    dq_rollback_status status;
    int not_attempted;     /* 1: status failed because the policy is `rollback: notify`
                              (rollback.failed data.policy "notify"): nothing was tried,
                              the deployment stays degraded until a person decides */
    int64_t requested_at_ms;  /* 0 when the rollback began with rollback.started */
    /* When the trouble began, for MTTR: evidence.first_failure_at, else evidence.detected_at,
     * else rollback.succeeded data.detected_at, else requested_at_ms. */
    int64_t detected_at_ms;
    int64_t started_at_ms, finished_at_ms;
    int64_t restored_at_ms; /* rollback.succeeded data.restored_at (else the event's at) */
} dq_fold_rollback;

typedef enum {
    DQ_CANARY_NONE = 0, /* no canary on the target (yet) */
    DQ_CANARY_RUNNING,
    DQ_CANARY_PROMOTED,
    DQ_CANARY_ABORTED,
} dq_canary_status;

/* "", "running", "promoted", "aborted". */
const char *dq_canary_status_name(dq_canary_status s);

/* A target's canary rollout under way or the last one that ended (canary.* events). A
 * replay up to a time gives the weight at that time. */
typedef struct dq_fold_canary {
    dq_canary_status status;     /* DQ_CANARY_NONE: nothing else is set */
    char *deployment_id, *version; /* the canary's (the event's) */
    int step, steps, weight;     /* weight: the canary's share of traffic, percent */
    char *canary_color, *stable_color; /* stable NULL on a target's first deploy */
    int64_t since_ms;            /* the step (running) or the end (promoted, aborted) */
    char *reason, *detail;       /* aborted: data.reason, data.detail (may be NULL) */
} dq_fold_canary;

typedef struct dq_fold_target {
    char *key; /* "service/environment" */
    char *service, *environment;
    char *current_version;       /* NULL until a deploy or rollback succeeded */
    char *current_deployment_id; /* the deployment that put it there (NULL after a rollback
                                    event without one) */
    int64_t current_since_ms;
    char *last_verified_version;
    int64_t last_verified_at_ms;
    dq_fold_deployment *inflight; /* deployment in flight (validated .. verified/failed/
                                     rejected/rolled back), or NULL; owned by the fold */
    dq_fold_rollback *last_rollback; /* NULL if none; owned by the fold */
    /* The deployment whose deploy.failed said its outcome is unknown (it may have gone
     * live), and nothing succeeded on the target since: what runs is not known. NULL
     * otherwise; version and since go with it. */
    char *unknown_deployment_id, *unknown_version;
    int64_t unknown_since_ms;
    /* An operator's pause (target.paused .. target.resumed) and hold of automatic rollback
     * (target.held .. target.released): by is the operator key's id (data.by), reason
     * data.reason (may be NULL); by is NULL when the target is not paused / held. */
    char *paused_by, *paused_reason;
    int64_t paused_since_ms;
    char *held_by, *held_reason;
    int64_t held_since_ms;
    dq_fold_canary canary;       /* status DQ_CANARY_NONE without canary events */
    int64_t max_fence;           /* newest fence seen */
    /* counters */
    uint64_t n_events, n_stale;
    uint64_t n_validated, n_rejected, n_awaiting, n_started, n_succeeded, n_failed, n_verified;
    uint64_t n_rollbacks, n_rollbacks_succeeded, n_rollbacks_failed;
    int64_t last_event_at_ms;
} dq_fold_target;

/* An event ignored because of its stale fence. */
typedef struct {
    char *event_id, *type, *target; /* target "service/environment" */
    char *deployment_id;             /* may be NULL */
    int32_t partition;
    int64_t offset;
    int64_t fence, newest_fence;
    int64_t at_ms;
} dq_fold_stale_event;

typedef struct dq_fold dq_fold;

/* An empty fold. NULL only on allocation failure. */
dq_fold *dq_fold_new(void);
/* NULL is a no-op. Every pointer the fold handed out becomes invalid. */
void dq_fold_free(dq_fold *f);

/* Timelines (dq_fold_deployment.timeline) are kept by default. A reader that only wants
 * the state (replay, status, report) turns them off before the first apply: deployments,
 * their outcomes and the state hash are the same either way, n_timeline stays 0. */
void dq_fold_set_timelines(dq_fold *f, int on);

/* Fold one record of the log (the Kafka message value as stored) read from partition at
 * Kafka offset. The payload is decoded with event.h's limits; a payload that is not an
 * event is counted (n_unreadable) and otherwise ignored, it never stops the fold.
 * Usual events are read with dq_event_scan() (no cJSON tree except the data of the types
 * whose data the fold reads); the result is the same as folding dq_event_decode()'s event.
 * Returns a dq_fold_result. */
int dq_fold_apply(dq_fold *f, int32_t partition, int64_t offset, const void *payload,
                  size_t len);
/* The same for an event already decoded (borrowed, not kept). */
int dq_fold_apply_event(dq_fold *f, const dq_event *ev, int32_t partition, int64_t offset);

/* Totals over everything folded. */
typedef struct {
    uint64_t events;      /* records given to dq_fold_apply*() */
    uint64_t unreadable;  /* not events */
    uint64_t untargeted;  /* events without service/environment (only counted) */
    uint64_t stale;       /* ignored for a stale fence */
    uint64_t targets, deployments, rollbacks;
    int64_t first_at_ms, last_at_ms; /* over applied events; 0 when none */
} dq_fold_totals;
void dq_fold_get_totals(const dq_fold *f, dq_fold_totals *out);

/* Every target, sorted by key (byte order). The array is owned by the fold and valid until
 * the next dq_fold_apply*() or dq_fold_free(); *n receives its length. */
dq_fold_target *const *dq_fold_targets(dq_fold *f, size_t *n);
/* One target or NULL. */
const dq_fold_target *dq_fold_target_get(const dq_fold *f, const char *service,
                                         const char *environment);

/* Every deployment in the order its first event was folded (owned by the fold; the
 * pointers stay valid until dq_fold_free, the array until the next apply). */
dq_fold_deployment *const *dq_fold_deployments(const dq_fold *f, size_t *n);
/* One deployment by id, or NULL. */
const dq_fold_deployment *dq_fold_deployment_get(const dq_fold *f, const char *id);

/* Every rollback in log order (same lifetime rules as deployments). */
dq_fold_rollback *const *dq_fold_rollbacks(const dq_fold *f, size_t *n);

/* Every event ignored for a stale fence, in log order. */
const dq_fold_stale_event *dq_fold_stale(const dq_fold *f, size_t *n);

/* SHA-256 (lower-case hex, NUL-terminated) of a canonical text of the state: every target
 * in key order with its current/verified versions, in-flight deployment and step, last
 * rollback, newest fence and counters (and, only when set, an unknown outcome, a pause, a
 * hold, a canary: a log without them keeps the hash it had before they existed), then the totals. Equal for equal per-partition
 * event orders (see the top of this file); timestamps of when it was computed never enter. */
void dq_fold_state_hash(const dq_fold *f, char out[DQ_FOLD_HASH_HEX_LEN + 1]);

/* JSON views (new objects the caller frees with cJSON_Delete; NULL on allocation failure).
 * Times are RFC 3339 strings, absent values are omitted. */
cJSON *dq_fold_target_json(const dq_fold_target *t);
cJSON *dq_fold_rollback_json(const dq_fold_rollback *r);
/* with_timeline: add "timeline":[{type,at,partition,offset,fence,stale}...]. */
cJSON *dq_fold_deployment_json(const dq_fold_deployment *d, int with_timeline);
/* {"state_hash":..., "totals":{...}, "targets":[...], "stale":[...]} */
cJSON *dq_fold_state_json(dq_fold *f);

#endif
