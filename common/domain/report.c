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

int dq_report_compute(const dq_fold *f, const dq_report_opts *opts, dq_report *out)
{
    dq_report_opts none = {0};
    const dq_report_opts *o = opts ? opts : &none;
    const char *prod = o->production_env ? o->production_env : "production";
    dvec lead = {0}, ttd = {0}, mttr = {0};
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
        int rolled = d->rollback_requested_at_ms != 0;

        if (!matches(o, d->service, d->environment) || !in_window(o, d->first_at_ms))
            continue;
        out->deployments++;
        if (!first || d->first_at_ms < first)
            first = d->first_at_ms;
        if (d->last_at_ms > last)
            last = d->last_at_ms;
        if (d->rejected_at_ms)
            out->rejected++;
        if (d->failed_at_ms && !d->succeeded_at_ms)
            out->failed++;
        if (d->succeeded_at_ms) {
            out->succeeded++;
            if (rolled)
                out->rolled_back++;
            if (d->commit_at_ms && dvec_push(&lead, (double)(d->succeeded_at_ms -
                                                              d->commit_at_ms)) != 0)
                goto out;
            if (d->validated_at_ms && dvec_push(&ttd, (double)(d->succeeded_at_ms -
                                                                d->validated_at_ms)) != 0)
                goto out;
        }
        if (!d->rejected_at_ms && !d->failed_at_ms && !d->succeeded_at_ms)
            out->in_progress++;
        if (d->rejected_at_ms || (!is_prod && (d->failed_at_ms || rolled)))
            out->caught++;
        else if (is_prod && rolled)
            out->escaped++;
    }

    rbs = dq_fold_rollbacks(f, &nr);
    for (size_t i = 0; i < nr; i++) {
        const dq_fold_rollback *r = rbs[i];
        int64_t at = r->requested_at_ms ? r->requested_at_ms : r->started_at_ms;

        if (!matches(o, r->service, r->environment) || !in_window(o, at))
            continue;
        out->rollbacks++;
        if (r->status == DQ_ROLLBACK_FAILED && !r->not_attempted)
            out->rollbacks_failed++; /* the notify policy attempts nothing: not a failure */
        if (r->status == DQ_ROLLBACK_SUCCEEDED) {
            out->rollbacks_succeeded++;
            if (dvec_push(&mttr, (double)(r->restored_at_ms - r->detected_at_ms)) != 0)
                goto out;
        }
    }

    if (out->succeeded + out->failed) {
        out->has_success_rate = 1;
        out->success_rate = (double)out->succeeded / (double)(out->succeeded + out->failed);
    }
    if (out->succeeded) {
        out->has_change_failure_rate = 1;
        out->change_failure_rate = (double)out->rolled_back / (double)out->succeeded;
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
    dist_from(&mttr, &out->mttr);
    rc = 0;
out:
    free(lead.v);
    free(ttd.v);
    free(mttr.v);
    return rc;
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

cJSON *dq_report_json(const dq_report *r)
{
    cJSON *o = cJSON_CreateObject(), *w, *d, *rb;
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
    d = cJSON_AddObjectToObject(o, "deployments");
    if (d) {
        cJSON_AddNumberToObject(d, "total", (double)r->deployments);
        cJSON_AddNumberToObject(d, "succeeded", (double)r->succeeded);
        cJSON_AddNumberToObject(d, "failed", (double)r->failed);
        cJSON_AddNumberToObject(d, "rejected", (double)r->rejected);
        cJSON_AddNumberToObject(d, "in_progress", (double)r->in_progress);
        cJSON_AddNumberToObject(d, "rolled_back", (double)r->rolled_back);
        cJSON_AddNumberToObject(d, "caught_before_production", (double)r->caught);
        cJSON_AddNumberToObject(d, "rolled_back_in_production", (double)r->escaped);
    }
    rb = cJSON_AddObjectToObject(o, "rollbacks");
    if (rb) {
        cJSON_AddNumberToObject(rb, "total", (double)r->rollbacks);
        cJSON_AddNumberToObject(rb, "succeeded", (double)r->rollbacks_succeeded);
        cJSON_AddNumberToObject(rb, "failed", (double)r->rollbacks_failed);
    }
    add_rate(o, "success_rate", r->has_success_rate, r->success_rate);
    add_rate(o, "change_failure_rate", r->has_change_failure_rate, r->change_failure_rate);
    add_rate(o, "deploys_per_day", r->has_frequency, r->deploys_per_day);
    add_rate(o, "stopped_before_production", r->has_stopped_share,
             r->stopped_before_production);
    add_dist(o, "lead_time_ms", &r->lead_time);
    add_dist(o, "time_to_deploy_ms", &r->time_to_deploy);
    add_dist(o, "mttr_ms", &r->mttr);
    return o;
}

static void csv_rate(FILE *out, const char *name, int has, double v)
{
    if (has)
        fprintf(out, "%s,%.4f\n", name, v);
    else
        fprintf(out, "%s,\n", name);
}

static void csv_dist(FILE *out, const char *name, const dq_report_dist *d)
{
    fprintf(out, "%s_n,%llu\n", name, (unsigned long long)d->n);
    if (d->n)
        fprintf(out, "%s_median_ms,%.0f\n%s_p90_ms,%.0f\n", name, rnd(d->median_ms), name,
                rnd(d->p90_ms));
    else
        fprintf(out, "%s_median_ms,\n%s_p90_ms,\n", name, name);
}

void dq_report_write_csv(const dq_report *r, FILE *out)
{
    fprintf(out, "metric,value\n");
    fprintf(out, "deployments,%llu\nsucceeded,%llu\nfailed,%llu\nrejected,%llu\n"
                 "in_progress,%llu\nrolled_back,%llu\nrollbacks,%llu\nrollbacks_succeeded,%llu\n"
                 "rollbacks_failed,%llu\ncaught_before_production,%llu\n"
                 "rolled_back_in_production,%llu\n",
            (unsigned long long)r->deployments, (unsigned long long)r->succeeded,
            (unsigned long long)r->failed, (unsigned long long)r->rejected,
            (unsigned long long)r->in_progress, (unsigned long long)r->rolled_back,
            (unsigned long long)r->rollbacks, (unsigned long long)r->rollbacks_succeeded,
            (unsigned long long)r->rollbacks_failed, (unsigned long long)r->caught,
            (unsigned long long)r->escaped);
    csv_rate(out, "success_rate", r->has_success_rate, r->success_rate);
    csv_rate(out, "change_failure_rate", r->has_change_failure_rate, r->change_failure_rate);
    csv_rate(out, "deploys_per_day", r->has_frequency, r->deploys_per_day);
    csv_rate(out, "stopped_before_production", r->has_stopped_share,
             r->stopped_before_production);
    csv_dist(out, "lead_time", &r->lead_time);
    csv_dist(out, "time_to_deploy", &r->time_to_deploy);
    csv_dist(out, "mttr", &r->mttr);
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

static void table_dist(FILE *out, const char *name, const dq_report_dist *d)
{
    char a[32], b[32];

    if (d->n)
        fprintf(out, "%-30s median %s, p90 %s (n=%llu)\n", name,
                fmt_dur(d->median_ms, a, sizeof a), fmt_dur(d->p90_ms, b, sizeof b),
                (unsigned long long)d->n);
    else
        fprintf(out, "%-30s -\n", name);
}

static void table_pct(FILE *out, const char *name, int has, double v, const char *detail)
{
    if (has)
        fprintf(out, "%-30s %.1f%% %s\n", name, v * 100.0, detail);
    else
        fprintf(out, "%-30s -\n", name);
}

void dq_report_write_table(const dq_report *r, FILE *out)
{
    char s[DQ_TIME_LEN + 1], u[DQ_TIME_LEN + 1], detail[128];

    fprintf(out, "%-30s %s .. %s (%.2f days)\n", "window",
            r->since_ms ? dq_time_format(r->since_ms, s) : "-",
            r->until_ms ? dq_time_format(r->until_ms, u) : "-", r->window_days);
    fprintf(out, "%-30s %llu (succeeded %llu, failed %llu, rejected %llu, in progress %llu)\n",
            "deployments", (unsigned long long)r->deployments,
            (unsigned long long)r->succeeded, (unsigned long long)r->failed,
            (unsigned long long)r->rejected, (unsigned long long)r->in_progress);
    snprintf(detail, sizeof detail, "(%llu of %llu)", (unsigned long long)r->succeeded,
             (unsigned long long)(r->succeeded + r->failed));
    table_pct(out, "success rate", r->has_success_rate, r->success_rate, detail);
    snprintf(detail, sizeof detail, "(%llu of %llu rolled back)",
             (unsigned long long)r->rolled_back, (unsigned long long)r->succeeded);
    table_pct(out, "change-failure rate", r->has_change_failure_rate, r->change_failure_rate,
              detail);
    if (r->has_frequency)
        fprintf(out, "%-30s %.2f per day\n", "deployment frequency", r->deploys_per_day);
    else
        fprintf(out, "%-30s -\n", "deployment frequency");
    snprintf(detail, sizeof detail, "(%llu caught, %llu rolled back in production)",
             (unsigned long long)r->caught, (unsigned long long)r->escaped);
    table_pct(out, "stopped before production", r->has_stopped_share,
              r->stopped_before_production, detail);
    table_dist(out, "lead time (commit -> deployed)", &r->lead_time);
    table_dist(out, "time to deploy", &r->time_to_deploy);
    table_dist(out, "MTTR (failure -> restored)", &r->mttr);
    fprintf(out, "%-30s %llu (succeeded %llu, failed %llu)\n", "rollbacks",
            (unsigned long long)r->rollbacks, (unsigned long long)r->rollbacks_succeeded,
            (unsigned long long)r->rollbacks_failed);
}
