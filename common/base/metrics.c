/*
 * metrics.c - counters, gauges and histograms in the Prometheus text format (see metrics.h).
 *
 * A family keeps its series in an array under its own mutex, indexed by an open-addressing
 * table of the label values' hash (FNV-1a): a bump hashes, probes, compares the strings of
 * the one series found, and adds. The registry's scrape builds families of thousands of
 * series (one per target), so the lookup must not be a scan.
 */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double dq_mttr_buckets[DQ_MTTR_BUCKETS] = {0.5, 1, 2, 3, 5, 10, 20,
                                                  30, 60, 120, 300, 600, 1800};
const double dq_lock_wait_buckets[DQ_LOCK_WAIT_BUCKETS] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
                                                           1, 5, 10, 30, 60, 300};

typedef enum { M_COUNTER, M_GAUGE, M_HISTOGRAM } mtype;

typedef struct series {
    uint64_t hash;
    char **values;     /* n_labels strings, in one allocation with the series */
    double value;      /* counter, gauge */
    double sum;        /* histogram */
    uint64_t count;    /* histogram */
    uint64_t *buckets; /* histogram: n_bounds + 1 (the last is +Inf), not cumulative */
} series;

struct dq_metric {
    dq_metrics *owner;
    mtype type;
    char *name, *help;
    size_t n_labels;
    char *labels[DQ_METRICS_MAX_LABELS];
    size_t n_bounds;
    double bounds[DQ_METRICS_MAX_BUCKETS];
    pthread_mutex_t mu;
    series **series;
    size_t n_series, cap_series;
    size_t *slots; /* n_slots (a power of two) indexes into series, plus 1; 0 empty */
    size_t n_slots;
    struct dq_metric *next;
};

#define MAX_COLLECTORS 8

struct dq_metrics {
    pthread_mutex_t mu; /* the family list and the collectors */
    char *const_name, *const_value;
    size_t max_series;
    dq_metric *first, *last;
    struct collector {
        dq_metrics_collect_fn fn;
        void *ctx;
    } collectors[MAX_COLLECTORS];
    size_t n_collectors;
};

dq_metrics *dq_metrics_new(const char *const_name, const char *const_value)
{
    dq_metrics *m = calloc(1, sizeof *m);

    if (!m)
        return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->max_series = DQ_METRICS_MAX_SERIES;
    if (const_name && const_value) {
        m->const_name = strdup(const_name);
        m->const_value = strdup(const_value);
        if (!m->const_name || !m->const_value) {
            dq_metrics_free(m);
            return NULL;
        }
    }
    return m;
}

