/*
 * httpapi.c - the registry's read-only HTTP API, Server-Sent Events stream, Prometheus
 * metrics and dashboard page (libmicrohttpd), plus the libcurl client of the CLI's --url.
 *
 * Why a thread per connection: an SSE client waits on a condition variable for the next
 * published event; with one thread each, a slow or idle browser only ever blocks its own
 * thread, and the code stays straight-line. Connections are capped (max_clients).
 *
 * Locks, never nested the other way round: the fold lock (the worker's) is taken alone to
 * build a JSON document or to read metrics from the fold; ring_lock guards the stream
 * ring and its clients; metrics_lock the figures the worker feeds. No socket write ever
 * happens under any of them: documents are built, the lock released, then sent.
 */
#include "httpapi.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "event.h"
#include "healthsrv.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "reglog.h"
#include "report.h"
#include "util.h"

#define EVENTS_LIMIT_DEFAULT 100
#define EVENTS_LIMIT_MAX 1000
#define ROLLBACKS_LIMIT_DEFAULT 20
#define ROLLBACKS_LIMIT_MAX 500
#define SERIES_BUCKETS_DEFAULT 24
#define SERIES_BUCKETS_MAX 200
/* Bounds on every time the API parses: an RFC 3339 time between 1970 and the end of 9999,
 * or a duration of at most 100 years back from now. Anything computed from two such times
 * and a bucket count stays far inside int64_t; the arithmetic is checked all the same. */
#define TIME_MAX_MS 253402300799999LL /* 9999-12-31T23:59:59.999Z */
#define DURATION_MAX_MS (100LL * 366 * 86400000LL)
/* An SSE refill copies at most this much from the ring at once, so one client never
 * holds ring_lock long; the rest follows on the next read. */
#define SSE_REFILL_BYTES (256 * 1024)
#define DASHBOARD_MAX_BYTES (4 * 1024 * 1024)
/* How often a waiting event stream looks whether its client went away. */
#define SSE_CHECK_MS 500
/* Connection defaults (dq_httpapi_opts). */
#define MAX_CLIENTS_DEFAULT 64u
#define MAX_PER_ADDRESS_DEFAULT 16u
#define REQUEST_TIMEOUT_MS_DEFAULT 10000

/* Prometheus histogram buckets (upper bounds, seconds). */
static const double fsync_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                      0.05,   0.1,   0.25,   0.5,   1,    2.5};
#define N_FSYNC_BOUNDS (sizeof fsync_bounds / sizeof fsync_bounds[0])

typedef struct {
    uint64_t seq; /* 0: empty slot */
    char *json;
    size_t len;
} ring_slot;

typedef struct {
    char *buf;
    size_t len;
} staged_event;

/* One open connection. WAITING: no request yet, or idle between keep-alive requests (it
 * may be cut); BUSY: a request is being answered; STREAM: an /api/stream client. */
typedef enum { CONN_WAITING, CONN_BUSY, CONN_STREAM } conn_state;

typedef struct conn_slot {
    struct conn_slot *prev, *next;
    int fd;
    struct sockaddr_storage addr; /* port zeroed: compared by address only */
    socklen_t addrlen;
    conn_state state;
    int64_t since_ms; /* monotonic: when it entered its state */
    int cut;          /* shut down by us; closing, no longer counted */
} conn_slot;

struct dq_httpapi {
    struct MHD_Daemon *daemon;
    int port;
    int has_token;
    unsigned char token_hash[32]; /* only the hash is kept for the comparison */
    dq_fold *fold;
    pthread_mutex_t *fold_lock;
    char *registry_dir;
    char *production_env;
    char *lag_topic;
    int (*ready)(void *ctx, char *why, size_t whylen);
    void *ready_ctx;
    pthread_mutex_t ready_lock; /* one readiness check at a time */
    char *dashboard_owned; /* the file read at start, when one was */
    const char *dashboard;
    size_t dashboard_len;
    int heartbeat_ms;

    pthread_mutex_t ring_lock;
    pthread_cond_t ring_cond; /* CLOCK_MONOTONIC */
    ring_slot *ring;
    size_t ring_size;
    uint64_t seq; /* the last sequence number given out */
    int stopping;
    unsigned sse_clients;

    /* touched by the publishing (worker) thread only */
    staged_event *staged;
    size_t n_staged, cap_staged;

    /* Connections (conn_lock): every open one, in arrival order, with its state, so that
     * a connection that holds a slot without sending a request can be cut (conn_reaper, and
     * eviction when a limit is reached). */
    pthread_mutex_t conn_lock;
    conn_slot *conns_head, *conns_tail;
    unsigned max_clients, max_per_address, max_streams, max_streams_per_address;
    int request_timeout_ms;
    pthread_t reaper;
    int reaper_started;
    pthread_cond_t reaper_cond; /* CLOCK_MONOTONIC; signalled on stop */
    int reaper_stop;
    uint64_t cut, refused, streams_refused; /* counters for /metrics */

    pthread_mutex_t metrics_lock;
    int64_t *lag; /* per partition, -1 unknown */
    int32_t n_lag;
    uint64_t fsync_buckets[N_FSYNC_BOUNDS];
    uint64_t fsync_count;
    double fsync_sum;
};

/* connections (defined below, with the limits they enforce) */
static void conn_set_state(dq_httpapi *api, struct MHD_Connection *c, conn_state st);
static int conn_take_stream(dq_httpapi *api, struct MHD_Connection *c);

/* ---- small text buffer ------------------------------------------------------------- */

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *p, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *ns;

        while (cap < b->len + n + 1)
            cap *= 2;
        ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) DQ_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        sb_add(b, tmp, (size_t)n);
        return;
    }
    {
        char *big = malloc((size_t)n + 1);

        if (!big) {
            b->oom = 1;
            return;
        }
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        sb_add(b, big, (size_t)n);
        free(big);
    }
}

/* ---- responses --------------------------------------------------------------------- */

static enum MHD_Result send_buffer(struct MHD_Connection *c, unsigned status, char *body,
                                   size_t len, const char *type)
{
    /* body is malloc'd; MHD frees it with free() */
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ret;

    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"deployq\"");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Send o (consumed) as JSON. */
static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, cJSON *o)
{
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    size_t n;
    char *body;

    cJSON_Delete(o);
    if (!text)
        return MHD_NO;
    n = strlen(text);
    body = malloc(n + 2);
    if (!body) {
        cJSON_free(text);
        return MHD_NO;
    }
    memcpy(body, text, n);
    body[n] = '\n';
    body[n + 1] = '\0';
    cJSON_free(text);
    return send_buffer(c, status, body, n + 1, "application/json");
}

/* The length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 when p does not start one. */
static size_t utf8_seq_len(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (p[0] >= 0xe0 && p[0] <= 0xef) {
        unsigned lo = p[0] == 0xe0 ? 0xa0 : 0x80, hi = p[0] == 0xed ? 0x9f : 0xbf;

        return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        unsigned lo = p[0] == 0xf0 ? 0x90 : 0x80, hi = p[0] == 0xf4 ? 0x8f : 0xbf;

        return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80 ? 4
                                                                                          : 0;
    }
    return 0;
}

/* Copy text into out (NUL-terminated, at most outlen - 1 bytes), replacing every byte that
 * does not begin a well-formed UTF-8 sequence with U+FFFD: what a client put in a path or
 * a query may be echoed in an error, and JSON text must be UTF-8. A sequence is never cut. */
static void utf8_scrub(const char *text, char *out, size_t outlen)
{
    static const char replacement[] = "\xef\xbf\xbd";
    const unsigned char *p = (const unsigned char *)text;
    size_t o = 0;

    while (*p) {
        size_t n = utf8_seq_len(p);
        const char *src = n ? (const char *)p : replacement;
        size_t len = n ? n : sizeof replacement - 1;

        if (o + len >= outlen)
            break;
        memcpy(out + o, src, len);
        o += len;
        p += n ? n : 1;
    }
    out[o] = '\0';
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *fmt,
                                  ...) DQ_PRINTF(3, 4);
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *fmt,
                                  ...)
{
    char msg[512], clean[512];
    va_list ap;
    cJSON *o = cJSON_CreateObject();

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!o)
        return MHD_NO;
    utf8_scrub(msg, clean, sizeof clean);
    cJSON_AddStringToObject(o, "error", clean);
    return send_json(c, status, o);
}

/* ---- request helpers --------------------------------------------------------------- */

static const char *arg(struct MHD_Connection *c, const char *name)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);

    return v && *v ? v : NULL;
}

static const char *arg_env(struct MHD_Connection *c)
{
    const char *v = arg(c, "env");

    return v ? v : arg(c, "environment");
}

/* A time argument: RFC 3339 within [1970, 9999], or a duration ("24h", at most 100 years)
 * meaning that long before now, clamped to 1970. 0 ok (*ms set, 0 when absent), -1 bad. */
