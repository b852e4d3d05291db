/*
 * watch.h - watch sessions: what the monitor knows about one deploy it is judging, the
 * verdict rules, and where sessions live (Redis), so that any monitor instance can carry
 * on a session whose worker died.
 *
 * A session starts when a deploy (or a rollback) succeeded and lasts `window`. Every
 * `interval` each probe of the target yields a sample (probe.h); the samples are folded
 * into the session (dq_watch_apply) and the rules decide:
 *   - a probe with `failure_threshold` consecutive failing samples -> rollback;
 *   - a probe whose last `error_rate_window` counted samples hold a share of failures
 *     above `max_error_rate` -> rollback (judged only once that many samples exist);
 *   - the session turns degraded when any probe's latest counted sample failed, and
 *     recovered when none has a failing streak any more (health.degraded on each change);
 *   - the window ending while healthy -> verified. Ending while degraded extends it by at
 *     most `failure_threshold` intervals: recovery then verifies, and a session still
 *     degraded at the end of the extension is rolled back (kind degraded_at_window_end);
 *   - no verdict without evidence: until every probe holds `failure_threshold` samples
 *     (as many as it takes to catch a failing version) the session goes on probing past
 *     the window's end. Ticks that could not be saved (the broker refused the health
 *     event they produced, Redis was down) leave no samples, so an outage that spans the
 *     window does not verify a version nobody looked at.
 * A missing sample counts as the probe's policy says (probe.h).
 *
 * Redis layout (prefix deployq:monitor:):
 *   session:<id>  hash {state: JSON of dq_watch_state, status: active|verified|
 *                 rollback_requested|superseded}; kept a day after it ends, so a
 *                 redelivered trigger does not start it again
 *   due           sorted set of active session ids by next due time (ms since the epoch)
 *   lease:<id>    the instance working on a session now: SET NX PX, a short lease
 *   target:<service>/<env>  "<session id> <trigger time ms>": the target's newest session
 * Every change is one Lua script, so two instances never both hold a session, a newer
 * deploy on a target ends the older session, and a worker whose lease lapsed cannot write.
 */
#ifndef DQ_WATCH_H
#define DQ_WATCH_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "probe.h"
#include "redis.h"
#include "util.h"

#define DQ_WATCH_KEEP_SAMPLES_MIN 10  /* samples kept per probe at least (evidence) */
#define DQ_WATCH_KEEP_SAMPLES_MAX 100
#define DQ_WATCH_EVIDENCE_SAMPLES 10   /* samples of the breaching probe put in evidence */

typedef struct dq_watch_config {
    int64_t interval_ms;     /* default 10 s */
    int64_t window_ms;       /* default 15 min */
    int failure_threshold;   /* default 3 */
    double max_error_rate;   /* default 0.5; share of failures in [0, 1] */
    int error_rate_window;   /* default 10 samples */
    dq_probe **probes;
    size_t n_probes;
} dq_watch_config;

/* Read a target's monitor settings. obj holds the keys of docs/configuration.md
 * (interval, window, failure_threshold, max_error_rate, error_rate_window, probes);
 * defaults (may be NULL) holds fallbacks for every key but probes (the top-level
 * `monitor:` section). `where` prefixes errors. A probe's default timeout is the interval
 * and an HTTP probe's attempt ends at its max_latency (probe.h), so a round run with
 * dq_probe_run_all() fits in one interval and ticks stay on the interval grid; an
 * explicit timeout longer than the interval is kept (a slow but healthy endpoint passes;
 * only rounds whose probes time out then take longer than an interval). Returns
 * NULL with "<where>.<key>: reason" in err; a config without probes is an error. */
dq_watch_config *dq_watch_config_from_json(const cJSON *obj, const cJSON *defaults,
                                           const char *where, char *err, size_t errlen);
void dq_watch_config_free(dq_watch_config *c);