static void family_free(dq_metric *f)
{
    for (size_t i = 0; i < f->n_series; i++)
        free(f->series[i]);
    free(f->series);
    free(f->slots);
    for (size_t i = 0; i < f->n_labels; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void dq_metrics_free(dq_metrics *m)
{
    if (!m)
        return;
    for (dq_metric *f = m->first, *next; f; f = next) {
        next = f->next;
        family_free(f);
    }
    free(m->const_name);
    free(m->const_value);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metric names; labels may not hold ':'. */
static int valid_name(const char *s, int label)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                    (!label && *p == ':');
        if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
            return 0;
    }
    return 1;
}

static int same_shape(const dq_metric *f, mtype type, const char *const labels[],
                      const double *bounds, size_t n_bounds)
{
    size_t n = 0;

    if (f->type != type)
        return 0;
    for (; labels && labels[n]; n++)
        if (n >= f->n_labels || strcmp(labels[n], f->labels[n]) != 0)
            return 0;
    if (n != f->n_labels)
        return 0;
    if (type == M_HISTOGRAM &&
        (n_bounds != f->n_bounds || memcmp(bounds, f->bounds, n_bounds * sizeof *bounds) != 0))
        return 0;
    return 1;
}

static dq_metric *family_register(dq_metrics *m, mtype type, const char *name, const char *help,
                                  const char *const labels[], const double *bounds,
                                  size_t n_bounds)
{
    dq_metric *f;
    size_t n = 0;

    if (!m || !valid_name(name, 0))
        return NULL;
    for (; labels && labels[n]; n++)
        if (n >= DQ_METRICS_MAX_LABELS || !valid_name(labels[n], 1) ||
            (m->const_name && strcmp(labels[n], m->const_name) == 0) ||
            (type == M_HISTOGRAM && strcmp(labels[n], "le") == 0))
            return NULL;
    if (type == M_HISTOGRAM) {
        if (n_bounds > DQ_METRICS_MAX_BUCKETS || (n_bounds && !bounds))
            return NULL;
        for (size_t i = 1; i < n_bounds; i++)
            if (!(bounds[i] > bounds[i - 1]))
                return NULL;
    }
    pthread_mutex_lock(&m->mu);
    for (f = m->first; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            break;
    if (f) {
        if (!same_shape(f, type, labels, bounds, n_bounds))
            f = NULL;
        pthread_mutex_unlock(&m->mu);
        return f;
    }
    f = calloc(1, sizeof *f);
    if (!f)
        goto fail;
    pthread_mutex_init(&f->mu, NULL);
    f->owner = m;
    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (!f->name || !f->help)
        goto fail;
    for (f->n_labels = 0; f->n_labels < n; f->n_labels++) {
        f->labels[f->n_labels] = strdup(labels[f->n_labels]);
        if (!f->labels[f->n_labels])
            goto fail;
    }
    if (type == M_HISTOGRAM) {
        f->n_bounds = n_bounds;
        if (n_bounds)
            memcpy(f->bounds, bounds, n_bounds * sizeof *bounds);
    }
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    pthread_mutex_unlock(&m->mu);
    return f;
fail:
    pthread_mutex_unlock(&m->mu);
    if (f)
        family_free(f);
    return NULL;
}

dq_metric *dq_metrics_counter(dq_metrics *m, const char *name, const char *help,
                              const char *const labels[])
{
    return family_register(m, M_COUNTER, name, help, labels, NULL, 0);
}

dq_metric *dq_metrics_gauge(dq_metrics *m, const char *name, const char *help,
                            const char *const labels[])
{
    return family_register(m, M_GAUGE, name, help, labels, NULL, 0);
}

dq_metric *dq_metrics_histogram(dq_metrics *m, const char *name, const char *help,
                                const char *const labels[], const double *bounds, size_t n)
{
    return family_register(m, M_HISTOGRAM, name, help, labels, bounds, n);
}

static const char *value_at(const char *const values[], size_t i)
{
    return values && values[i] ? values[i] : "";
}

static uint64_t hash_values(const dq_metric *f, const char *const values[])
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < f->n_labels; i++) {
        for (const unsigned char *p = (const unsigned char *)value_at(values, i); *p; p++)
            h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL; /* "a","bc" differs from "ab","c" */
    }
    return h;
}

static series *series_find(const dq_metric *f, const char *const values[], uint64_t h)
{
    if (!f->n_slots)
        return NULL;
    for (size_t i = (size_t)h & (f->n_slots - 1); f->slots[i]; i = (i + 1) & (f->n_slots - 1)) {
        series *s = f->series[f->slots[i] - 1];
        size_t k = 0;

        if (s->hash != h)
            continue;
        while (k < f->n_labels && strcmp(s->values[k], value_at(values, k)) == 0)
            k++;
        if (k == f->n_labels)
            return s;
    }
    return NULL;
}

/* Index series[idx] (its hash set); the table grows to keep at most half of it full.
 * -1 out of memory (nothing changed). */
static int slots_add(dq_metric *f, size_t idx)
{
    if ((f->n_series + 1) * 2 > f->n_slots) {
        size_t n = f->n_slots ? f->n_slots * 2 : 16;
        size_t *ns = calloc(n, sizeof *ns);

        if (!ns)
            return -1;
        free(f->slots);
        f->slots = ns;
        f->n_slots = n;
        for (size_t k = 0; k < f->n_series; k++) /* series[idx] too when idx < n_series */
            if (k != idx) {
                size_t i = (size_t)f->series[k]->hash & (n - 1);

                while (f->slots[i])
                    i = (i + 1) & (n - 1);
                f->slots[i] = k + 1;
            }
    }
    {
        size_t i = (size_t)f->series[idx]->hash & (f->n_slots - 1);

        while (f->slots[i])
            i = (i + 1) & (f->n_slots - 1);
        f->slots[i] = idx + 1;
    }
    return 0;
}

/* The series of values, made when new; the "_other" one once the family is full. NULL out
 * of memory. Called with f->mu held. */
