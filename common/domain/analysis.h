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
 *
 * common/ links no math library: analysis.c computes sqrt, exp and erfc itself (to about
 * 1e-12 relative).
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
    double latency_min_delta_ms; /* absolute, default 5: and canary median > stable median + 5 ms */
    size_t min_samples;       /* per side, default 20; at least 8 (less is taken as 8) */
} dq_analysis_criteria;

/* The defaults above. */
void dq_analysis_defaults(dq_analysis_criteria *c);

typedef struct dq_analysis_side {
    size_t samples, errors;
    double error_rate;                /* errors / samples; 0 with no samples */
    double p50_ms, p90_ms, p99_ms;    /* nearest-rank percentiles of the latencies (samples
                                         with a latency >= 0); 0 with none */
} dq_analysis_side;

typedef enum {
    DQ_ANALYSIS_WAIT = 0, /* not enough samples yet */
    DQ_ANALYSIS_PASS,
    DQ_ANALYSIS_FAIL,
} dq_analysis_result;

typedef struct dq_analysis_verdict {
    dq_analysis_result result;
    dq_analysis_side canary, stable;
    int latency_tested;    /* 1 when both sides had min_samples samples and latencies */
    double u;              /* U of the canary sample (0 when not tested) */
    double z;              /* standardised, with continuity and tie correction (0 untested) */
    double p_value;        /* one-sided: the chance of a U this large were the canary not
                              slower (1 when not tested) */
    double median_ratio;   /* canary p50 / max(stable p50, 1 ms): latencies are whole
                              milliseconds (probe.h), a stable p50 of 0 is under 1 ms, and a
                              difference below the clock's resolution is no regression;
                              0 when either side has no latency */
    char reason[512];      /* one line: why FAIL (or what WAIT waits for); "" on PASS */
} dq_analysis_verdict;

/* Mann-Whitney U for x over y (one-sided: x greater), normal approximation with tie and
 * continuity correction. Sets *u, *z and *p (upper tail). 0, -1 when nx or ny is 0 or on
 * allocation failure. No NaN in x or y.
 *   ranks of x and y together, 1..n (n = nx + ny), tied values sharing their average rank;
 *   U = (sum of x's ranks) - nx (nx + 1) / 2; mean = nx ny / 2;
 *   variance = nx ny / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1))), t over each run of ties;
 *   z = (U - mean - 0.5) / sqrt(variance); p = 0.5 erfc(z / sqrt 2).
 * Every value tied (variance 0): z 0 and p 1, the exact p-value (every arrangement of the
 * samples gives U = mean). */
int dq_mann_whitney(const double *x, size_t nx, const double *y, size_t ny, double *u, double *z,
                    double *p);

/* Judge one step. canary_ms/stable_ms are every sample's latency (failed samples too; a
 * sample without an answer, latency < 0, counts as a sample but not as a latency);
 * *_errors how many of them failed (more than the samples is taken as all of them).
 * min is min_samples (at least 8). FAIL when any of these holds, otherwise WAIT while
 * either side has fewer than min samples, otherwise PASS:
 *   errors, both sides at min: canary rate > stable rate + error_tolerance, or
 *     canary rate > max_error_rate (when >= 0) - "greater" meaning by more than 1e-9;
 *   errors early, either side below min: the canary has at least 3 errors and
 *     canary_errors / max(canary samples, min) - the lowest the canary's rate can be at
 *     min samples - already fails one of those two comparisons (with the stable's rate
 *     so far);
 *   latency, both sides at min samples and min latencies: p_value < alpha and
 *     median_ratio > 1 + latency_tolerance and the canary's p50 above the stable's by more
 *     than latency_min_delta_ms (at a millisecond clock, 2 ms against 1 ms is "twice as
 *     slow" and certain, and means nothing).
 * reason, one line: "errors: canary 12/20 (60.0%) vs stable 0/20 (0.0%), tolerance 1.0
 * points" (or "..., above the 5.0% limit"; "errors (early, before 20 samples): ..."),
 * "latency: canary p50 182 ms vs stable 41 ms (x4.44), Mann-Whitney U p=3.4e-08 < 0.05",
 * both joined by "; "; on WAIT "waiting for 20 samples per side: canary 5, stable 4".
 * 0, -1 on allocation failure. */
int dq_analysis_judge(const double *canary_ms, size_t nc, size_t canary_errors,
                      const double *stable_ms, size_t ns, size_t stable_errors,
                      const dq_analysis_criteria *c, dq_analysis_verdict *v);

/* The verdict and the criteria it was decided on, as canary.analysis's data carries them:
 * {"result": "pass"|"fail"|"wait", "reason", "canary": {samples, errors, error_rate,
 * p50_ms, p90_ms, p99_ms}, "stable": {...}, "latency": {"test": "mann-whitney-u",
 * "tested", "u", "z", "p_value", "alpha", "median_ratio", "tolerance"}, "criteria":
 * {"error_tolerance", "max_error_rate" (null when none), "min_samples"}}. NULL on
 * allocation failure. */
cJSON *dq_analysis_verdict_json(const dq_analysis_verdict *v, const dq_analysis_criteria *c);

#endif
