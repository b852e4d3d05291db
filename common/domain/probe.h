/*
 * probe.h - one health probe of a deployed service, and the sample it yields.
 *
 * The monitor judges a fresh deploy by probing it every interval. A probe is either an
 * HTTP request (expected status, a latency limit, an optional body match: substring or
 * POSIX extended regex), a Prometheus instant query (/api/v1/query) whose scalar is
 * compared with a threshold, or a count of the watched release's error events in Sentry
 * (the organization events API: field=count(), query=release:"<version>", environment,
 * start = the watch window's start, end = now) compared with a threshold. Each run gives
 * one sample: pass, fail, or missing (no data to judge: no HTTP response at all, an empty
 * Prometheus result, NaN, Prometheus or Sentry unreachable or answering an error, Sentry
 * rate limiting us). What a missing sample counts as is the probe's policy, applied by
 * watch.h, not here.
 *
 * Sentry's 429 is honoured: its Retry-After (at least 1 s when absent) is kept in the
 * probe, and until it has passed a run asks Sentry nothing and gives a missing sample
 * ("rate limited by sentry"). The Sentry token goes into the Authorization header only;
 * it is registered with dq_log_redact() when the probe is read.
 *
 * A probe makes exactly one attempt (no retries: a retry would hide the very failure the
 * probe is there to see), bounded by its timeout and, for HTTP, by max_latency: once the
 * limit has passed without a complete answer the verdict is known (too slow), so waiting
 * longer would only let a slow endpoint stretch the monitor's interval. Such a cut attempt
 * is a latency failure whose latency is at least the limit. A watch (watch.h) also caps
 * the timeout at its interval, so a round of probes fits between two ticks. Header values given in the configuration
 * (tokens) are sent but never copied into a sample, a log line or an event; every text a
 * sample keeps from the outside (curl's error, a body excerpt) goes through dq_redact().
 *
 * The judging functions are pure, so tests can feed them responses directly.
 */
#ifndef DQ_PROBE_H
#define DQ_PROBE_H

#include <cjson/cJSON.h>
#include <regex.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { DQ_PROBE_HTTP = 0, DQ_PROBE_PROMETHEUS, DQ_PROBE_SENTRY } dq_probe_type;

/* What a Sentry probe compares with its threshold: the release's error events in the
 * window so far, or the same per minute of window (the window counted as at least one
 * minute, so the first seconds of a watch do not turn one error into a storm). */
typedef enum { DQ_SENTRY_ERRORS = 0, DQ_SENTRY_ERRORS_PER_MINUTE } dq_sentry_metric;

/* The deploy a probe round is about; only a Sentry probe uses it (the release and the
 * environment it asks about, and the window's start). */
typedef struct dq_probe_target {
    const char *version;
    const char *environment;
    int64_t since_ms;
} dq_probe_target;

/* A Sentry probe's rate-limit state (shared by the threads that run the probe). */
typedef struct dq_probe_limit dq_probe_limit;

/* What a missing sample counts as: a failure, nothing at all (skipped), or the probe's
 * last counted outcome (skipped when there is none yet). */
typedef enum { DQ_MISSING_FAIL = 0, DQ_MISSING_IGNORE, DQ_MISSING_HOLD } dq_missing_policy;

/* A Prometheus probe fails when `value <op> threshold` holds. */
typedef enum { DQ_OP_GT = 0, DQ_OP_GE, DQ_OP_LT, DQ_OP_LE, DQ_OP_EQ, DQ_OP_NE } dq_probe_op;

typedef struct dq_probe {
    char *name;
    dq_probe_type type;
    char *url;        /* http: the URL to GET; prometheus: the .../api/v1/query endpoint;
                         sentry: the base URL (https://sentry.io), no trailing slash */
    char **headers;   /* NULL-terminated "Name: value" lines, or NULL; values are secrets */
    int64_t timeout_ms;      /* one attempt's bound (a watch lowers it to its interval) */
    dq_missing_policy missing;
    /* http */
    long expect_status;      /* 0 means any 2xx */
    int64_t max_latency_ms;  /* 0 means no limit */
    char *body_match;        /* substring the body must contain, or NULL */
    char *body_regex;        /* POSIX ERE the body must match, or NULL */
    regex_t re;              /* compiled body_regex, when body_regex is set */
    /* prometheus */
    char *query;
    dq_probe_op op;          /* prometheus and sentry */
    double threshold;        /* prometheus and sentry */
    /* sentry */
    char *org;               /* organization slug */
    char *token;             /* secret: only ever in the Authorization header */
    long long *project_ids;  /* the events API's project=..., n_projects of them */
    size_t n_projects;
    dq_sentry_metric metric;
    dq_probe_limit *limit;   /* Retry-After of the last 429 */
} dq_probe;

/* Read one probe from its configuration object (keys in docs/configuration.md). `where`
 * prefixes error messages (e.g. "deployq.yaml:40: services.api...monitor.probes[0]").
 * default_timeout_ms applies when the object has no `timeout`. Returns a new probe, or
 * NULL with "<where>.<key>: <reason>" in err. */