static int arg_time(struct MHD_Connection *c, const char *name, int64_t *ms)
{
    const char *v = arg(c, name);
    int64_t d;

    *ms = 0;
    if (!v)
        return 0;
    if (dq_time_parse(v, ms) == 0) {
        if (*ms >= 0 && *ms <= TIME_MAX_MS)
            return 0;
        *ms = 0;
        return -1;
    }
    d = dq_duration_parse(v);
    if (d < 0 || d > DURATION_MAX_MS)
        return -1;
    *ms = dq_now_ms() - d;
    if (*ms < 1)
        *ms = 1; /* before 1970: the beginning (0 would mean "absent") */
    return 0;
}

#define TIME_ARG_ERROR                                                                     \
    "since/until: expected an RFC 3339 time between 1970 and 9999, or a duration of at "   \
    "most 100 years like 24h"

/* An integer argument in [min,max] with a default. 0 ok, -1 bad. */
static int arg_int(struct MHD_Connection *c, const char *name, long long min, long long max,
                   long long dflt, long long *out)
{
    const char *v = arg(c, name);

    *out = dflt;
    return v ? dq_parse_int(v, min, max, out) : 0;
}

static int str_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* 1 when the request carries the configured bearer token (or none is configured). Both
 * sides are hashed first so the comparison takes the same time whatever the length or
 * the first differing byte. */
static int authorized(const dq_httpapi *api, struct MHD_Connection *c)
{
    const char *h;
    unsigned char got[32];
    unsigned diff = 0;

    if (!api->has_token)
        return 1;
    h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    dq_sha256(h, strlen(h), got);
    for (size_t i = 0; i < sizeof got; i++)
        diff |= (unsigned)(got[i] ^ api->token_hash[i]);
    return diff == 0;
}

static uint64_t ring_seq(dq_httpapi *api)
{
    uint64_t s;

    pthread_mutex_lock(&api->ring_lock);
    s = api->seq;
    pthread_mutex_unlock(&api->ring_lock);
    return s;
}

/* ---- /api/targets, /api/deployments/{id}, /api/rollbacks ---------------------------- */

static enum MHD_Result h_targets(dq_httpapi *api, struct MHD_Connection *c)
{
    const char *svc = arg(c, "service"), *env = arg_env(c);
    /* Read the stream position before the state: every event up to it is already folded
     * (the worker folds before it publishes), so a client that streams from it misses
     * nothing. */
    uint64_t seq = ring_seq(api);
    char hash[DQ_FOLD_HASH_HEX_LEN + 1];
    dq_fold_totals tot;
    cJSON *o = cJSON_CreateObject(), *arr, *t;
    size_t n;

    if (!o)
        return MHD_NO;
    pthread_mutex_lock(api->fold_lock);
    dq_fold_state_hash(api->fold, hash);
    dq_fold_get_totals(api->fold, &tot);
    arr = cJSON_CreateArray();
    if (arr) {
        dq_fold_target *const *targets = dq_fold_targets(api->fold, &n);

        for (size_t i = 0; i < n; i++) {
            if ((svc && !str_eq(svc, targets[i]->service)) ||
                (env && !str_eq(env, targets[i]->environment)))
                continue;
            cJSON_AddItemToArray(arr, dq_fold_target_json(targets[i]));
        }
    }
    pthread_mutex_unlock(api->fold_lock);
    cJSON_AddNumberToObject(o, "seq", (double)seq);
    cJSON_AddStringToObject(o, "state_hash", hash);
    t = cJSON_AddObjectToObject(o, "totals");
    if (t) {
        cJSON_AddNumberToObject(t, "events", (double)tot.events);
        cJSON_AddNumberToObject(t, "unreadable", (double)tot.unreadable);
        cJSON_AddNumberToObject(t, "stale", (double)tot.stale);
        cJSON_AddNumberToObject(t, "targets", (double)tot.targets);
        cJSON_AddNumberToObject(t, "deployments", (double)tot.deployments);
        cJSON_AddNumberToObject(t, "rollbacks", (double)tot.rollbacks);
        dq_json_add_time(t, "first_at", tot.first_at_ms);
        dq_json_add_time(t, "last_at", tot.last_at_ms);
    }
    cJSON_AddItemToObject(o, "targets", arr ? arr : cJSON_CreateArray());
    return send_json(c, MHD_HTTP_OK, o);
}

static enum MHD_Result h_deployment(dq_httpapi *api, struct MHD_Connection *c, const char *id)
{
    const dq_fold_deployment *d;
    cJSON *o = NULL;

    pthread_mutex_lock(api->fold_lock);
    d = dq_fold_deployment_get(api->fold, id);
    if (d)
        o = dq_fold_deployment_json(d, 1);
    pthread_mutex_unlock(api->fold_lock);
    if (!d)
        return send_error(c, MHD_HTTP_NOT_FOUND, "no deployment %.64s in the registry", id);
    return o ? send_json(c, MHD_HTTP_OK, o) : MHD_NO;
}

static enum MHD_Result h_rollbacks(dq_httpapi *api, struct MHD_Connection *c)
{
    const char *svc = arg(c, "service"), *env = arg_env(c);
    long long limit;
    cJSON *o, *arr;
    dq_fold_rollback *const *rb;
    size_t n;

    if (arg_int(c, "limit", 1, ROLLBACKS_LIMIT_MAX, ROLLBACKS_LIMIT_DEFAULT, &limit) != 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "limit: expected 1 to %d",
                          ROLLBACKS_LIMIT_MAX);
    o = cJSON_CreateObject();
    arr = o ? cJSON_AddArrayToObject(o, "rollbacks") : NULL;
    if (!arr) {
        cJSON_Delete(o);
        return MHD_NO;
    }
    pthread_mutex_lock(api->fold_lock);
    rb = dq_fold_rollbacks(api->fold, &n);
    /* newest first: the fold keeps them in log order */
    for (size_t i = n; i > 0 && cJSON_GetArraySize(arr) < limit; i--) {
        const dq_fold_rollback *r = rb[i - 1];

        if ((svc && !str_eq(svc, r->service)) || (env && !str_eq(env, r->environment)))
            continue;
        cJSON_AddItemToArray(arr, dq_fold_rollback_json(r));
    }
    pthread_mutex_unlock(api->fold_lock);
    return send_json(c, MHD_HTTP_OK, o);
}

/* ---- /api/report, /api/series -------------------------------------------------------- */

static enum MHD_Result h_report(dq_httpapi *api, struct MHD_Connection *c)
{
    const char *by = arg(c, "by");
    dq_report_opts ro = {.service = arg(c, "service"),
                         .environment = arg_env(c),
                         .production_env = api->production_env,
                         .by_target = by && strcmp(by, "target") == 0};
    dq_report rep;
    cJSON *doc;
    int rc;

    if (arg_time(c, "since", &ro.since_ms) != 0 || arg_time(c, "until", &ro.until_ms) != 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, TIME_ARG_ERROR);
    pthread_mutex_lock(api->fold_lock);
    rc = dq_report_compute(api->fold, &ro, &rep);
    pthread_mutex_unlock(api->fold_lock);
    if (rc != 0)
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    doc = dq_report_json(&rep);
    dq_report_clear(&rep);
    return send_json(c, MHD_HTTP_OK, doc);
}

/* The bucket of time `at`: 1 with *i in [0, nb), else 0 (outside the window, or absent). */
static int in_bucket(int64_t at, int64_t since, int64_t width, long long nb, long long *i)
{
    int64_t off;

    if (!at || at < since || width <= 0 || __builtin_sub_overflow(at, since, &off))
        return 0;
    *i = off / width;
    return *i >= 0 && *i < nb;
}

/* Deployments (by their first event) and rollbacks (by their request) per time bucket:
 * the dashboard's chart. The window defaults to the fold's first to last event. */
static enum MHD_Result h_series(dq_httpapi *api, struct MHD_Connection *c)
{
    int64_t since, until, width;
    long long nb;
    uint64_t *deploys = NULL, *failed = NULL, *rollbacks = NULL;
    cJSON *o = NULL, *arr;
    dq_fold_totals tot;
    enum MHD_Result ret = MHD_NO;

