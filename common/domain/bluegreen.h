/*
 * bluegreen.h - blue-green deploys: two colors of a target, one serving (live), one idle.
 *
 * A blue-green deploy goes to the idle color through that color's own provider chain,
 * probes the idle color before any traffic moves, then calls the router (an HTTP request
 * or a command) to send traffic to it; the old color keeps running the previous version.
 * Rolling back within the window is a switch back to the old color: seconds, no deploy.
 * Both switches are reported as traffic.switched events. The executor and the rollback
 * worker use this module; it holds no global state.
 *
 * Configuration (per environment; docs/configuration.md "Blue-green"):
 *   strategy: blue-green           # the target's default (a request may also ask for it)
 *   blue_green:
 *     colors:
 *       blue:  {providers: [<provider>...], probe_url: <url>?}
 *       green: {providers: [<provider>...], probe_url: <url>?}
 *     probe: {url: "http://{color}.internal/health", <probe.h keys>, attempts: 10, interval: 1s}
 *     router: {type: http, url, method: POST, body: '{"color":"{color}"}', headers, timeout, name}
 *           | {type: command, argv: [...], timeout, name}
 *           | {type: haproxy, ...}  (below, "weights": a switch sets the weights 100/0)
 * {color}, {service} and {environment} are replaced in probe.url, router.url, router.body
 * and each router.argv item. Provider items are mappings (docs/providers.md).
 *
 * State in Redis, hash deployq:color:<service>:<environment>:
 *   live          the color serving traffic ("" / absent before the first switch)
 *   blue, green   the version each color runs
 *   switched_at   ms of the last switch
 * and deployq:color:<service>:<environment>:deploy:<deployment_id> = the color that
 * deployment went to, so a resumed run deploys to the same color (kept 7 days).
 */
#ifndef DQ_BLUEGREEN_H
#define DQ_BLUEGREEN_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "probe.h"
#include "event.h"
#include "provider.h"
#include "redis.h"

#define DQ_BG_COLOR_LEN 8
#define DQ_BG_VERSION_LEN 129

typedef struct dq_bluegreen dq_bluegreen;

/* 1 when the environment has a `blue_green:` section. */
int dq_bg_configured(const dq_config *cfg, const char *service, const char *environment);

/* 1 when a deploy of service/environment is blue-green: the environment says
 * `strategy: blue-green`, or request_strategy (the request's, may be NULL) does. */
int dq_bg_applies(const dq_config *cfg, const char *service, const char *environment,
                  const char *request_strategy);

/* Read and check the target's blue_green section. NULL with "path:line: message" in err
 * when it is absent or wrong (never a secret in err). Free with dq_bg_free. */
dq_bluegreen *dq_bg_load(const dq_config *cfg, const char *service, const char *environment,
                         char *err, size_t errlen);
void dq_bg_free(dq_bluegreen *bg);

/* What traffic.switched reports as `router`: router.name, else "http", "command" or
 * "haproxy" (never the URL: it may hold a credential). */
const char *dq_bg_router_name(const dq_bluegreen *bg);

/* "green" for "blue" and the other way round; NULL for anything else. */
const char *dq_bg_other(const char *color);

/* The provider chain that deploys color. 0 with *providers (free with
 * dq_exec_chain_free() or dq_provider_free each + free), -1 with a reason in err. */
int dq_bg_color_chain(const dq_bluegreen *bg, const char *color, dq_provider ***providers,
                      size_t *n, char *err, size_t errlen);

typedef struct dq_bg_state {
    char live[DQ_BG_COLOR_LEN];                /* "" before the first switch */
    char version[2][DQ_BG_VERSION_LEN];        /* [0] blue, [1] green; "" when unknown */
} dq_bg_state;

/* Read the target's colors. 0 (absent state reads as all ""), -1 with err on Redis errors. */
int dq_bg_state_read(dq_redis *r, const char *service, const char *environment, dq_bg_state *st,
                     char *err, size_t errlen);

/* The version color runs according to st ("" when unknown). */
const char *dq_bg_state_version(const dq_bg_state *st, const char *color);

/* The color deployment_id deploys to: the one remembered for it, else the color that is
 * not live (blue when none is), remembered now. 0 with color, -1 with err. */
int dq_bg_pick_idle(dq_redis *r, const char *service, const char *environment,
                    const char *deployment_id, char color[DQ_BG_COLOR_LEN], char *err, size_t errlen);

