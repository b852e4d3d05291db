/*
 * test_analysis.c - analysis.h: Mann-Whitney U against hand arithmetic (without and with
 * ties, all tied), and verdicts: identical sides pass, a latency-only regression fails
 * with its reason, errors fail at min_samples and early before it, WAIT before
 * min_samples, the latency tolerance stops a tiny but significant shift, the 1 ms floor
 * of the stable's median, samples without an answer, and the verdict as JSON.
 *
 * The p-values below are 0.5 erfc(z / sqrt 2) of the hand-computed z, taken from Python's
 * math.erfc (the standard library; no SciPy here).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "analysis.h"

#define EPS 1e-6

/* x = {12, 15, 18, 21}, y = {10, 11, 13, 14}; no ties.
 *   together: 10y 11y 12x 13y 14y 15x 18x 21x -> ranks 1..8; x's ranks 3, 6, 7, 8
 *   R = 24; U = 24 - 4*5/2 = 14; mean = 4*4/2 = 8
 *   variance = 16/12 * (8 + 1) = 12 (no ties); sd = sqrt 12 = 3.4641016151
 *   z = (14 - 8 - 0.5) / 3.4641016151 = 1.5877132403
 *   p = 0.5 erfc(1.5877132403 / sqrt 2) = 0.0561755988 */
static void test_mann_whitney_by_hand(void **state)
{
    const double x[] = {12, 15, 18, 21}, y[] = {10, 11, 13, 14};
    double u, z, p;

    assert_int_equal(dq_mann_whitney(x, 4, y, 4, &u, &z, &p), 0);
    assert_float_equal(u, 14, EPS);
    assert_float_equal(z, 1.5877132402714709, EPS);
    assert_float_equal(p, 0.05617559884523197, EPS);
    /* the other way round: U' = 16 - 14 = 2, z = (2 - 8 - 0.5) / sd = -1.8763883749,
     * p = 1 - 0.5 erfc(1.8763883749 / sqrt 2) = 0.9697 (by the same table) */
    assert_int_equal(dq_mann_whitney(y, 4, x, 4, &u, &z, &p), 0);
    assert_float_equal(u, 2, EPS);
    assert_float_equal(z, -6.5 / 3.4641016151377544, EPS);
    assert_true(p > 0.96 && p < 0.98);
}

/* x = {2, 3, 3, 5}, y = {1, 2, 3, 4}: two runs of ties.
 *   together: 1y 2x 2y 3x 3x 3y 4y 5x; the 2s share ranks 2, 3 -> 2.5; the 3s share
 *   4, 5, 6 -> 5; 4 -> 7; 5 -> 8; x's ranks 2.5, 5, 5, 8
 *   R = 20.5; U = 20.5 - 10 = 10.5; mean = 8
 *   sum(t^3 - t) = (8 - 2) + (27 - 3) = 30; n (n - 1) = 56
 *   variance = 16/12 * (9 - 30/56) = 11.2857142857; sd = 3.3594217189
 *   z = (10.5 - 8 - 0.5) / 3.3594217189 = 0.5953405578
 *   p = 0.5 erfc(0.5953405578 / sqrt 2) = 0.2758079253 */
static void test_mann_whitney_ties(void **state)
{
    const double x[] = {2, 3, 3, 5}, y[] = {1, 2, 3, 4};
    const double same_x[] = {5, 5, 5}, same_y[] = {5, 5};
    double u, z, p;

    assert_int_equal(dq_mann_whitney(x, 4, y, 4, &u, &z, &p), 0);
    assert_float_equal(u, 10.5, EPS);
    assert_float_equal(z, 0.5953405577875872, EPS);
    assert_float_equal(p, 0.275807925257072, EPS);

    /* all tied: every rank 3, R = 9, U = 9 - 6 = 3 = mean, variance 0 -> z 0, p 1 */
    assert_int_equal(dq_mann_whitney(same_x, 3, same_y, 2, &u, &z, &p), 0);
    assert_float_equal(u, 3, EPS);
    assert_float_equal(z, 0, EPS);
    assert_float_equal(p, 1, EPS);

    assert_int_equal(dq_mann_whitney(x, 0, y, 4, &u, &z, &p), -1);
    assert_int_equal(dq_mann_whitney(x, 4, y, 0, &u, &z, &p), -1);
}

static void fill(double *a, size_t n, double first, double step)
{
    for (size_t i = 0; i < n; i++)
        a[i] = first + step * (double)i;
}

