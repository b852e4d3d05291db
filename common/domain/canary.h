/*
 * canary.h - canary releases: a new version takes a growing share of a target's traffic,
 * step by step, and goes on only while it compares well with the version it replaces.
 *
 * A canary target is a blue-green target (bluegreen.h) whose router takes weights: the
 * canary is the idle color (dq_bg_pick_idle), the stable version the live one. The
 * executor deploys the canary to the idle color, probes it once (dq_bg_probe), then
 * dq_canary_run walks the steps:
 *   - set the weights (canary w, stable 100 - w) and read them back (dq_bg_set_weights);
 *     canary.step once the router said so;
 *   - hold the step: every analysis.interval one probe of each color, both at once, and
 *     one read of the router's weights (it must still say what it was told);
 *   - an analysis step is judged (dq_analysis_judge) after every round once it can be:
 *     a failure aborts at once (fail fast); it passes when its hold is over and the
 *     verdict is a pass (canary.analysis, passed true). A verdict still waiting for
 *     samples when the hold is over keeps sampling up to max_step_time;
 *   - a pause step only holds: it aborts on absolute failures alone (the canary's failed
 *     probes beyond analysis.max_error_rate, counted over at least min_samples);
 *   - after the last step (100) canary.promoted; the caller then records the canary
 *     color as live (dq_bg_set_live) and emits traffic.switched.
 * On a failure (analysis, probe, router, max_step_time, cancelled) the canary's weight is
 * set to 0 and the stable's to 100 at once, before any event is sent (a slow or absent
 * broker never holds traffic on a failed canary), and the router asked again every 500 ms
 * until it confirms, for up to max_step_time; then the failing canary.analysis,
 * canary.aborted, and (except for a cancel,
 * which is an operator's decision and not an incident) rollback.started and
 * rollback.succeeded - or rollback.failed when the router never confirmed - with method
 * "canary_abort": the canary's traffic going back to the stable version is the rollback,
 * and its MTTR runs from the first failed canary sample to the router's confirmation.
 * A restore is never abandoned for a shutdown: like a blue-green switch it is let finish.
 *
 * The first deploy of a target (no color live) is not a canary, there is nothing to
 * compare with: weights 100 for its color, one canary.step at 100, canary.promoted.
 *
 * Stopped (should_continue said 0: shutdown, lease lost; or an event not delivered) while
 * the lock is still held, the canary's weight is set to 0 once more (one attempt, no
 * events: a worker restarting mid-rollout does not leave a canary on a share of the
 * traffic nobody watches); with the lock lost, the router is left to its new holder. The
 * run that resumes the deploy (adopted, as blue-green's are) restarts the rollout at
 * step 1, setting the weights itself. Its events carry the new lock's fence in their ids,
 * so they are not taken for repeats of the first run's.
 *
 * Configuration (per environment; docs/configuration.md "Canary"):
 *   strategy: canary                  # or a request with "strategy": "canary"
 *   blue_green: {...}                 # colors, probe, and a router that takes weights
 *   canary:
 *     steps:                          # increasing weights 1..100, the last 100
 *       - {weight: 5, analysis: 10s}  # hold 10 s comparing canary and stable
 *       - {weight: 50, pause: 5s}     # hold 5 s, absolute checks only
 *       - 100                         # analysis for analysis.duration
 *     max_step_time: 5m               # a step undecided by then aborts (default 5m)
 *     analysis:
 *       duration: 30s                 # default hold (default 30s)
 *       interval: 500ms               # one sample of each color per interval (default 500ms)
 *       min_samples: 20               # per side before a verdict (default 20, at least 8)
 *       error_tolerance: 1%           # analysis.h (a percentage "1%" or a fraction 0.01)
 *       max_error_rate: 5%
 *       latency: {alpha: 0.05, tolerance: 10%, min_delta: 5ms}
 */
#ifndef DQ_CANARY_H
#define DQ_CANARY_H

#include <stddef.h>
#include <stdint.h>

#include "analysis.h"
#include "bluegreen.h"
#include "config.h"
#include "event.h"