    if (arg_time(c, "since", &since) != 0 || arg_time(c, "until", &until) != 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, TIME_ARG_ERROR);
    if (arg_int(c, "buckets", 1, SERIES_BUCKETS_MAX, SERIES_BUCKETS_DEFAULT, &nb) != 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "buckets: expected 1 to %d",
                          SERIES_BUCKETS_MAX);
    deploys = calloc((size_t)nb, sizeof *deploys);
    failed = calloc((size_t)nb, sizeof *failed);
    rollbacks = calloc((size_t)nb, sizeof *rollbacks);
    if (!deploys || !failed || !rollbacks)
        goto out;
    pthread_mutex_lock(api->fold_lock);
    dq_fold_get_totals(api->fold, &tot);
    if (!since)
        since = tot.first_at_ms;
    if (!until)
        until = tot.last_at_ms + 1;
    if (until <= since)
        until = since < INT64_MAX ? since + 1 : since;
    {
        /* width = ceil((until - since) / nb), at least 1 ms; the fold's own times are not
         * bounded like the arguments, hence the checks */
        int64_t span;

        if (__builtin_sub_overflow(until, since, &span) ||
            __builtin_add_overflow(span, (int64_t)nb - 1, &span)) {
            pthread_mutex_unlock(api->fold_lock);
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, "since/until: the window is too wide");
            goto out;
        }
        width = span / nb;
        if (width < 1)
            width = 1;
    }
    {
        size_t n;
        dq_fold_deployment *const *ds = dq_fold_deployments(api->fold, &n);
        dq_fold_rollback *const *rb;
        long long i;

        for (size_t k = 0; k < n; k++) {
            if (!in_bucket(ds[k]->first_at_ms, since, width, nb, &i))
                continue;
            deploys[i]++;
            if (ds[k]->outcome == DQ_DEPLOY_FAILED || ds[k]->outcome == DQ_DEPLOY_REJECTED)
                failed[i]++;
        }
        rb = dq_fold_rollbacks(api->fold, &n);
        for (size_t k = 0; k < n; k++) {
            int64_t at = rb[k]->requested_at_ms ? rb[k]->requested_at_ms : rb[k]->started_at_ms;

            if (in_bucket(at, since, width, nb, &i))
                rollbacks[i]++;
        }
    }
    pthread_mutex_unlock(api->fold_lock);
    o = cJSON_CreateObject();
    if (!o)
        goto out;
    dq_json_add_time(o, "since", since);
    dq_json_add_time(o, "until", until);
    cJSON_AddNumberToObject(o, "bucket_ms", (double)width);
    arr = cJSON_AddArrayToObject(o, "buckets");
    for (long long i = 0; arr && i < nb; i++) {
        cJSON *x = cJSON_CreateObject();
        int64_t start;

        if (!x)
            break;
        if (__builtin_mul_overflow((int64_t)i, width, &start) ||
            __builtin_add_overflow(start, since, &start))
            start = 0; /* not reached with bounded arguments; no time rather than a wrong one */
        dq_json_add_time(x, "start", start);
        cJSON_AddNumberToObject(x, "deploys", (double)deploys[i]);
        cJSON_AddNumberToObject(x, "failed", (double)failed[i]);
        cJSON_AddNumberToObject(x, "rollbacks", (double)rollbacks[i]);
        cJSON_AddItemToArray(arr, x);
    }
    ret = send_json(c, MHD_HTTP_OK, o);
out:
    free(deploys);
    free(failed);
    free(rollbacks);
    return ret;
}

/* ---- /api/events: a scan of the registry files, keyset-paged ---------------------------
 * Order: (at, partition, offset), ascending or descending; the cursor is the key of the
 * last event of the previous page, "AT.PARTITION.OFFSET". One pass over the log keeps the
 * best `limit` events in a heap, so a page costs one read of the log and O(n log limit). */

typedef struct {
    int64_t at;
    int32_t partition;
    int64_t offset;
    uint64_t seq;
    char *payload;
    size_t len;
} ev_item;

typedef struct {
    ev_item *v;
    size_t n, cap;
    int dir; /* +1 ascending, -1 descending */
} ev_heap;

static int key_cmp(int64_t at1, int32_t p1, int64_t o1, int64_t at2, int32_t p2, int64_t o2)
{
    if (at1 != at2)
        return at1 < at2 ? -1 : 1;
    if (p1 != p2)
        return p1 < p2 ? -1 : 1;
    if (o1 != o2)
        return o1 < o2 ? -1 : 1;
    return 0;
}

/* > 0 when a comes later than b in the requested order (a is "worse" for this page). */
static int worse(const ev_heap *h, const ev_item *a, const ev_item *b)
{
    return h->dir * key_cmp(a->at, a->partition, a->offset, b->at, b->partition, b->offset);
}

/* The heap keeps the worst item at the top, so a better candidate replaces it. */
static void heap_down(ev_heap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        ev_item t;

        if (l < h->n && worse(h, &h->v[l], &h->v[m]) > 0)
            m = l;
        if (r < h->n && worse(h, &h->v[r], &h->v[m]) > 0)
            m = r;
        if (m == i)
            return;
        t = h->v[i];
        h->v[i] = h->v[m];
        h->v[m] = t;
        i = m;
    }
}

static void heap_up(ev_heap *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        ev_item t;

        if (worse(h, &h->v[i], &h->v[p]) <= 0)
            return;
        t = h->v[i];
        h->v[i] = h->v[p];
        h->v[p] = t;
        i = p;
    }
}

/* Heapsort in place: repeatedly move the worst item to the end, so the array ends in page
 * order (best first). No qsort: its comparator could not see h->dir without a global, and
 * several connections sort at once. */
static void heap_sort(ev_heap *h)
{
    size_t n = h->n;

    while (h->n > 1) {
        ev_item t = h->v[0];

        h->v[0] = h->v[h->n - 1];
        h->v[h->n - 1] = t;
        h->n--;
        heap_down(h, 0);
    }
    h->n = n;
}

typedef struct {
    const char *service, *env, *type, *deployment;
    int64_t since, until;
    int has_cursor;
    int64_t c_at;
    int32_t c_p;
    int64_t c_o;
} ev_filter;

static int parse_cursor(const char *s, ev_filter *f)
{
    char *end;
    long long a, p, o;

    errno = 0;
    a = strtoll(s, &end, 10);
    if (errno || *end != '.')
        return -1;
    p = strtoll(end + 1, &end, 10);
    if (errno || *end != '.' || p < 0 || p > INT32_MAX)
        return -1;
    o = strtoll(end + 1, &end, 10);
    if (errno || *end || o < 0)
        return -1;
    f->has_cursor = 1;
    f->c_at = a;
    f->c_p = (int32_t)p;
    f->c_o = o;
    return 0;
}

/* Whether a record's raw bytes could match: a cheap test before decoding. */
static int might_match(const dq_reglog_entry *e, const char *s)
{
    return !s || memmem(e->payload, e->len, s, strlen(s)) != NULL;
}

static enum MHD_Result h_events(dq_httpapi *api, struct MHD_Connection *c)
{
    ev_filter f = {.service = arg(c, "service"),
                   .env = arg_env(c),
                   .type = arg(c, "type"),
                   .deployment = arg(c, "deployment")};
    const char *order = arg(c, "order"), *cur = arg(c, "cursor");
    long long limit;
    ev_heap h = {.dir = 1};
    char err[512];
    dq_reglog_iter *it = NULL;
    dq_reglog_entry e;
    int rc;
    cJSON *o = NULL, *arr;
    enum MHD_Result ret = MHD_NO;

    if (!api->registry_dir)
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "no registry directory configured");
    if (arg_int(c, "limit", 1, EVENTS_LIMIT_MAX, EVENTS_LIMIT_DEFAULT, &limit) != 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "limit: expected 1 to %d", EVENTS_LIMIT_MAX);
    if (arg_time(c, "since", &f.since) != 0 || arg_time(c, "until", &f.until) != 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, TIME_ARG_ERROR);
    if (order && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "order: expected asc or desc");
    if (order && strcmp(order, "desc") == 0)
        h.dir = -1;
    if (cur && parse_cursor(cur, &f) != 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "cursor: not a cursor this API gave out");
    h.cap = (size_t)limit;
    h.v = calloc(h.cap, sizeof *h.v);
    if (!h.v)
        return MHD_NO;
    it = dq_reglog_iter_open(api->registry_dir, err, sizeof err);
    if (!it) {
        /* A registry that has stored nothing yet has no directory: an empty page. */
        rc = 0;
        goto answer;
    }
    while ((rc = dq_reglog_iter_next(it, &e, err, sizeof err)) == 1) {
        char derr[128];
        dq_event *ev;
        ev_item cand;

        if (!might_match(&e, f.service) || !might_match(&e, f.env) ||
            !might_match(&e, f.type) || !might_match(&e, f.deployment))
            continue;
        ev = dq_event_decode((const char *)e.payload, e.len, derr, sizeof derr);
        if (!ev)
            continue;
        cand = (ev_item){.at = ev->at_ms, .partition = e.partition, .offset = e.kafka_offset,
                         .seq = e.seq};
        if ((f.service && !str_eq(f.service, ev->service)) ||
            (f.env && !str_eq(f.env, ev->environment)) || (f.type && !str_eq(f.type, ev->type)) ||
            (f.deployment && !str_eq(f.deployment, ev->deployment_id)) ||
            (f.since && ev->at_ms < f.since) || (f.until && ev->at_ms >= f.until)) {
            dq_event_free(ev);
            continue;
        }
        dq_event_free(ev);
        if (f.has_cursor && h.dir * key_cmp(cand.at, cand.partition, cand.offset, f.c_at, f.c_p,
                                            f.c_o) <= 0)
            continue;
        if (h.n == h.cap && worse(&h, &cand, &h.v[0]) >= 0)
            continue;
        cand.payload = malloc(e.len ? e.len : 1);
        if (!cand.payload) {
            rc = -1;
            snprintf(err, sizeof err, "out of memory");
            break;
        }
        memcpy(cand.payload, e.payload, e.len);
        cand.len = e.len;
        if (h.n == h.cap) {
            free(h.v[0].payload);
            h.v[0] = cand;
            heap_down(&h, 0);
        } else {
            h.v[h.n] = cand;
            heap_up(&h, h.n);
            h.n++;
        }
    }
