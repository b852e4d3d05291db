/*
 * report.h - the delivery figures of `deployq report`, the registry's /api/report and its
 * /metrics, computed from a state fold (fold.h): the memo's five numbers (success rate,
 * MTTR, share of issues caught before production, time to deploy, CI/CD cost per
 * deployment) plus deployment frequency, lead time and change-failure rate.
 * docs/operations.md ("Delivery figures") puts each one next to the memo's target.
 *
 * Definitions (what the numbers mean, exactly):
 *   - A deployment is in the report when its first event is in [since, until) and its
 *     target matches the service/environment filters. A rollback is in it when it was
 *     requested (or, without a request, started) in [since, until) on a matching target.
 *   - failed change = a deployment that reached deploy.succeeded and later had a rollback
 *     requested: by the monitor (its watch failed; also under `rollback: notify`, where
 *     nothing is rolled back) or by a person (`deployq rollback`).
 *   - success rate = (succeeded - failed changes) / (succeeded + failed): a deployment
 *     later rolled back, or whose watch failed, is not a success. Rejected ones never ran.
 *   - change-failure rate = failed changes / succeeded.
 *   - deployment frequency = succeeded deployments per day over the window: until - since
 *     when both are given, else from the first to the last event of the deployments in it.
 *   - lead time = deploy.succeeded at - deploy.validated data.commit_at (only deployments
 *     whose request carried commit_at).
 *   - time to deploy = deploy.verified at (the monitor's verdict) - the request: deploy.
 *     validated data.issued_at, else the deployment's first event. Only verified
 *     deployments; per environment (the targets), and for opts->staging_env (default
 *     "staging") on its own line, against the memo's < 15 min.
 *   - MTTR = for every rollback that ended: its end - the start of the trouble. The start
 *     is rollback.requested evidence.first_failure_at, else evidence.detected_at, else the
 *     request's at; a rollback started without a request starts at rollback.started. The
 *     end is data.restored_at (else the event's at) of rollback.succeeded, or the at of
 *     rollback.failed (the time to the failure: nothing was restored). A rollback the
 *     `notify` policy did not attempt and one still open have no time (counted apart).
 *     Manual rollbacks (requested_by other than "deployq-monitor" and "deployq-executor" -
 *     a canary abort, whose rollback.started/succeeded carry data.requested_by and
 *     data.detected_at, the first bad sample - or none) are in it and counted. A rollback
 *     without a request starts at data.detected_at when that is before rollback.started.
 *     n says how many times are in the distribution.
 *   - caught before production = deployments rejected by a gate (freeze, drift, drift_values, promotion,
 *     an approver's denial: fold.h DQ_REJECT_GATE), in any environment, plus failed
 *     changes outside production (a staging watch or rollback stopped them), plus
 *     deployments caught by canary: their canary was aborted (canary.aborted) before it
 *     reached weight 100, in any environment - a canary in production is still caught
 *     before full production traffic, with the share of traffic it reached (the largest
 *     weight of its canary: max and median over those deployments, in percent; a canary
 *     aborted at 100 had all the traffic: not a catch); escaped =
 *     failed changes in production; stopped before production = caught / (caught +
 *     escaped). Requests refused as invalid input (stale, replayed, unsigned, malformed:
 *     DQ_REJECT_INVALID) are "refused as invalid", never catches, and other refusals
 *     (internal errors, expired approvals) are neither. A deploy.failed outside production
 *     is not a catch (the provider failed; no check judged the change). Stage 1 (`deployq
 *     check`) runs before any event exists: its catches are not in the log, so not here.
 *     "production" is opts->production_env (default "production").
 *   - CI/CD cost per deployment = data.cost.amount of the deployment's terminal event
 *     (fold.h dq_fold_cost), over the deployments that ran and ended (deploy.succeeded,
 *     or deploy.failed after deploy.started, or any with a cost): median, p90, max and total of the priced
 *     ones, against the memo's < $0.50 (the median). Priced by wall time (a provider that
 *     gives no figures) is counted as an estimate, and the line says so whenever one is
 *     in it; a deployment on a provider with no `cost:` is "not priced" and one whose
 *     figures could not be read "unknown": neither is a 0 in the distribution.
 *   - median and p90: linear interpolation between the closest ranks (numpy's default):
 *     for sorted v[0..n-1], p -> v[floor(p(n-1))] + frac * (next - that).
 * A rate or a duration with nothing to measure is absent (JSON null, "-" in the table).
 */
#ifndef DQ_REPORT_H
#define DQ_REPORT_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#include "fold.h"

typedef struct {
    int64_t since_ms, until_ms;  /* 0: unbounded */
    const char *service;         /* NULL: every service */
    const char *environment;     /* NULL: every environment */
    const char *production_env;  /* NULL: "production" */
    const char *staging_env;     /* NULL: "staging" (time to deploy against its target) */
    int by_target;               /* 1: also one report per service/environment (targets) */
} dq_report_opts;

