/*
 * gates.h - the deploy gates of an environment that depend on more than the request:
 * change freezes, configuration drift and the promotion rule's configuration. Shared by
 * deployq-validator (which enforces them) and `deployq check` (which runs their offline
 * part on a developer's machine), so both read the same keys the same way.
 *
 * Keys read from services.<svc>.environments.<env> (docs/configuration.md):
 *   freeze:            [{from: RFC3339, until: RFC3339, reason: text}, ...]
 *   required_vars:     [NAME, ...]       must exist at the provider
 *   drift_ignore:      [NAME, ...]       ignored entirely: may exist only in the `requires`
 *                                        env, and their values are not compared
 *   drift_allow:       [NAME, ...]       expected to differ in value from the `requires`
 *                                        env (a database URL, a hostname); still compared
 *                                        by name
 *   drift_check:       [argv...]         prints the target's variables, one a line: NAME
 *                                        (compared by name only) or NAME=VALUE
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
 * stdout read as names and NAME=VALUE lines (more than 256 KiB fails), its stderr logged (redacted) only when it
 * fails, its process group stopped at drift_timeout (SIGTERM, SIGKILL 2 s later).
 *
 * And from the top-level `drift` section (dq_drift_settings_load):
 *   drift:
 *     key: ${DEPLOYQ_DRIFT_KEY}   # the HMAC key of the value hashes, >= 16 characters
 *     scan_interval: 10m         # the validator's periodic scan; unset or 0: off
 *
 * Values by keyed hash. Where a value is read (a NAME=VALUE line of drift_check, a member
 * of Railway's `variables` answer) it is at once replaced by the first 16 bytes of
 * HMAC-SHA256(key, service "\0" name "\0" value), as 32 hex digits, and the buffers that
 * held values are wiped (OPENSSL_cleanse) before they are freed. Variable *values* never
 * leave this module: only names and these hashes are kept, compared, recorded and
 * reported, and messages and events carry names only. Without drift.key (nor the
 * environment variable DEPLOYQ_DRIFT_KEY) the key is random for the process: values are
 * still compared between environments (both sides are hashed with it), but no hash set is
 * recorded, since it could not be compared after a restart. With a key, each environment's
 * hash set is recorded at every request the gates pass (dq_drift_record), and `deployq
 * drift` and the scan say what changed since. What is not wiped: copies libcurl or the
 * process runner made and freed while a buffer grew, and whatever the provider or the
 * drift_check program do with the values themselves.
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
    char *service;        /* part of every value hash: staging and production compare */
    char **required_vars; /* required_vars, in file order */
    size_t n_required;
    char **drift_ignore;
    size_t n_ignore;
    char **drift_allow;
    size_t n_allow;
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

/* ---- values: keyed hashes ---- */

#define DQ_DRIFT_HASH_HEX 32 /* hex digits of a value hash (16 bytes of the HMAC) */
#define DQ_DRIFT_KEY_MIN 16  /* characters of drift.key at least */

typedef struct dq_drift_key {
    unsigned char k[128];
    size_t len;
    int persistent;  /* from drift.key or DEPLOYQ_DRIFT_KEY; 0: random for this process */
    char id[17];     /* names the key, not reversible: 8 bytes of HMAC(key, "key id"), hex */
} dq_drift_key;

typedef struct dq_drift_settings {
    dq_drift_key key;
    int64_t scan_interval_ms; /* 0: no scan */
} dq_drift_settings;

/* Read the top-level `drift` section (see above) into s; the key falls back to the
 * environment variable DEPLOYQ_DRIFT_KEY, then to random bytes (key.persistent 0). The
 * key's text is registered with dq_log_redact(). 0, or -1 with "path:line: message" in
 * err (an unknown key, a key shorter than DQ_DRIFT_KEY_MIN, a bad duration); err never
 * holds the key. Wipe with dq_drift_settings_clear. */
int dq_drift_settings_load(const dq_config *cfg, dq_drift_settings *s, char *err, size_t errlen);
void dq_drift_settings_clear(dq_drift_settings *s);
/* A random key for one comparison (persistent 0). */
void dq_drift_key_random(dq_drift_key *k);

/* The hash of value (vlen bytes) of variable name of service, as DQ_DRIFT_HASH_HEX hex
 * digits and a NUL. 0, or -1 when OpenSSL fails (out is then ""). */
