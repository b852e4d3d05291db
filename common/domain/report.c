/*
 * report.c - the delivery figures of report.h, computed from the deployments and rollbacks
 * of a state fold. Nothing here reads files or the clock: the same fold and options always
 * give the same figures, which is what lets a test assert them exactly.
 */
#include "report.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Rounding to the nearest integer, halves away from zero, without libm (common/ links no
 * math library). Durations here are far inside the range of long long. */
static double rnd(double x)
{
    return (double)(long long)(x < 0 ? x - 0.5 : x + 0.5);
}

double dq_report_percentile(const double *sorted, size_t n, double p)
{
    double pos, frac;
    size_t lo;

    if (n == 0)
        return 0;
    pos = p * (double)(n - 1);
    lo = (size_t)pos; /* pos >= 0: truncation is floor */
    if (lo + 1 >= n)
        return sorted[n - 1];
    frac = pos - (double)lo;
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac;
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

typedef struct {
    double *v;
    size_t n, cap;
} dvec;

static int dvec_push(dvec *d, double x)
{
    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 64;
        double *nv = realloc(d->v, ncap * sizeof *nv);

        if (!nv)
            return -1;
        d->v = nv;
        d->cap = ncap;
    }
    d->v[d->n++] = x;
    return 0;
}

static void dist_from(dvec *d, dq_report_dist *out)
{
    memset(out, 0, sizeof *out);
    if (d->n == 0)
        return;
    qsort(d->v, d->n, sizeof *d->v, dbl_cmp);
    out->n = d->n;
    out->median_ms = dq_report_percentile(d->v, d->n, 0.5);
    out->p90_ms = dq_report_percentile(d->v, d->n, 0.9);
    out->min_ms = d->v[0];
    out->max_ms = d->v[d->n - 1];
}

static int matches(const dq_report_opts *o, const char *service, const char *env)
{
    if (o->service && (!service || strcmp(o->service, service) != 0))
        return 0;
    if (o->environment && (!env || strcmp(o->environment, env) != 0))
        return 0;
    return 1;
}

static int in_window(const dq_report_opts *o, int64_t at)
{
    return (!o->since_ms || at >= o->since_ms) && (!o->until_ms || at < o->until_ms);
}

/* When the trouble behind rollback r began and when it ended, for MTTR: 1 with both set,
 * 0 when r has no time (still open, or not attempted under the notify policy). */
static int rollback_span(const dq_fold_rollback *r, int64_t *from, int64_t *to)
{
    *from = *to = 0;
    if (r->status == DQ_ROLLBACK_SUCCEEDED)
        *to = r->restored_at_ms;
    else if (r->status == DQ_ROLLBACK_FAILED && !r->not_attempted)
        *to = r->finished_at_ms; /* the time to the failure: nothing was restored */
    else
        return 0;
    /* The fold's detected_at is the evidence, else the request; a rollback started without
     * a request (a manual one) has none of them and starts when it started. */
    *from = r->requested_at_ms || !r->started_at_ms ? r->detected_at_ms : r->started_at_ms;
    /* ... unless it said when the trouble began (a canary abort: the first bad sample). */
    if (!r->requested_at_ms && r->detected_at_ms && r->detected_at_ms < *from)
        *from = r->detected_at_ms;
    if (!*from)
        *from = *to;
    return 1;
}

int dq_report_rollback_ms(const dq_fold_rollback *r, double *ms)
{
    int64_t from, to;

    if (!rollback_span(r, &from, &to))
        return 0;
    *ms = (double)(to - from);
    return 1;
}

static int is_manual(const dq_fold_rollback *r)
{
    return !r->requested_by || (strcmp(r->requested_by, "deployq-monitor") != 0 &&
                                strcmp(r->requested_by, "deployq-executor") != 0);
}

