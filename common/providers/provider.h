/*
 * provider.h - deploy providers behind one interface, and the failover chain that runs them.
 *
 * A provider is a remote (or local) system that can build and release a service: a GitHub
 * Actions workflow, Railway, a CircleCI pipeline, a local command, a generic webhook. Each
 * is built from a cJSON config object and offers deploy, status, rollback and cancel. The
 * chain runner tries the providers of a target in order, fails over only when a provider
 * is *unavailable* (it could not start anything), and polls the one that started until a
 * real terminal state or its deadline: it never assumes success.
 *
 * Every call carries the target's fencing token (header X-Deployq-Fence, and where the
 * API allows, an input/parameter named "fence"), so a lock holder that lost its lease can
 * be recognised downstream. Tokens never appear in error details: every detail passes
 * through the provider's own scrubber and dq_redact().
 *
 * Not thread-safe per provider: one provider object serves one deploy at a time (the
 * command provider is the exception, it guards its own run table).
 */
#ifndef DQ_PROVIDER_H
#define DQ_PROVIDER_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http.h"

#define DQ_PROVIDER_ID_LEN 128
#define DQ_PROVIDER_DETAIL_LEN 512
#define DQ_PROVIDER_URL_LEN 512
#define DQ_FENCE_HEADER "X-Deployq-Fence"

/* What deploy/status/rollback/cancel are asked to act on. Strings are borrowed. */
typedef struct dq_provider_request {
    const char *deployment_id;
    const char *service;
    const char *environment;
    const char *version;
    int64_t fence;
} dq_provider_request;

/* Why a call did not succeed. UNAVAILABLE means nothing was started and the next provider
 * may be tried; FAILED means the deploy itself failed (or the answer was not
 * understood) and must be reported as deploy.failed, never failed over. */
typedef enum { DQ_PROV_UNAVAILABLE = 1, DQ_PROV_FAILED = 2 } dq_provider_error_kind;

typedef struct dq_provider_error {
    dq_provider_error_kind kind;
    /* One of: connect, timeout, http_5xx, unauthorized, payment_required, forbidden,
     * rate_limited, no_run_created, not_started, bad_response, config (the
     * provider.failed schema). */
    char error_class[32];
    long http_status; /* 0 when none */
    char detail[DQ_PROVIDER_DETAIL_LEN]; /* one line, redacted, never holds a token */
} dq_provider_error;

/* Where a started deploy stands. NOT_STARTED is the provider accepting a deploy and then
 * never running any of it, for a reason that is the provider's, not the deploy's (GitHub:
 * a run that ended startup_failure without a job that started, the signature of a
 * billing lapse or disabled Actions): the provider was unavailable after all, and the
 * chain fails over exactly as if the deploy call had been refused. An adapter reports it
 * only after asking the provider that nothing ran; "never ran" is never a guess. */
typedef enum {
    DQ_DEPLOY_IN_FLIGHT = 0,
    DQ_DEPLOY_SUCCEEDED,
    DQ_DEPLOY_FAILED,
    DQ_DEPLOY_NOT_STARTED,
} dq_deploy_state;

typedef struct dq_deploy_status {
    dq_deploy_state state;
    int timed_out;                   /* FAILED because the provider's own time limit hit */
    /* IN_FLIGHT and the provider confirmed that nothing of it runs yet (GitHub: the run is
     * queued and no job started). The chain cancels a deploy that stays queued past the
     * provider's queue_timeout and fails over once the cancel is confirmed. */
    int queued;
    /* FAILED (or NOT_STARTED) and the provider confirmed that nothing of it ever ran
     * (GitHub: no job started): a deploy the chain cancelled while queued fails over. */
    int never_ran;
    /* NOT_STARTED: why, one redacted line for provider.failed's detail */
    char detail[DQ_PROVIDER_DETAIL_LEN];
    char raw[64];                    /* the provider's word: "SUCCESS", "failure", "exit 1" */
    char url[DQ_PROVIDER_URL_LEN];   /* where the deploy can be seen, or "" */
    char log_url[DQ_PROVIDER_URL_LEN];
    char *output; /* command provider: the bounded, redacted tail of its output, or NULL */
} dq_deploy_status;

/* Free status->output and zero the struct. Accepts NULL. */
void dq_provider_status_clear(dq_deploy_status *st);

typedef struct dq_provider dq_provider;

