/*
 * config.h - the one configuration file (deployq.yaml, read with libfyaml).
 *
 * Precedence, lowest first: built-in defaults, the file, command-line flags, then the
 * environment variables DEPLOYQ_BROKERS (kafka bootstrap.servers) and DEPLOYQ_REDIS_URL
 * (DEPLOYQ_CONFIG names the file itself). "${NAME}" anywhere in a scalar is replaced by
 * the environment variable NAME at load time; every value so resolved is registered with
 * dq_log_redact() because it is a secret by convention. A missing variable is an error.
 *
 * Errors come back as "path:line: message" in the caller's buffer.
 *
 * Layout (docs/configuration.md has the full reference):
 *   kafka:            # every key passed to librdkafka untouched
 *     bootstrap.servers: localhost:9092
 *   redis:
 *     url: redis://:${REDIS_PASSWORD}@localhost:6379/0
 *   validator:
 *     max_request_bytes: 65536
 *     max_depth: 16
 *     issued_at_window: 300s
 *   keys:
 *     - id: ci-2026
 *       public_key: <base64 of 32 bytes>
 *       role: ci                # ci | approver | operator
 *   services:
 *     api:
 *       environments:
 *         staging: {}
 *         production: {requires: staging, approval: required}
 * Sections a later worker needs (providers, probes, ...) stay reachable as libfyaml nodes
 * through dq_config_env_node() so each worker reads its own part with line numbers.
 * Top-level sections reserved for later workers (providers, executor, monitor, rollback,
 * registry, notifications, locks) are accepted unread and stay in cfg->doc; any other
 * unknown top-level key is an error, and so is an unknown key in the sections this module
 * reads (redis, validator, topics, keys[], services.<name>). Unknown keys inside an
 * environment are allowed: they belong to later workers and are read through env->node.
 * The file holds one YAML document (a second "---" document is an error); an empty file
 * means all defaults, and so does one of only comments, but a file libfyaml fails to load
 * for any other reason (out of memory included) is an error. Anchors, aliases and merge keys
 * are expanded at load, within limits that stop an alias bomb (docs/configuration.md).
 *
 * Node text: every scalar's text is resolved (${NAME} replaced, "$${" -> "${") once, at
 * load, and stored as the node's libfyaml meta data, so read a scalar through
 * dq_config_node_scalar() or dq_config_node_json(), never fy_node_get_scalar() (that
 * returns the raw text with the references). The document's meta hook belongs to config.c:
 * do not call fy_document_register_meta() on cfg->doc. The dq_config_node_*() functions
 * only read the document, so several threads may call them at once.
 */
#ifndef DQ_CONFIG_H
#define DQ_CONFIG_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

struct fy_document;
struct fy_node;

typedef struct dq_kv {
    char *key;
    char *value;
} dq_kv;

typedef struct dq_key {
    char *id;
    char *public_key; /* base64 of 32 bytes */
    char *role;       /* "ci" (default), "approver", "operator" */
    int retired;      /* retired: true -> signatures refused */
} dq_key;

typedef struct dq_environment {
    char *name;
    char *requires;  /* environment this one is promoted from, or NULL */
    int approval;    /* 1 when approval: required */
    struct fy_node *node; /* the environment's mapping in the document */
} dq_environment;

typedef struct dq_service {
    char *name;
    dq_environment *envs;
    size_t n_envs;
    struct fy_node *node;
} dq_service;

