/*
 * httpapi.h - the registry's read-only HTTP API and live dashboard (libmicrohttpd), and a
 * small libcurl client for the CLI readers' --url.
 *
 * deployq-registry starts one server next to its consumer loop. The server reads the live
 * state fold (fold.h) under the mutex the worker holds while it applies events, the report
 * (report.h) computed from that fold, and the registry files (reglog.h) for the paged event
 * history. New events reach browsers through a bounded ring: the worker publishes each
 * event once it is durable (after dq_reglog_commit), and every /api/stream client follows
 * the ring as Server-Sent Events.
 *
 * Endpoints (all GET or HEAD; anything else is 405; docs/operations.md "Registry HTTP API"):
 *   /healthz                     liveness, never behind the token
 *   /readyz                      readiness (opts.ready), never behind the token
 *   /                            the dashboard page (never behind the token: it holds no
 *                                data; it asks for the token when the API answers 401)
 *   /api/targets                 every target (?service= ?env=), with the stream position
 *   /api/deployments/{id}        one deployment with its timeline
 *   /api/rollbacks               the latest rollbacks with their evidence (?limit=)
 *   /api/events                  the stored events, paged (?service ?env ?type ?deployment
 *                                ?since ?until ?cursor ?limit ?order=asc|desc)
 *   /api/report                  report.h figures (?service ?env ?since ?until; ?by=target
 *                                adds each target's)
 *   /api/series                  deploys and rollbacks per time bucket (?buckets ?since)
 *   /api/stream                  Server-Sent Events of new events (?after=SEQ or
 *                                Last-Event-ID resumes within the ring)
 *   /metrics                     Prometheus text format
 * With a token configured every endpoint except /healthz, /readyz and / needs
 * "Authorization: Bearer <token>" (compared in constant time); the token is never logged.
 *
 * Threads: libmicrohttpd runs a thread per connection (an SSE stream blocks its own
 * thread only). The server never holds the fold lock while it writes to a socket.
 *
 * Limits (slow or hostile clients): a connection that has not delivered its request within
 * request_timeout_ms is closed; at most max_clients connections, max_clients_per_address
 * per address, and when a limit is reached the oldest connection still waiting for its
 * request is closed to make room (so a request that arrives whole, such as /healthz, gets
 * in past slow senders); event streams take at most half of either limit (beyond: 503),
 * and a stream whose client went away is closed within SSE_CHECK_MS (half a second). Every
 * time and count a query carries is bounded (RFC 3339 times in [1970, 9999], durations up
 * to 100 years, limits and buckets by endpoint) and error texts are valid UTF-8.
 */
#ifndef DQ_HTTPAPI_H
#define DQ_HTTPAPI_H

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "fold.h"

#define DQ_HTTPAPI_DEFAULT_LISTEN "127.0.0.1:8787"

typedef struct dq_httpapi dq_httpapi;

typedef struct {
    /* "HOST:PORT", "[V6]:PORT" or ":PORT" (every address); HOST may be a name. Port 0 picks
     * a free port (dq_httpapi_port tells which). NULL means DQ_HTTPAPI_DEFAULT_LISTEN. */
    const char *listen;
    /* Bearer token, or NULL for none. An empty or blank token is a start error (an empty
     * ${VAR} must never turn authentication off). Hashed; registered with dq_log_redact(). */
    const char *token;
    /* The live state, read only under *fold_lock (both required; borrowed, must outlive
     * the server). */
    dq_fold *fold;
    pthread_mutex_t *fold_lock;
    /* Registry directory for /api/events (NULL: /api/events answers 503). Copied. */
    const char *registry_dir;
    /* The dashboard page served at / (borrowed, NUL-terminated; NULL: / is 404), and an
     * optional file that replaces it when readable at start (for editing the page without
     * rebuilding). */
    const char *dashboard_html;
    const char *dashboard_path;
    /* "production" environment name for the report (NULL: "production"). Copied. */
    const char *production_env;
    size_t ring_size;     /* events kept for /api/stream; 0 means 1024 */
    int heartbeat_ms;     /* SSE keep-alive comment interval; <= 0 means 15000 */
    unsigned max_clients; /* simultaneous connections; 0 means 64 */
    /* Simultaneous connections from one client address; 0 means 16 (at most max_clients).
     * Event streams take at most half of either limit. */
    unsigned max_clients_per_address;
    /* Time a connection has to deliver its request, from its arrival or its previous
     * answer, before it is closed; <= 0 means 10000. */
    int request_timeout_ms;
    /* /readyz (never behind the token, like /healthz): 200 when ready(ready_ctx, why, n)
     * returns 1, else 503 with {"ready":false,"reason":why}; also deployq_ready on /metrics.
     * Called on a connection's thread, one call at a time. NULL: always ready. */
    int (*ready)(void *ctx, char *why, size_t whylen);
    void *ready_ctx;
    /* The topic of the lag figures (dq_httpapi_set_lag), for deployq_consumer_lag's topic
     * label. NULL: "deployq.events". Copied. */
    const char *lag_topic;
} dq_httpapi_opts;

/* Bind and start serving. NULL with a one-line reason in err (bad listen address, port in
 * use, missing fold). Stop with dq_httpapi_stop(). */
dq_httpapi *dq_httpapi_start(const dq_httpapi_opts *opts, char *err, size_t errlen);

/* The port actually bound (useful with port 0). */
int dq_httpapi_port(const dq_httpapi *api);

/* End every SSE stream, stop the server, join its threads and free it. NULL is a no-op.
 * The fold and its lock are not touched. */
void dq_httpapi_stop(dq_httpapi *api);

/* Put one durable event (its JSON text as stored) on the stream ring, waking every
 * /api/stream client. The text is parsed and re-printed compactly (one line, as SSE needs);
 * text that is not a JSON object is dropped. Safe from any thread; never blocks on a client.
 * NULL api is a no-op. Returns the event's stream sequence number, 0 when dropped. */
uint64_t dq_httpapi_publish(dq_httpapi *api, const void *event_json, size_t len);

/* Group commit support: stage an event appended but not yet durable (copied), then
 * publish every staged event in order after the commit, or drop them. NULL api: no-op. */
void dq_httpapi_stage(dq_httpapi *api, const void *event_json, size_t len);
void dq_httpapi_publish_staged(dq_httpapi *api);
void dq_httpapi_drop_staged(dq_httpapi *api);

/* Metrics the worker feeds. set_lag: messages between the partition's high watermark and
 * the next offset the registry will store (lag < 0 forgets the partition). observe_fsync:
 * one group commit's durable-write latency in seconds. NULL api: no-op. */
void dq_httpapi_set_lag(dq_httpapi *api, int32_t partition, int64_t lag);
void dq_httpapi_observe_fsync(dq_httpapi *api, double seconds);

/* ---- the client (for `deployq status|history|report --url`) ---------------------------
 * GET base_url + path (path starts with "/", query included, already escaped; see
 * dq_http_escape) with "Authorization: Bearer <token>" when token is non-empty, and parse
 * the JSON answer. Returns the parsed body (caller frees with cJSON_Delete) when the status
 * is 200; otherwise NULL with a one-line reason in err ("HTTP 404: no deployment ..." with
 * the server's "error" text, or the transport error). The token never enters err. */
cJSON *dq_httpapi_get(const char *base_url, const char *path, const char *token, long *status,
                      char *err, size_t errlen);

#endif
