/*
 * github_deploy.h - recording deploys as GitHub Deployments, so that pull requests and a
 * repository's Environments page show what deployq did (docs/github.md).
 *
 * Per service, optionally (services.<s>.github_deployments):
 *   github_deployments:
 *     repo: acme/api                 # owner/name, required
 *     token: ${GITHUB_TOKEN}         # required; a secret (redacted, never in an event)
 *     api_url: https://api.github.com   # GitHub Enterprise Server: https://HOST/api/v3
 *     environment_url: https://{environment}.api.example   # {service} {environment}
 *     log_url: https://deployq.example/d/{deployment_id}   # {version} {deployment_id}
 *     auto_merge: false              # GitHub's default is true: deployq records, never merges
 *     required_contexts: []          # GitHub's default is every context: [] records, never gates
 *     production_environment: true   # optional; GitHub's default: environment == "production"
 *     transient_environment: false   # optional
 *     timeout: 10s                   # per HTTP attempt
 *     retries: 4                     # attempts after the first, per event
 *     retry_budget: 30s              # no attempt starts that could end past it
 *
 * The events of a deployq deployment map to the statuses of one GitHub deployment:
 *   deploy.validated   -> queued
 *   deploy.started     -> in_progress
 *   deploy.succeeded   -> success, and the deployment it replaced gets inactive
 *   deploy.failed      -> failure
 *   rollback.requested -> failure (the deploy was judged bad; "rolled back: <reason>")
 * Success is posted at deploy.succeeded, not deploy.verified: that is the moment the
 * version serves, which is what GitHub's Environments page means by the active
 * deployment; a later rollback turns it into failure.
 *
 * State in Redis, per deployq deployment (kept 30 days):
 *   deployq:gh:dep:<deployment_id>  hash: id (GitHub's deployment id), s:<state> = 1 for
 *                                   each status posted, refused = why GitHub declined
 *                                   to create it (202 auto-merge, 409), reported once
 *   deployq:gh:current:<svc>/<env>  the deployq deployment whose success GitHub shows
 * A status is posted at most once in the order above (dq_gh_should_post); a repeated event
 * finds its status recorded and does nothing. A status whose deployment was never created
 * (GitHub was down at deploy.validated) creates it first, after looking for one this
 * deployment already created (payload.deployq_deployment_id), so a crash between GitHub's
 * 201 and the record does not create a second one.
 */
#ifndef DQ_GITHUB_DEPLOY_H
#define DQ_GITHUB_DEPLOY_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "event.h"
#include "kafka.h"

typedef struct dq_gh_config {
    char *repo;            /* owner/name */
    char *token;           /* secret */
    char *api_url;         /* no trailing slash */
    char *environment_url; /* template or NULL */
    char *log_url;         /* template or NULL */
    int auto_merge;        /* default 0 */
    char **required_contexts; /* NULL-terminated; NULL means [] */
    int production;        /* -1 unset (GitHub decides), 0, 1 */
    int transient;         /* -1 unset, 0, 1 */
    int64_t timeout_ms;    /* default 10 s */
    int retries;           /* default 4 */
    int64_t retry_budget_ms; /* default 30 s */
} dq_gh_config;

/* Read services.<service>.github_deployments. *found is 0 when the service has none (not
 * an error). Returns 0, or -1 with "file:line: message" in err, which never holds the
 * token. The token is registered with dq_log_redact(). Clear with dq_gh_config_clear(). */
int dq_gh_config_load(const dq_config *cfg, const char *service, dq_gh_config *gc, int *found, char *err,
                      size_t errlen);
/* The same from the mapping itself (cfg only gives positions and may be NULL). */
int dq_gh_config_read(const dq_config *cfg, const cJSON *sec, const char *where, dq_gh_config *gc, char *err,
                      size_t errlen);
void dq_gh_config_clear(dq_gh_config *gc);

/* The GitHub status an event of deployq.events stands for ("queued", "in_progress",
 * "success", "failure"), or NULL when it stands for none. */
const char *dq_gh_state_for(const char *event_type);

/* One bit per status ever recorded for a deployment. */
enum {
    DQ_GH_QUEUED = 1u << 0,
    DQ_GH_IN_PROGRESS = 1u << 1,
    DQ_GH_SUCCESS = 1u << 2,
    DQ_GH_FAILURE = 1u << 3,
    DQ_GH_INACTIVE = 1u << 4,
};
/* The bit of a state name, 0 for an unknown one. */
unsigned dq_gh_state_bit(const char *state);
/* 1 when state should be posted to a deployment that already has the statuses of
 * posted: not posted before, and no later status was (queued < in_progress < success <
 * failure < inactive: a failure after a success is a rollback; a success after a failure
 * is a stale redelivery). */
int dq_gh_should_post(unsigned posted, const char *state);

/* The body of POST /repos/{o}/{r}/deployments for ev (ref = the version, environment,
 * auto_merge, required_contexts, payload.deployq_deployment_id, ...). malloc'd JSON. */
char *dq_gh_deployment_body(const dq_gh_config *gc, const dq_event *ev);
/* The body of POST .../deployments/{id}/statuses: state, description (at most 140
 * characters, from the event), log_url and environment_url filled from their templates,
 * auto_inactive true on a success. ev may be NULL for an inactive status. malloc'd JSON. */
char *dq_gh_status_body(const dq_gh_config *gc, const dq_event *ev, const char *state);

/* ---- the consumer thread ---- */

typedef struct dq_gh_worker dq_gh_worker;

/* Start the thread that reads deployq.events as its own consumer group (group) and records
 * deploys on GitHub for the services that configure it. producer is borrowed (thread-safe:
 * notification.failed goes through it) and must outlive dq_gh_worker_stop(); stop is the
 * worker's flag. Returns NULL with err "" when no service configures github_deployments
 * (nothing to do), NULL with the reason in err on a configuration or start error. */
dq_gh_worker *dq_gh_worker_start(const dq_config *cfg, dq_producer *producer, const char *group,
                                 volatile sig_atomic_t *stop, char *err, size_t errlen);
/* Join the thread (it leaves once *stop is set; an event in flight waits for its current
 * HTTP attempt, at most timeout) and free. NULL is a no-op. */
void dq_gh_worker_stop(dq_gh_worker *w);

/* The handler (kafka.h), exposed for tests: ctx is what dq_gh_handler_new() returned. */
typedef struct dq_gh_handler dq_gh_handler;
dq_gh_handler *dq_gh_handler_new(const dq_config *cfg, dq_producer *producer, volatile sig_atomic_t *stop,
                                 char *err, size_t errlen);
void dq_gh_handler_free(dq_gh_handler *h);
/* 1 when some service configures github_deployments. */
int dq_gh_handler_active(const dq_gh_handler *h);
dq_handle_result dq_gh_handle(void *ctx, const dq_message *m, char *err, size_t errlen);

#endif