static int compute_one(const dq_fold *f, const dq_report_opts *o, dq_report *out)
{
    const char *prod = o->production_env ? o->production_env : "production";
    const char *staging = o->staging_env ? o->staging_env : "staging";
    dvec lead = {0}, ttd = {0}, ttd_staging = {0}, mttr = {0}, cost = {0}, share = {0};
    dq_fold_deployment *const *deps;
    dq_fold_rollback *const *rbs;
    size_t nd, nr;
    int64_t first = 0, last = 0;
    int rc = -1;

    memset(out, 0, sizeof *out);
    deps = dq_fold_deployments(f, &nd);
    for (size_t i = 0; i < nd; i++) {
        const dq_fold_deployment *d = deps[i];
        int is_prod = d->environment && strcmp(d->environment, prod) == 0;
        int failed_change = d->succeeded_at_ms && d->rollback_requested_at_ms;

        if (!matches(o, d->service, d->environment) || !in_window(o, d->first_at_ms))
            continue;
        out->deployments++;
        if (!first || d->first_at_ms < first)
            first = d->first_at_ms;
        if (d->last_at_ms > last)
            last = d->last_at_ms;
        if (d->rejected_at_ms) {
            out->rejected++;
            if (d->reject_kind == DQ_REJECT_GATE)
                out->rejected_gate++;
            else if (d->reject_kind == DQ_REJECT_INVALID)
                out->rejected_invalid++;
            else
                out->rejected_other++;
        }
        if (d->failed_at_ms && !d->succeeded_at_ms)
            out->failed++;
        if (d->succeeded_at_ms) {
            out->succeeded++;
            if (failed_change)
                out->failed_changes++;
            else if (!d->verified_at_ms)
                out->unverified++;
            if (d->commit_at_ms && dvec_push(&lead, (double)(d->succeeded_at_ms -
                                                              d->commit_at_ms)) != 0)
                goto out;
        }
        if (d->verified_at_ms) {
            double ms = (double)(d->verified_at_ms - d->requested_at_ms);

            if (dvec_push(&ttd, ms) != 0 ||
                (d->environment && strcmp(d->environment, staging) == 0 &&
                 dvec_push(&ttd_staging, ms) != 0))
                goto out;
        }
        if (!d->rejected_at_ms && !d->failed_at_ms && !d->succeeded_at_ms)
            out->in_progress++;
        if (d->cost == DQ_FOLD_COST_PROVIDER || d->cost == DQ_FOLD_COST_ESTIMATE) {
            out->cost_priced++;
            out->cost_estimated += d->cost == DQ_FOLD_COST_ESTIMATE;
            out->cost_total += d->cost_amount;
            if (dvec_push(&cost, d->cost_amount) != 0)
                goto out;
        } else if (d->cost == DQ_FOLD_COST_UNKNOWN) {
            out->cost_unknown++;
        } else if (d->succeeded_at_ms || (d->failed_at_ms && d->started_at_ms)) {
            out->cost_not_priced++; /* it ran, on a provider without `cost:` */
        }
        if (d->reject_kind == DQ_REJECT_GATE) {
            out->caught_by_gate++;
        } else if (d->canary_aborted && d->canary_max_weight < 100) {
            out->caught_by_canary++;
            if (dvec_push(&share, (double)d->canary_max_weight) != 0)
                goto out;
        } else if (failed_change && !is_prod)
            out->caught_outside_production++;
        else if (failed_change)
            out->escaped++;
    }
    out->caught = out->caught_by_gate + out->caught_outside_production + out->caught_by_canary;

    rbs = dq_fold_rollbacks(f, &nr);
    for (size_t i = 0; i < nr; i++) {
        const dq_fold_rollback *r = rbs[i];
        int64_t at = r->requested_at_ms ? r->requested_at_ms : r->started_at_ms;
        double ms;

        if (!matches(o, r->service, r->environment) || !in_window(o, at))
            continue;
        out->rollbacks++;
        if (r->status == DQ_ROLLBACK_SUCCEEDED)
            out->rollbacks_succeeded++;
        else if (r->status == DQ_ROLLBACK_FAILED && r->not_attempted)
            out->rollbacks_not_attempted++; /* the notify policy attempts nothing */
        else if (r->status == DQ_ROLLBACK_FAILED)
            out->rollbacks_failed++;
        else
            out->rollbacks_open++;
        if (!dq_report_rollback_ms(r, &ms))
            continue;
        if (dvec_push(&mttr, ms) != 0)
            goto out;
        out->mttr_manual += is_manual(r);
    }

    if (out->succeeded + out->failed) {
        out->has_success_rate = 1;
        out->success_rate = (double)(out->succeeded - out->failed_changes) /
                            (double)(out->succeeded + out->failed);
    }
    if (out->succeeded) {
        out->has_change_failure_rate = 1;
        out->change_failure_rate = (double)out->failed_changes / (double)out->succeeded;
    }
    if (out->caught + out->escaped) {
        out->has_stopped_share = 1;
        out->stopped_before_production =
            (double)out->caught / (double)(out->caught + out->escaped);
    }
    out->since_ms = o->since_ms ? o->since_ms : first;
    out->until_ms = o->until_ms ? o->until_ms : last;
    if (out->until_ms > out->since_ms) {
        out->window_days = (double)(out->until_ms - out->since_ms) / 86400000.0;
        out->has_frequency = 1;
        out->deploys_per_day = (double)out->succeeded / out->window_days;
    }
    dist_from(&lead, &out->lead_time);
    dist_from(&ttd, &out->time_to_deploy);
    dist_from(&ttd_staging, &out->time_to_deploy_staging);
    dist_from(&mttr, &out->mttr);
    if (cost.n) {
        qsort(cost.v, cost.n, sizeof *cost.v, dbl_cmp);
        out->cost_median = dq_report_percentile(cost.v, cost.n, 0.5);
        out->cost_p90 = dq_report_percentile(cost.v, cost.n, 0.9);
        out->cost_max = cost.v[cost.n - 1];
    }
    if (share.n) {
        qsort(share.v, share.n, sizeof *share.v, dbl_cmp);
        out->canary_share_median = dq_report_percentile(share.v, share.n, 0.5);
        out->canary_share_max = share.v[share.n - 1];
    }
    rc = 0;
out:
    free(cost.v);
    free(share.v);
    free(lead.v);
    free(ttd.v);
    free(ttd_staging.v);
    free(mttr.v);
    return rc;
}