static void test_identical_pass(void **state)
{
    double ms[20];
    dq_analysis_criteria c;
    dq_analysis_verdict v;

    dq_analysis_defaults(&c);
    fill(ms, 20, 40, 1);
    assert_int_equal(dq_analysis_judge(ms, 20, 0, ms, 20, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_PASS);
    assert_string_equal(v.reason, "");
    assert_true(v.latency_tested);
    assert_float_equal(v.u, 200, EPS); /* every value tied in pairs: U = mean */
    assert_true(v.p_value > 0.4);
    assert_float_equal(v.median_ratio, 1, EPS);
    assert_float_equal(v.canary.p50_ms, 49, EPS); /* nearest rank 10 of 40..59 */
    assert_float_equal(v.canary.p90_ms, 57, EPS); /* rank 18 */
    assert_float_equal(v.canary.p99_ms, 59, EPS); /* rank 20 */
}

/* canary 173..192 ms, stable 32..51 ms, no errors: every canary value above every stable
 * one, U = 400, mean 200, variance 400/12 * 41, z = 199.5 / 36.968455 = 5.3964928,
 * p = 3.3978e-08; medians (rank 10) 182 and 41: x4.44. */
static void test_latency_regression(void **state)
{
    double canary[20], stable[20];
    dq_analysis_criteria c;
    dq_analysis_verdict v;

    dq_analysis_defaults(&c);
    fill(canary, 20, 173, 1);
    fill(stable, 20, 32, 1);
    assert_int_equal(dq_analysis_judge(canary, 20, 0, stable, 20, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_FAIL);
    assert_float_equal(v.u, 400, EPS);
    assert_float_equal(v.z, 5.396492763484582, EPS);
    assert_float_equal(v.p_value, 3.397807564086694e-08, EPS);
    assert_float_equal(v.median_ratio, 182.0 / 41.0, EPS);
    assert_string_equal(v.reason, "latency: canary p50 182 ms vs stable 41 ms (x4.44), "
                                  "Mann-Whitney U p=3.4e-08 < 0.05");

    /* the stable faster is no regression of the canary */
    assert_int_equal(dq_analysis_judge(stable, 20, 0, canary, 20, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_PASS);
}

/* stable 100/101 ms, canary 104/105 ms: certain (p ~ 1e-8) but 4 %, under the 10 % tolerance. */
static void test_tolerance_stops_tiny_shift(void **state)
{
    double canary[20], stable[20];
    dq_analysis_criteria c;
    dq_analysis_verdict v;

    for (size_t i = 0; i < 20; i++) {
        stable[i] = 100 + (double)(i % 2);
        canary[i] = 104 + (double)(i % 2);
    }
    dq_analysis_defaults(&c);
    assert_int_equal(dq_analysis_judge(canary, 20, 0, stable, 20, 0, &c, &v), 0);
    assert_true(v.p_value < 1e-6);
    assert_float_equal(v.median_ratio, 1.04, EPS);
    assert_int_equal(v.result, DQ_ANALYSIS_PASS);

    c.latency_tolerance = 0.01;
    assert_int_equal(dq_analysis_judge(canary, 20, 0, stable, 20, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_PASS); /* 4 ms: not above min_delta's 5 ms */
    c.latency_min_delta_ms = 3;
    assert_int_equal(dq_analysis_judge(canary, 20, 0, stable, 20, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_FAIL);
    assert_non_null(strstr(v.reason, "latency: canary p50 104 ms vs stable 100 ms (x1.04)"));
}

/* Latencies are whole ms: a stable p50 of 0 counts as 1 ms. 20 x 1 ms (or 150) over
 * 20 x 0 ms: two runs of 20 ties, sum(t^3 - t) = 15960, variance 400/12 * (41 - 15960/1560)
 * = 1025.64, z = 199.5 / 32.0256 = 6.2293855, p = 2.3413e-10. */
static void test_stable_under_a_millisecond(void **state)
{
    double zero[20] = {0}, one[20], slow[20];
    dq_analysis_criteria c;
    dq_analysis_verdict v;

    fill(one, 20, 1, 0);
    fill(slow, 20, 150, 0);
    dq_analysis_defaults(&c);
    assert_int_equal(dq_analysis_judge(one, 20, 0, zero, 20, 0, &c, &v), 0);
    assert_true(v.p_value < 0.05);
    assert_float_equal(v.median_ratio, 1, EPS);
    assert_int_equal(v.result, DQ_ANALYSIS_PASS);

    assert_int_equal(dq_analysis_judge(slow, 20, 0, zero, 20, 0, &c, &v), 0);
    assert_float_equal(v.median_ratio, 150, EPS);
    assert_int_equal(v.result, DQ_ANALYSIS_FAIL);
    assert_string_equal(v.reason, "latency: canary p50 150 ms vs stable 0 ms (x150.00), "
                                  "Mann-Whitney U p=2.3e-10 < 0.05");
}

/* The failure seen under ASan on loopback: canary 2 ms against stable 1 ms is "twice as
 * slow" (x2.00, well over the 10% tolerance) and significant, yet means nothing; the
 * median must also be above the stable's by more than latency_min_delta_ms (5 ms). Same
 * ties as above with 1 and 2: z = 6.2293855, p = 2.3413e-10. */
static void test_min_delta_stops_a_millisecond(void **state)
{
    double one[20], two[20];
    dq_analysis_criteria c;
    dq_analysis_verdict v;

    fill(one, 20, 1, 0);
    fill(two, 20, 2, 0);
    dq_analysis_defaults(&c);
    assert_float_equal(c.latency_min_delta_ms, 5, EPS);
    assert_int_equal(dq_analysis_judge(two, 20, 0, one, 20, 0, &c, &v), 0);
    assert_true(v.p_value < 1e-9);
    assert_float_equal(v.median_ratio, 2, EPS);
    assert_int_equal(v.result, DQ_ANALYSIS_PASS);

    c.latency_min_delta_ms = 0;
    assert_int_equal(dq_analysis_judge(two, 20, 0, one, 20, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_FAIL);
    assert_string_equal(v.reason, "latency: canary p50 2 ms vs stable 1 ms (x2.00), Mann-Whitney U p=2.3e-10 < 0.05");
}

static void test_errors_fail(void **state)
{
    double ms[40];
    dq_analysis_criteria c;
    dq_analysis_verdict v;

    fill(ms, 40, 40, 0.5);
    dq_analysis_defaults(&c);
    assert_int_equal(dq_analysis_judge(ms, 20, 12, ms, 20, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_FAIL);
    assert_float_equal(v.canary.error_rate, 0.6, EPS);
    assert_string_equal(v.reason, "errors: canary 12/20 (60.0%) vs stable 0/20 (0.0%), "
                                  "tolerance 1.0 points");

    /* within the tolerance of the stable's rate (12.5 <= 10 + 5) but above max_error_rate */
    c.error_tolerance = 0.05;
    assert_int_equal(dq_analysis_judge(ms, 40, 5, ms, 40, 4, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_FAIL);
    assert_string_equal(v.reason, "errors: canary 5/40 (12.5%) vs stable 4/40 (10.0%), "
                                  "above the 5.0% limit");
    c.max_error_rate = -1; /* no absolute limit */
    assert_int_equal(dq_analysis_judge(ms, 40, 5, ms, 40, 4, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_PASS);

    /* exactly at the limits is not above them: 1/20 = 5 % = 0 + 5 points = max 5 % */
    c.max_error_rate = 0.05;
    assert_int_equal(dq_analysis_judge(ms, 20, 1, ms, 20, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_PASS);
}

/* Before min_samples: 3 errors in 5 are already 3/20 = 15 % at 20 samples; 2 wait. */
static void test_errors_fail_early(void **state)
{
    double ms[5];
    dq_analysis_criteria c;
    dq_analysis_verdict v;

    fill(ms, 5, 40, 1);
    dq_analysis_defaults(&c);
    assert_int_equal(dq_analysis_judge(ms, 5, 3, ms, 5, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_FAIL);
    assert_false(v.latency_tested);
    assert_string_equal(v.reason, "errors (early, before 20 samples): canary 3/5 (60.0%) vs "
                                  "stable 0/5 (0.0%), tolerance 1.0 points");

    assert_int_equal(dq_analysis_judge(ms, 5, 2, ms, 5, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_WAIT);

    /* 3 errors but a stable as bad: 3/20 = 15 % is within 3/5 = 60 % + 1 point, and the
     * absolute limit is off */
    c.max_error_rate = -1;
    assert_int_equal(dq_analysis_judge(ms, 5, 3, ms, 5, 3, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_WAIT);
}

static void test_wait_before_min_samples(void **state)
{
    double canary[19], stable[20];
    dq_analysis_criteria c;
    dq_analysis_verdict v;

    fill(canary, 19, 500, 1); /* far slower, but too few to say */
    fill(stable, 20, 40, 1);
    dq_analysis_defaults(&c);
    assert_int_equal(dq_analysis_judge(canary, 19, 0, stable, 20, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_WAIT);
    assert_false(v.latency_tested);
    assert_float_equal(v.p_value, 1, EPS);
    assert_string_equal(v.reason, "waiting for 20 samples per side: canary 19, stable 20");

    /* min_samples below 8 is taken as 8 */
    c.min_samples = 2;
    assert_int_equal(dq_analysis_judge(canary, 7, 0, stable, 7, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_WAIT);
    assert_int_equal(dq_analysis_judge(canary, 8, 0, stable, 8, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_FAIL);
}

/* A sample without an answer (-1) is a sample and an error, not a latency. */
static void test_no_answer(void **state)
{
    double dead[20], stable[20];
    dq_analysis_criteria c;
    dq_analysis_verdict v;

    fill(dead, 20, -1, 0);
    dead[0] = 30;
    fill(stable, 20, 40, 1);
    dq_analysis_defaults(&c);
    assert_int_equal(dq_analysis_judge(dead, 20, 19, stable, 20, 0, &c, &v), 0);
    assert_int_equal(v.result, DQ_ANALYSIS_FAIL);
    assert_int_equal(v.canary.samples, 20);
    assert_float_equal(v.canary.p50_ms, 30, EPS); /* the one latency */
    assert_false(v.latency_tested);
    assert_string_equal(v.reason, "errors: canary 19/20 (95.0%) vs stable 0/20 (0.0%), "
                                  "tolerance 1.0 points");
}

static double num_at(const cJSON *o, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, a), b);

    assert_true(cJSON_IsNumber(x));
    return x->valuedouble;
}

static void test_verdict_json(void **state)
{
    double canary[20], stable[20];
    dq_analysis_criteria c;
    dq_analysis_verdict v;
    cJSON *o;

    dq_analysis_defaults(&c);
    fill(canary, 20, 173, 1);
    fill(stable, 20, 32, 1);
    assert_int_equal(dq_analysis_judge(canary, 20, 1, stable, 20, 0, &c, &v), 0);
    o = dq_analysis_verdict_json(&v, &c);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "result")->valuestring, "fail");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "reason")->valuestring, v.reason);
    assert_float_equal(num_at(o, "canary", "samples"), 20, EPS);
    assert_float_equal(num_at(o, "canary", "errors"), 1, EPS);
    assert_float_equal(num_at(o, "canary", "error_rate"), 0.05, EPS);
    assert_float_equal(num_at(o, "canary", "p50_ms"), 182, EPS);
    assert_float_equal(num_at(o, "canary", "p90_ms"), 190, EPS);
    assert_float_equal(num_at(o, "canary", "p99_ms"), 192, EPS);
    assert_float_equal(num_at(o, "stable", "p50_ms"), 41, EPS);
    assert_float_equal(num_at(o, "stable", "errors"), 0, EPS);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(o, "latency"), "test")->valuestring,
                        "mann-whitney-u");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(o, "latency"), "tested")));
    assert_float_equal(num_at(o, "latency", "u"), 400, EPS);
    assert_float_equal(num_at(o, "latency", "z"), 5.396492763484582, EPS);
    assert_float_equal(num_at(o, "latency", "p_value"), 3.397807564086694e-08, EPS);
    assert_float_equal(num_at(o, "latency", "alpha"), 0.05, EPS);
    assert_float_equal(num_at(o, "latency", "median_ratio"), 182.0 / 41.0, EPS);
    assert_float_equal(num_at(o, "latency", "tolerance"), 0.10, EPS);
    assert_float_equal(num_at(o, "criteria", "error_tolerance"), 0.01, EPS);
    assert_float_equal(num_at(o, "criteria", "max_error_rate"), 0.05, EPS);
    assert_float_equal(num_at(o, "criteria", "min_samples"), 20, EPS);
    cJSON_Delete(o);

    /* WAIT, and no absolute limit: null */
    c.max_error_rate = -1;
    assert_int_equal(dq_analysis_judge(canary, 3, 0, stable, 3, 0, &c, &v), 0);
    o = dq_analysis_verdict_json(&v, &c);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "result")->valuestring, "wait");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(o, "latency"), "tested")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(o, "criteria"), "max_error_rate")));
    cJSON_Delete(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mann_whitney_by_hand),
        cmocka_unit_test(test_mann_whitney_ties),
        cmocka_unit_test(test_identical_pass),
        cmocka_unit_test(test_latency_regression),
        cmocka_unit_test(test_tolerance_stops_tiny_shift),
        cmocka_unit_test(test_stable_under_a_millisecond),
        cmocka_unit_test(test_min_delta_stops_a_millisecond),
        cmocka_unit_test(test_errors_fail),
        cmocka_unit_test(test_errors_fail_early),
        cmocka_unit_test(test_wait_before_min_samples),
        cmocka_unit_test(test_no_answer),
        cmocka_unit_test(test_verdict_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