dq_probe *dq_probe_from_json(const cJSON *obj, const char *where, int64_t default_timeout_ms,
                             char *err, size_t errlen);
void dq_probe_free(dq_probe *p);

typedef enum { DQ_SAMPLE_PASS = 0, DQ_SAMPLE_FAIL, DQ_SAMPLE_MISSING } dq_sample_outcome;

/* What decided a sample: */
#define DQ_CHECK_OK "ok"                   /* everything held */
#define DQ_CHECK_STATUS "status"           /* wrong HTTP status */
#define DQ_CHECK_LATENCY "latency"         /* slower than max_latency, or cut at it */
#define DQ_CHECK_BODY "body"               /* body did not match */
#define DQ_CHECK_VALUE "value"             /* Prometheus value breached the threshold */
#define DQ_CHECK_NO_RESPONSE "no_response" /* (missing) the HTTP endpoint did not answer */
#define DQ_CHECK_NO_DATA "no_data"         /* (missing) no usable Prometheus or Sentry value */

typedef struct dq_sample {
    int64_t at_ms;              /* wall clock when the probe started */
    dq_sample_outcome outcome;
    char check[16];             /* one of DQ_CHECK_* */
    long status;                /* HTTP status, 0 when none (or Prometheus' own status) */
    int64_t latency_ms;         /* time to the whole response, -1 when none; for an
                                   attempt cut at max_latency, the time it ran (>= the limit) */
    double value;               /* the Prometheus scalar, when has_value */
    int has_value;
    char observed[72];          /* text form of what was seen, for non-numeric checks */
    char detail[192];           /* one line for people: "status 500, expected 200" */
} dq_sample;

/* Run the probe once and judge it into *out (always filled; at_ms = now). The attempt is
 * given up after p->timeout_ms, or after p->max_latency_ms when that is shorter (then it
 * is a latency failure, not a missing sample), so it returns within
 * min(max_latency, timeout) plus the time curl needs to notice. Thread-safe. target says
 * which deploy is watched; it may be NULL, and then a Sentry probe has no release to ask
 * about and gives a missing sample without a request. */
void dq_probe_run_for(const dq_probe *p, const dq_probe_target *target, dq_sample *out);
/* dq_probe_run_for() without a target. */
void dq_probe_run(const dq_probe *p, dq_sample *out);
/* Run n probes at once (a thread each, the first in the caller's) into out[0..n-1], so a
 * round of probes takes as long as its slowest probe rather than the sum of them. When a
 * thread cannot be started its probe runs after the others, in the caller's thread.
 * target as for dq_probe_run_for(). */
void dq_probe_run_all(dq_probe *const *probes, size_t n, const dq_probe_target *target,
                      dq_sample *out);

/* Judge an HTTP outcome: got_response 0 means no response (curl_error says why). */
void dq_probe_judge_http(const dq_probe *p, int got_response, long status, const char *body,
                         size_t body_len, int64_t latency_ms, const char *curl_error,
                         dq_sample *out);
/* Judge an HTTP attempt given up at max_latency after latency_ms without a complete
 * answer: a latency failure, its latency recorded as at least max_latency. */
void dq_probe_judge_http_cut(const dq_probe *p, int64_t latency_ms, dq_sample *out);
/* Judge a Prometheus /api/v1/query answer (status 0: none; why says what went wrong). */
void dq_probe_judge_prometheus(const dq_probe *p, int got_response, long status,
                               const char *body, size_t body_len, const char *why,
                               dq_sample *out);

/* Judge an answer of Sentry's organization events API (field=count()) for a window of
 * window_ms so far (status 0: none; why says what went wrong). A 429 or any status but 200
 * is a missing sample, as is a body without a readable count. */
void dq_probe_judge_sentry(const dq_probe *p, int got_response, long status, const char *body,
                           size_t body_len, const char *why, int64_t window_ms, dq_sample *out);
/* The URL of the events API request for target at now_ms (malloc'd; NULL on OOM). */
char *dq_probe_sentry_url(const dq_probe *p, const dq_probe_target *target, int64_t now_ms);

/* 1 when `value <op> threshold` holds (a breach), 0 otherwise. */
int dq_probe_compare(dq_probe_op op, double value, double threshold);
const char *dq_probe_op_name(dq_probe_op op);
/* "http", "prometheus" or "sentry". */
const char *dq_probe_type_name(dq_probe_type t);
const char *dq_missing_policy_name(dq_missing_policy m);
const char *dq_sample_outcome_name(dq_sample_outcome o);

/* The observed value of a sample as JSON: a number (status, latency in ms, the scalar;
 * infinities as the strings "+Inf"/"-Inf") or the text of `observed`. Caller frees. */
cJSON *dq_sample_observed_json(const dq_sample *s);
/* The limit that a sample's check compares with, as JSON: the expected status (or "2xx"),
 * max_latency in ms, the body pattern, the threshold, or "data" for a missing sample. */
cJSON *dq_probe_threshold_json(const dq_probe *p, const char *check);

#endif
