/*
 * healthsrv.c - /healthz, /readyz and /metrics of a worker (see healthsrv.h).
 */
#include "healthsrv.h"

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "redis.h"
#include "util.h"

#define MAX_WATCHED 8
#define DEFAULT_TIMEOUT_MS 1000

struct dq_healthsrv {
    struct MHD_Daemon *daemon;
    int port;
    char *redis_url;
    int redis_timeout_ms, kafka_timeout_ms;
    dq_metrics *metrics; /* borrowed */
    dq_metric *m_ready, *m_up, *m_lag;
    /* check_mu: one check at a time (the server's thread, or a test), which owns redis */
    pthread_mutex_t check_mu;
    dq_redis *redis;
    /* watched consumers: added by the worker's thread, read by the server's */
    pthread_mutex_t mu;
    dq_consumer *watched[MAX_WATCHED];
    size_t n_watched;
};

int dq_listen_split(const char *listen, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    long long p;

    if (!listen || !hostlen || !portlen)
        return -1;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');

        if (!close || close[1] != ':' || (size_t)(close - listen - 1) >= hostlen)
            return -1;
        memcpy(host, listen + 1, (size_t)(close - listen - 1));
        host[close - listen - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon || (size_t)(colon - listen) >= hostlen)
            return -1;
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
    }
    if (dq_strlcpy(port, colon + 1, portlen) >= portlen || !port[0])
        return -1;
    if (dq_parse_int(port, 0, 65535, &p) != 0)
        return -1;
    return 0;
}

static int redis_ok(dq_healthsrv *h, char *why, size_t whylen)
{
    char err[256];
    redisReply *r;
    int ok;

    if (!h->redis_url)
        return 1;
    if (!h->redis) {
        h->redis = dq_redis_connect(h->redis_url, h->redis_timeout_ms, err, sizeof err);
        if (!h->redis) {
            snprintf(why, whylen, "redis: %s", err);
            return 0;
        }
    }
    r = dq_redis_command(h->redis, "PING");
    ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    if (!ok)
        snprintf(why, whylen, "redis %s: %s", dq_redis_where(h->redis),
                 r ? (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply to PING")
                   : dq_redis_errstr(h->redis));
    if (r)
        freeReplyObject(r);
    return ok;
}

static int kafka_ok(dq_healthsrv *h, char *why, size_t whylen)
{
    dq_consumer *first = NULL;
    size_t n;

    pthread_mutex_lock(&h->mu);
    n = h->n_watched;
    for (size_t i = 0; i < n; i++) {
        if (!dq_consumer_assigned(h->watched[i], NULL)) {
            pthread_mutex_unlock(&h->mu);
            snprintf(why, whylen, "kafka: consumer %zu of %zu has no partitions assigned (not "
                                  "in its group yet)", i + 1, n);
            return 0;
        }
    }
    first = n ? h->watched[0] : NULL;
    pthread_mutex_unlock(&h->mu);
    if (!first) {
        snprintf(why, whylen, "kafka: no consumer started yet");
        return 0;
    }
    /* every consumer talks to the same cluster: one of them asks */
    if (!dq_kafka_broker_up(dq_consumer_handle(first), h->kafka_timeout_ms, why, whylen)) {
        char tmp[256];

        dq_strlcpy(tmp, why, sizeof tmp);
        snprintf(why, whylen, "kafka: %s", tmp);
        return 0;
    }
    return 1;
}

int dq_healthsrv_check(dq_healthsrv *h, char *why, size_t whylen)
{
    int ok;

    if (!h) {
        snprintf(why, whylen, "no health server");
        return 0;
    }
    why[0] = '\0';
    pthread_mutex_lock(&h->check_mu);
    ok = kafka_ok(h, why, whylen) && redis_ok(h, why, whylen);
    pthread_mutex_unlock(&h->check_mu);
    if (!ok) {
        /* the reason is served without a token: redacted as a log line is */
        char tmp[512];

        dq_redact(why, tmp, sizeof tmp);
        dq_strlcpy(why, tmp, whylen);
    }
    return ok;
}

static void lag_one(void *ctx, const char *topic, int32_t partition, int64_t lag)
{
    dq_healthsrv *h = ctx;
    char p[16];
    const char *values[] = {topic, p};

    snprintf(p, sizeof p, "%d", (int)partition);
    dq_metric_set(h->m_lag, values, (double)lag);
}

/* The collector of the registry (metrics.h): gauges that are read, not counted. */
static void collect(void *ctx, dq_metrics *m)
{
    dq_healthsrv *h = ctx;
    char why[512];
    int ready = dq_healthsrv_check(h, why, sizeof why);

    (void)m;
    dq_metric_set(h->m_up, NULL, 1);
    dq_metric_set(h->m_ready, NULL, ready ? 1 : 0);
    /* partitions no longer held disappear */
    dq_metric_clear(h->m_lag);
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n_watched; i++)
        dq_consumer_lag(h->watched[i], lag_one, h);
    pthread_mutex_unlock(&h->mu);
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    enum MHD_Result rc;

    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    dq_healthsrv *h = cls;

    (void)version;
    (void)upload_data;
    if (*con_cls == NULL) { /* the headers: wait for the (empty) body */
        *con_cls = h;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0; /* a body is ignored */
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "GET only\n", 9,
                     MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/healthz") == 0)
        return reply(conn, MHD_HTTP_OK, "text/plain", "ok\n", 3, MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/readyz") == 0) {
        char why[512], body[1024];
        cJSON *o;
        char *json;
        int n;

        if (dq_healthsrv_check(h, why, sizeof why))
            return reply(conn, MHD_HTTP_OK, "text/plain", "ready\n", 6, MHD_RESPMEM_PERSISTENT);
        /* the reason may hold anything librdkafka or Redis said: let cJSON escape it */
        o = cJSON_CreateObject();
        json = o && cJSON_AddFalseToObject(o, "ready") && cJSON_AddStringToObject(o, "reason", why)
                   ? cJSON_PrintUnformatted(o)
                   : NULL;
        cJSON_Delete(o);
        n = snprintf(body, sizeof body, "%s\n", json ? json : "{\"ready\":false}");
        free(json);
        if (n < 0 || (size_t)n >= sizeof body)
            n = (int)strlen(body);
        return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", body, (size_t)n,
                     MHD_RESPMEM_MUST_COPY);
    }
    if (strcmp(url, "/metrics") == 0 && h->metrics) {
        size_t len = 0;
        char *text = dq_metrics_render(h->metrics, &len);

        if (!text)
            return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n",
                         14, MHD_RESPMEM_PERSISTENT);
        return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len,
                     MHD_RESPMEM_MUST_FREE);
    }
    return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", "not found: /healthz, /readyz, /metrics\n",
                 38, MHD_RESPMEM_PERSISTENT);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t n;

    (void)cls;
    vsnprintf(line, sizeof line, fmt, ap);
    n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    dq_debug("health: %s", line);
}

