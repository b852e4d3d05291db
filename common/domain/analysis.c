/*
 * analysis.c - canary analysis (see analysis.h): percentiles of each side, the
 * Mann-Whitney U test of the canary's latencies over the stable's, the error comparison,
 * and the verdict as canary.analysis carries it.
 * The normal approximation's tail is libm's erfc.
 */
#include "analysis.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RATE_EPS 1e-9 /* error rates are compared "greater by more than rounding" */
#define EARLY_MIN_ERRORS 3
#define MIN_SAMPLES_FLOOR 8

void dq_analysis_defaults(dq_analysis_criteria *c)
{
    c->error_tolerance = 0.01;
    c->max_error_rate = 0.05;
    c->alpha = 0.05;
    c->latency_tolerance = 0.10;
    c->latency_min_delta_ms = 5;
    c->min_samples = 20;
}

/* P(Z > z) for a standard normal Z: 0.5 erfc(z / sqrt 2). */
static double normal_upper(double z)
{
    return 0.5 * erfc(z / M_SQRT2);
}

/* ---- Mann-Whitney U ------------------------------------------------------------------ */

typedef struct {
    double v;
    int from_x;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    double x = ((const ranked *)a)->v, y = ((const ranked *)b)->v;

    return x < y ? -1 : x > y;
}

int dq_mann_whitney(const double *x, size_t nx, const double *y, size_t ny, double *u, double *z,
                    double *p)
{
    size_t n = nx + ny, i, j;
    double rank_sum = 0, ties = 0, dn = (double)n, mean, var, sd;
    ranked *all;

    if (nx == 0 || ny == 0)
        return -1;
    all = malloc(n * sizeof *all);
    if (!all)
        return -1;
    for (i = 0; i < nx; i++)
        all[i] = (ranked){x[i], 1};
    for (i = 0; i < ny; i++)
        all[nx + i] = (ranked){y[i], 0};
    qsort(all, n, sizeof *all, cmp_ranked);
    /* A run of t equal values at positions i..j-1 (ranks i+1..j) shares their average. */
    for (i = 0; i < n; i = j) {
        double t, avg;

        for (j = i + 1; j < n && all[j].v == all[i].v; j++)
            ;
        t = (double)(j - i);
        avg = ((double)i + 1 + (double)j) / 2;
        for (size_t k = i; k < j; k++)
            if (all[k].from_x)
                rank_sum += avg;
        ties += t * t * t - t;
    }
    free(all);
    *u = rank_sum - (double)nx * ((double)nx + 1) / 2;
    mean = (double)nx * (double)ny / 2;
    var = (double)nx * (double)ny / 12 * ((dn + 1) - ties / (dn * (dn - 1)));
    sd = sqrt(var);
    if (!(sd > 0)) {
        /* Every value tied: each arrangement of the samples gives U = mean, so the exact
         * one-sided p-value P(U >= observed) is 1 - not 0.5, which would claim a coin toss
         * where the data show no difference at all, and would fail an alpha >= 0.5. */
        *z = 0;
        *p = 1;
        return 0;
    }
    *z = (*u - mean - 0.5) / sd;
    *p = normal_upper(*z);
    return 0;
}

/* ---- the verdict --------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* The latencies of the samples that had one (>= 0; probe.h gives -1 for no answer),
 * sorted. *out NULL when there are none. -1 on allocation failure. */
static int latencies_of(const double *ms, size_t n, double **out, size_t *nout)
{
    size_t k = 0;

    *out = NULL;
    *nout = 0;
    if (n == 0)
        return 0;
    *out = malloc(n * sizeof **out);
    if (!*out)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (ms[i] >= 0) /* also leaves out NaN */
            (*out)[k++] = ms[i];
    qsort(*out, k, sizeof **out, cmp_double);
    *nout = k;
    return 0;
}

/* Nearest rank: the smallest value with at least pct% of the values at or below it. */
static double nearest_rank(const double *sorted, size_t n, unsigned pct)
{
    size_t r;

    if (n == 0)
        return 0;
    r = (pct * n + 99) / 100; /* ceil(pct/100 * n), exact in integers */
    return sorted[r ? r - 1 : 0];
}