static int target_cmp(const void *a, const void *b)
{
    const dq_report_target *x = a, *y = b;
    int c = strcmp(x->service, y->service);

    return c ? c : strcmp(x->environment, y->environment);
}

/* Adds service/env to r's targets unless there already. 0, -1 out of memory. */
static int target_add(dq_report *r, const char *service, const char *env)
{
    dq_report_target *t;

    if (!service || !env)
        return 0;
    for (size_t i = 0; i < r->n_targets; i++)
        if (strcmp(r->targets[i].service, service) == 0 &&
            strcmp(r->targets[i].environment, env) == 0)
            return 0;
    t = realloc(r->targets, (r->n_targets + 1) * sizeof *t);
    if (!t)
        return -1;
    r->targets = t;
    t = &t[r->n_targets];
    memset(t, 0, sizeof *t);
    t->service = strdup(service);
    t->environment = strdup(env);
    r->n_targets++; /* counted before the check: dq_report_clear frees a half-made one */
    return t->service && t->environment ? 0 : -1;
}

void dq_report_clear(dq_report *r)
{
    for (size_t i = 0; r->targets && i < r->n_targets; i++) {
        free(r->targets[i].service);
        free(r->targets[i].environment);
    }
    free(r->targets);
    r->targets = NULL;
    r->n_targets = 0;
}

int dq_report_compute(const dq_fold *f, const dq_report_opts *opts, dq_report *out)
{
    dq_report_opts none = {0}, one;
    const dq_report_opts *o = opts ? opts : &none;
    dq_fold_deployment *const *deps;
    dq_fold_rollback *const *rbs;
    size_t nd, nr;

    if (compute_one(f, o, out) != 0)
        return -1;
    if (!o->by_target)
        return 0;
    /* Every target with a deployment or a rollback the filters keep; the window is applied
     * by each target's own computation (a target with nothing in it shows zeros). */
    deps = dq_fold_deployments(f, &nd);
    for (size_t i = 0; i < nd; i++)
        if (matches(o, deps[i]->service, deps[i]->environment) &&
            in_window(o, deps[i]->first_at_ms) &&
            target_add(out, deps[i]->service, deps[i]->environment) != 0)
            goto fail;
    rbs = dq_fold_rollbacks(f, &nr);
    for (size_t i = 0; i < nr; i++)
        if (matches(o, rbs[i]->service, rbs[i]->environment) &&
            in_window(o, rbs[i]->requested_at_ms ? rbs[i]->requested_at_ms
                                                 : rbs[i]->started_at_ms) &&
            target_add(out, rbs[i]->service, rbs[i]->environment) != 0)
            goto fail;
    if (out->n_targets)
        qsort(out->targets, out->n_targets, sizeof *out->targets, target_cmp);
    one = *o;
    one.by_target = 0;
    for (size_t i = 0; i < out->n_targets; i++) {
        one.service = out->targets[i].service;
        one.environment = out->targets[i].environment;
        if (compute_one(f, &one, &out->targets[i].r) != 0)
            goto fail;
    }
    return 0;
fail:
    dq_report_clear(out);
    memset(out, 0, sizeof *out);
    return -1;
}