dq_healthsrv *dq_healthsrv_start(const dq_healthsrv_opts *opts, char *err, size_t errlen)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE},
                    *ai = NULL;
    unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    const union MHD_DaemonInfo *info;
    dq_healthsrv *h = NULL;
    int g;

    if (!opts || dq_listen_split(opts->listen, host, sizeof host, port, sizeof port) != 0) {
        snprintf(err, errlen, "health: '%.200s' is not HOST:PORT, [V6]:PORT or :PORT",
                 opts && opts->listen ? opts->listen : "");
        return NULL;
    }
    g = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (g != 0 || !ai) {
        snprintf(err, errlen, "health: %.200s: %s", opts->listen, gai_strerror(g));
        return NULL;
    }
    h = calloc(1, sizeof *h);
    if (!h)
        goto nomem;
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->check_mu, NULL);
    h->redis_timeout_ms = opts->redis_timeout_ms > 0 ? opts->redis_timeout_ms : DEFAULT_TIMEOUT_MS;
    h->kafka_timeout_ms = opts->kafka_timeout_ms > 0 ? opts->kafka_timeout_ms : DEFAULT_TIMEOUT_MS;
    if (opts->redis_url && !(h->redis_url = strdup(opts->redis_url)))
        goto nomem;
    h->metrics = opts->metrics;
    if (h->metrics) {
        static const char *const lag_labels[] = {"topic", "partition", NULL};

        h->m_up = dq_metrics_gauge(h->metrics, "deployq_up", "1 while the worker runs.", NULL);
        h->m_ready = dq_metrics_gauge(h->metrics, "deployq_ready",
                                      "1 when the worker is ready (what /readyz says), else 0.", NULL);
        h->m_lag = dq_metrics_gauge(h->metrics, "deployq_consumer_lag",
                                    "Messages between the consumer's position and the partition's "
                                    "high watermark (librdkafka's cached values).",
                                    lag_labels);
        if (!h->m_up || !h->m_ready || !h->m_lag ||
            dq_metrics_on_collect(h->metrics, collect, h) != 0) {
            snprintf(err, errlen, "health: cannot register deployq_up/ready/consumer_lag");
            goto fail;
        }
    }
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
                                 mhd_log, NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                 MHD_OPTION_CONNECTION_LIMIT, 32u, MHD_OPTION_CONNECTION_TIMEOUT,
                                 10u, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen, "health: cannot listen on %.200s (in use, or not an address of this "
                              "host)", opts->listen);
        goto fail;
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    freeaddrinfo(ai);
    return h;
nomem:
    snprintf(err, errlen, "health: out of memory");
fail:
    freeaddrinfo(ai);
    dq_healthsrv_stop(h);
    return NULL;
}

int dq_healthsrv_port(const dq_healthsrv *h)
{
    return h ? h->port : 0;
}

int dq_healthsrv_watch(dq_healthsrv *h, dq_consumer *c)
{
    int rc = -1;

    if (!h || !c)
        return -1;
    pthread_mutex_lock(&h->mu);
    if (h->n_watched < MAX_WATCHED) {
        h->watched[h->n_watched++] = c;
        rc = 0;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void dq_healthsrv_stop(dq_healthsrv *h)
{
    if (!h)
        return;
    if (h->daemon)
        MHD_stop_daemon(h->daemon);
    dq_metrics_off_collect(h->metrics, collect, h);
    dq_redis_free(h->redis);
    free(h->redis_url);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->check_mu);
    free(h);
}