static series *series_get(dq_metric *f, const char *const values[])
{
    static const char *const other[DQ_METRICS_MAX_LABELS] = {
        DQ_METRICS_OTHER, DQ_METRICS_OTHER, DQ_METRICS_OTHER, DQ_METRICS_OTHER,
        DQ_METRICS_OTHER, DQ_METRICS_OTHER, DQ_METRICS_OTHER, DQ_METRICS_OTHER};
    uint64_t h = hash_values(f, values);
    series *s = series_find(f, values, h);
    size_t size, nb;
    char *p;

    if (s)
        return s;
    if (f->n_series >= f->owner->max_series) {
        values = other;
        h = hash_values(f, values);
        s = series_find(f, values, h);
        if (s)
            return s;
    }
    if (f->n_series == f->cap_series) {
        size_t cap = f->cap_series ? f->cap_series * 2 : 8;
        series **ns = realloc(f->series, cap * sizeof *ns);

        if (!ns)
            return NULL;
        f->series = ns;
        f->cap_series = cap;
    }
    nb = f->type == M_HISTOGRAM ? f->n_bounds + 1 : 0;
    size = sizeof *s + nb * sizeof(uint64_t) + f->n_labels * sizeof(char *);
    for (size_t i = 0; i < f->n_labels; i++)
        size += strlen(value_at(values, i)) + 1;
    s = calloc(1, size);
    if (!s)
        return NULL;
    s->hash = h;
    s->buckets = (uint64_t *)(s + 1);
    s->values = (char **)(s->buckets + nb);
    p = (char *)(s->values + f->n_labels);
    for (size_t i = 0; i < f->n_labels; i++) {
        size_t len = strlen(value_at(values, i)) + 1;

        memcpy(p, value_at(values, i), len);
        s->values[i] = p;
        p += len;
    }
    f->series[f->n_series] = s;
    if (slots_add(f, f->n_series) != 0) {
        free(s);
        return NULL;
    }
    f->n_series++;
    return s;
}

void dq_metric_add(dq_metric *f, const char *const values[], double v)
{
    series *s;

    if (!f || f->type == M_HISTOGRAM || (f->type == M_COUNTER && !(v >= 0)))
        return;
    pthread_mutex_lock(&f->mu);
    s = series_get(f, values);
    if (s)
        s->value += v;
    pthread_mutex_unlock(&f->mu);
}

void dq_metric_set(dq_metric *f, const char *const values[], double v)
{
    series *s;

    if (!f || f->type != M_GAUGE)
        return;
    pthread_mutex_lock(&f->mu);
    s = series_get(f, values);
    if (s)
        s->value = v;
    pthread_mutex_unlock(&f->mu);
}

void dq_metric_observe(dq_metric *f, const char *const values[], double v)
{
    series *s;
    size_t b = 0;

    if (!f || f->type != M_HISTOGRAM || isnan(v))
        return;
    while (b < f->n_bounds && v > f->bounds[b])
        b++;
    pthread_mutex_lock(&f->mu);
    s = series_get(f, values);
    if (s) {
        s->buckets[b]++;
        s->sum += v;
        s->count++;
    }
    pthread_mutex_unlock(&f->mu);
}

double dq_metric_value(dq_metric *f, const char *const values[])
{
    series *s;
    double v = 0;

    if (!f)
        return 0;
    pthread_mutex_lock(&f->mu);
    s = series_find(f, values, hash_values(f, values));
    if (s)
        v = f->type == M_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&f->mu);
    return v;
}

void dq_metric_clear(dq_metric *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n_series; i++)
        free(f->series[i]);
    f->n_series = 0;
    if (f->slots)
        memset(f->slots, 0, f->n_slots * sizeof *f->slots);
    pthread_mutex_unlock(&f->mu);
}

void dq_metrics_set_max_series(dq_metrics *m, size_t n)
{
    if (m && n > 0)
        m->max_series = n; /* before any family is used: read under the families' locks */
}