answer:
    if (rc < 0) {
        ret = send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "reading the registry: %s", err);
        goto out;
    }
    heap_sort(&h);
    o = cJSON_CreateObject();
    arr = o ? cJSON_AddArrayToObject(o, "events") : NULL;
    if (!arr)
        goto out;
    for (size_t i = 0; i < h.n; i++) {
        cJSON *x = cJSON_CreateObject(),
              *ev = dq_json_parse(h.v[i].payload, h.v[i].len, DQ_REGLOG_MAX_PAYLOAD, 64, NULL,
                                  err, sizeof err);

        if (!x || !ev) {
            cJSON_Delete(x);
            cJSON_Delete(ev);
            continue;
        }
        cJSON_AddNumberToObject(x, "partition", h.v[i].partition);
        cJSON_AddNumberToObject(x, "offset", (double)h.v[i].offset);
        cJSON_AddNumberToObject(x, "seq", (double)h.v[i].seq);
        cJSON_AddItemToObject(x, "event", ev);
        cJSON_AddItemToArray(arr, x);
    }
    if (h.n == h.cap && h.n > 0) {
        char next[96];
        const ev_item *l = &h.v[h.n - 1];

        snprintf(next, sizeof next, "%lld.%d.%lld", (long long)l->at, (int)l->partition,
                 (long long)l->offset);
        cJSON_AddStringToObject(o, "next_cursor", next);
    } else {
        cJSON_AddNullToObject(o, "next_cursor");
    }
    ret = send_json(c, MHD_HTTP_OK, o);
    o = NULL;
out:
    cJSON_Delete(o);
    dq_reglog_iter_close(it);
    for (size_t i = 0; i < h.n; i++)
        free(h.v[i].payload);
    free(h.v);
    return ret;
}

/* ---- /metrics ------------------------------------------------------------------------ */

/* Every series of the registry says which worker it comes from, as the others' do. */
#define WORKER "worker=\"registry\""

static void metric_head(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Readiness (opts.ready), one check at a time: 1 ready, 0 not with the reason in why. */
static int check_ready(dq_httpapi *api, char *why, size_t whylen)
{
    int ok = 1;

    why[0] = '\0';
    if (!api->ready)
        return 1;
    pthread_mutex_lock(&api->ready_lock);
    ok = api->ready(api->ready_ctx, why, whylen);
    pthread_mutex_unlock(&api->ready_lock);
    if (!ok) {
        /* served without the token: redacted as a log line is */
        char tmp[512];

        dq_redact(why, tmp, sizeof tmp);
        dq_strlcpy(why, tmp, whylen);
    }
    return ok;
}

/* The figures of the live state, per target, as a registry of metrics.h rendered on each
 * scrape (the fold holds them; nothing is counted twice). Every line carries
 * worker="registry", like every other worker's. NULL out of memory. */
static char *fold_metrics(dq_httpapi *api, dq_fold_totals *tot)
{
    static const char *const deploy_labels[] = {"service", "env", "outcome", NULL};
    static const char *const rb_labels[] = {"service", "env", "result", NULL};
    static const char *const target_labels[] = {"service", "env", NULL};
    static const char *const outcome_labels[] = {"outcome", NULL};
    static const dq_deploy_outcome outcomes[] = {
        DQ_DEPLOY_PENDING,   DQ_DEPLOY_AWAITING_APPROVAL, DQ_DEPLOY_VALIDATED,
        DQ_DEPLOY_RUNNING,   DQ_DEPLOY_SUCCEEDED,         DQ_DEPLOY_VERIFIED,
        DQ_DEPLOY_FAILED,    DQ_DEPLOY_REJECTED,          DQ_DEPLOY_ROLLED_BACK,
    };
    uint64_t by_outcome[sizeof outcomes / sizeof outcomes[0]] = {0};
    uint64_t inflight = 0;
    dq_metrics *m = dq_metrics_new("worker", "registry");
    static const char *const kind_labels[] = {"service", "env", "kind", NULL};
    static const char *const q_labels[] = {"service", "env", "quantile", NULL};
    dq_metric *deploys, *deployments, *in_flight, *rollbacks, *mttr, *figures, *ttd, *cost, *costn;
    dq_metric *share;
    dq_report_opts ro = {.production_env = api->production_env, .by_target = 1};
    dq_report rep = {0};
    char *text;

    /* one series per target and outcome: every target the fold knows, none folded away */
    dq_metrics_set_max_series(m, SIZE_MAX);

    deploys = dq_metrics_counter(m, "deployq_deploys_total",
                                 "Deploy events folded by the registry, per target and outcome.",
                                 deploy_labels);
    deployments = dq_metrics_gauge(m, "deployq_deployments",
                                   "Deployments known to the registry, by where each stands now.",
                                   outcome_labels);
    in_flight = dq_metrics_gauge(m, "deployq_deployments_in_flight",
                                 "Targets with a deployment in flight.", NULL);
    rollbacks = dq_metrics_counter(m, "deployq_rollbacks_total",
                                   "Rollbacks folded by the registry, per target and result.",
                                   rb_labels);
    mttr = dq_metrics_histogram(m, "deployq_mttr_seconds",
                                "Time to restore of every rollback that ended (trouble began "
                                "-> restored, or -> the rollback failed), per target "
                                "(report.h).",
                                target_labels, dq_mttr_buckets, DQ_MTTR_BUCKETS);
    figures = dq_metrics_gauge(m, "deployq_report_deployments",
                               "Deployments of the whole log by report.h kind: succeeded, "
                               "failed, failed_change, caught_before_production, "
                               "caught_by_canary (of those caught), escaped_to_production, "
                               "refused_invalid, refused_other.",
                               kind_labels);
    ttd = dq_metrics_gauge(m, "deployq_time_to_deploy_seconds",
                           "Time to deploy (request -> verified) of the whole log: quantile "
                           "0.5, 0.9 and 1 (the longest), per target.",
                           q_labels);
    cost = dq_metrics_gauge(m, "deployq_cost_per_deployment",
                            "CI/CD cost per deployment of the whole log, over its priced "
                            "deployments (estimates included: see deployq_cost_deployments): "
                            "quantile 0.5, 0.9 and 1, per target. The memo's target: median < 0.50.",
                            q_labels);
    costn = dq_metrics_gauge(m, "deployq_cost_deployments",
                             "Deployments that ran, by how their cost is known: priced (from the "
                             "provider's figures or estimated), estimated (priced by wall time), "
                             "not_priced (no cost: on the provider), unknown.",
                             kind_labels);
    share = dq_metrics_gauge(m, "deployq_canary_caught_traffic_percent",
                             "Share of traffic (percent) the canaries caught by canary (aborted "
                             "before 100) had reached, over the whole log: quantile 0.5 and 1 "
                             "(the largest), per target.",
                             q_labels);
    if (!deploys || !deployments || !in_flight || !rollbacks || !mttr || !figures || !ttd || !cost ||
        !costn || !share) {
        dq_metrics_free(m);
        return NULL;
    }
    pthread_mutex_lock(api->fold_lock);
    dq_fold_get_totals(api->fold, tot);
    {
        size_t n;
        dq_fold_target *const *ts = dq_fold_targets(api->fold, &n);
        dq_fold_deployment *const *ds;
        dq_fold_rollback *const *rb;

        for (size_t i = 0; i < n; i++) {
            const dq_fold_target *t = ts[i];
            const struct {
                const char *name;
                uint64_t n;
            } d[] = {{"validated", t->n_validated}, {"rejected", t->n_rejected},
                     {"started", t->n_started},     {"succeeded", t->n_succeeded},
                     {"failed", t->n_failed},       {"verified", t->n_verified}},
              r[] = {{"requested", t->n_rollbacks},
                     {"succeeded", t->n_rollbacks_succeeded},
                     {"failed", t->n_rollbacks_failed}};

            for (size_t k = 0; k < sizeof d / sizeof d[0]; k++) {
                const char *v[] = {t->service, t->environment, d[k].name};

                dq_metric_add(deploys, v, (double)d[k].n);
            }
            for (size_t k = 0; k < sizeof r / sizeof r[0]; k++) {
                const char *v[] = {t->service, t->environment, r[k].name};

                dq_metric_add(rollbacks, v, (double)r[k].n);
            }
            inflight += t->inflight != NULL;
        }
        ds = dq_fold_deployments(api->fold, &n);
        for (size_t i = 0; i < n; i++)
            if ((size_t)ds[i]->outcome < sizeof by_outcome / sizeof by_outcome[0])
                by_outcome[ds[i]->outcome]++;
        rb = dq_fold_rollbacks(api->fold, &n);
        for (size_t i = 0; i < n; i++) {
            const char *v[] = {rb[i]->service, rb[i]->environment};
            double ms;

            if (!dq_report_rollback_ms(rb[i], &ms))
                continue;
            dq_metric_observe(mttr, v, ms < 0 ? 0 : ms / 1000.0);
        }
        if (dq_report_compute(api->fold, &ro, &rep) != 0) {
            pthread_mutex_unlock(api->fold_lock);
            dq_metrics_free(m);
            return NULL;
        }
    }
    pthread_mutex_unlock(api->fold_lock);
    for (size_t i = 0; i < rep.n_targets; i++) {
        const dq_report_target *t = &rep.targets[i];
        const struct {
            const char *kind;
            uint64_t n;
        } k[] = {{"succeeded", t->r.succeeded},
                 {"failed", t->r.failed},
                 {"failed_change", t->r.failed_changes},
                 {"caught_before_production", t->r.caught},
                 {"caught_by_canary", t->r.caught_by_canary},
                 {"escaped_to_production", t->r.escaped},
                 {"refused_invalid", t->r.rejected_invalid},
                 {"refused_other", t->r.rejected_other}};
        const struct {
            const char *q;
            double ms;
        } qs[] = {{"0.5", t->r.time_to_deploy.median_ms},
                  {"0.9", t->r.time_to_deploy.p90_ms},
                  {"1", t->r.time_to_deploy.max_ms}};

        for (size_t j = 0; j < sizeof k / sizeof k[0]; j++) {
            const char *v[] = {t->service, t->environment, k[j].kind};

            dq_metric_set(figures, v, (double)k[j].n);
        }
        for (size_t j = 0; t->r.time_to_deploy.n && j < sizeof qs / sizeof qs[0]; j++) {
            const char *v[] = {t->service, t->environment, qs[j].q};

            dq_metric_set(ttd, v, qs[j].ms / 1000.0);
        }
        if (t->r.caught_by_canary) {
            const char *v50[] = {t->service, t->environment, "0.5"};
            const char *v100[] = {t->service, t->environment, "1"};

            dq_metric_set(share, v50, t->r.canary_share_median);
            dq_metric_set(share, v100, t->r.canary_share_max);
        }
        {
            const struct {
                const char *q;
                double v;
            } cq[] = {{"0.5", t->r.cost_median}, {"0.9", t->r.cost_p90}, {"1", t->r.cost_max}};
            const struct {
                const char *kind;
                uint64_t n;
            } ck[] = {{"priced", t->r.cost_priced},
                      {"estimated", t->r.cost_estimated},
                      {"not_priced", t->r.cost_not_priced},
                      {"unknown", t->r.cost_unknown}};

            for (size_t j = 0; t->r.cost_priced && j < sizeof cq / sizeof cq[0]; j++) {
                const char *v[] = {t->service, t->environment, cq[j].q};

                dq_metric_set(cost, v, cq[j].v);
            }
            for (size_t j = 0; j < sizeof ck / sizeof ck[0]; j++) {
                const char *v[] = {t->service, t->environment, ck[j].kind};

                dq_metric_set(costn, v, (double)ck[j].n);
            }
        }
    }
    dq_report_clear(&rep);
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++) {
        const char *v[] = {dq_deploy_outcome_name(outcomes[i])};

        dq_metric_set(deployments, v, (double)by_outcome[i]);
    }
    dq_metric_set(in_flight, NULL, (double)inflight);
    text = dq_metrics_render(m, NULL);
    dq_metrics_free(m);
    return text;
}