int dq_drift_hash(const dq_drift_key *k, const char *service, const char *name, const char *value,
                  size_t vlen, char out[DQ_DRIFT_HASH_HEX + 1]);

typedef struct dq_drift_var {
    char *name;
    char hash[DQ_DRIFT_HASH_HEX + 1]; /* "" when the source gave the name only */
} dq_drift_var;

typedef struct dq_drift_vars {
    dq_drift_var *v; /* sorted by name, names unique (a later line wins) */
    size_t n;
} dq_drift_vars;

/* The target's variables as names and value hashes (dq_gates_read_vars' sources), hashed
 * with k (NULL: a random key, so the hashes compare only within this call). 0, or -1
 * with a one-line reason in err (never a value or a token). Free with
 * dq_drift_vars_clear. */
int dq_gates_read_hashed(const dq_gates *g, const dq_drift_key *k, dq_drift_vars *out, char *err,
                         size_t errlen);
void dq_drift_vars_clear(dq_drift_vars *vs);
/* The entry of name in vs, or NULL. */
const dq_drift_var *dq_drift_vars_find(const dq_drift_vars *vs, const char *name);

/* The difference of a target's variables (t) from another set (s): the `requires`
 * environment's now, or the target's own recorded at its last deploy. Names are borrowed
 * from t and s, in name order. */
typedef struct dq_drift_diff {
    const char **missing;  /* in s, not in t (but not in rules' drift_ignore) */
    size_t n_missing;
    const char **extra;    /* in t, not in s: said, never refused */
    size_t n_extra;
    const char **differs;  /* in both with two hashes that differ, not ignored or allowed */
    size_t n_differs;
    const char **allowed;  /* as differs, but in rules' drift_allow */
    size_t n_allowed;
} dq_drift_diff;

/* Compare t with s under rules (the target's gates: drift_ignore, drift_allow; NULL for
 * none). A name with no hash on either side is compared by name only. 0, or -1 out of
 * memory. Clear with dq_drift_diff_clear. */
int dq_drift_compare(const dq_drift_vars *t, const dq_drift_vars *s, const dq_gates *rules,
                     dq_drift_diff *d);
void dq_drift_diff_clear(dq_drift_diff *d);
/* 1 when d says drift: a name missing or a value that differs (allowed and extra don't). */
int dq_drift_diff_drifted(const dq_drift_diff *d);
/* The first 16 hex digits of SHA-256 over d's names (missing, differs, each sorted): the
 * same drift gives the same digest, so the scan reports a drift once. */
void dq_drift_diff_digest(const dq_drift_diff *d, const char *extra_text, char out[17]);
/* Names joined for a message: "A, B, C", cut with "..." to outlen. */
void dq_drift_join(const char *const *v, size_t n, char *out, size_t outlen);

/* The drift gate with values: as dq_gates_check_drift, and hashes both sides with k (NULL:
 * a random key); a variable of both environments whose values differ (not in target's
 * drift_allow or drift_ignore) is reported with code "drift_values", by name. When
 * target_vars is not NULL and the target's variables were read, they are moved there
 * (the caller records them, dq_drift_record); else it is left empty. */
int dq_gates_check_drift_values(const dq_gates *target, const dq_gates *source, const dq_drift_key *k,
                                dq_gate_report_fn fn, void *ctx, dq_drift_vars *target_vars);

/* Recorded hash sets, in Redis as one JSON string per target:
 *   deployq:drift:vars:<service>:<env> = {"key_id", "at" (ms), "version", "vars": {NAME: hash}}
 * (a name given without a value has hash ""). dq_drift_record_json builds that text
 * (malloc'd) and dq_drift_record_parse reads it back into vs (0, or -1 when it is not such
 * a record; *at_ms, version (vlen bytes) and key_id (17 bytes) are filled when not NULL). */
char *dq_drift_record_key(const char *service, const char *env, char *out, size_t outlen);
char *dq_drift_record_json(const dq_drift_key *k, const dq_drift_vars *vs, const char *version,
                           int64_t at_ms);
int dq_drift_record_parse(const char *text, dq_drift_vars *vs, int64_t *at_ms, char *version,
                          size_t vlen, char key_id[17]);

/* The Redis key that records that version reached state ("verified" or "succeeded") in
 * service/env: deployq:<state>:<service>:<env>:<version>. Written by the validator's
 * state consumer, read by the promotion gate. */
char *dq_gates_state_key(const char *state, const char *service, const char *env,
                         const char *version, char *out, size_t outlen);

#endif