/* A distribution of durations in milliseconds. */
typedef struct {
    uint64_t n;           /* 0: nothing measured; median/p90 meaningless */
    double median_ms, p90_ms;
    double min_ms, max_ms;
} dq_report_dist;

typedef struct dq_report_target dq_report_target;

typedef struct {
    int64_t since_ms, until_ms;        /* the window used (0 when unbounded and empty) */
    uint64_t deployments;              /* every deployment in the window */
    uint64_t rejected, failed, succeeded, in_progress;
    uint64_t failed_changes;           /* succeeded, then a rollback requested */
    uint64_t rejected_gate, rejected_invalid, rejected_other; /* rejected, by kind */
    uint64_t rollbacks, rollbacks_succeeded, rollbacks_failed;
    uint64_t rollbacks_not_attempted, rollbacks_open; /* no MTTR time: counted apart */
    uint64_t mttr_manual;              /* of the MTTR times, manual rollbacks (requested_by
                                          neither "deployq-monitor" nor "deployq-executor") */
    uint64_t caught, escaped;          /* bad changes stopped before / reaching production */
    uint64_t caught_by_gate, caught_outside_production; /* caught = their sum */
    uint64_t caught_by_canary;         /* ... plus this: a canary aborted before 100 */
    double canary_share_median, canary_share_max; /* traffic they reached, percent; 0: none */
    uint64_t unverified;               /* succeeded, no verdict (unwatched or still watched) */
    int has_success_rate, has_change_failure_rate, has_frequency, has_stopped_share;
    double success_rate;               /* 0..1 */
    double change_failure_rate;        /* 0..1 */
    double deploys_per_day;
    double window_days;
    double stopped_before_production;  /* 0..1 */
    dq_report_dist lead_time, time_to_deploy, time_to_deploy_staging, mttr;
    /* CI/CD cost per deployment: the deployments that ran, by how they were priced */
    uint64_t cost_priced;              /* with an amount (provider figures or estimate) */
    uint64_t cost_estimated;           /* of those, priced by wall time */
    uint64_t cost_not_priced, cost_unknown;
    double cost_median, cost_p90, cost_max, cost_total; /* over cost_priced; 0 when none */
    dq_report_target *targets;         /* opts->by_target: one per target, by key; else NULL */
    size_t n_targets;
} dq_report;

struct dq_report_target {
    char *service, *environment;
    dq_report r;                       /* the figures of that target alone (no targets) */
};

/* The memo's targets (docs/operations.md), shown beside the figures. */
#define DQ_REPORT_TARGET_SUCCESS_RATE 0.99     /* > 99% */
#define DQ_REPORT_TARGET_MTTR_MS 300000.0      /* < 5 min (median) */
#define DQ_REPORT_TARGET_STOPPED 0.95          /* > 95% */
#define DQ_REPORT_TARGET_STAGING_TTD_MS 900000.0 /* < 15 min (p90, staging) */
#define DQ_REPORT_TARGET_COST 0.50             /* < $0.50 per deployment (median) */

/* Compute the figures over f (not changed). opts may be NULL (everything). Returns 0, -1
 * on allocation failure (out cleared). Release with dq_report_clear(). */
int dq_report_compute(const dq_fold *f, const dq_report_opts *opts, dq_report *out);
/* Frees what dq_report_compute() allocated (the targets); r may be zeroed. */
void dq_report_clear(dq_report *r);

/* The report as JSON (caller frees): {"window":{...},"deployments":{...},
 * "success_rate":0.75,"change_failure_rate":...,"deploys_per_day":...,
 * "stopped_before_production":...,"caught_by_canary_share":{"n","median","max"} (percent),"lead_time_ms":{"n","median","p90","min","max"},
 * "time_to_deploy_ms":{...},"time_to_deploy_staging_ms":{...},"mttr_ms":{...},
 * "cost_per_deployment":{"priced","estimated","not_priced","unknown","estimate",
 * "median","p90","max","total"},
 * "rollbacks":{...},"targets":[{"service","environment",...the same}]} ("targets" only with
 * by_target). NULL on allocation failure. */
cJSON *dq_report_json(const dq_report *r);
/* "service,environment,metric,value" lines with a header, one figure per line (durations
 * in ms): the whole report's rows with service and environment "*", then each target's. */
void dq_report_write_csv(const dq_report *r, FILE *out);
/* A human table with durations as "1h2m3s", the memo's target beside each of its numbers,
 * then one line per target when there are targets. */
void dq_report_write_table(const dq_report *r, FILE *out);

/* A rollback's time for MTTR (the definition above) in *ms: 1, or 0 when it has none (open,
 * or not attempted). The registry's /metrics histogram uses it too. */
int dq_report_rollback_ms(const dq_fold_rollback *r, double *ms);

/* The percentile p (0..1) of n sorted values, by linear interpolation (see above). */
double dq_report_percentile(const double *sorted, size_t n, double p);

#endif