/* A sample as kept in a session, with what it counted as after the missing policy. */
typedef enum { DQ_COUNT_PASS = 0, DQ_COUNT_FAIL, DQ_COUNT_SKIP } dq_count;

typedef struct dq_watch_sample {
    dq_sample s;
    dq_count counted;
} dq_watch_sample;

typedef struct dq_watch_probe_state {
    char name[65];
    int consecutive;          /* counted failures in a row */
    int last;                 /* last counted outcome: -1 none, 0 pass, 1 fail (for hold) */
    int64_t streak_start_ms;  /* first failure of the current streak, 0 when none */
    dq_watch_sample *samples; /* oldest first */
    size_t n_samples, cap;
} dq_watch_probe_state;

typedef struct dq_watch_state {
    char id[DQ_UUID_LEN + 1];            /* the session id */
    char trigger[32];                    /* "deploy.succeeded" | "rollback.succeeded" */
    char trigger_event_id[DQ_UUID_LEN + 1];
    char *deployment_id, *service, *environment, *version; /* of the watched deploy */
    int64_t fence;
    int64_t trigger_at_ms;               /* the trigger event's time (orders sessions) */
    int64_t started_ms, ends_ms;         /* the window */
    int64_t interval_ms, window_ms;      /* as when the session started */
    int64_t next_ms;                     /* when the next tick is due */
    int64_t ticks;                       /* probe rounds done */
    int64_t n_samples;                   /* samples taken, every probe */
    int degraded;
    int64_t first_failure_ms;            /* first failing sample since last healthy, or 0 */
    dq_watch_probe_state *probes;
    size_t n_probes;
} dq_watch_state;

/* A new session for the watched deploy, starting at now_ms with cfg's window and
 * interval; the id is derived from the trigger event id (a redelivered trigger gives the
 * same session). Strings are copied (NULL allowed, except trigger ids). NULL on OOM. */
dq_watch_state *dq_watch_state_new(const dq_watch_config *cfg, const char *trigger,
                                   const char *trigger_event_id, int64_t trigger_at_ms,
                                   const char *deployment_id, const char *service,
                                   const char *environment, const char *version, int64_t fence,
                                   int64_t now_ms);
void dq_watch_state_free(dq_watch_state *st);
/* JSON text of the state (malloc'd) and back (NULL with a reason on a bad document). */
char *dq_watch_state_encode(const dq_watch_state *st);
dq_watch_state *dq_watch_state_decode(const char *json, size_t len, char *err, size_t errlen);

typedef enum {
    DQ_WATCH_PROBE = 0, /* take samples now */
    DQ_WATCH_VERIFY,    /* the window passed clean: verified, no probe */
    DQ_WATCH_EXPIRE,    /* the extension after a degraded window end ran out: rollback */
} dq_watch_action;

/* What a tick due at now_ms should do. */
dq_watch_action dq_watch_plan(const dq_watch_config *cfg, const dq_watch_state *st,
                              int64_t now_ms);

typedef enum { DQ_VERDICT_NONE = 0, DQ_VERDICT_VERIFIED, DQ_VERDICT_ROLLBACK } dq_verdict;

typedef struct dq_watch_result {
    int health_changed;  /* the session turned degraded or recovered on this tick */
    int degraded;        /* the session's health after the tick */
    int probe;           /* index of the probe behind the change or the verdict, -1 none */
    dq_verdict verdict;
    char kind[32];       /* rollback: consecutive_failures | error_rate | degraded_at_window_end */
    double rate;         /* error_rate: the share observed */
    int failures, of;    /* failures among the samples judged */
    int64_t detected_ms; /* the first failing sample behind the verdict */
    int64_t decided_ms;  /* when the verdict was reached */
    char reason[512];    /* one line for people */
} dq_watch_result;

