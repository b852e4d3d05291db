/*
 * metrics.h - a process's metrics: counters, gauges and histograms with label sets,
 * rendered in the Prometheus text exposition format 0.0.4. One implementation for every
 * worker (clients/healthsrv.c serves it on /metrics), so each names and labels its
 * metrics the same way (docs/operations.md, "Health and metrics", lists them).
 *
 * A family (dq_metric) is registered once at start with its label names; an event then
 * bumps the series of its label values: a short lock on the family and a lookup in its
 * hash table, no allocation and no formatting except the first time a label set is seen.
 * Thread-safe: any thread may bump, register or render.
 *
 * Label values come from events (a service name in a request, say), so a family holds at
 * most DQ_METRICS_MAX_SERIES label sets: past that, new sets are counted in one series
 * whose every label value is "_other", and the scrape stays bounded whatever is sent.
 *
 * Every call accepts a NULL family and does nothing, so code that runs without a registry
 * (a unit test, a tool) needs no checks.
 */
#ifndef DQ_METRICS_H
#define DQ_METRICS_H

#include <stddef.h>

#define DQ_METRICS_MAX_SERIES 1000
#define DQ_METRICS_MAX_LABELS 8
#define DQ_METRICS_MAX_BUCKETS 32
#define DQ_METRICS_OTHER "_other"

typedef struct dq_metrics dq_metrics;
typedef struct dq_metric dq_metric;

/* A registry. const_name/const_value (both NULL, or both set) is a label every series
 * carries, first: {worker="validator"}. NULL when out of memory. */
dq_metrics *dq_metrics_new(const char *const_name, const char *const_value);
/* The bound on label sets per family (default DQ_METRICS_MAX_SERIES), for a registry
 * whose labels come from a trusted source only (the registry's scrape-time figures, one
 * series per configured target). Call before using its families. */
void dq_metrics_set_max_series(dq_metrics *m, size_t n);
/* Frees the registry and its families. NULL is a no-op. No thread may use it any more. */
void dq_metrics_free(dq_metrics *m);

/* Register a family, or find the one already registered under name: labels is a
 * NULL-terminated list of label names (NULL: none), at most DQ_METRICS_MAX_LABELS.
 * Returns NULL when name is taken by a family of another type or other labels, when a name
 * is not a valid Prometheus name, or out of memory (m NULL: NULL). The family lives as long
 * as m. help is copied. */
dq_metric *dq_metrics_counter(dq_metrics *m, const char *name, const char *help,
                              const char *const labels[]);
dq_metric *dq_metrics_gauge(dq_metrics *m, const char *name, const char *help,
                            const char *const labels[]);
/* bounds: n (<= DQ_METRICS_MAX_BUCKETS) strictly increasing upper bounds; +Inf is added. */
dq_metric *dq_metrics_histogram(dq_metrics *m, const char *name, const char *help,
                                const char *const labels[], const double *bounds, size_t n);

/* values: one per label name of the family, in its order (NULL when it has none); a NULL
 * value counts as "". Counters: add v (a negative v is ignored). Gauges: add v. */
void dq_metric_add(dq_metric *f, const char *const values[], double v);
/* Gauges: set to v. */
void dq_metric_set(dq_metric *f, const char *const values[], double v);
/* Histograms: count v in its bucket, add it to _sum, 1 to _count. */
void dq_metric_observe(dq_metric *f, const char *const values[], double v);
/* The current value of a counter or gauge series, or a histogram series' _count; 0 when
 * the label set was never seen. For tests and for readiness. */
double dq_metric_value(dq_metric *f, const char *const values[]);
/* Forget every series of f (a gauge that a collector fills again on each scrape, for
 * partitions that are no longer assigned). */
void dq_metric_clear(dq_metric *f);

/* Called at the start of every dq_metrics_render, on the rendering thread, to refresh
 * gauges (consumer lag, readiness). At most 8; -1 when full. */
typedef void (*dq_metrics_collect_fn)(void *ctx, dq_metrics *m);
int dq_metrics_on_collect(dq_metrics *m, dq_metrics_collect_fn fn, void *ctx);
/* Remove what dq_metrics_on_collect(m, fn, ctx) added (before ctx is freed). */
void dq_metrics_off_collect(dq_metrics *m, dq_metrics_collect_fn fn, void *ctx);

/* The exposition text of every family, in registration order: # HELP, # TYPE, then one
 * line per series (histograms: _bucket lines with le, _sum, _count). Label values are
 * escaped (\\, \", \n), as is the help text (\\, \n). The caller frees the result; *len
 * (may be NULL) receives its length. NULL out of memory. */
char *dq_metrics_render(dq_metrics *m, size_t *len);

/* The buckets of deployq's own histograms (docs/operations.md, "Health and metrics"):
 * MTTR resolves seconds (a rollback takes a few), lock waits resolve milliseconds. */
#define DQ_MTTR_BUCKETS 13
extern const double dq_mttr_buckets[DQ_MTTR_BUCKETS];
#define DQ_LOCK_WAIT_BUCKETS 12
extern const double dq_lock_wait_buckets[DQ_LOCK_WAIT_BUCKETS];

#endif
