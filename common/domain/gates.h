/*
 * gates.h - the deploy gates of an environment that depend on more than the request:
 * change freezes, configuration drift and the promotion rule's configuration. Shared by
 * deployq-validator (which enforces them) and `deployq check` (which runs their offline
 * part on a developer's machine), so both read the same keys the same way.
 *
 * Keys read from services.<svc>.environments.<env> (docs/configuration.md):
 *   freeze:            [{from: RFC3339, until: RFC3339, reason: text}, ...]
 *   required_vars:     [NAME, ...]       must exist at the provider
 *   drift_ignore:      [NAME, ...]       keys allowed to exist only in the `requires` env
 *   drift_check:       [argv...]         prints the target's variable names, one a line
 *   drift_timeout:     duration (default 30s), the limit of drift_check / the query
 *   drift_provider:    name of the railway provider whose `variables` are read
 *   promotion_needs:   verified (default) | succeeded
 *   approval_timeout:  duration (default 24h), how long a deploy waits for a decision
 * Where the variables come from: drift_check when set, else the railway provider named by
 * drift_provider, else the first railway provider of the environment's `providers` chain
 * (an entry written inline, or the name of an entry of the top-level `providers`). A
 * railway provider needs project_id for the `variables` query.
 *
 * drift_check runs through the process runner (proc.h): no shell, stdin from /dev/null, its
 * stdout read as names (more than 256 KiB fails), its stderr logged (redacted) only when it
 * fails, its process group stopped at drift_timeout (SIGTERM, SIGKILL 2 s later).
 *
 * Variable *values* never leave this module: only names are kept, compared and reported.
 */
#ifndef DQ_GATES_H
#define DQ_GATES_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct dq_freeze_window {
    int64_t from_ms, until_ms; /* [from, until) */
    char *reason;              /* never NULL */
} dq_freeze_window;

typedef struct dq_gates {
    char *target;         /* "service/environment", for messages */
    char **required_vars; /* required_vars, in file order */
    size_t n_required;
    char **drift_ignore;
    size_t n_ignore;
    char **drift_check;   /* NULL-terminated argv, or NULL */
    int64_t drift_timeout_ms;
    cJSON *railway;       /* the railway provider's config used for `variables`, or NULL */
    dq_freeze_window *freeze;
    size_t n_freeze;
    int needs_succeeded;  /* promotion_needs: succeeded */
    int64_t approval_timeout_ms;
} dq_gates;

/* Read the gate keys of service/env from cfg. An environment without any of them gives
 * empty gates (not NULL). Returns NULL with "path:line: message" in err when a key is
 * malformed (or the target is not configured). Free with dq_gates_free. */
dq_gates *dq_gates_load(const dq_config *cfg, const char *service, const char *env, char *err,
                        size_t errlen);
void dq_gates_free(dq_gates *g);

/* The promotion that can never pass: service/env `requires:` a source environment while
 * asking for `deploy.verified` there (`promotion_needs: verified`, the default), and the
 * source has no `monitor:` (dq_config_env_watched), so nothing ever emits deploy.verified
 * for it. Returns 1 with one line in msg ("file:line: services.api.environments.production
 * .requires: staging: ...", saying what to add), 0 when the promotion can pass or there is
 * none. Reads only the configuration. */
int dq_gates_promotion_unverifiable(const dq_config *cfg, const char *service, const char *env,
                                    char *msg, size_t msglen);

/* The freeze window that holds at now_ms, or NULL when the environment is not frozen.
 * Borrowed from g. */
const dq_freeze_window *dq_gates_frozen(const dq_gates *g, int64_t now_ms);

/* Whether the gates can read the target's variables (drift_check or a railway provider). */
int dq_gates_can_read_vars(const dq_gates *g);

/* The names of the variables the target has: the output of drift_check (one name a line;
 * "NAME=value" lines are cut at '=' and the value dropped) or the keys of Railway's
 * variables(projectId, environmentId, serviceId). Returns 0 with a malloc'd array of
 * malloc'd names in *names (free with dq_gates_names_free), -1 with a one-line reason in
 * err (never a value or a token). */
int dq_gates_read_vars(const dq_gates *g, char ***names, size_t *n, char *err, size_t errlen);
void dq_gates_names_free(char **names, size_t n);

/* The drift gate: reads target's variables and, when source (the `requires`
 * environment's gates, may be NULL) can be read too, its variables. Reports through fn
 * (code is always "drift") each required variable missing at the provider, each variable
 * of source missing in target (unless listed in target's drift_ignore), and any failure
 * to read (the gate fails closed). Does nothing when target declares no required_vars and
 * source cannot be compared. Returns the number of reports. */
typedef void (*dq_gate_report_fn)(void *ctx, const char *code, const char *message);
int dq_gates_check_drift(const dq_gates *target, const dq_gates *source, dq_gate_report_fn fn,
                         void *ctx);

/* The Redis key that records that version reached state ("verified" or "succeeded") in
 * service/env: deployq:<state>:<service>:<env>:<version>. Written by the validator's
 * state consumer, read by the promotion gate. */
char *dq_gates_state_key(const char *state, const char *service, const char *env,
                         const char *version, char *out, size_t outlen);

#endif