/* Figures are rounded to what a reader can use: rates to 4 decimals, ms to whole ms. */
static double round_to(double x, double unit)
{
    return rnd(x / unit) * unit;
}

static void add_rate(cJSON *o, const char *name, int has, double v)
{
    if (has)
        cJSON_AddNumberToObject(o, name, round_to(v, 0.0001));
    else
        cJSON_AddNullToObject(o, name);
}

static void add_dist(cJSON *o, const char *name, const dq_report_dist *d)
{
    cJSON *x = cJSON_AddObjectToObject(o, name);

    if (!x)
        return;
    cJSON_AddNumberToObject(x, "n", (double)d->n);
    if (d->n) {
        cJSON_AddNumberToObject(x, "median", rnd(d->median_ms));
        cJSON_AddNumberToObject(x, "p90", rnd(d->p90_ms));
        cJSON_AddNumberToObject(x, "min", rnd(d->min_ms));
        cJSON_AddNumberToObject(x, "max", rnd(d->max_ms));
    } else {
        cJSON_AddNullToObject(x, "median");
        cJSON_AddNullToObject(x, "p90");
    }
}

#define NUM(o, name, v) cJSON_AddNumberToObject(o, name, (double)(v))

/* Amounts to a millionth of the currency unit: no float noise in the output. */
static double money(double v)
{
    return round_to(v, 0.000001);
}

static void add_cost(cJSON *o, const dq_report *r)
{
    cJSON *c = cJSON_AddObjectToObject(o, "cost_per_deployment");

    if (!c)
        return;
    NUM(c, "priced", r->cost_priced);
    NUM(c, "estimated", r->cost_estimated);
    NUM(c, "not_priced", r->cost_not_priced);
    NUM(c, "unknown", r->cost_unknown);
    cJSON_AddBoolToObject(c, "estimate", r->cost_estimated > 0);
    if (r->cost_priced) {
        cJSON_AddNumberToObject(c, "median", money(r->cost_median));
        cJSON_AddNumberToObject(c, "p90", money(r->cost_p90));
        cJSON_AddNumberToObject(c, "max", money(r->cost_max));
        cJSON_AddNumberToObject(c, "total", money(r->cost_total));
    } else {
        cJSON_AddNullToObject(c, "median");
        cJSON_AddNullToObject(c, "p90");
        cJSON_AddNullToObject(c, "max");
        cJSON_AddNullToObject(c, "total");
    }
}

/* "caught_by_canary_share":{"n","median","max"}: the traffic (percent) the canaries caught
 * had reached; median and max null when none. */
static void add_canary_share(cJSON *o, const dq_report *r)
{
    cJSON *c = cJSON_AddObjectToObject(o, "caught_by_canary_share");

    if (!c)
        return;
    NUM(c, "n", r->caught_by_canary);
    if (r->caught_by_canary) {
        cJSON_AddNumberToObject(c, "median", round_to(r->canary_share_median, 0.01));
        cJSON_AddNumberToObject(c, "max", round_to(r->canary_share_max, 0.01));
    } else {
        cJSON_AddNullToObject(c, "median");
        cJSON_AddNullToObject(c, "max");
    }
}

