/*
 * config.h - the one configuration file (deployq.yaml; libfyaml reads it, in config.c only).
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
 *       services: [api]         # approver/operator only: the scope (absent: all)
 *       environments: [production]
 *   services:
 *     api:
 *       environments:
 *         staging: {}
 *         production: {requires: staging, approval: required}
 * Top-level sections reserved for later workers (providers, executor, monitor, rollback,
 * registry, notifications, locks, health, drift) are accepted unread; any other unknown top-level key is an
 * error, and so is an unknown key in the sections this module reads (redis, validator,
 * topics, keys[], services.<name>). Unknown keys inside an environment are allowed: they
 * belong to later workers. The file holds one YAML document (a second "---" document is an
 * error); an empty file means all defaults, and so does one of only comments, but a file
 * libfyaml fails to load for any other reason (out of memory included) is an error. Anchors,
 * aliases and merge keys are expanded at load, within limits that stop an alias bomb
 * (docs/configuration.md).
 *
 * The view. YAML stays inside config.c: once loaded, the file is a read-only cJSON tree that
 * every module reads its own section from (dq_config_view, dq_config_env_view), and beside it
 * config.c keeps where each item was written, for messages in "file:line: message" form
 * (dq_config_where, dq_config_fail). Mappings are objects, sequences arrays; plain scalars
 * true/false are booleans, integers and decimals numbers, null/~/empty null; everything else
 * is a string, and so are quoted scalars, !!str and any scalar that holds a ${NAME}
 * reference (an environment value is text: a token of digits keeps its leading zeros). Every
 * ${NAME} is already replaced. A reader that wants a value as the text it was written as
 * (a duration, a count, a kafka property) takes dq_config_text(). Unknown keys are refused by
 * dq_config_check_keys() and nowhere else, so every such message has one form.
 *
 * A loader that takes a section as a cJSON item (and cfg only for positions) works as well on
 * a cJSON built by hand, and so does every dq_config function: such an item has no position
 * (line 0), and its messages come without "file:line: ". dq_config_from_json() makes a whole
 * dq_config from JSON, so a loader that takes a cfg is unit-tested without YAML.
 *
 * Threads: a dq_config is read-only once loaded; any thread may call the functions below
 * that take a const dq_config.
 */
#ifndef DQ_CONFIG_H
#define DQ_CONFIG_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dq_kv {
    char *key;
    char *value;
} dq_kv;

typedef struct dq_key {
    char *id;
    char *public_key; /* base64 of 32 bytes */
    char *role;       /* "ci" (default), "approver", "operator" */
    int retired;      /* retired: true -> signatures refused */
    /* The scope of an approver or operator key: the services and environments whose
     * deployments it may decide. NULL (n 0) when the file does not restrict it: all. */
    char **services;
    size_t n_services;
    char **environments;
    size_t n_environments;
} dq_key;

typedef struct dq_environment {
    char *name;
    char *requires;  /* environment this one is promoted from, or NULL */
    int approval;    /* 1 when approval: required */
    const cJSON *view; /* the environment's mapping (its later workers' keys too), owned by
                          the dq_config; NULL when written as an empty value */
} dq_environment;

typedef struct dq_service {
    char *name;
    dq_environment *envs;
    size_t n_envs;
    const cJSON *view; /* the service's mapping, owned by the dq_config; NULL when empty */
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
    int topic_replication; /* topics.replication: the replication factor of a topic a
                              worker creates; 0 (absent): min(3, brokers in the cluster) */
    int topic_min_insync;  /* topics.min_insync_replicas of a topic a worker creates; 0
                              (absent): replication - 1 when replication >= 3, else the
                              broker's default */
    dq_key *keys;
    size_t n_keys;
    dq_service *services;
    size_t n_services;
    struct dq_config_tree *tree;   /* config.c's own: the view and its positions; NULL when
                                      no file was read (use dq_config_view) */
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

/* 1 when key's scope (keys[].services, keys[].environments) covers service/environment:
 * each list absent, or naming it; else 0 (NULL key or names included). */
int dq_key_in_scope(const dq_key *key, const char *service, const char *environment);

/* A whole configuration from JSON (the file's layout, as cJSON), for tests: read by the same
 * readers as a file, with the same checks, but values are taken as they are (no ${NAME}
 * replaced) and no item has a position, so messages read "name: message". root is copied;
 * NULL root means all defaults. NULL with the message in err. */
dq_config *dq_config_from_json(const cJSON *root, const char *name, char *err, size_t errlen);

/* The value at path in the view: keys from the top separated by dots ("notifications",
 * "registry.dir"; "" or NULL: the whole file). NULL when absent or when no file was read. A
 * key that holds a dot (a kafka property) is not reachable this way: look it up in its
 * parent. Owned by cfg, read-only, valid while cfg lives. */
const cJSON *dq_config_view(const dq_config *cfg, const char *path);

/* The mapping of services.<service>.environments.<env> (NULL when the target is not
 * configured, or when the environment was written as an empty value). Owned by cfg. */
const cJSON *dq_config_env_view(const dq_config *cfg, const char *service, const char *env);

/* Whether deployq-monitor watches service/env after a deploy: its environment has a
 * `monitor:` mapping (what workers/monitor reads). 0 for an unknown target. */
int dq_config_env_watched(const dq_config *cfg, const char *service, const char *env);

/* The 1-based line in cfg's file where item was written: a scalar's own line; a mapping or
 * list that is the value of a key gives the key's line. 0 when item is NULL, cfg is NULL or
 * item is not part of cfg's view (built by hand): the position is unknown. */
int dq_config_line(const dq_config *cfg, const cJSON *item);

/* The "file:line: " that starts a message about item, in buf (n bytes; 512 is plenty), or
 * "" when its line is unknown (dq_config_line). file is cfg->path, "deployq.yaml" for a
 * configuration loaded from text. Returns buf (a literal "" when n is 0). */
const char *dq_config_where(const dq_config *cfg, const cJSON *item, char *buf, size_t n);

/* Write dq_config_where(item) followed by the formatted message into err; returns -1. */
int dq_config_fail(const dq_config *cfg, const cJSON *item, char *err, size_t errlen,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The text of a scalar item as the file wrote it, ${NAME} replaced: a string's value; a
 * number's, boolean's or null's own spelling ("0x1F", "True", "~"). NULL for NULL, an object,
 * an array or an empty value ("key:" with nothing). For an item built by hand: booleans give
 * "true"/"false" and numbers are printed into buf (n bytes, 32 is enough). The result is
 * owned by cfg or item, or is buf. */
const char *dq_config_text(const dq_config *cfg, const cJSON *item, char *buf, size_t n);

/* A duration member `key` of the mapping sec ("10s", "500ms"; docs/configuration.md):
 * absent leaves *out alone and returns 0; below min_ms (0 or 1), or not a duration, is
 * "file:line: where.key: expected a duration such as EXAMPLE" in err and -1. */
int dq_config_duration_key(const dq_config *cfg, const cJSON *sec, const char *where,
                           const char *key, int64_t min_ms, const char *example, int64_t *out,
                           char *err, size_t errlen);

/* The one check of unknown keys: 0 when every key of obj is in allowed (NULL-terminated),
 * or when obj is not a mapping (the caller checks types); else -1 with
 * "file:line: <what>: unknown key 'x' (known: a, b, c)" in err, at the line of the first
 * unknown key (no "file:line: " when its position is unknown). what NULL means the top level:
 * "unknown top-level key 'x' (known: ...)". */
int dq_config_check_keys(const dq_config *cfg, const cJSON *obj, const char *const allowed[],
                         const char *what, char *err, size_t errlen);

#endif
