/*
 * analysis.h - canary analysis: is the canary worse than the stable version it replaces?
 *
 * Pure functions over samples (no I/O, no clock), so every verdict can be recomputed from
 * the numbers its canary.analysis event carries. A sample is one probe of one color: its
 * latency and whether it passed the probe's own checks (status, body, max latency).
 *
 * A verdict compares the two sides of one step:
 *   - errors: the canary's error rate may exceed the stable's by at most error_tolerance
 *     (absolute points: 0.01 = one point), and may never exceed max_error_rate (absolute);
 *   - latency: a one-sided Mann-Whitney U test (the canary's latencies stochastically
 *     greater than the stable's), normal approximation with tie correction, at alpha;
 *     it counts only when the canary's median is also above the stable's by more than
 *     latency_tolerance (relative), so a statistically certain 1 ms is not a regression.
 *     Mann-Whitney because latency is not normally distributed (long right tail, ties at
 *     the clock's resolution), it needs no distribution assumption, and it is what
 *     Kayenta's judge uses, so its verdicts read the same to people who know it.
 * Until each side has min_samples samples the verdict is DQ_ANALYSIS_WAIT - except that
 * errors alone may fail early (see dq_analysis_judge).
 */
#ifndef DQ_ANALYSIS_H
#define DQ_ANALYSIS_H

#include <stddef.h>

#include <cjson/cJSON.h>

typedef struct dq_analysis_criteria {
    double error_tolerance;   /* default 0.01 */
    double max_error_rate;    /* absolute limit on the canary; default 0.05; < 0: none */
    double alpha;             /* default 0.05 */
    double latency_tolerance; /* relative, default 0.10 (canary median > stable median * 1.10) */
    size_t min_samples;       /* per side, default 20; at least 8 */
} dq_analysis_criteria;

/* The defaults above. */
void dq_analysis_defaults(dq_analysis_criteria *c);

typedef struct dq_analysis_side {
    size_t samples, errors;
    double error_rate;                /* errors / samples; 0 with no samples */
    double p50_ms, p90_ms, p99_ms;    /* nearest-rank percentiles of latency; 0 with none */
} dq_analysis_side;

typedef enum {
    DQ_ANALYSIS_WAIT = 0, /* not enough samples yet */
    DQ_ANALYSIS_PASS,
    DQ_ANALYSIS_FAIL,
} dq_analysis_result;

typedef struct dq_analysis_verdict {
    dq_analysis_result result;
    dq_analysis_side canary, stable;
    int latency_tested;    /* 1 when both sides had min_samples latencies */
    double u;              /* U of the canary sample */
    double z;              /* standardised, with continuity and tie correction */
    double p_value;        /* one-sided: P(canary not slower) */
    double median_ratio;   /* canary p50 / stable p50 (0 when the stable p50 is 0) */
    char reason[512];      /* one line: why FAIL (or what WAIT waits for); "" on PASS */
} dq_analysis_verdict;

/* Mann-Whitney U for x over y (one-sided: x greater), normal approximation with tie and
 * continuity correction. Sets *u, *z and *p (upper tail). 0, -1 when nx or ny is 0 or on
 * allocation failure. */
int dq_mann_whitney(const double *x, size_t nx, const double *y, size_t ny, double *u, double *z,
                    double *p);

/* Judge one step. canary_ms/stable_ms are every sample's latency (failed samples too);
 * *_errors how many of them failed. Errors fail early, before min_samples, when the
 * canary's errors alone already exceed what min_samples stable successes would allow
 * (at least 3 canary errors). 0, -1 on allocation failure. */
int dq_analysis_judge(const double *canary_ms, size_t nc, size_t canary_errors,
                      const double *stable_ms, size_t ns, size_t stable_errors,
                      const dq_analysis_criteria *c, dq_analysis_verdict *v);

/* The verdict and the criteria it was decided on, as canary.analysis's data carries them:
 * {"result": "pass"|"fail"|"wait", "reason", "canary": {samples, errors, error_rate,
 * p50_ms, p90_ms, p99_ms}, "stable": {...}, "latency": {"test": "mann-whitney-u",
 * "tested", "u", "z", "p_value", "alpha", "median_ratio", "tolerance"}, "criteria":
 * {"error_tolerance", "max_error_rate", "min_samples"}}. NULL on allocation failure. */
cJSON *dq_analysis_verdict_json(const dq_analysis_verdict *v, const dq_analysis_criteria *c);

#endif
