/*
 * sentry_deploy.h - telling Sentry about each deploy (Sentry "release deploys"), so that
 * Sentry ties errors to the version and environment that caused them and shows when each
 * version went live.
 *
 * Per service, optionally (services.<s>.sentry):
 *   sentry:
 *     org: acme                      # organization slug, required
 *     projects: [api]                # project slugs of the release, required
 *     token: ${SENTRY_TOKEN}         # required; a secret (redacted, never in an event)
 *     url: https://sentry.io         # self-hosted: https://sentry.example
 *     deploy_url: https://deployq.example/d/{deployment_id}   # the deploy's url, optional
 *     timeout: 10s                   # per HTTP attempt
 *     retries: 4                     # attempts after the first, per event
 *     retry_budget: 30s              # no attempt starts that could end past it
 *
 * What is recorded (on the rollback worker's thread and consumer group <group>-sentry,
 * follow.h):
 *   deploy.succeeded   -> a deploy of release <version> to <environment>, named after the
 *                         deployq deployment id, dateStarted = at - duration_ms,
 *                         dateFinished = at
 *   rollback.succeeded -> a deploy of release <data.to_version> (the restored version),
 *                         dateStarted = data.decided_at, dateFinished = data.restored_at
 * Each first makes sure the release exists (POST .../releases/: 201 created, 208 it was
 * there), then POST .../releases/<version>/deploys/.
 *
 * At least once, without duplicates: deployq:sentry:rec:<trigger event id> (kept 30 days)
 * holds Sentry's deploy id once recorded, and a redelivered event finds it and does
 * nothing. Before creating a deploy the release's deploys are listed, and one of the same
 * name and environment (made by an attempt that died between Sentry's 201 and our record)
 * is taken instead of a second one. A failure after the attempts is reported as
 * notification.failed (channel "sentry"); Redis unreachable makes the event be read again.
 */
#ifndef DQ_SENTRY_DEPLOY_H
#define DQ_SENTRY_DEPLOY_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "event.h"
#include "kafka.h"

typedef struct dq_sentry_config {
    char *org;
    char **projects;       /* NULL-terminated project slugs, at least one */
    char *token;           /* secret */
    char *url;             /* base URL, no trailing slash */
    char *deploy_url;      /* template or NULL */
    int64_t timeout_ms;    /* default 10 s */
    int retries;           /* default 4 */
    int64_t retry_budget_ms; /* default 30 s */
} dq_sentry_config;

/* Read services.<service>.sentry. *found is 0 when the service has none (not an error).
 * Returns 0, or -1 with "file:line: message" in err, which never holds the token. The token
 * is registered with dq_log_redact(). Clear with dq_sentry_config_clear(). */
int dq_sentry_config_load(const dq_config *cfg, const char *service, dq_sentry_config *sc, int *found, char *err,
                          size_t errlen);
/* The same from the mapping itself (cfg only gives positions and may be NULL). */
int dq_sentry_config_read(const dq_config *cfg, const cJSON *sec, const char *where, dq_sentry_config *sc,
                          char *err, size_t errlen);
void dq_sentry_config_clear(dq_sentry_config *sc);

/* The release an event of deployq.events puts live (deploy.succeeded: its version;
 * rollback.succeeded: data.to_version), or NULL when it records nothing. Borrowed from ev. */
const char *dq_sentry_release_of(const dq_event *ev);
/* The body of POST .../releases/ for release: {"version", "projects"}. malloc'd JSON. */
char *dq_sentry_release_body(const dq_sentry_config *sc, const char *release);
/* The body of POST .../releases/<release>/deploys/ for ev: environment, name (the deployq
 * deployment id), url (deploy_url filled in), dateStarted, dateFinished, projects.
 * malloc'd JSON, NULL on OOM or an event that records nothing. */
char *dq_sentry_deploy_body(const dq_sentry_config *sc, const dq_event *ev);

/* ---- the consumer thread ---- */

typedef struct dq_sentry_worker dq_sentry_worker;

/* Start the thread that records deploys in Sentry for the services that configure it, as
 * consumer group `group`. producer is borrowed (notification.failed goes through it) and
 * must outlive dq_sentry_worker_stop(). Returns NULL with err "" when no service
 * configures sentry (nothing to do), NULL with the reason in err on an error. */
dq_sentry_worker *dq_sentry_worker_start(const dq_config *cfg, dq_producer *producer, const char *group,
                                         volatile sig_atomic_t *stop, char *err, size_t errlen);
/* Join the thread and free. NULL is a no-op. */
void dq_sentry_worker_stop(dq_sentry_worker *w);

/* The handler (kafka.h), exposed for tests. */
typedef struct dq_sentry_handler dq_sentry_handler;
dq_sentry_handler *dq_sentry_handler_new(const dq_config *cfg, dq_producer *producer, volatile sig_atomic_t *stop,
                                         char *err, size_t errlen);
void dq_sentry_handler_free(dq_sentry_handler *h);
/* 1 when some service configures sentry. */
int dq_sentry_handler_active(const dq_sentry_handler *h);
dq_handle_result dq_sentry_handle(void *ctx, const dq_message *m, char *err, size_t errlen);

#endif