/* The figures of one report (no window, no targets) into o. */
static void figures_json(cJSON *o, const dq_report *r)
{
    cJSON *d = cJSON_AddObjectToObject(o, "deployments"), *rb;

    if (d) {
        NUM(d, "total", r->deployments);
        NUM(d, "succeeded", r->succeeded);
        NUM(d, "failed", r->failed);
        NUM(d, "rejected", r->rejected);
        NUM(d, "in_progress", r->in_progress);
        NUM(d, "failed_changes", r->failed_changes);
        NUM(d, "rolled_back", r->failed_changes); /* the name before issue 14 */
        NUM(d, "unverified", r->unverified);
        NUM(d, "caught_before_production", r->caught);
        NUM(d, "caught_by_gate", r->caught_by_gate);
        NUM(d, "caught_outside_production", r->caught_outside_production);
        NUM(d, "caught_by_canary", r->caught_by_canary);
        NUM(d, "rolled_back_in_production", r->escaped);
        NUM(d, "refused_invalid", r->rejected_invalid);
        NUM(d, "refused_other", r->rejected_other);
    }
    rb = cJSON_AddObjectToObject(o, "rollbacks");
    if (rb) {
        NUM(rb, "total", r->rollbacks);
        NUM(rb, "succeeded", r->rollbacks_succeeded);
        NUM(rb, "failed", r->rollbacks_failed);
        NUM(rb, "not_attempted", r->rollbacks_not_attempted);
        NUM(rb, "open", r->rollbacks_open);
        NUM(rb, "manual_in_mttr", r->mttr_manual);
    }
    add_rate(o, "success_rate", r->has_success_rate, r->success_rate);
    add_rate(o, "change_failure_rate", r->has_change_failure_rate, r->change_failure_rate);
    add_rate(o, "deploys_per_day", r->has_frequency, r->deploys_per_day);
    add_rate(o, "stopped_before_production", r->has_stopped_share,
             r->stopped_before_production);
    add_canary_share(o, r);
    add_dist(o, "lead_time_ms", &r->lead_time);
    add_dist(o, "time_to_deploy_ms", &r->time_to_deploy);
    add_dist(o, "time_to_deploy_staging_ms", &r->time_to_deploy_staging);
    add_dist(o, "mttr_ms", &r->mttr);
    add_cost(o, r);
}

cJSON *dq_report_json(const dq_report *r)
{
    cJSON *o = cJSON_CreateObject(), *w, *tg;
    char t[DQ_TIME_LEN + 1];

    if (!o)
        return NULL;
    w = cJSON_AddObjectToObject(o, "window");
    if (w) {
        if (r->since_ms)
            cJSON_AddStringToObject(w, "since", dq_time_format(r->since_ms, t));
        if (r->until_ms)
            cJSON_AddStringToObject(w, "until", dq_time_format(r->until_ms, t));
        cJSON_AddNumberToObject(w, "days", round_to(r->window_days, 0.0001));
    }
    figures_json(o, r);
    if (!r->targets)
        return o;
    tg = cJSON_AddArrayToObject(o, "targets");
    for (size_t i = 0; tg && i < r->n_targets; i++) {
        cJSON *x = cJSON_CreateObject();

        if (!x)
            break;
        cJSON_AddStringToObject(x, "service", r->targets[i].service);
        cJSON_AddStringToObject(x, "environment", r->targets[i].environment);
        figures_json(x, &r->targets[i].r);
        cJSON_AddItemToArray(tg, x);
    }
    return o;
}

static void csv_count(FILE *out, const char *scope, const char *name, uint64_t v)
{
    fprintf(out, "%s,%s,%llu\n", scope, name, (unsigned long long)v);
}

static void csv_rate(FILE *out, const char *scope, const char *name, int has, double v)
{
    if (has)
        fprintf(out, "%s,%s,%.4f\n", scope, name, v);
    else
        fprintf(out, "%s,%s,\n", scope, name);
}

static void csv_dist(FILE *out, const char *scope, const char *name, const dq_report_dist *d)
{
    fprintf(out, "%s,%s_n,%llu\n", scope, name, (unsigned long long)d->n);
    if (d->n)
        fprintf(out, "%s,%s_median_ms,%.0f\n%s,%s_p90_ms,%.0f\n%s,%s_max_ms,%.0f\n", scope,
                name, rnd(d->median_ms), scope, name, rnd(d->p90_ms), scope, name,
                rnd(d->max_ms));
    else
        fprintf(out, "%s,%s_median_ms,\n%s,%s_p90_ms,\n%s,%s_max_ms,\n", scope, name, scope,
                name, scope, name);
}