/* ---- what a run cost ----
 *
 * A provider with a `cost:` mapping is priced: `cost: {per_minute: RATE}` or, for
 * github-actions and circleci, `cost: {per_minute: {LABEL: RATE, ..., default: RATE}}` (a
 * rate per runner label on GitHub, per resource class on CircleCI; RATE is a number >= 0 in
 * the currency the memo's target is in, US dollars). A provider without `cost:` is not
 * priced: its runs have no cost, never a cost of 0.
 * The figures come from the provider where it gives them (GitHub: the run's jobs, their
 * started_at/completed_at and runner labels; CircleCI: the watched workflows' jobs, their
 * started_at/stopped_at, parallelism and executor resource class) and otherwise from the
 * deploy's wall time (an estimate). docs/configuration.md has the keys, docs/operations.md
 * the definition. */
typedef enum {
    DQ_COST_NONE = 0,  /* not priced (no `cost:`), or nothing ran */
    DQ_COST_PROVIDER,  /* from the provider's own figures (GitHub, CircleCI jobs) */
    DQ_COST_WALL_TIME, /* wall time x per_minute: an estimate */
    DQ_COST_UNKNOWN,   /* priced, but the figures could not be read (detail says why) */
} dq_cost_basis;

#define DQ_COST_MAX_RUNNERS 8

typedef struct dq_run_cost {
    dq_cost_basis basis;
    double amount;  /* DQ_COST_PROVIDER / DQ_COST_WALL_TIME: the cost of the run */
    double minutes; /* the minutes priced: billed (rounded up per job: GitHub to the minute,
                       CircleCI to the second) or wall time */
    /* DQ_COST_PROVIDER: per rate label used ("ubuntu-latest", "medium", "default"), jobs and billed
     * minutes; more labels than DQ_COST_MAX_RUNNERS are summed into the last entry. */
    struct {
        char label[64];
        int jobs;
        double minutes, amount;
    } runners[DQ_COST_MAX_RUNNERS];
    int n_runners;
    char detail[DQ_PROVIDER_DETAIL_LEN]; /* DQ_COST_UNKNOWN: one redacted line */
} dq_run_cost;

/* "provider_jobs", "wall_time", "unknown" (the event's data.cost.basis); NULL for NONE. */
const char *dq_cost_basis_name(dq_cost_basis b);

/* The rate of one runner label: the label's own, else "default". 1 with *rate, 0 when
 * p has no rate for it (or is not priced). label NULL asks for the default. */
int dq_provider_rate(const dq_provider *p, const char *label, double *rate);

/* For adapters' cost ops: add one job billed `minutes` at `rate` to *out, under runners[]
 * entry `label` (made on first use; past DQ_COST_MAX_RUNNERS, summed into the last). */
void dq_run_cost_add(dq_run_cost *out, const char *label, double minutes, double rate);

/* Build a provider from its config object. Common keys: "type" (required), "name"
 * (default: the type), "base_url", "token" (already resolved) or "token_env" (name of an
 * environment variable holding it), "timeout" (per HTTP request, default 10s), "retries"
 * (default 3), "retry_budget" (default 30s), "deadline" (default 20m), "poll_interval"
 * (default 5s), "queue_timeout" (default 10m; "0" never; only adapters that report
 * st->queued are affected). docs/providers.md lists each type's keys; any other key is refused
 * ("provider NAME: unknown key 'x' (known: ...)"). Returns NULL and a one-line reason (never a
 * token) in err on a bad config. */
dq_provider *dq_provider_new(const cJSON *config, char *err, size_t errlen);
void dq_provider_free(dq_provider *p);

const char *dq_provider_name(const dq_provider *p);
const char *dq_provider_type(const dq_provider *p);
int64_t dq_provider_deadline_ms(const dq_provider *p);
int64_t dq_provider_poll_interval_ms(const dq_provider *p);

/* Check the `cost:` member of a provider's config object: absent is fine (not priced); else
 * a mapping whose only key is per_minute, a number >= 0 or (github-actions only) a mapping
 * of runner label -> number >= 0. cfg gives "file:line: " to the message when the object
 * comes from the configuration file (NULL: none); where names it ("provider gha"). Unknown
 * keys are refused by dq_config_check_keys. 0, or -1 with a one-line reason in err.
 * dq_provider_new() runs the same check (without positions). */
int dq_provider_cost_check(const dq_config *cfg, const cJSON *config, const char *where,
                           char *err, size_t errlen);

/* NULL-terminated list of the known types ("github-actions", "railway", ...). */
extern const char *const dq_provider_types[];