typedef struct dq_config {
    char *path;          /* the file read, or NULL when none */
    dq_kv *kafka;        /* kafka.* pairs in file order, then overrides */
    size_t n_kafka;
    char *redis_url;     /* default redis://127.0.0.1:6379 */
    int redis_timeout_ms;/* default 2000 */
    /* validator */
    size_t max_request_bytes; /* default 65536 */
    int max_depth;            /* default 16 */
    int64_t issued_at_window_ms; /* default 300000 */
    char *schemas_dir;   /* where schemas/ lives; default: DEPLOYQ_SCHEMAS, else the
                            installed data dir, else ./schemas */
    char *topic_requests, *topic_events, *topic_dead; /* defaults of event.h */
    char *group_prefix;  /* topics.group_prefix: consumer groups are <prefix>-<worker>;
                            NULL: "deployq" (deployq-validator, deployq-executor, ...) */
    dq_key *keys;
    size_t n_keys;
    dq_service *services;
    size_t n_services;
    struct fy_document *doc; /* kept alive for dq_config_env_node users; may be NULL */
    struct dq_config_index *index; /* config.c's own: the service and environment lookups */
} dq_config;

/* Defaults only (no file). Never NULL except on allocation failure. */
dq_config *dq_config_new_default(void);

/* Load path (or, when path is NULL, $DEPLOYQ_CONFIG, or no file at all), then apply the
 * environment overrides. NULL with "path:line: message" in err. */
dq_config *dq_config_load(const char *path, char *err, size_t errlen);

/* Like dq_config_load, for a program that uses only some top-level sections (NULL-terminated
 * names, e.g. {"registry", "keys", NULL}; NULL: all): a ${NAME} that is not set is an error
 * only inside them. Elsewhere the value is left absent (read as null), so a reader such as
 * `deployq status` loads the running stack's file without holding its provider tokens. */
dq_config *dq_config_load_sections(const char *path, const char *const *sections, char *err,
                                   size_t errlen);

/* Load from YAML text in memory; name is used in error messages. */
dq_config *dq_config_load_string(const char *yaml, size_t len, const char *name, char *err,
                                 size_t errlen);

void dq_config_free(dq_config *cfg);

/* Set (or replace) a kafka.* pair, e.g. from a -X flag. Returns 0, -1 on allocation. */
int dq_config_set_kafka(dq_config *cfg, const char *key, const char *value);
/* The value of a kafka key or NULL. */
const char *dq_config_kafka_get(const dq_config *cfg, const char *key);
/* Apply DEPLOYQ_BROKERS and DEPLOYQ_REDIS_URL (dq_config_load calls this; call it again
 * after applying flags so the environment wins). */
void dq_config_apply_env(dq_config *cfg);

const dq_service *dq_config_service(const dq_config *cfg, const char *name);
const dq_environment *dq_config_environment(const dq_config *cfg, const char *service,
                                            const char *env);
const dq_key *dq_config_key(const dq_config *cfg, const char *id);

/* The mapping of services.<service>.environments.<env> (NULL when the target is not
 * configured, or when the environment was written as an empty value). Owned by cfg. */
struct fy_node *dq_config_env_node(const dq_config *cfg, const char *service, const char *env);

/* Whether deployq-monitor watches service/env after a deploy: its environment has a
 * `monitor:` mapping (what workers/monitor reads). 0 for an unknown target. */
int dq_config_env_watched(const dq_config *cfg, const char *service, const char *env);

/* The 1-based line where node starts in its file: a scalar's own line; a mapping or
 * sequence that is the value of a key gives the key's line. 0 for NULL. */
int dq_config_node_line(struct fy_node *node);

/* The text of a scalar node of a document loaded by this module, with ${NAME} already
 * replaced. NULL for NULL, for a non-scalar, or for an empty value ("key:" with nothing).
 * Owned by the document: valid while the dq_config lives. */
const char *dq_config_node_scalar(struct fy_node *node);

/* A YAML subtree as cJSON, ${NAME} already replaced: mappings -> objects, sequences ->
 * arrays; plain scalars true/false -> bools, integers and decimals -> numbers,
 * null/~/empty -> null; everything else -> strings, and so are quoted scalars, !!str and
 * any scalar that holds a ${NAME} reference (an environment value is text: a token of
 * digits must keep its leading zeros). NULL node -> JSON null. The caller frees the result
 * with cJSON_Delete; NULL only on allocation failure. */
cJSON *dq_config_node_json(struct fy_node *node);

#endif