/* Probe color until one probe passes: up to probe.attempts tries, probe.interval apart,
 * stopping early when should_continue (may be NULL) returns 0. 0 passed; -1 failed with
 * the last sample's detail in detail; 1 stopped. */
int dq_bg_probe(const dq_bluegreen *bg, const char *color, int (*should_continue)(void *),
                void *ctx, char *detail, size_t detaillen);

/* Ask the router to send traffic to color (the fence goes as header X-Deployq-Fence, or
 * DEPLOYQ_FENCE, DEPLOYQ_COLOR, DEPLOYQ_SERVICE and DEPLOYQ_ENVIRONMENT in a command's
 * environment). A command runs through the process runner (proc.h): no shell, stdin from
 * /dev/null, its output logged (redacted, never in err), its process group stopped at
 * router.timeout (SIGTERM, SIGKILL 2 s later). 0 when the router answered 2xx / the
 * command exited 0; -1 with a one-line reason in err. */
int dq_bg_switch(const dq_bluegreen *bg, const char *color, int64_t fence, char *err,
                 size_t errlen);

/* Record that color now serves traffic and runs version (NULL: keep what is recorded). */
int dq_bg_set_live(dq_redis *r, const char *service, const char *environment, const char *color,
                   const char *version, char *err, size_t errlen);

/* A traffic.switched event for the target: data {from_color, to_color, router} plus
 * `initial: true` when no color served before; its id derived from id_seed (so a repeat
 * is a duplicate). NULL on allocation failure; the caller frees. */
dq_event *dq_bg_switched_event(const char *deployment_id, const char *service,
                               const char *environment, const char *version, const char *actor,
                               int64_t fence, const char *from_color, const char *to_color,
                               const char *router, const char *id_seed);

/* ---- weights (canary; canary.h) ----
 * A router takes weights when it is `type: haproxy`, or an http/command router with a
 * weights request configured (http: weights_body and read_url, command: weights_argv and
 * read_argv; one without the other is refused at load, an http/command router without
 * them only switches):
 *   router: {type: haproxy, socket: /run/haproxy/admin.sock | address: 127.0.0.1:9999,
 *            backend: web, servers: {blue: web_blue, green: web_green}, timeout: 5s, name}
 *           HAProxy's runtime API: `set server <backend>/<server> weight <n>` then
 *           `get weight <backend>/<server>` ("<current> (initial <n>)"); no reload.
 *           One connection per command (the non-interactive mode), timeout (default 5s)
 *           on each; a switch is weights 100/0 for the color, read back like any set.
 *   router: {type: http, ..., weights_url, weights_method: POST,
 *            weights_body: '{"blue":{weight_blue},"green":{weight_green}}',
 *            read_url}     GET read_url answers {"blue": n, "green": n}
 *                          (or {"weights": {"blue": n, "green": n}}); weights_url
 *                          defaults to url
 *   router: {type: command, ..., weights_argv: [..., "{weight_blue}", "{weight_green}"],
 *            read_argv: [...]}   read_argv prints {"blue": n, "green": n}
 * {weight_blue}, {weight_green}, {service} and {environment} are replaced in weights_url,
 * weights_body and each weights_argv item; a weights command also gets DEPLOYQ_WEIGHT_BLUE
 * and DEPLOYQ_WEIGHT_GREEN (and DEPLOYQ_FENCE, DEPLOYQ_SERVICE, DEPLOYQ_ENVIRONMENT).
 * Weights are percentages 0..100, blue's and green's summing to 100. */

/* 1 when bg's router takes weights. */
int dq_bg_router_weighted(const dq_bluegreen *bg);

/* Set the weights (w[0] blue, w[1] green), then read them back: 0 only when the router
 * says exactly what it was told; -1 with a one-line reason in err ("router edge said
 * blue=95 green=0 after being told blue=95 green=5", or why it could not be reached).
 * The fence goes as for dq_bg_switch. */
int dq_bg_set_weights(const dq_bluegreen *bg, const int w[2], int64_t fence, char *err,
                      size_t errlen);

/* Read the router's weights into w (w[0] blue, w[1] green). 0, -1 with err. */
int dq_bg_read_weights(const dq_bluegreen *bg, int w[2], char *err, size_t errlen);

/* The probe dq_bg_probe runs against color (probe's keys, the color's probe_url or probe.url
 * with {color} filled in), for callers that sample a color themselves. NULL with err.
 * Free with dq_probe_free. */
dq_probe *dq_bg_color_probe(const dq_bluegreen *bg, const char *color, char *err,
                            size_t errlen);

#endif