/* Start a deploy of req->version. On success returns 0 and the provider's deployment id
 * (a string: run id, Railway deployment id, pipeline id, ...) in id. On failure returns
 * -1 and fills *e.
 *
 * A create call is never repeated blindly. When it got no answer in time or a 5xx (an
 * *ambiguous* create: the provider may have accepted it), the provider is asked whether
 * it created a run/deployment for this request (ops->find: GitHub runs carrying the
 * deployment id, Railway deployments of the service created since the call, CircleCI
 * pipelines carrying the deployment id parameter); one that exists is adopted (returns 0
 * with its id). Only when the provider says there is none is the call retried (a 5xx, up
 * to the provider's retries) or the error returned for failover. When the provider
 * cannot be asked, the result is a FAILED error (deploy.failed), never a failover that
 * could deploy twice. Adapters without a lookup (command, webhook) return the error as it
 * is. */
int dq_provider_deploy(dq_provider *p, const dq_provider_request *req, char *id, size_t idlen,
                       dq_provider_error *e);

/* Where deployment id stands. Returns 0 with *st filled (clear it with
 * dq_provider_status_clear), or -1 with *e when the provider could not be asked or
 * answered nonsense: UNAVAILABLE errors are worth asking again later. */
int dq_provider_status(dq_provider *p, const dq_provider_request *req, const char *id,
                       dq_deploy_status *st, dq_provider_error *e);

/* Roll back. With a non-NULL id, the provider's native rollback of that deployment where
 * one exists (Railway); otherwise a deploy of req->version (the version to return to).
 * Returns 0 and the id to poll in new_id ("" when the provider gives none to poll), or -1
 * with *e. */
int dq_provider_rollback(dq_provider *p, const dq_provider_request *req, const char *id,
                         char *new_id, size_t new_idlen, dq_provider_error *e);

/* Ask the provider to stop deployment id. Returns 0 when the provider accepted the
 * request, -1 with *e otherwise (also when the type cannot cancel). Accepted is not done:
 * dq_provider_cancel_confirmed() also waits for the provider to report a terminal state. */
int dq_provider_cancel(dq_provider *p, const dq_provider_request *req, const char *id,
                       dq_provider_error *e);

/* Cancel deployment id and confirm it took effect: after the cancel was accepted, poll
 * its status (every poll_ms) until the provider reports a terminal state or wait_ms
 * passed. Returns 1 confirmed (*st holds the terminal status: FAILED/NOT_STARTED, or
 * SUCCEEDED when the deploy finished before the cancel reached it), 0 not confirmed (the
 * cancel was refused or the deploy is still in flight; *st holds the last status seen, if
 * any, and detail a one-line reason). Clear *st with dq_provider_status_clear. */
int dq_provider_cancel_confirmed(dq_provider *p, const dq_provider_request *req, const char *id,
                                 int64_t wait_ms, int64_t poll_ms, dq_deploy_status *st,
                                 char *detail, size_t detaillen);

/* What the run id cost (after it ended; wall_ms is its wall time, for an estimate). Never
 * fails the deploy: figures that cannot be read give DQ_COST_UNKNOWN with a detail. A
 * provider without `cost:` gives DQ_COST_NONE and asks nothing. */
void dq_provider_cost(dq_provider *p, const dq_provider_request *req, const char *id, int64_t wall_ms,
                      dq_run_cost *out);

/* ---- the chain ---- */

typedef enum {
    DQ_CHAIN_SUCCEEDED = 0,
    DQ_CHAIN_FAILED,  /* a real failure, or every provider unavailable */
    DQ_CHAIN_TIMEOUT, /* started but no terminal state before the deadline: deploy.failed */
    DQ_CHAIN_STOPPED, /* should_continue() said stop; nothing is concluded */
} dq_chain_outcome;

typedef struct dq_chain_callbacks {
    void *ctx;
    /* A provider accepted the deploy: record (provider, id) before anything else, so a
     * restart resumes polling instead of deploying twice. May be NULL. */
    void (*on_started)(void *ctx, const dq_provider *p, const char *provider_id);
    /* A provider was unavailable and the chain moves on (one call per provider skipped).
     * May be NULL. */
    void (*on_provider_failed)(void *ctx, const dq_provider *p, const dq_provider_error *e);
    /* Polled between steps (at least every 100 ms while waiting); 0 stops the chain with
     * DQ_CHAIN_STOPPED (shutdown, lost lock). NULL means always continue. */
    int (*should_continue)(void *ctx);
    /* Asked once per status poll of a started deploy: 1 when an operator asked for this
     * deployment to be cancelled (`deployq cancel`; who in by), 0 not. The chain then
     * cancels at the provider, confirms it and ends FAILED with failure "cancelled",
     * cancel "confirmed" or "unconfirmed" and cancelled_by. May be NULL. */
    int (*cancel_requested)(void *ctx, char *by, size_t bylen);
} dq_chain_callbacks;

