/*
 * notify.h - telling people what happened to a deploy: a Slack-compatible incoming
 * webhook ({"text": ...}, answered 200 "ok") and a generic JSON webhook (the event
 * itself), with the retry policy of http.h and a bounded total time.
 *
 * Used by deployq-rollback, which sees every event of deployq.events. The kinds of
 * notification (dq_notify_types, what `on` lists) are event types plus one derived kind:
 *   rollback.requested, rollback.succeeded, rollback.failed, deploy.failed, failover,
 *   deploy.awaiting_approval, drift.detected   by default: each needs a person;
 *   deploy.rejected, deploy.succeeded, deploy.verified, approval.refused   when `on`
 *   asks for them.
 * "failover" is a deploy.started whose data.failed_over_from lists the providers of the
 * chain that failed before this one took over (dq_notify_kind). A notification that
 * cannot be delivered is reported (the caller emits notification.failed), never retried
 * forever; one dq_notify_send() takes at most about two retry budgets, and the rollback
 * worker sends from its own thread (notifyq.h), never from the one that rolls back.
 *
 * Signing: with `webhook_secret`, every JSON webhook request carries
 *   X-Deployq-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 * over the exact bytes of the body (dq_notify_sign); docs/operations.md shows a receiver's
 * check. Slack's incoming webhooks verify nothing: their URL is the only credential.
 *
 * Webhook URLs and the secret are secrets (a Slack URL is its own credential): they are
 * registered with dq_log_redact() when loaded and never copied into a result, an error or
 * an event.
 *
 * Configuration: services.<s>.environments.<e>.notify, else the top-level `notifications`
 * section (same shape), e.g.
 *   notify:
 *     slack_webhook: ${SLACK_URL}
 *     webhook: ${NOTIFY_URL}
 *     webhook_secret: ${NOTIFY_SECRET}   # signs the JSON webhook's bodies
 *     on: [rollback.requested, rollback.succeeded, rollback.failed, deploy.failed, failover,
 *          deploy.awaiting_approval, deploy.rejected, drift.detected]
 *     dashboard_url: https://grafana.example/d/api?env={environment}
 *     timeout: 5s      # per attempt
 *     retries: 3       # after the first attempt
 *     retry_budget: 15s
 */
#ifndef DQ_NOTIFY_H
#define DQ_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "event.h"

#define DQ_NOTIFY_MAX_CHANNELS 2
#define DQ_NOTIFY_ERR_LEN 256

typedef struct dq_notify_config {
    char *slack_url;     /* secret; NULL when not configured */
    char *webhook_url;   /* secret; NULL when not configured */
    char *webhook_secret; /* secret; signs the webhook's bodies; NULL: unsigned */
    char *dashboard_url; /* not a secret; "{service}"/"{environment}" are filled in */
    unsigned on_mask;    /* one bit per type of dq_notify_types */
    int64_t timeout_ms;  /* per attempt, default 5 s */
    int retries;         /* default 3 */
    int64_t retry_budget_ms; /* default 15 s */
} dq_notify_config;

/* NULL-terminated: the kinds a notification may be sent for (event types and "failover"). */
extern const char *const dq_notify_types[];

/* The kind ev is notified as, one of dq_notify_types: its type, or "failover" for a
 * deploy.started with a non-empty data.failed_over_from; NULL when ev is of no kind
 * (a plain deploy.started included). Points into static storage. */
const char *dq_notify_kind(const dq_event *ev);

/* Read the notification settings of service/environment (see above). A target without
 * any gets a config with no channel (dq_notify_enabled() is 0): that is not an error.
 * Returns 0, or -1 with "path:line: message" in err (an unknown type in `on`, a bad
 * duration, a URL that is not http(s)); err never holds a URL. Clear with
 * dq_notify_config_clear(). */
int dq_notify_config_load(const dq_config *cfg, const char *service, const char *environment,
                          dq_notify_config *nc, char *err, size_t errlen);