#define DQ_CANARY_MAX_STEPS 32

typedef struct dq_canary_step {
    int weight;      /* the canary's percent, 1..100 */
    int pause;       /* 1: a pause step (no comparison), 0: an analysis step */
    int64_t hold_ms; /* how long the step holds */
} dq_canary_step;

typedef struct dq_canary {
    dq_canary_step steps[DQ_CANARY_MAX_STEPS];
    size_t n_steps;
    int64_t max_step_time_ms;  /* default 5 min */
    int64_t duration_ms;       /* default hold of a bare-number step, 30 s */
    int64_t interval_ms;       /* one round of samples, default 500 ms */
    dq_analysis_criteria criteria;
} dq_canary;

/* 1 when the environment has a `canary:` section. */
int dq_canary_configured(const dq_config *cfg, const char *service, const char *environment);

/* 1 when a deploy of service/environment is a canary: request_strategy (the request's,
 * may be NULL) is "canary", or the environment's strategy is canary and the request did
 * not ask for "blue-green" (deploy.validated carries "rolling" when the request named no
 * strategy, so "rolling" does not turn a canary target's default off). */
int dq_canary_applies(const dq_config *cfg, const char *service, const char *environment,
                      const char *request_strategy);

/* Read and check the target's canary section, and that its blue_green section loads and
 * has a router that takes weights. 0 with *c filled; -1 with "path:line: message" in err
 * (never a secret). */
int dq_canary_load(const dq_config *cfg, const char *service, const char *environment,
                   dq_canary *c, char *err, size_t errlen);

/* Deliver one event (as execute.h's sink). 0 delivered, -1 not (the rollout then stops
 * without a conclusion). The event is borrowed. */
typedef int (*dq_canary_sink_fn)(void *ctx, const dq_event *ev, char *err, size_t errlen);

typedef struct dq_canary_rollout {
    const dq_canary *canary;
    const dq_bluegreen *bg;    /* its router takes weights */
    const char *deployment_id, *service, *environment, *actor;
    int64_t fence;
    const char *canary_color;  /* the idle color, where the canary was deployed */
    const char *stable_color;  /* the live color; NULL or "": none (the first deploy) */
    const char *canary_version;
    const char *stable_version; /* NULL or "": unknown */
    dq_canary_sink_fn sink;
    void *sink_ctx;
    /* Asked between rounds: 0 stops (shutdown, lease lost). NULL: never stop. */
    int (*should_continue)(void *ctx);
    /* 1 while this run still holds the target's lock: a stopped rollout then puts the
     * traffic back on the stable version (one attempt) before it returns; 0 leaves the
     * router to the lock's new holder. NULL: always held. */
    int (*lock_held)(void *ctx);
    /* 1 when an operator asked to cancel this deployment (by whom in by). NULL: never. */
    int (*cancel_requested)(void *ctx, char *by, size_t bylen);
    void *ctx;
} dq_canary_rollout;

typedef enum {
    DQ_CANARY_PROMOTED = 0, /* every step passed; canary.promoted delivered */
    DQ_CANARY_ABORTED,      /* stopped on a failure; its events delivered */
    DQ_CANARY_STOPPED,      /* should_continue said 0, or an event was not delivered */
} dq_canary_status;

typedef struct dq_canary_outcome {
    char reason[16];   /* ABORTED: analysis | probe | router | max_step_time | cancelled */
    char detail[512];  /* ABORTED: one line for people; STOPPED: why */
    int step;          /* the step it was at (1-based) */
    int weight;        /* the canary's weight when it stopped */
    int max_weight;
    int weight_restored;       /* ABORTED: the router confirmed canary 0 / stable 100 */
    int64_t first_bad_ms;      /* the first failed canary sample of the step, 0: none */
    int64_t restored_ms;       /* when the router confirmed, 0: not */
} dq_canary_outcome;

/* Walk the steps (see above). Returns the status with out filled. */
dq_canary_status dq_canary_run(const dq_canary_rollout *ro, dq_canary_outcome *out);

#endif
