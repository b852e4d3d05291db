/*
 * report.h - the delivery figures of `deployq report` (and the registry's /api/report),
 * computed from a state fold (fold.h): deployment success rate, time to restore (MTTR),
 * deployment frequency, lead time, change-failure rate, the share of bad changes stopped
 * before production, and time to deploy.
 *
 * Definitions (what the numbers mean, exactly):
 *   - A deployment is in the report when its first event is in [since, until) and its
 *     target matches the service/environment filters. A rollback is in it when it was
 *     requested (or, without a request, started) in [since, until) on a matching target.
 *   - success rate = succeeded / (succeeded + failed) over deployments that reached
 *     deploy.succeeded or deploy.failed (rejected ones never ran; "succeeded" counts a
 *     deployment that was later rolled back too: the provider did deploy it).
 *   - change-failure rate = deployments that succeeded and later had a rollback requested /
 *     deployments that succeeded.
 *   - deployment frequency = succeeded deployments per day over the window: until - since
 *     when both are given, else from the first to the last event of the deployments in it.
 *   - lead time = deploy.succeeded at - deploy.validated data.commit_at (only deployments
 *     whose request carried commit_at).
 *   - time to deploy = deploy.succeeded at - deploy.validated at.
 *   - MTTR (time to restore) = rollback.succeeded data.restored_at (else its at) - the
 *     start of the trouble: rollback.requested evidence.first_failure_at, else
 *     evidence.detected_at, else rollback.succeeded data.detected_at, else the request's at.
 *     Only rollbacks that succeeded.
 *   - bad changes stopped before production = caught / (caught + escaped), where caught =
 *     deployments rejected (any environment) plus deployments outside production that
 *     failed or had a rollback requested, and escaped = production deployments with a
 *     rollback requested. "production" is opts->production_env (default "production").
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
} dq_report_opts;

/* A distribution of durations in milliseconds. */
typedef struct {
    uint64_t n;           /* 0: nothing measured; median/p90 meaningless */
    double median_ms, p90_ms;
    double min_ms, max_ms;
} dq_report_dist;

typedef struct {
    int64_t since_ms, until_ms;        /* the window used (0 when unbounded and empty) */
    uint64_t deployments;              /* every deployment in the window */
    uint64_t rejected, failed, succeeded, in_progress;
    uint64_t rolled_back;              /* succeeded, then a rollback requested */
    uint64_t rollbacks, rollbacks_succeeded, rollbacks_failed;
    uint64_t caught, escaped;          /* bad changes stopped before / reaching production */
    int has_success_rate, has_change_failure_rate, has_frequency, has_stopped_share;
    double success_rate;               /* 0..1 */
    double change_failure_rate;        /* 0..1 */
    double deploys_per_day;
    double window_days;
    double stopped_before_production;  /* 0..1 */
    dq_report_dist lead_time, time_to_deploy, mttr;
} dq_report;

/* Compute the figures over f (not changed). opts may be NULL (everything). Returns 0, -1
 * on allocation failure. */
int dq_report_compute(const dq_fold *f, const dq_report_opts *opts, dq_report *out);

/* The report as JSON (caller frees): {"window":{...},"deployments":{...},
 * "success_rate":0.75,"change_failure_rate":...,"deploys_per_day":...,
 * "stopped_before_production":...,"lead_time_ms":{"n","median","p90","min","max"},
 * "time_to_deploy_ms":{...},"mttr_ms":{...},"rollbacks":{...}}. NULL on allocation failure. */
cJSON *dq_report_json(const dq_report *r);
/* "metric,value" lines with a header, one figure per line (durations in ms). */
void dq_report_write_csv(const dq_report *r, FILE *out);
/* A human table with durations as "1h2m3s". */
void dq_report_write_table(const dq_report *r, FILE *out);

/* The percentile p (0..1) of n sorted values, by linear interpolation (see above). */
double dq_report_percentile(const double *sorted, size_t n, double p);

#endif