typedef struct dq_chain_options {
    int64_t poll_interval_ms; /* > 0 overrides every provider's poll_interval (tests) */
    int64_t deadline_ms;      /* > 0 overrides every provider's deadline */
    /* Cancel a deploy that timed out and confirm the cancel before concluding (the
     * executor's default, executor.cancel_on_timeout). Without it, or when the cancel is
     * not confirmed, the result says the outcome is unknown: the deploy may still go
     * live. */
    int cancel_on_timeout;
    int64_t cancel_wait_ms;   /* > 0: how long to wait for a cancel to show (default 60 s) */
} dq_chain_options;

typedef struct dq_chain_result {
    dq_chain_outcome outcome;
    char provider[64];       /* name of the provider that ran it, "" when none started */
    char provider_type[32];
    char provider_id[DQ_PROVIDER_ID_LEN];
    char provider_status[64];
    char url[DQ_PROVIDER_URL_LEN];
    char log_url[DQ_PROVIDER_URL_LEN];
    char error_class[32];    /* of the last failure, "" on success */
    /* deploy.failed's "reason" enum when outcome is FAILED or TIMEOUT: build_failed,
     * timeout, all_providers_unavailable, cancelled or internal (a refusal that is not a
     * provider outage, an answer not understood); "" otherwise. */
    char failure[32];
    char reason[DQ_PROVIDER_DETAIL_LEN]; /* one redacted line for "detail"; "" on success */
    int64_t duration_ms;
    int providers_tried;
    char *output; /* command output tail or NULL; freed by dq_chain_result_clear */
    /* TIMEOUT: "confirmed" (cancelled, the provider reported it terminal), "unconfirmed"
     * (the cancel was refused or did not show in time) or "off" (cancel_on_timeout off);
     * "" for every other outcome. */
    char cancel[16];
    /* 1 when the deploy may still go live: a TIMEOUT whose cancel is not confirmed. */
    int outcome_unknown;
    /* failure "cancelled" by an operator (cancel_requested): the key that asked, else "". */
    char cancelled_by[128];
    /* What the provider that ran it cost (dq_provider_cost), asked once the outcome is
     * known (SUCCEEDED, FAILED or TIMEOUT with a provider id); DQ_COST_NONE otherwise. */
    dq_run_cost cost;
} dq_chain_result;

void dq_chain_result_clear(dq_chain_result *r);

/* Run the chain for req: deploy on the first provider that is available, then poll it
 * until a terminal state or its deadline. Status errors while polling never fail over
 * (a deploy was started; a second one could run concurrently): they are retried until
 * the deadline. A started deploy fails over to the next provider in exactly two cases,
 * both meaning "the provider accepted, but nothing ran": its status turned NOT_STARTED,
 * or it stayed queued past the provider's queue_timeout and was cancelled, confirmed,
 * with nothing run. Then on_provider_failed is called (class not_started) and the next
 * provider's on_started follows. Fills *result (clear it with dq_chain_result_clear)
 * and returns its outcome. */
dq_chain_outcome dq_chain_run(dq_provider *const *providers, size_t n, const dq_provider_request *req,
                              const dq_chain_callbacks *cb, const dq_chain_options *opts,
                              dq_chain_result *result);

/* Resume polling a deployment that was already started (found in Redis after a crash),
 * without deploying again. elapsed_ms is the time already spent since it started; it
 * counts against the provider's deadline. The single-provider form: a deploy that turns
 * out NOT_STARTED ends as all_providers_unavailable. */
dq_chain_outcome dq_chain_resume(dq_provider *p, const char *provider_id, int64_t elapsed_ms,
                                 const dq_provider_request *req, const dq_chain_callbacks *cb,
                                 const dq_chain_options *opts, dq_chain_result *result);

/* The chain form: resume providers[index]'s deployment provider_id and, when it turns
 * out NOT_STARTED, fail over to providers[index + 1 ..] as dq_chain_run does. With
 * provider_id NULL, nothing is resumed: the chain runs from providers[index] (a run that
 * had failed over from the providers before index). */
dq_chain_outcome dq_chain_resume_at(dq_provider *const *providers, size_t n, size_t index,
                                    const char *provider_id, int64_t elapsed_ms,
                                    const dq_provider_request *req, const dq_chain_callbacks *cb,
                                    const dq_chain_options *opts, dq_chain_result *result);

/* ---- for adapters (provider_*.c) only ---- */