/* Fold one tick's samples (samples[i] belongs to cfg->probes[i]) into st at now_ms,
 * apply the rules, and schedule st->next_ms: one interval after the tick was due (the
 * grid), not after it ended; a tick late by half an interval or more re-anchors the grid
 * on the time it began. Probes are matched to st by name; a probe
 * the session does not know yet is added. Fills *res. 0, or -1 on allocation failure. */
int dq_watch_apply(const dq_watch_config *cfg, dq_watch_state *st, const dq_sample *samples,
                   int64_t now_ms, dq_watch_result *res);
/* The verdict of a tick that planned DQ_WATCH_VERIFY or DQ_WATCH_EXPIRE, into *res. */
void dq_watch_close(const dq_watch_config *cfg, const dq_watch_state *st,
                    dq_watch_action action, int64_t now_ms, dq_watch_result *res);

/* The evidence object of rollback.requested for res (probe, kind, check, observed,
 * threshold, failures/of, the last samples, first_failure_at = detected_at, decided_at,
 * window times). NULL on allocation failure; the caller frees. */
cJSON *dq_watch_evidence(const dq_watch_config *cfg, const dq_watch_state *st,
                         const dq_watch_result *res);
/* One sample as an event object {at, outcome, counted, check, status?, latency_ms?,
 * value?, detail}. */
cJSON *dq_watch_sample_json(const dq_watch_sample *ws);

/* ---- sessions in Redis ---- */

typedef enum {
    DQ_WATCH_START_NEW = 0,  /* created; the caller announces it, then arms it */
    DQ_WATCH_START_ACTIVE,   /* it exists and runs (a redelivered trigger): announce, arm */
    DQ_WATCH_START_ENDED,    /* it exists and has ended (or its record expired and the target key still names it): nothing to do */
    DQ_WATCH_START_STALE,    /* the target already has a newer session: not started */
} dq_watch_start;

/* Create st's session and make it the target's newest, ending the target's older session
 * (its id into superseded, "" when none). It is not due until dq_watch_arm(). Returns a
 * dq_watch_start, or -1 with a reason in err (Redis unreachable). */
int dq_watch_store_start(dq_redis *r, const dq_watch_state *st, char *superseded,
                         size_t superseded_len, char *err, size_t errlen);
/* Make an active session due at due_ms unless it is already scheduled. 0, or -1. */
int dq_watch_arm(dq_redis *r, const char *id, int64_t due_ms, char *err, size_t errlen);

/* Up to max ids of sessions due at now_ms into ids; *next_due_ms gets the earliest due
 * time of all sessions (-1 when none). Returns the number of ids, or -1. */
int dq_watch_due(dq_redis *r, int64_t now_ms, char ids[][DQ_UUID_LEN + 1], int max,
                 int64_t *next_due_ms);

/* Take the lease of a due session for lease_ms with token. Returns the session (the
 * caller frees) or NULL: not due, held by another instance, ended, or an error (then
 * *error is set to 1). */
dq_watch_state *dq_watch_claim(dq_redis *r, const char *id, const char *token, int64_t now_ms,
                               int64_t lease_ms, int *error);
/* 1 when token still holds the session's lease and the session is active (the lease is
 * renewed for lease_ms); 0 when not; -1 on error. Asked before emitting a verdict. */
int dq_watch_still_mine(dq_redis *r, const char *id, const char *token, int64_t lease_ms);
/* Write st back and release the lease. final NULL: reschedule at st->next_ms; else the
 * session ends with status final ("verified", "rollback_requested") and is kept for
 * keep_ms. 1 written, 0 the lease was lost or the session ended meanwhile (nothing
 * written), -1 error. */
int dq_watch_commit(dq_redis *r, const dq_watch_state *st, const char *token, const char *final,
                    int64_t keep_ms);
/* Give the lease back without writing (the instance cannot work on the session). */
int dq_watch_release(dq_redis *r, const char *id, const char *token);
/* The status of a session ("active", ...) into out; "" when unknown. 0, or -1. */
int dq_watch_status(dq_redis *r, const char *id, char *out, size_t outlen);

#endif