/* The same from the section itself: sec is the `notify` (or `notifications`) mapping, where
 * its name in messages ("notify"). sec NULL: nothing configured. cfg serves only for the
 * positions of the items (dq_config_where) and may be NULL, as for a section built by hand in
 * a test: the messages then have no "path:line: ". */
int dq_notify_config_read(const dq_config *cfg, const cJSON *sec, const char *where,
                          dq_notify_config *nc, char *err, size_t errlen);
void dq_notify_config_clear(dq_notify_config *nc);

/* The target's rollback policy, services.<service>.environments.<environment>.rollback:
 * 1 auto (also when absent), 0 notify; -1 with "path:line: message" in err for any other
 * value (`rollback: maybe` is refused, never read as notify). deployq-rollback refuses to
 * start on -1 and `deployq check` reports it: both call this. */
int dq_rollback_policy_load(const dq_config *cfg, const char *service, const char *environment, char *err,
                            size_t errlen);

/* 1 when at least one channel is configured and kind (dq_notify_kind) is in `on`. */
int dq_notify_wants(const dq_notify_config *nc, const char *kind);

/* Links a message can carry; any may be NULL or "". */
typedef struct dq_notify_links {
    const char *ci_run_url;
    const char *provider_url; /* where the deploy can be seen */
    const char *log_url;      /* the provider's log */
    const char *approvers;    /* deploy.awaiting_approval: who may approve (the ids of the
                                 configured keys of role approver, comma-separated) */
} dq_notify_links;

/* The human message about ev: what happened to which service/environment, the versions,
 * why (reason, failing probe, MTTR of a rollback), an optional note (e.g. "a person must
 * act"), and the links (dashboard from nc). Plain text with Slack's &, <, > escaped.
 * malloc'd; NULL on allocation failure. */
char *dq_notify_text(const dq_notify_config *nc, const dq_event *ev, const dq_notify_links *links,
                     const char *note);

typedef struct dq_notify_result {
    char channel[16]; /* "slack" or "webhook" */
    int ok;           /* delivered (2xx; Slack: 200) */
    int attempts;     /* HTTP attempts made, >= 1 */
    long http_status; /* last status, 0 when no response */
    char error[DQ_NOTIFY_ERR_LEN]; /* "" when ok; one line, never the URL */
} dq_notify_result;

/* Send ev to every configured channel: text to Slack as {"text": text}, ev's JSON to the
 * generic webhook (header X-Deployq-Event: <type>, and X-Deployq-Signature with a
 * webhook_secret, signed at the first attempt). Fills out[0..n-1] and returns n (0 when no
 * channel is configured). Blocks at most about retry_budget per channel. */
size_t dq_notify_send(const dq_notify_config *nc, const dq_event *ev, const char *text,
                      dq_notify_result out[DQ_NOTIFY_MAX_CHANNELS]);

/* The notification.sent / notification.failed event reporting r about trigger: same
 * deployment_id/service/environment/version, data {channel, trigger_event_id,
 * trigger_type, attempts, http_status?, error?}, and an id derived from the trigger's id
 * and the channel (a redelivery reports with the same id). NULL on allocation failure. */
dq_event *dq_notify_event(const dq_event *trigger, const dq_notify_result *r, const char *actor);

#define DQ_NOTIFY_SIG_HEADER "X-Deployq-Signature"
/* "t=" + 20 digits + ",v1=" + 64 hex + NUL */
#define DQ_NOTIFY_SIG_LEN 96

/* The value of the signature header for body signed at unix time t with secret:
 * "t=<t>,v1=<lowercase hex of HMAC-SHA256(secret, "<t>.<body>")>". Returns 0, or -1 when
 * OpenSSL fails (out is then ""). Never logs. */
int dq_notify_sign(const char *secret, int64_t t, const char *body, size_t body_len,
                   char out[DQ_NOTIFY_SIG_LEN]);

#endif