int dq_metrics_on_collect(dq_metrics *m, dq_metrics_collect_fn fn, void *ctx)
{
    int rc = -1;

    if (!m || !fn)
        return -1;
    pthread_mutex_lock(&m->mu);
    if (m->n_collectors < MAX_COLLECTORS) {
        m->collectors[m->n_collectors].fn = fn;
        m->collectors[m->n_collectors].ctx = ctx;
        m->n_collectors++;
        rc = 0;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

void dq_metrics_off_collect(dq_metrics *m, dq_metrics_collect_fn fn, void *ctx)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n_collectors; i++) {
        if (m->collectors[i].fn == fn && m->collectors[i].ctx == ctx) {
            memmove(&m->collectors[i], &m->collectors[i + 1],
                    (m->n_collectors - i - 1) * sizeof m->collectors[0]);
            m->n_collectors--;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ---------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
    int oom;
} buf;

static void grow(buf *b, size_t need)
{
    size_t cap;
    char *np;

    if (b->oom || b->len + need + 1 <= b->cap)
        return;
    cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need + 1)
        cap *= 2;
    np = realloc(b->p, cap);
    if (!np) {
        b->oom = 1;
        return;
    }
    b->p = np;
    b->cap = cap;
}

static void put(buf *b, const char *s, size_t n)
{
    grow(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* label: \ " and newline escaped; help: \ and newline */
static void put_escaped(buf *b, const char *s, int label)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            put(b, "\\\\", 2);
        else if (*p == '\n')
            put(b, "\\n", 2);
        else if (label && *p == '"')
            put(b, "\\\"", 2);
        else
            put(b, p, 1);
    }
}

/* Prometheus' spelling of a sample value: integers without a fraction, +Inf, NaN. */
static void number_text(double v, char *s, size_t n)
{
    if (isnan(v))
        snprintf(s, n, "NaN");
    else if (isinf(v))
        snprintf(s, n, "%s", v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(s, n, "%.0f", v);
    else
        snprintf(s, n, "%.15g", v);
}

static void put_number(buf *b, double v)
{
    char s[64];

    number_text(v, s, sizeof s);
    puts_(b, s);
}

/* name{const,labels...[,le="x"]} value */
static void put_sample(buf *b, const dq_metrics *m, const dq_metric *f, const series *s,
                       const char *suffix, const char *le, double v)
{
    int first = 1;

    puts_(b, f->name);
    puts_(b, suffix);
    if (m->const_name || f->n_labels || le)
        puts_(b, "{");
    if (m->const_name) {
        puts_(b, m->const_name);
        puts_(b, "=\"");
        put_escaped(b, m->const_value, 1);
        puts_(b, "\"");
        first = 0;
    }
    for (size_t i = 0; i < f->n_labels; i++) {
        if (!first)
            puts_(b, ",");
        first = 0;
        puts_(b, f->labels[i]);
        puts_(b, "=\"");
        put_escaped(b, s->values[i], 1);
        puts_(b, "\"");
    }
    if (le) {
        if (!first)
            puts_(b, ",");
        puts_(b, "le=\"");
        puts_(b, le);
        puts_(b, "\"");
    }
    if (m->const_name || f->n_labels || le)
        puts_(b, "}");
    puts_(b, " ");
    put_number(b, v);
    puts_(b, "\n");
}

static void render_family(buf *b, const dq_metrics *m, dq_metric *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};

    puts_(b, "# HELP ");
    puts_(b, f->name);
    puts_(b, " ");
    put_escaped(b, f->help, 0);
    puts_(b, "\n# TYPE ");
    puts_(b, f->name);
    puts_(b, " ");
    puts_(b, types[f->type]);
    puts_(b, "\n");
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n_series; i++) {
        const series *s = f->series[i];
        uint64_t cum = 0;
        char le[64];

        if (f->type != M_HISTOGRAM) {
            put_sample(b, m, f, s, "", NULL, s->value);
            continue;
        }
        for (size_t k = 0; k < f->n_bounds; k++) {
            cum += s->buckets[k];
            number_text(f->bounds[k], le, sizeof le);
            put_sample(b, m, f, s, "_bucket", le, (double)cum);
        }
        put_sample(b, m, f, s, "_bucket", "+Inf", (double)s->count);
        put_sample(b, m, f, s, "_sum", NULL, s->sum);
        put_sample(b, m, f, s, "_count", NULL, (double)s->count);
    }
    pthread_mutex_unlock(&f->mu);
}

char *dq_metrics_render(dq_metrics *m, size_t *len)
{
    buf b = {0};
    size_t n;
    struct collector coll[MAX_COLLECTORS];

    if (!m)
        return NULL;
    /* collectors first, outside the registry's lock: they register and set gauges */
    pthread_mutex_lock(&m->mu);
    n = m->n_collectors;
    memcpy(coll, m->collectors, n * sizeof coll[0]);
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; i < n; i++)
        coll[i].fn(coll[i].ctx, m);
    grow(&b, 0);
    pthread_mutex_lock(&m->mu);
    for (dq_metric *f = m->first; f; f = f->next)
        render_family(&b, m, f);
    pthread_mutex_unlock(&m->mu);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}