static enum MHD_Result h_metrics(dq_httpapi *api, struct MHD_Connection *c)
{
    dq_fold_totals tot;
    sbuf b = {0};
    uint64_t seq;
    unsigned clients;
    char why[512];
    char *fold_text = fold_metrics(api, &tot);
    int ready = check_ready(api, why, sizeof why);

    if (!fold_text)
        return MHD_NO;
    sb_printf(&b, "%s", fold_text);
    free(fold_text);
    metric_head(&b, "deployq_up", "gauge", "1 while the worker runs.");
    sb_printf(&b, "deployq_up{" WORKER "} 1\n");
    metric_head(&b, "deployq_ready", "gauge",
                "1 when the worker is ready (what /readyz says), else 0.");
    sb_printf(&b, "deployq_ready{" WORKER "} %d\n", ready);
    metric_head(&b, "deployq_registry_events_total", "counter",
                "Records folded into the live state.");
    sb_printf(&b, "deployq_registry_events_total{" WORKER "} %llu\n", (unsigned long long)tot.events);
    metric_head(&b, "deployq_registry_stale_events_total", "counter",
                "Events ignored because their fencing token was stale.");
    sb_printf(&b, "deployq_registry_stale_events_total{" WORKER "} %llu\n", (unsigned long long)tot.stale);
    metric_head(&b, "deployq_registry_unreadable_events_total", "counter",
                "Stored records that are not deployq events.");
    sb_printf(&b, "deployq_registry_unreadable_events_total{" WORKER "} %llu\n",
              (unsigned long long)tot.unreadable);
    metric_head(&b, "deployq_registry_targets", "gauge", "Deploy targets known.");
    sb_printf(&b, "deployq_registry_targets{" WORKER "} %llu\n", (unsigned long long)tot.targets);

    pthread_mutex_lock(&api->metrics_lock);
    metric_head(&b, "deployq_registry_consumer_lag", "gauge",
                "Messages of deployq.events not yet stored, per partition.");
    for (int32_t p = 0; p < api->n_lag; p++)
        if (api->lag[p] >= 0)
            sb_printf(&b, "deployq_registry_consumer_lag{" WORKER ",partition=\"%d\"} %lld\n", (int)p,
                      (long long)api->lag[p]);
    /* the same figures under the name every worker's consumer lag has */
    metric_head(&b, "deployq_consumer_lag", "gauge",
                "Messages between the consumer's position and the partition's high watermark.");
    for (int32_t p = 0; p < api->n_lag; p++)
        if (api->lag[p] >= 0)
            sb_printf(&b, "deployq_consumer_lag{" WORKER ",topic=\"%s\",partition=\"%d\"} %lld\n",
                      api->lag_topic, (int)p, (long long)api->lag[p]);
    metric_head(&b, "deployq_registry_fsync_seconds", "histogram",
                "Latency of each group commit (write + fdatasync).");
    {
        uint64_t cum = 0;

        for (size_t k = 0; k < N_FSYNC_BOUNDS; k++) {
            cum += api->fsync_buckets[k];
            sb_printf(&b, "deployq_registry_fsync_seconds_bucket{" WORKER ",le=\"%g\"} %llu\n",
                      fsync_bounds[k], (unsigned long long)cum);
        }
    }
    sb_printf(&b, "deployq_registry_fsync_seconds_bucket{" WORKER ",le=\"+Inf\"} %llu\n",
              (unsigned long long)api->fsync_count);
    sb_printf(&b, "deployq_registry_fsync_seconds_sum{" WORKER "} %.6f\n", api->fsync_sum);
    sb_printf(&b, "deployq_registry_fsync_seconds_count{" WORKER "} %llu\n",
              (unsigned long long)api->fsync_count);
    pthread_mutex_unlock(&api->metrics_lock);

    pthread_mutex_lock(&api->ring_lock);
    seq = api->seq;
    clients = api->sse_clients;
    pthread_mutex_unlock(&api->ring_lock);
    metric_head(&b, "deployq_registry_stream_events_total", "counter",
                "Events published to /api/stream.");
    sb_printf(&b, "deployq_registry_stream_events_total{" WORKER "} %llu\n", (unsigned long long)seq);
    metric_head(&b, "deployq_registry_stream_clients", "gauge", "Open /api/stream connections.");
    sb_printf(&b, "deployq_registry_stream_clients{" WORKER "} %u\n", clients);
    {
        unsigned open = 0;
        uint64_t cut, refused, streams_refused;

        pthread_mutex_lock(&api->conn_lock);
        for (const conn_slot *s = api->conns_head; s; s = s->next)
            open += !s->cut;
        cut = api->cut;
        refused = api->refused;
        streams_refused = api->streams_refused;
        pthread_mutex_unlock(&api->conn_lock);
        metric_head(&b, "deployq_registry_http_connections", "gauge",
                    "Open connections to the HTTP API.");
        sb_printf(&b, "deployq_registry_http_connections{" WORKER "} %u\n", open);
        metric_head(&b, "deployq_registry_http_connections_cut_total", "counter",
                    "Connections closed for not sending a request in time, or to make room.");
        sb_printf(&b, "deployq_registry_http_connections_cut_total{" WORKER "} %llu\n",
                  (unsigned long long)cut);
        metric_head(&b, "deployq_registry_http_connections_refused_total", "counter",
                    "Connections refused at a connection limit.");
        sb_printf(&b, "deployq_registry_http_connections_refused_total{" WORKER "} %llu\n",
                  (unsigned long long)refused);
        metric_head(&b, "deployq_registry_http_streams_refused_total", "counter",
                    "Event streams refused at the stream limit (HTTP 503).");
        sb_printf(&b, "deployq_registry_http_streams_refused_total{" WORKER "} %llu\n",
                  (unsigned long long)streams_refused);
    }
    if (b.oom) {
        free(b.s);
        return MHD_NO;
    }
    return send_buffer(c, MHD_HTTP_OK, b.s, b.len, "text/plain; version=0.0.4; charset=utf-8");
}

/* ---- /api/stream (Server-Sent Events) --------------------------------------------------- */

typedef struct {
    dq_httpapi *api;
    int fd;        /* the client's socket, polled for a hang-up while waiting; -1 unknown */
    uint64_t next; /* the next sequence number to send */
    sbuf out;      /* text not yet handed to MHD */
    size_t off;
} sse_client;

