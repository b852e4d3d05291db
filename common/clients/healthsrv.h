/*
 * healthsrv.h - the health and metrics endpoints of a worker, on libmicrohttpd:
 *
 *   GET /healthz  200 "ok\n" while the process runs (liveness)
 *   GET /readyz   200 "ready\n" when every watched consumer is in its group with an
 *                 assignment, a broker answers, and Redis answers a PING; else 503 with a
 *                 one-line JSON {"ready":false,"reason":"..."}
 *   GET /metrics  the worker's registry (metrics.h), text format 0.0.4, after refreshing
 *                 deployq_ready, deployq_up and deployq_consumer_lag
 *
 * Everything runs on one thread of libmicrohttpd's, so a check never races another and
 * the server's own Redis connection is that thread's alone. Readiness is asked of the
 * engines at the moment of the request (a PING, a metadata request, each bounded by a
 * short timeout), not taken from the worker's last use of them: an idle worker would
 * otherwise say ready long after its Redis went away. Consumer lag is read from
 * librdkafka's cache (positions, watermarks): a scrape makes no round trip for it.
 *
 * The endpoints are plain HTTP with no token: they say nothing a deploy request or a
 * secret could be learned from. Bind them to an address only the scraper reaches.
 */
#ifndef DQ_HEALTHSRV_H
#define DQ_HEALTHSRV_H

#include <stddef.h>

#include "kafka.h"
#include "metrics.h"

typedef struct dq_healthsrv dq_healthsrv;

typedef struct dq_healthsrv_opts {
    const char *listen;     /* HOST:PORT, [V6]:PORT or :PORT (every address); required */
    const char *redis_url;  /* NULL: Redis is not part of readiness */
    int redis_timeout_ms;   /* bound of the PING (and its connect); 0: 1000 */
    int kafka_timeout_ms;   /* bound of the broker check; 0: 1000 */
    dq_metrics *metrics;    /* borrowed, outlives the server; NULL: /metrics is 404 */
} dq_healthsrv_opts;

/* Parse a listen address into host (empty for every address) and port. 0, or -1 when it
 * is none of the three forms or the port is not 1..65535. */
int dq_listen_split(const char *listen, char *host, size_t hostlen, char *port, size_t portlen);

/* Listen and serve on a thread of its own. NULL with "health: cannot listen on ADDR ..."
 * (the address in use, say) or another reason in err. */
dq_healthsrv *dq_healthsrv_start(const dq_healthsrv_opts *opts, char *err, size_t errlen);

/* The port it listens on (useful with port 0). */
int dq_healthsrv_port(const dq_healthsrv *h);

/* Make c part of readiness and of deployq_consumer_lag. c is borrowed: stop the server
 * (dq_healthsrv_stop) before freeing it. At most 8 consumers; -1 past that. */
int dq_healthsrv_watch(dq_healthsrv *h, dq_consumer *c);

/* What /readyz answers: 1 ready, 0 not (the reason in why). Blocks for at most the two
 * timeouts. For tests; callable from one thread at a time besides the server's. */
int dq_healthsrv_check(dq_healthsrv *h, char *why, size_t whylen);

/* Stop serving (joins the server's thread) and free. NULL is a no-op. */
void dq_healthsrv_stop(dq_healthsrv *h);

#endif