typedef struct dq_provider_ops {
    const char *type;
    /* The type's own keys (NULL-terminated), beside the common ones of dq_provider_new: any
     * other key is refused there, so a typo is said at start, never ignored. */
    const char *const *keys;
    /* Read type-specific keys into p->impl. Return 0, or -1 with err. */
    int (*init)(dq_provider *p, const cJSON *config, char *err, size_t errlen);
    int (*deploy)(dq_provider *p, const dq_provider_request *req, char *id, size_t idlen,
                  dq_provider_error *e);
    int (*status)(dq_provider *p, const dq_provider_request *req, const char *id,
                  dq_deploy_status *st, dq_provider_error *e);
    int (*rollback)(dq_provider *p, const dq_provider_request *req, const char *id, char *new_id,
                    size_t new_idlen, dq_provider_error *e);
    int (*cancel)(dq_provider *p, const dq_provider_request *req, const char *id,
                  dq_provider_error *e);
    void (*destroy)(dq_provider *p);
    /* What run id cost from the provider's own figures (provider_github.c,
     * provider_circleci.c: the jobs),
     * priced with dq_provider_rate(): 0 with *out filled (basis DQ_COST_PROVIDER), or -1
     * with a one-line reason in out->detail. NULL: priced by wall time. */
    int (*cost)(dq_provider *p, const dq_provider_request *req, const char *id, dq_run_cost *out);
    /* After an ambiguous deploy call made at since_ms (wall clock): did the provider create
     * a run/deployment for req? 1 with its id, 0 none, -1 with *e when it cannot be told.
     * NULL: the type has no way to look (dq_provider_deploy). */
    int (*find)(dq_provider *p, const dq_provider_request *req, int64_t since_ms, char *id,
                size_t idlen, dq_provider_error *e);
} dq_provider_ops;

struct dq_provider {
    const dq_provider_ops *ops;
    char name[64];
    char *base_url; /* without a trailing slash, or NULL */
    char *token;    /* the secret; never copied into an error */
    long timeout_ms;
    int retries;
    int64_t retry_budget_ms;
    int64_t deadline_ms;
    int64_t poll_interval_ms;
    int64_t queue_timeout_ms; /* queued longer than this: cancel and fail over; 0 never */
    cJSON *rates; /* cost.per_minute as configured (a number or a label mapping), or NULL:
                     not priced */
    void *impl;
};

extern const dq_provider_ops dq_provider_github_ops;
extern const dq_provider_ops dq_provider_railway_ops;
extern const dq_provider_ops dq_provider_circleci_ops;
extern const dq_provider_ops dq_provider_command_ops;
extern const dq_provider_ops dq_provider_webhook_ops;

/* Fill *e (kind, class, status, detail from fmt) with the detail scrubbed of p's token and
 * passed through dq_redact(). Returns -1 so adapters can `return dq_provider_fail(...)`. */
int dq_provider_fail(const dq_provider *p, dq_provider_error *e, dq_provider_error_kind kind,
                     const char *error_class, long http_status, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Map a finished HTTP exchange to an error: transport errors, 429, 5xx, 401/402/403 are
 * UNAVAILABLE; other 4xx are FAILED/config. what names the call ("dispatch"). Returns
 * -1 (after filling *e) or 0 when the status is 2xx and there is no error. */
int dq_provider_http_error(const dq_provider *p, const dq_http_response *r, const char *what,
                           dq_provider_error *e);

/* Send a request with p's timeout and retry policy. headers is NULL-terminated; the
 * fence header is added here. idempotent: DQ_HTTP_CREATE (0) for a create, retried only
 * when it cannot have been accepted (connection refused, 429), since a 5xx may have
 * created the deploy (dq_provider_deploy looks before a retry); DQ_HTTP_SAFE (1) for a
 * read or a repeatable call, retried after 5xx and timeouts; DQ_HTTP_DEDUPED (2) for a
 * create the receiver deduplicates by an idempotency key sent with it (the webhook's
 * Idempotency-Key: <deployment_id>), retried after a 5xx but never after a timeout.
 * Returns what dq_http_request returns. */
enum { DQ_HTTP_CREATE = 0, DQ_HTTP_SAFE = 1, DQ_HTTP_DEDUPED = 2 };
int dq_provider_http(const dq_provider *p, const char *method, const char *url,
                     const char *const *headers, const char *body, int idempotent, int64_t fence,
                     dq_http_response *r);

/* A string member of a config object, or NULL. Duration member in ms: fallback when
 * absent, -1 when present but invalid. */
const char *dq_provider_cfg_str(const cJSON *config, const char *key);
int64_t dq_provider_cfg_duration(const cJSON *config, const char *key, int64_t fallback);

/* Parse a JSON response body into a cJSON object (NULL when not JSON). */
cJSON *dq_provider_parse_body(const dq_http_response *r);

#endif