/* Whether the peer of socket fd has closed or reset it (without reading from it). */
static int client_gone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};

    return fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* Fill cl->out with what the client should get next, waiting up to one heartbeat, and
 * looking every SSE_CHECK_MS for a client that went away (its slot is freed at once, not
 * after a failed write). Returns 0, -1 when the server is stopping, -2 when the client is
 * gone. Called with ring_lock held. */
static int sse_refill(dq_httpapi *api, sse_client *cl)
{
    int64_t end = dq_mono_ms() + api->heartbeat_ms;
    uint64_t oldest;

    while (!api->stopping && cl->next > api->seq) {
        int64_t left = end - dq_mono_ms();
        struct timespec dl;

        if (left <= 0)
            break;
        dq_mono_deadline(left < SSE_CHECK_MS ? left : SSE_CHECK_MS, &dl);
        if (pthread_cond_timedwait(&api->ring_cond, &api->ring_lock, &dl) == ETIMEDOUT &&
            client_gone(cl->fd))
            return -2;
    }
    if (api->stopping)
        return -1;
    if (cl->next > api->seq) {
        /* a comment line: keeps proxies from closing an idle stream, and lets MHD notice a
         * client that went away */
        sb_printf(&cl->out, ": keep-alive\n\n");
        return 0;
    }
    oldest = api->seq >= api->ring_size ? api->seq - api->ring_size + 1 : 1;
    if (cl->next < oldest) {
        /* The client fell further behind than the ring holds: tell it to reload. */
        sb_printf(&cl->out, "event: reset\ndata: {\"missed_from\":%llu,\"resume_at\":%llu}\n\n",
                  (unsigned long long)cl->next, (unsigned long long)oldest);
        cl->next = oldest;
    }
    while (cl->next <= api->seq && cl->out.len < SSE_REFILL_BYTES) {
        const ring_slot *s = &api->ring[cl->next % api->ring_size];

        if (s->seq == cl->next) {
            sb_printf(&cl->out, "id: %llu\ndata: ", (unsigned long long)s->seq);
            sb_add(&cl->out, s->json, s->len);
            sb_add(&cl->out, "\n\n", 2);
        }
        cl->next++;
    }
    return 0;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    sse_client *cl = cls;
    dq_httpapi *api = cl->api;
    size_t n;

    if (cl->off >= cl->out.len) {
        int rc;

        cl->out.len = 0;
        cl->off = 0;
        pthread_mutex_lock(&api->ring_lock);
        rc = sse_refill(api, cl);
        pthread_mutex_unlock(&api->ring_lock);
        if (rc == -2)
            return MHD_CONTENT_READER_END_WITH_ERROR; /* gone: close without a goodbye */
        if (rc != 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (cl->out.oom)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    n = cl->out.len - cl->off;
    if (n > max)
        n = max;
    memcpy(buf, cl->out.s + cl->off, n);
    cl->off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls)
{
    sse_client *cl = cls;

    pthread_mutex_lock(&cl->api->ring_lock);
    cl->api->sse_clients--;
    pthread_mutex_unlock(&cl->api->ring_lock);
    free(cl->out.s);
    free(cl);
}

static enum MHD_Result h_stream(dq_httpapi *api, struct MHD_Connection *c)
{
    const char *after = arg(c, "after");
    const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    long long from = -1;
    sse_client *cl;
    struct MHD_Response *r;
    enum MHD_Result ret;

    if (after && dq_parse_int(after, 0, INT64_MAX, &from) != 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "after: expected a stream sequence number");
    if (from < 0 && last && *last && dq_parse_int(last, 0, INT64_MAX, &from) != 0)
        from = -1;
    if (!conn_take_stream(api, c))
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "too many event streams open (at most %u, %u per address); try "
                          "again later",
                          api->max_streams, api->max_streams_per_address);
    cl = calloc(1, sizeof *cl);
    if (!cl)
        return MHD_NO;
    cl->api = api;
    {
        const union MHD_ConnectionInfo *fi =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

        cl->fd = fi ? fi->connect_fd : -1;
    }
    pthread_mutex_lock(&api->ring_lock);
    cl->next = from >= 0 ? (uint64_t)from + 1 : api->seq + 1;
    if (cl->next > api->seq + 1)
        cl->next = api->seq + 1;
    api->sse_clients++;
    pthread_mutex_unlock(&api->ring_lock);
    sb_printf(&cl->out, "retry: 2000\n: deployq event stream from %llu\n\n",
              (unsigned long long)cl->next);
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, cl, sse_free);
    if (!r) {
        sse_free(cl);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- routing --------------------------------------------------------------------------- */

static enum MHD_Result h_dashboard(dq_httpapi *api, struct MHD_Connection *c)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    if (!api->dashboard)
        return send_error(c, MHD_HTTP_NOT_FOUND, "no dashboard in this build");
    r = MHD_create_response_from_buffer(api->dashboard_len, (void *)api->dashboard,
                                        MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    /* The page is self-contained: inline script and style, data from this origin only. */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; "
                            "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; "
                            "base-uri 'none'; form-action 'none'");
    ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* /readyz: 200 "ready", or 503 with one line of JSON saying why (healthsrv.h's shape). */
static enum MHD_Result h_ready(dq_httpapi *api, struct MHD_Connection *c)
{
    char why[512];
    cJSON *o;
    char *json, *line;
    size_t len;

    if (check_ready(api, why, sizeof why)) {
        line = strdup("ready\n");
        return line ? send_buffer(c, MHD_HTTP_OK, line, strlen(line), "text/plain") : MHD_NO;
    }
    o = cJSON_CreateObject();
    json = o && cJSON_AddFalseToObject(o, "ready") && cJSON_AddStringToObject(o, "reason", why)
               ? cJSON_PrintUnformatted(o)
               : NULL;
    cJSON_Delete(o);
    if (!json)
        return MHD_NO;
    len = strlen(json);
    line = realloc(json, len + 2);
    if (!line) {
        free(json);
        return MHD_NO;
    }
    line[len] = '\n';
    line[len + 1] = '\0';
    return send_buffer(c, MHD_HTTP_SERVICE_UNAVAILABLE, line, len + 1, "application/json");
}

static enum MHD_Result h_health(dq_httpapi *api, struct MHD_Connection *c)
{
    dq_fold_totals tot;
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return MHD_NO;
    pthread_mutex_lock(api->fold_lock);
    dq_fold_get_totals(api->fold, &tot);
    pthread_mutex_unlock(api->fold_lock);
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddNumberToObject(o, "events", (double)tot.events);
    cJSON_AddNumberToObject(o, "seq", (double)ring_seq(api));
    return send_json(c, MHD_HTTP_OK, o);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    dq_httpapi *api = cls;
    static const char dep_prefix[] = "/api/deployments/";

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    conn_set_state(api, c, CONN_BUSY); /* its request arrived whole: no longer cut */
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "the registry API is read-only");
    if (strcmp(url, "/healthz") == 0)
        return h_health(api, c);
    if (strcmp(url, "/readyz") == 0)
        return h_ready(api, c);
    if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0)
        return h_dashboard(api, c);
    if (!authorized(api, c))
        return send_error(c, MHD_HTTP_UNAUTHORIZED, "a bearer token is required");
    if (strcmp(url, "/api/targets") == 0)
        return h_targets(api, c);
    if (strncmp(url, dep_prefix, sizeof dep_prefix - 1) == 0) {
        /* exactly one more path segment: the id */
        const char *slash = strrchr(url, '/');

        if (slash == url + sizeof dep_prefix - 2 && slash[1])
            return h_deployment(api, c, slash + 1);
    }
    if (strcmp(url, "/api/rollbacks") == 0)
        return h_rollbacks(api, c);
    if (strcmp(url, "/api/events") == 0)
        return h_events(api, c);
    if (strcmp(url, "/api/report") == 0)
        return h_report(api, c);
    if (strcmp(url, "/api/series") == 0)
        return h_series(api, c);
    if (strcmp(url, "/api/stream") == 0)
        return h_stream(api, c);
    if (strcmp(url, "/metrics") == 0)
        return h_metrics(api, c);
    return send_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint: %.200s", url);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    dq_warn("http: %s", msg);
}

/* ---- connections: limits per address, a bound on the time a request takes to arrive --
 * libmicrohttpd gives each connection a thread and a slot until it closes, and its own
 * timeout is an idle timeout: a client that sends a byte now and then ("slowloris") keeps
 * its slot for ever, and enough of them lock everyone out, /healthz included. So deployq
 * keeps its own table of connections and applies three rules:
 *   - a connection must deliver its request within request_timeout_ms of arriving (or of
 *     its previous answer, when kept alive); conn_reaper shuts down those that do not;
 *   - at most max_per_address connections per client address, max_clients in all; when a
 *     limit is reached the oldest connection that has not sent a request yet is cut to
 *     make room, and the new one is refused only when there is none (so a request that
 *     arrives whole, like a health check, always gets in past slow senders);
 *   - event streams take at most max_streams slots (half), and half of an address's.
 * Cutting is shutdown(2) of the socket: the connection's own thread then sees end of input
 * and libmicrohttpd closes it as usual. The descriptor stays valid until MHD has told
 * on_connection it closed (it closes the socket after that), and the slot is unlinked
 * there under conn_lock, so a cut never reaches a reused descriptor. */

static int same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return 0;
}