static void side_of(dq_analysis_side *s, size_t samples, size_t errors, const double *sorted,
                    size_t n)
{
    s->samples = samples;
    s->errors = errors;
    s->error_rate = samples ? (double)errors / (double)samples : 0;
    s->p50_ms = nearest_rank(sorted, n, 50);
    s->p90_ms = nearest_rank(sorted, n, 90);
    s->p99_ms = nearest_rank(sorted, n, 99);
}

/* Latencies in reasons: whole milliseconds as such, others to a tenth. */
static const char *ms_text(double v, char *buf, size_t len)
{
    if (v == (double)(long long)v)
        snprintf(buf, len, "%lld", (long long)v);
    else
        snprintf(buf, len, "%.1f", v);
    return buf;
}

static void append(char *reason, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void append(char *reason, size_t len, const char *fmt, ...)
{
    size_t used = strlen(reason);
    va_list ap;

    if (used >= len - 1)
        return;
    va_start(ap, fmt);
    vsnprintf(reason + used, len - used, fmt, ap);
    va_end(ap);
}

/* "errors[ (early, before 20 samples)]: canary 12/20 (60.0%) vs stable 0/20 (0.0%),
 * tolerance 1.0 points" or "... above the 5.0% limit" for max_error_rate. */
static void error_reason(char *reason, size_t len, const dq_analysis_verdict *v,
                         const dq_analysis_criteria *c, size_t min_samples, int early,
                         int over_tolerance)
{
    char early_text[64] = "";

    if (early)
        snprintf(early_text, sizeof early_text, " (early, before %zu samples)", min_samples);
    append(reason, len, "%serrors%s: canary %zu/%zu (%.1f%%) vs stable %zu/%zu (%.1f%%), ",
           reason[0] ? "; " : "", early_text, v->canary.errors, v->canary.samples,
           100 * v->canary.error_rate, v->stable.errors, v->stable.samples,
           100 * v->stable.error_rate);
    if (over_tolerance)
        append(reason, len, "tolerance %.1f points", 100 * c->error_tolerance);
    else
        append(reason, len, "above the %.1f%% limit", 100 * c->max_error_rate);
}

int dq_analysis_judge(const double *canary_ms, size_t nc, size_t canary_errors,
                      const double *stable_ms, size_t ns, size_t stable_errors,
                      const dq_analysis_criteria *c, dq_analysis_verdict *v)
{
    size_t min = c->min_samples < MIN_SAMPLES_FLOOR ? MIN_SAMPLES_FLOOR : c->min_samples;
    size_t lc = 0, ls = 0;
    double *cl = NULL, *sl = NULL, canary_rate, allowed;
    int full, over_tolerance, over_max, latency_bad = 0;
    char a[32], b[32];

    memset(v, 0, sizeof *v);
    v->p_value = 1;
    if (canary_errors > nc)
        canary_errors = nc;
    if (stable_errors > ns)
        stable_errors = ns;
    if (latencies_of(canary_ms, nc, &cl, &lc) < 0 || latencies_of(stable_ms, ns, &sl, &ls) < 0) {
        free(cl);
        return -1;
    }
    side_of(&v->canary, nc, canary_errors, cl, lc);
    side_of(&v->stable, ns, stable_errors, sl, ls);
    if (lc && ls)
        v->median_ratio = v->canary.p50_ms / (v->stable.p50_ms > 1 ? v->stable.p50_ms : 1);

    /* Errors. With min_samples on both sides, the canary's rate as it is; before that the
     * canary's errors over max(its samples, min_samples) - the lowest its rate can be once
     * it has min_samples - and only from EARLY_MIN_ERRORS errors on. */
    full = nc >= min && ns >= min;
    canary_rate = full ? v->canary.error_rate
                       : (double)canary_errors / (double)(nc > min ? nc : min);
    allowed = v->stable.error_rate + c->error_tolerance;
    over_tolerance = canary_rate > allowed + RATE_EPS;
    over_max = c->max_error_rate >= 0 && canary_rate > c->max_error_rate + RATE_EPS;
    if (!full && canary_errors < EARLY_MIN_ERRORS)
        over_tolerance = over_max = 0;
    if (over_tolerance || over_max)
        error_reason(v->reason, sizeof v->reason, v, c, min, !full, over_tolerance);

    /* Latency: only with min_samples latencies on each side. */
    if (full && lc >= min && ls >= min) {
        if (dq_mann_whitney(cl, lc, sl, ls, &v->u, &v->z, &v->p_value) < 0) {
            free(cl);
            free(sl);
            return -1;
        }
        v->latency_tested = 1;
        latency_bad = v->p_value < c->alpha && v->median_ratio > 1 + c->latency_tolerance &&
                      v->canary.p50_ms - v->stable.p50_ms > c->latency_min_delta_ms;
        if (latency_bad)
            append(v->reason, sizeof v->reason,
                   "%slatency: canary p50 %s ms vs stable %s ms (x%.2f), Mann-Whitney U p=%.2g < %g",
                   v->reason[0] ? "; " : "", ms_text(v->canary.p50_ms, a, sizeof a),
                   ms_text(v->stable.p50_ms, b, sizeof b), v->median_ratio, v->p_value, c->alpha);
    }
    free(cl);
    free(sl);

    if (over_tolerance || over_max || latency_bad)
        v->result = DQ_ANALYSIS_FAIL;
    else if (!full) {
        v->result = DQ_ANALYSIS_WAIT;
        snprintf(v->reason, sizeof v->reason, "waiting for %zu samples per side: canary %zu, stable %zu",
                 min, nc, ns);
    } else
        v->result = DQ_ANALYSIS_PASS;
    return 0;
}

/* ---- JSON ---------------------------------------------------------------------------- */

static const char *result_name(dq_analysis_result r)
{
    return r == DQ_ANALYSIS_PASS ? "pass" : r == DQ_ANALYSIS_FAIL ? "fail" : "wait";
}

/* Adds that remember a failure, so the caller checks once. */
static void num(cJSON *o, const char *name, double value, int *ok)
{
    if (!o || !cJSON_AddNumberToObject(o, name, value))
        *ok = 0;
}

static cJSON *side_json(cJSON *o, const char *name, const dq_analysis_side *s, int *ok)
{
    cJSON *x = o ? cJSON_AddObjectToObject(o, name) : NULL;

    num(x, "samples", (double)s->samples, ok);
    num(x, "errors", (double)s->errors, ok);
    num(x, "error_rate", s->error_rate, ok);
    num(x, "p50_ms", s->p50_ms, ok);
    num(x, "p90_ms", s->p90_ms, ok);
    num(x, "p99_ms", s->p99_ms, ok);
    return x;
}

cJSON *dq_analysis_verdict_json(const dq_analysis_verdict *v, const dq_analysis_criteria *c)
{
    cJSON *o = cJSON_CreateObject(), *lat, *crit;
    int ok = o != NULL;

    if (!ok)
        return NULL;
    if (!cJSON_AddStringToObject(o, "result", result_name(v->result)) ||
        !cJSON_AddStringToObject(o, "reason", v->reason))
        ok = 0;
    side_json(o, "canary", &v->canary, &ok);
    side_json(o, "stable", &v->stable, &ok);
    lat = cJSON_AddObjectToObject(o, "latency");
    if (!lat || !cJSON_AddStringToObject(lat, "test", "mann-whitney-u") ||
        !cJSON_AddBoolToObject(lat, "tested", v->latency_tested))
        ok = 0;
    num(lat, "u", v->u, &ok);
    num(lat, "z", v->z, &ok);
    num(lat, "p_value", v->p_value, &ok);
    num(lat, "alpha", c->alpha, &ok);
    num(lat, "median_ratio", v->median_ratio, &ok);
    num(lat, "tolerance", c->latency_tolerance, &ok);
    num(lat, "min_delta_ms", c->latency_min_delta_ms, &ok);
    crit = cJSON_AddObjectToObject(o, "criteria");
    num(crit, "error_tolerance", c->error_tolerance, &ok);
    if (c->max_error_rate >= 0)
        num(crit, "max_error_rate", c->max_error_rate, &ok);
    else if (!crit || !cJSON_AddNullToObject(crit, "max_error_rate"))
        ok = 0;
    num(crit, "min_samples",
        (double)(c->min_samples < MIN_SAMPLES_FLOOR ? MIN_SAMPLES_FLOOR : c->min_samples), &ok);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