/* scope: "service,environment" as CSV fields (names are [A-Za-z0-9._-]: no quoting). */
static void csv_figures(FILE *out, const char *scope, const dq_report *r)
{
    const struct {
        const char *name;
        uint64_t v;
    } counts[] = {
        {"deployments", r->deployments},
        {"succeeded", r->succeeded},
        {"failed", r->failed},
        {"rejected", r->rejected},
        {"in_progress", r->in_progress},
        {"failed_changes", r->failed_changes},
        {"unverified", r->unverified},
        {"rollbacks", r->rollbacks},
        {"rollbacks_succeeded", r->rollbacks_succeeded},
        {"rollbacks_failed", r->rollbacks_failed},
        {"rollbacks_not_attempted", r->rollbacks_not_attempted},
        {"rollbacks_open", r->rollbacks_open},
        {"caught_before_production", r->caught},
        {"caught_by_gate", r->caught_by_gate},
        {"caught_outside_production", r->caught_outside_production},
        {"caught_by_canary", r->caught_by_canary},
        {"rolled_back_in_production", r->escaped},
        {"refused_invalid", r->rejected_invalid},
        {"refused_other", r->rejected_other},
    };

    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        csv_count(out, scope, counts[i].name, counts[i].v);
    csv_rate(out, scope, "success_rate", r->has_success_rate, r->success_rate);
    csv_rate(out, scope, "change_failure_rate", r->has_change_failure_rate,
             r->change_failure_rate);
    csv_rate(out, scope, "deploys_per_day", r->has_frequency, r->deploys_per_day);
    csv_rate(out, scope, "stopped_before_production", r->has_stopped_share,
             r->stopped_before_production);
    if (r->caught_by_canary)
        fprintf(out, "%s,caught_by_canary_share_median,%.2f\n%s,caught_by_canary_share_max,%.2f\n", scope,
                r->canary_share_median, scope, r->canary_share_max);
    else
        fprintf(out, "%s,caught_by_canary_share_median,\n%s,caught_by_canary_share_max,\n", scope, scope);
    csv_dist(out, scope, "lead_time", &r->lead_time);
    csv_dist(out, scope, "time_to_deploy", &r->time_to_deploy);
    csv_dist(out, scope, "time_to_deploy_staging", &r->time_to_deploy_staging);
    csv_dist(out, scope, "mttr", &r->mttr);
    csv_count(out, scope, "mttr_manual", r->mttr_manual);
    csv_count(out, scope, "cost_priced", r->cost_priced);
    csv_count(out, scope, "cost_estimated", r->cost_estimated);
    csv_count(out, scope, "cost_not_priced", r->cost_not_priced);
    csv_count(out, scope, "cost_unknown", r->cost_unknown);
    if (r->cost_priced)
        fprintf(out, "%s,cost_median,%.6f\n%s,cost_p90,%.6f\n%s,cost_max,%.6f\n%s,cost_total,%.6f\n", scope,
                r->cost_median, scope, r->cost_p90, scope, r->cost_max, scope, r->cost_total);
    else
        fprintf(out, "%s,cost_median,\n%s,cost_p90,\n%s,cost_max,\n%s,cost_total,\n", scope, scope, scope,
                scope);
}

void dq_report_write_csv(const dq_report *r, FILE *out)
{
    fprintf(out, "service,environment,metric,value\n");
    csv_figures(out, "*,*", r);
    for (size_t i = 0; i < r->n_targets; i++) {
        char scope[300];

        snprintf(scope, sizeof scope, "%s,%s", r->targets[i].service,
                 r->targets[i].environment);
        csv_figures(out, scope, &r->targets[i].r);
    }
}