static void copy_address(struct sockaddr_storage *dst, const struct sockaddr *src, socklen_t len)
{
    memset(dst, 0, sizeof *dst);
    if (!src || len > (socklen_t)sizeof *dst)
        return;
    memcpy(dst, src, len);
    if (dst->ss_family == AF_INET)
        ((struct sockaddr_in *)dst)->sin_port = 0;
    else if (dst->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)dst)->sin6_port = 0;
}

/* Cut a connection (conn_lock held). */
static void conn_cut(dq_httpapi *api, conn_slot *s)
{
    if (s->cut)
        return;
    s->cut = 1;
    api->cut++;
    shutdown(s->fd, SHUT_RDWR);
}

/* The oldest connection still waiting for its request, among those of address `addr` (or
 * all when NULL). conn_lock held. */
static conn_slot *oldest_waiting(dq_httpapi *api, const struct sockaddr_storage *addr)
{
    for (conn_slot *s = api->conns_head; s; s = s->next)
        if (!s->cut && s->state == CONN_WAITING && (!addr || same_address(&s->addr, addr)))
            return s;
    return NULL;
}

/* libmicrohttpd's accept policy: make room under the limits, or refuse. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    dq_httpapi *api = cls;
    struct sockaddr_storage a;
    unsigned total = 0, mine = 0;
    enum MHD_Result ok = MHD_YES;

    copy_address(&a, addr, addrlen);
    pthread_mutex_lock(&api->conn_lock);
    for (conn_slot *s = api->conns_head; s; s = s->next) {
        if (s->cut)
            continue;
        total++;
        if (same_address(&s->addr, &a))
            mine++;
    }
    if (mine >= api->max_per_address) {
        conn_slot *victim = oldest_waiting(api, &a);

        if (victim) {
            conn_cut(api, victim);
            total--;
        } else {
            ok = MHD_NO;
        }
    }
    if (ok == MHD_YES && total >= api->max_clients) {
        conn_slot *victim = oldest_waiting(api, NULL);

        if (victim)
            conn_cut(api, victim);
        else
            ok = MHD_NO;
    }
    if (ok == MHD_NO)
        api->refused++;
    pthread_mutex_unlock(&api->conn_lock);
    return ok;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    dq_httpapi *api = cls;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ad = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        conn_slot *s = calloc(1, sizeof *s);

        if (!s || !fd) {
            free(s); /* untracked: it still has MHD's own idle timeout */
            return;
        }
        *socket_context = s;
        s->fd = fd->connect_fd;
        if (ad && ad->client_addr)
            copy_address(&s->addr, ad->client_addr,
                         ad->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                : sizeof(struct sockaddr_in));
        s->state = CONN_WAITING;
        s->since_ms = dq_mono_ms();
        pthread_mutex_lock(&api->conn_lock);
        s->prev = api->conns_tail;
        if (api->conns_tail)
            api->conns_tail->next = s;
        else
            api->conns_head = s;
        api->conns_tail = s;
        pthread_mutex_unlock(&api->conn_lock);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn_slot *s = *socket_context;

        if (!s)
            return;
        pthread_mutex_lock(&api->conn_lock);
        if (s->prev)
            s->prev->next = s->next;
        else
            api->conns_head = s->next;
        if (s->next)
            s->next->prev = s->prev;
        else
            api->conns_tail = s->prev;
        pthread_mutex_unlock(&api->conn_lock);
        *socket_context = NULL;
        free(s);
    }
}

static conn_slot *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *i = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return i ? i->socket_context : NULL;
}

static void conn_set_state(dq_httpapi *api, struct MHD_Connection *c, conn_state st)
{
    conn_slot *s = conn_of(c);

    if (!s)
        return;
    pthread_mutex_lock(&api->conn_lock);
    s->state = st;
    s->since_ms = dq_mono_ms();
    pthread_mutex_unlock(&api->conn_lock);
}

/* A request was answered (or abandoned): the connection waits for its next one. */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)con_cls;
    (void)toe;
    conn_set_state(cls, c, CONN_WAITING);
}

/* May this connection become an event stream? 1 yes (it is marked STREAM), 0 no. */
static int conn_take_stream(dq_httpapi *api, struct MHD_Connection *c)
{
    conn_slot *me = conn_of(c);
    unsigned total = 0, mine = 0;
    int ok;

    pthread_mutex_lock(&api->conn_lock);
    for (conn_slot *s = api->conns_head; s; s = s->next) {
        if (s->cut || s->state != CONN_STREAM)
            continue;
        total++;
        if (me && same_address(&s->addr, &me->addr))
            mine++;
    }
    ok = total < api->max_streams && mine < api->max_streams_per_address;
    if (ok && me) {
        me->state = CONN_STREAM;
        me->since_ms = dq_mono_ms();
    }
    if (!ok)
        api->streams_refused++;
    pthread_mutex_unlock(&api->conn_lock);
    return ok;
}

/* Cut every connection that has waited longer than request_timeout_ms for its request. */
static void *conn_reaper(void *arg)
{
    dq_httpapi *api = arg;
    int tick = api->request_timeout_ms / 4;

    if (tick > 250)
        tick = 250;
    if (tick < 10)
        tick = 10;
    pthread_mutex_lock(&api->conn_lock);
    while (!api->reaper_stop) {
        struct timespec dl;
        int64_t now = dq_mono_ms();

        for (conn_slot *s = api->conns_head; s; s = s->next)
            if (!s->cut && s->state == CONN_WAITING && now - s->since_ms >= api->request_timeout_ms)
                conn_cut(api, s);
        dq_mono_deadline(tick, &dl);
        pthread_cond_timedwait(&api->reaper_cond, &api->conn_lock, &dl);
    }
    pthread_mutex_unlock(&api->conn_lock);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static int token_blank(const char *t)
{
    while (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r' || *t == '\f' || *t == '\v')
        t++;
    return *t == '\0';
}

dq_httpapi *dq_httpapi_start(const dq_httpapi_opts *opts, char *err, size_t errlen)
{
    const char *listen = opts && opts->listen ? opts->listen : DQ_HTTPAPI_DEFAULT_LISTEN;
    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE},
                    *ai = NULL;
    pthread_condattr_t ca;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ERROR_LOG;
    const union MHD_DaemonInfo *info;
    dq_httpapi *api = NULL;
    int g;

    if (!opts || !opts->fold || !opts->fold_lock) {
        snprintf(err, errlen, "http: no state fold given");
        return NULL;
    }
    if (opts->token && token_blank(opts->token)) {
        /* An empty ${VAR} must not turn authentication off while the operator believes it
         * is on: no token at all is said by leaving the key out. */
        snprintf(err, errlen, "http: the bearer token is empty or blank (an unset or empty "
                              "${VAR}?); set it, or leave the token out to serve without one");
        return NULL;
    }
    if (dq_listen_split(listen, host, sizeof host, port, sizeof port) != 0) {
        snprintf(err, errlen, "http: listen address '%.200s': expected HOST:PORT", listen);
        return NULL;
    }
    g = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (g != 0) {
        snprintf(err, errlen, "http: listen address '%.200s': %s", listen, gai_strerror(g));
        return NULL;
    }
    api = calloc(1, sizeof *api);
    if (!api)
        goto nomem;
    pthread_mutex_init(&api->ring_lock, NULL);
    pthread_mutex_init(&api->metrics_lock, NULL);
    pthread_mutex_init(&api->conn_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&api->ring_cond, &ca);
    pthread_cond_init(&api->reaper_cond, &ca);
    pthread_condattr_destroy(&ca);
    api->max_clients = opts->max_clients ? opts->max_clients : MAX_CLIENTS_DEFAULT;
    api->max_per_address =
        opts->max_clients_per_address ? opts->max_clients_per_address : MAX_PER_ADDRESS_DEFAULT;
    if (api->max_per_address > api->max_clients)
        api->max_per_address = api->max_clients;
    /* streams never take every slot: half of all, and half of an address's */
    api->max_streams = api->max_clients / 2 ? api->max_clients / 2 : 1;
    api->max_streams_per_address = api->max_per_address / 2 ? api->max_per_address / 2 : 1;
    api->request_timeout_ms =
        opts->request_timeout_ms > 0 ? opts->request_timeout_ms : REQUEST_TIMEOUT_MS_DEFAULT;
    api->fold = opts->fold;
    api->fold_lock = opts->fold_lock;
    api->heartbeat_ms = opts->heartbeat_ms > 0 ? opts->heartbeat_ms : 15000;
    api->ring_size = opts->ring_size ? opts->ring_size : 1024;
    api->ring = calloc(api->ring_size, sizeof *api->ring);
    api->production_env = strdup(opts->production_env ? opts->production_env : "production");
    api->lag_topic = strdup(opts->lag_topic ? opts->lag_topic : "deployq.events");
    api->ready = opts->ready;
    api->ready_ctx = opts->ready_ctx;
    pthread_mutex_init(&api->ready_lock, NULL);
    if (!api->lag_topic)
        goto nomem;
    if (!api->ring || !api->production_env)
        goto nomem;
    if (opts->registry_dir && !(api->registry_dir = strdup(opts->registry_dir)))
        goto nomem;
    if (opts->token) {
        api->has_token = 1;
        dq_sha256(opts->token, strlen(opts->token), api->token_hash);
        dq_log_redact(opts->token);
    }
    api->dashboard = opts->dashboard_html;
    if (opts->dashboard_path && *opts->dashboard_path) {
        size_t len;
        char *page = dq_read_file(opts->dashboard_path, DASHBOARD_MAX_BYTES, &len);

        if (page) {
            api->dashboard_owned = page;
            api->dashboard = page;
        } else {
            dq_warn("http: dashboard file %s: %s; serving the built-in page",
                    opts->dashboard_path, strerror(errno));
        }
    }
    if (api->dashboard)
        api->dashboard_len = strlen(api->dashboard);
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    api->daemon = MHD_start_daemon(
        /* the logger first, so MHD reports nothing through its own stderr logger; its own
         * limit leaves room for connections being cut (on_accept enforces max_clients) */
        flags, 0, on_accept, api, on_request, api, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, api->max_clients + 16,
        MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_NOTIFY_CONNECTION, on_connection, api,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, api, MHD_OPTION_END);
    if (!api->daemon) {
        snprintf(err, errlen, "http: cannot listen on %.200s (in use, or not an address of "
                              "this host)", listen);
        goto fail;
    }
    if (pthread_create(&api->reaper, NULL, conn_reaper, api) != 0) {
        snprintf(err, errlen, "http: cannot start a thread");
        goto fail;
    }
    api->reaper_started = 1;
    info = MHD_get_daemon_info(api->daemon, MHD_DAEMON_INFO_BIND_PORT);
    api->port = info ? info->port : 0;
    freeaddrinfo(ai);
    return api;
nomem:
    snprintf(err, errlen, "http: out of memory");
fail:
    freeaddrinfo(ai);
    dq_httpapi_stop(api);
    return NULL;
}

int dq_httpapi_port(const dq_httpapi *api)
{
    return api ? api->port : 0;
}

void dq_httpapi_stop(dq_httpapi *api)
{
    if (!api)
        return;
    pthread_mutex_lock(&api->ring_lock);
    api->stopping = 1;
    pthread_cond_broadcast(&api->ring_cond);
    pthread_mutex_unlock(&api->ring_lock);
    if (api->reaper_started) {
        pthread_mutex_lock(&api->conn_lock);
        api->reaper_stop = 1;
        pthread_cond_broadcast(&api->reaper_cond);
        pthread_mutex_unlock(&api->conn_lock);
        pthread_join(api->reaper, NULL);
    }
    if (api->daemon)
        MHD_stop_daemon(api->daemon); /* every connection's close frees its slot */
    for (size_t i = 0; api->ring && i < api->ring_size; i++)
        free(api->ring[i].json);
    free(api->ring);
    dq_httpapi_drop_staged(api);
    free(api->staged);
    free(api->lag);
    free(api->registry_dir);
    free(api->production_env);
    free(api->lag_topic);
    free(api->dashboard_owned);
    pthread_cond_destroy(&api->ring_cond);
    pthread_cond_destroy(&api->reaper_cond);
    pthread_mutex_destroy(&api->conn_lock);
    pthread_mutex_destroy(&api->ring_lock);
    pthread_mutex_destroy(&api->metrics_lock);
    pthread_mutex_destroy(&api->ready_lock);
    free(api);
}

uint64_t dq_httpapi_publish(dq_httpapi *api, const void *event_json, size_t len)
{
    char err[128];
    cJSON *o;
    char *text;
    uint64_t seq;
    ring_slot *s;

    if (!api || !event_json)
        return 0;
    o = dq_json_parse(event_json, len, DQ_REGLOG_MAX_PAYLOAD, 64, NULL, err, sizeof err);
    text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text)
        return 0;
    pthread_mutex_lock(&api->ring_lock);
    seq = ++api->seq;
    s = &api->ring[seq % api->ring_size];
    free(s->json);
    s->seq = seq;
    s->json = text; /* cJSON's allocator is malloc here: freed with free() */
    s->len = strlen(text);
    pthread_cond_broadcast(&api->ring_cond);
    pthread_mutex_unlock(&api->ring_lock);
    return seq;
}

void dq_httpapi_stage(dq_httpapi *api, const void *event_json, size_t len)
{
    char *copy;

    if (!api || !event_json)
        return;
    if (api->n_staged == api->cap_staged) {
        size_t cap = api->cap_staged ? api->cap_staged * 2 : 64;
        staged_event *ns = realloc(api->staged, cap * sizeof *ns);

        if (!ns)
            return; /* the stream is best effort; the log and the fold are not affected */
        api->staged = ns;
        api->cap_staged = cap;
    }
    copy = malloc(len ? len : 1);
    if (!copy)
        return;
    memcpy(copy, event_json, len);
    api->staged[api->n_staged++] = (staged_event){.buf = copy, .len = len};
}

void dq_httpapi_publish_staged(dq_httpapi *api)
{
    if (!api)
        return;
    for (size_t i = 0; i < api->n_staged; i++)
        dq_httpapi_publish(api, api->staged[i].buf, api->staged[i].len);
    dq_httpapi_drop_staged(api);
}

void dq_httpapi_drop_staged(dq_httpapi *api)
{
    if (!api)
        return;
    for (size_t i = 0; i < api->n_staged; i++)
        free(api->staged[i].buf);
    api->n_staged = 0;
}

void dq_httpapi_set_lag(dq_httpapi *api, int32_t partition, int64_t lag)
{
    if (!api || partition < 0 || partition > 65535)
        return;
    pthread_mutex_lock(&api->metrics_lock);
    if (partition >= api->n_lag) {
        int64_t *nl = realloc(api->lag, ((size_t)partition + 1) * sizeof *nl);

        if (nl) {
            for (int32_t i = api->n_lag; i <= partition; i++)
                nl[i] = -1;
            api->lag = nl;
            api->n_lag = partition + 1;
        }
    }
    if (partition < api->n_lag)
        api->lag[partition] = lag < 0 ? -1 : lag;
    pthread_mutex_unlock(&api->metrics_lock);
}

void dq_httpapi_observe_fsync(dq_httpapi *api, double seconds)
{
    if (!api)
        return;
    if (seconds < 0)
        seconds = 0;
    pthread_mutex_lock(&api->metrics_lock);
    for (size_t k = 0; k < N_FSYNC_BOUNDS; k++) {
        if (seconds <= fsync_bounds[k]) {
            api->fsync_buckets[k]++;
            break;
        }
    }
    api->fsync_count++;
    api->fsync_sum += seconds;
    pthread_mutex_unlock(&api->metrics_lock);
}

/* ---- the client ------------------------------------------------------------------------ */

cJSON *dq_httpapi_get(const char *base_url, const char *path, const char *token, long *status,
                      char *err, size_t errlen)
{
    char *url = NULL, *auth = NULL;
    const char *headers[3] = {"Accept: application/json", NULL, NULL};
    dq_http_opts o = {.method = "GET", .timeout_ms = 30000, .max_retries = 2,
                      .retry_budget_ms = 20000, .idempotent = 1};
    dq_http_response resp = {0};
    cJSON *doc = NULL;
    size_t bl;

    if (status)
        *status = 0;
    if (!base_url || !path) {
        snprintf(err, errlen, "no URL given");
        return NULL;
    }
    bl = strlen(base_url);
    while (bl && base_url[bl - 1] == '/')
        bl--;
    url = malloc(bl + strlen(path) + 1);
    if (!url) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(url, base_url, bl);
    memcpy(url + bl, path, strlen(path) + 1);
    if (token && *token) {
        size_t n = strlen(token) + sizeof "Authorization: Bearer ";

        auth = malloc(n);
        if (!auth) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        snprintf(auth, n, "Authorization: Bearer %s", token);
        headers[1] = auth;
    }
    o.url = url;
    o.headers = headers;
    if (dq_http_request(&o, &resp) != 0) {
        snprintf(err, errlen, "%s: %s", url, resp.errstr[0] ? resp.errstr : "no response");
        goto out;
    }
    if (status)
        *status = resp.status;
    if (resp.truncated) {
        snprintf(err, errlen, "%s: the answer is larger than %d bytes", url, DQ_HTTP_MAX_BODY);
        goto out;
    }
    {
        char perr[256];

        doc = dq_json_parse(resp.body, resp.body_len, DQ_HTTP_MAX_BODY, 64, NULL, perr,
                            sizeof perr);
        if (resp.status != 200) {
            const char *msg = doc ? dq_json_str(doc, "error") : NULL;

            snprintf(err, errlen, "HTTP %ld: %.300s", resp.status,
                     msg ? msg : "unexpected answer from the registry");
            cJSON_Delete(doc);
            doc = NULL;
        } else if (!doc) {
            snprintf(err, errlen, "%s: %s", url, perr);
        }
    }
out:
    dq_http_response_free(&resp);
    free(url);
    if (auth) {
        /* the header held the token: do not leave it in freed memory */
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    return doc;
}