/* "1h2m3s", "4m30s", "12.5s", "800ms" */
static const char *fmt_dur(double ms, char *buf, size_t len)
{
    long long s = (long long)rnd(ms / 1000.0);

    if (ms < 1000)
        snprintf(buf, len, "%.0fms", ms);
    else if (ms < 60000)
        snprintf(buf, len, "%.1fs", ms / 1000.0);
    else if (s < 3600)
        snprintf(buf, len, "%lldm%llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, len, "%lldh%lldm%llds", s / 3600, s % 3600 / 60, s % 60);
    else
        snprintf(buf, len, "%lldd%lldh%lldm", s / 86400, s % 86400 / 3600, s % 3600 / 60);
    return buf;
}

static void table_dist(FILE *out, const char *name, const dq_report_dist *d, const char *target)
{
    char a[32], b[32], c[32];

    if (d->n)
        fprintf(out, "%-30s median %s, p90 %s, max %s (n=%llu)%s\n", name,
                fmt_dur(d->median_ms, a, sizeof a), fmt_dur(d->p90_ms, b, sizeof b),
                fmt_dur(d->max_ms, c, sizeof c), (unsigned long long)d->n, target);
    else
        fprintf(out, "%-30s - (n=0)%s\n", name, target);
}

static void table_pct(FILE *out, const char *name, int has, double v, const char *detail)
{
    if (has)
        fprintf(out, "%-30s %.1f%% %s\n", name, v * 100.0, detail);
    else
        fprintf(out, "%-30s - %s\n", name, detail);
}

/* "  [target < 5m: met]": whether a figure meets the memo's target; "" without a figure. */
static const char *verdict(char *buf, size_t len, const char *what, int has, int met)
{
    snprintf(buf, len, "  [target %s: %s]", what, !has ? "no data" : met ? "met" : "missed");
    return buf;
}

static void table_targets(FILE *out, const dq_report *r)
{
    char a[32], b[32];

    fprintf(out, "\n%-30s %-9s %-9s %-7s %-7s %-8s %-16s %-18s %s\n", "target", "success", "failed-ch",
            "caught", "escaped", "invalid", "MTTR median (n)", "to deploy p90 (n)", "cost median (n)");
    for (size_t i = 0; i < r->n_targets; i++) {
        const dq_report *t = &r->targets[i].r;
        char key[300], succ[24], fc[24], mttr[48], ttd[48], cost[48];

        snprintf(key, sizeof key, "%s/%s", r->targets[i].service, r->targets[i].environment);
        snprintf(succ, sizeof succ, "%llu/%llu",
                 (unsigned long long)(t->succeeded - t->failed_changes),
                 (unsigned long long)(t->succeeded + t->failed));
        snprintf(fc, sizeof fc, "%llu/%llu", (unsigned long long)t->failed_changes,
                 (unsigned long long)t->succeeded);
        snprintf(mttr, sizeof mttr, "%s (%llu)",
                 t->mttr.n ? fmt_dur(t->mttr.median_ms, a, sizeof a) : "-",
                 (unsigned long long)t->mttr.n);
        snprintf(ttd, sizeof ttd, "%s (%llu)",
                 t->time_to_deploy.n ? fmt_dur(t->time_to_deploy.p90_ms, b, sizeof b) : "-",
                 (unsigned long long)t->time_to_deploy.n);
        if (t->cost_priced)
            snprintf(cost, sizeof cost, "$%.3f%s (%llu)", t->cost_median, t->cost_estimated ? " est." : "",
                     (unsigned long long)t->cost_priced);
        else
            snprintf(cost, sizeof cost, "- (0)");
        fprintf(out, "%-30s %-9s %-9s %-7llu %-7llu %-8llu %-16s %-18s %s\n", key, succ, fc,
                (unsigned long long)t->caught, (unsigned long long)t->escaped,
                (unsigned long long)t->rejected_invalid, mttr, ttd, cost);
    }
}

/* "CI/CD cost per deployment  $0.120 median, $0.300 max, $1.500 total over 14 priced deploys
 * (estimate: 3 priced by wall time; 2 not priced)  [target median < $0.50: met]" */
static void table_cost(FILE *out, const dq_report *r)
{
    char parts[160] = "", v[64];
    size_t n = 0;
    int w;

    if (r->cost_estimated) {
        w = snprintf(parts + n, sizeof parts - n, "estimate: %llu priced by wall time",
                     (unsigned long long)r->cost_estimated);
        n += w > 0 && (size_t)w < sizeof parts - n ? (size_t)w : 0;
    }
    if (r->cost_not_priced) {
        w = snprintf(parts + n, sizeof parts - n, "%s%llu not priced", n ? "; " : "",
                     (unsigned long long)r->cost_not_priced);
        n += w > 0 && (size_t)w < sizeof parts - n ? (size_t)w : 0;
    }
    if (r->cost_unknown)
        snprintf(parts + n, sizeof parts - n, "%s%llu unknown", n ? "; " : "", (unsigned long long)r->cost_unknown);
    verdict(v, sizeof v, "median < $0.50", r->cost_priced != 0, r->cost_median < DQ_REPORT_TARGET_COST);
    if (r->cost_priced)
        fprintf(out, "%-30s $%.3f median, $%.3f max, $%.3f total over %llu priced deploys%s%s%s%s\n",
                "CI/CD cost per deployment", r->cost_median, r->cost_max, r->cost_total,
                (unsigned long long)r->cost_priced, parts[0] ? " (" : "", parts, parts[0] ? ")" : "", v);
    else
        fprintf(out, "%-30s - (0 priced deploys%s%s)%s\n", "CI/CD cost per deployment", parts[0] ? "; " : "",
                parts, v);
}

void dq_report_write_table(const dq_report *r, FILE *out)
{
    char s[DQ_TIME_LEN + 1], u[DQ_TIME_LEN + 1], detail[200], v[64];

    fprintf(out, "%-30s %s .. %s (%.2f days)\n", "window",
            r->since_ms ? dq_time_format(r->since_ms, s) : "-",
            r->until_ms ? dq_time_format(r->until_ms, u) : "-", r->window_days);
    fprintf(out, "%-30s %llu (succeeded %llu, failed %llu, rejected %llu, in progress %llu)\n",
            "deployments", (unsigned long long)r->deployments,
            (unsigned long long)r->succeeded, (unsigned long long)r->failed,
            (unsigned long long)r->rejected, (unsigned long long)r->in_progress);
    snprintf(detail, sizeof detail, "(%llu of %llu; %llu failed changes)%s",
             (unsigned long long)(r->succeeded - r->failed_changes),
             (unsigned long long)(r->succeeded + r->failed),
             (unsigned long long)r->failed_changes,
             verdict(v, sizeof v, "> 99%", r->has_success_rate,
                     r->success_rate > DQ_REPORT_TARGET_SUCCESS_RATE));
    table_pct(out, "success rate", r->has_success_rate, r->success_rate, detail);
    snprintf(detail, sizeof detail, "(%llu of %llu rolled back or watch failed)",
             (unsigned long long)r->failed_changes, (unsigned long long)r->succeeded);
    table_pct(out, "change-failure rate", r->has_change_failure_rate, r->change_failure_rate,
              detail);
    if (r->has_frequency)
        fprintf(out, "%-30s %.2f per day\n", "deployment frequency", r->deploys_per_day);
    else
        fprintf(out, "%-30s -\n", "deployment frequency");
    snprintf(detail, sizeof detail, "(%llu caught: %llu by a gate, %llu by canary, %llu outside "
             "production; %llu escaped)%s",
             (unsigned long long)r->caught, (unsigned long long)r->caught_by_gate,
             (unsigned long long)r->caught_by_canary,
             (unsigned long long)r->caught_outside_production, (unsigned long long)r->escaped,
             verdict(v, sizeof v, "> 95%", r->has_stopped_share,
                     r->stopped_before_production > DQ_REPORT_TARGET_STOPPED));
    table_pct(out, "stopped before production", r->has_stopped_share,
              r->stopped_before_production, detail);
    if (r->caught_by_canary)
        fprintf(out, "%-30s %llu (aborted before 100%%; traffic reached: median %.1f%%, max %.1f%%)\n",
                "caught by canary", (unsigned long long)r->caught_by_canary, r->canary_share_median,
                r->canary_share_max);
    else
        fprintf(out, "%-30s 0\n", "caught by canary");
    fprintf(out, "%-30s %llu (not counted as catches; other refusals %llu)\n",
            "refused as invalid input", (unsigned long long)r->rejected_invalid,
            (unsigned long long)r->rejected_other);
    table_dist(out, "lead time (commit -> deployed)", &r->lead_time, "");
    table_dist(out, "time to deploy (req -> verif.)", &r->time_to_deploy, "");
    table_dist(out, "  of which staging", &r->time_to_deploy_staging,
               verdict(v, sizeof v, "p90 < 15m", r->time_to_deploy_staging.n != 0,
                       r->time_to_deploy_staging.p90_ms < DQ_REPORT_TARGET_STAGING_TTD_MS));
    table_dist(out, "MTTR (failure -> restored)", &r->mttr,
               verdict(v, sizeof v, "median < 5m", r->mttr.n != 0,
                       r->mttr.median_ms < DQ_REPORT_TARGET_MTTR_MS));
    fprintf(out, "%-30s %llu (succeeded %llu, failed %llu, not attempted %llu, open %llu; "
                 "%llu manual in MTTR)\n",
            "rollbacks", (unsigned long long)r->rollbacks,
            (unsigned long long)r->rollbacks_succeeded, (unsigned long long)r->rollbacks_failed,
            (unsigned long long)r->rollbacks_not_attempted,
            (unsigned long long)r->rollbacks_open, (unsigned long long)r->mttr_manual);
    table_cost(out, r);
    if (r->n_targets)
        table_targets(out, r);
}
