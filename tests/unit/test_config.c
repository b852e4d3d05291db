/*
 * test_config.c - config.h: defaults, a full file read field by field, every error with its
 * exact "name:line: message", ${NAME} references (and that their values are masked from
 * then on), the environment overrides, kafka pass-through order, and the cJSON view (with
 * lines and scalar spellings) later workers read their sections through. Hostile files: an
 * alias bomb is refused, and so is a document libfyaml drops without a word (out of
 * memory): never "all defaults".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "testutil.h"

#define KEY_A "rQKhOKJbc80BgVmbxIJeq4NjbAQOZmp4uABJ6k6Q+/M="
#define KEY_B "yBUZPEWFXg5Jns5hd2V8tIwoodX3D5IyOedOBHWCeWk="

static const char *const touched_env[] = {
    "DEPLOYQ_CONFIG",         "DEPLOYQ_BROKERS",        "DEPLOYQ_REDIS_URL",
    "DQ_TEST_KAFKA_PASSWORD", "DQ_TEST_REDIS_PASSWORD", "DQ_TEST_TOKEN",
    "DQ_TEST_HOST",           "DQ_TEST_PORT",           "DQ_TEST_UNSET",
    "GITHUB_TOKEN",
};

static int reset(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof touched_env / sizeof touched_env[0]; i++)
        unsetenv(touched_env[i]);
    dq_log_redact_clear();
    return 0;
}

/* A path under tests/unit/data (meson sets DEPLOYQ_TEST_DATA). */
static void data_path(const char *name, char *out, size_t len)
{
    const char *dir = getenv("DEPLOYQ_TEST_DATA");
    assert_non_null(dir);
    snprintf(out, len, "%s/%s", dir, name);
}

static dq_config *load_yaml(const char *yaml, char *err, size_t errlen)
{
    return dq_config_load_string(yaml, strlen(yaml), "deployq.yaml", err, errlen);
}

static void test_defaults(void **state)
{
    (void)state;
    setenv("DEPLOYQ_SCHEMAS", "/opt/schemas", 1);
    dq_config *cfg = dq_config_new_default();
    assert_non_null(cfg);
    assert_null(cfg->path);
    assert_null(dq_config_view(cfg, ""));
    assert_int_equal(cfg->n_kafka, 0);
    assert_null(dq_config_kafka_get(cfg, "bootstrap.servers"));
    assert_string_equal(cfg->redis_url, "redis://127.0.0.1:6379");
    assert_int_equal(cfg->redis_timeout_ms, 2000);
    assert_int_equal(cfg->max_request_bytes, 65536);
    assert_int_equal(cfg->max_depth, 16);
    assert_int_equal(cfg->issued_at_window_ms, 300000);
    assert_string_equal(cfg->schemas_dir, "/opt/schemas");
    assert_string_equal(cfg->topic_requests, "deployq.requests");
    assert_string_equal(cfg->topic_events, "deployq.events");
    assert_string_equal(cfg->topic_dead, "deployq.dead");
    assert_null(cfg->group_prefix);
    assert_int_equal(cfg->topic_replication, 0);
    assert_int_equal(cfg->topic_min_insync, 0);
    assert_int_equal(cfg->n_keys, 0);
    assert_int_equal(cfg->n_services, 0);
    assert_null(dq_config_service(cfg, "api"));
    assert_null(dq_config_key(cfg, "ci"));
    dq_config_free(cfg);

    /* Without DEPLOYQ_SCHEMAS: the installed directory when it exists, else the source. */
    unsetenv("DEPLOYQ_SCHEMAS");
    cfg = dq_config_new_default();
    assert_non_null(cfg);
    struct stat st;
    int installed = stat(DQ_SCHEMAS_INSTALLED, &st) == 0 && S_ISDIR(st.st_mode);
    assert_string_equal(cfg->schemas_dir, installed ? DQ_SCHEMAS_INSTALLED : DQ_SCHEMAS_SOURCE);
    dq_config_free(cfg);

    /* No path and no DEPLOYQ_CONFIG: defaults, no file. */
    char err[256] = "untouched";
    cfg = dq_config_load(NULL, err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(err, "");
    assert_null(cfg->path);
    assert_null(dq_config_view(cfg, ""));
    assert_string_equal(cfg->redis_url, "redis://127.0.0.1:6379");
    dq_config_free(cfg);

    dq_config_free(NULL);
}

static void set_full_env(void)
{
    setenv("DQ_TEST_KAFKA_PASSWORD", "kafka-s3cret-pw", 1);
    setenv("DQ_TEST_REDIS_PASSWORD", "redis-s3cret-pw", 1);
}

static void test_full_file(void **state)
{
    (void)state;
    char path[512], err[512] = "";
    set_full_env();
    data_path("config-full.yaml", path, sizeof path);
    dq_config *cfg = dq_config_load(path, err, sizeof err);
    assert_string_equal(err, "");
    assert_non_null(cfg);
    assert_string_equal(cfg->path, path);
    assert_true(cJSON_IsObject(dq_config_view(cfg, "")));

    assert_int_equal(cfg->n_kafka, 5);
    assert_string_equal(dq_config_kafka_get(cfg, "bootstrap.servers"),
                        "broker-a:9092,broker-b:9092");
    assert_string_equal(dq_config_kafka_get(cfg, "sasl.password"), "kafka-s3cret-pw");
    assert_string_equal(dq_config_kafka_get(cfg, "linger.ms"), "5");
    assert_null(dq_config_kafka_get(cfg, "acks"));

    assert_string_equal(cfg->redis_url, "redis://:redis-s3cret-pw@redis.internal:6380/2");
    assert_int_equal(cfg->redis_timeout_ms, 1500);
    assert_int_equal(cfg->max_request_bytes, 131072);
    assert_int_equal(cfg->max_depth, 8);
    assert_int_equal(cfg->issued_at_window_ms, 120000);
    assert_string_equal(cfg->topic_requests, "acme.requests");
    assert_string_equal(cfg->topic_events, "acme.events");
    assert_string_equal(cfg->topic_dead, "acme.dead");

    /* A relative schemas_dir is taken from the file's directory. */
    char want_schemas[600];
    snprintf(want_schemas, sizeof want_schemas, "%s/../../../schemas", getenv("DEPLOYQ_TEST_DATA"));
    assert_string_equal(cfg->schemas_dir, want_schemas);

    assert_int_equal(cfg->n_keys, 3);
    assert_string_equal(cfg->keys[0].id, "ci-2026");
    assert_string_equal(cfg->keys[0].public_key, KEY_A);
    assert_string_equal(cfg->keys[0].role, "ci");
    assert_int_equal(cfg->keys[0].retired, 0);
    const dq_key *alice = dq_config_key(cfg, "alice");
    assert_ptr_equal(alice, &cfg->keys[1]);
    assert_string_equal(alice->role, "approver");
    assert_int_equal(alice->retired, 0);
    assert_string_equal(cfg->keys[2].id, "ci-2025");
    assert_int_equal(cfg->keys[2].retired, 1);
    assert_null(dq_config_key(cfg, "bob"));

    assert_int_equal(cfg->n_services, 2);
    const dq_service *api = dq_config_service(cfg, "api");
    assert_non_null(api);
    assert_int_equal(api->n_envs, 2);
    assert_string_equal(api->envs[0].name, "staging");
    assert_null(api->envs[0].requires);
    assert_int_equal(api->envs[0].approval, 0);
    assert_non_null(api->envs[0].view); /* {} is a mapping */
    const dq_environment *prod = dq_config_environment(cfg, "api", "production");
    assert_non_null(prod);
    assert_string_equal(prod->requires, "staging");
    assert_int_equal(prod->approval, 1);
    assert_int_equal(dq_config_line(cfg, prod->view), 35);

    /* An environment's own keys stay readable for later workers, with lines. */
    const cJSON *env_view = dq_config_env_view(cfg, "api", "production");
    assert_ptr_equal(env_view, prod->view);
    const cJSON *providers = cJSON_GetObjectItemCaseSensitive(env_view, "providers");
    assert_non_null(providers);
    assert_int_equal(dq_config_line(cfg, providers), 38);
    char *text = cJSON_PrintUnformatted(providers);
    assert_string_equal(text, "[\"github-actions\",\"railway\"]");
    free(text);

    const dq_environment *preview = dq_config_environment(cfg, "web.frontend", "preview");
    assert_non_null(preview);
    assert_null(preview->view); /* written as an empty value */
    assert_null(dq_config_env_view(cfg, "web.frontend", "preview"));
    const dq_environment *fprod = dq_config_environment(cfg, "web.frontend", "prod");
    assert_string_equal(fprod->requires, "preview");
    assert_int_equal(fprod->approval, 0);
    assert_null(dq_config_environment(cfg, "api", "prod"));
    assert_null(dq_config_environment(cfg, "nope", "prod"));

    /* Reserved sections are kept in the view, references resolved. */
    const cJSON *token = dq_config_view(cfg, "providers.github-actions.token");
    assert_non_null(token);
    assert_string_equal(dq_config_text(cfg, token, NULL, 0), "kafka-s3cret-pw");
    assert_int_equal(dq_config_line(cfg, token), 45);
    const cJSON *monitor = dq_config_view(cfg, "monitor");
    assert_int_equal(dq_config_line(cfg, monitor), 46);
    /* and errors about them say where, with the file's path */
    char where[600], want[600];
    snprintf(want, sizeof want, "%s:45: ", path);
    assert_string_equal(dq_config_where(cfg, token, where, sizeof where), want);
    dq_config_free(cfg);
}

/* A reader loads the running stack's file without its provider tokens: a ${NAME} that is
 * not set fails only inside the sections the reader asked for. */
static void test_sections_without_secrets(void **state)
{
    (void)state;
    static const char *const reader[] = {"registry", "keys", NULL};
    char dir[64], path[128], err[256];
    assert_int_equal(dq_test_tmpdir(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/deployq.yaml", dir);
    unsetenv("DQ_TEST_UNSET_PROVIDER_TOKEN");
    unsetenv("DQ_TEST_UNSET_REDIS_URL");
    unsetenv("DQ_TEST_UNSET_REGISTRY_DIR");

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("redis:\n  url: ${DQ_TEST_UNSET_REDIS_URL}\n"
          "registry:\n  dir: /srv/registry\n"
          "services:\n  api:\n    environments:\n      production:\n"
          "        providers:\n          - type: railway\n"
          "            token: ${DQ_TEST_UNSET_PROVIDER_TOKEN}\n",
          f);
    fclose(f);
    /* every section: the unset variable is an error, named with its line */
    assert_null(dq_config_load(path, err, sizeof err));
    assert_non_null(strstr(err, "${DQ_TEST_UNSET_REDIS_URL} is not set"));
    /* a reader: loads; the values it does not use are dropped, the others there */
    dq_config *cfg = dq_config_load_sections(path, reader, err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(cfg->redis_url, "redis://127.0.0.1:6379"); /* absent: the default */
    const cJSON *chain = dq_config_view(cfg, "services.api.environments.production.providers");
    assert_true(cJSON_IsObject(cJSON_GetArrayItem(chain, 0)));
    /* dropped: as if it had never been written */
    assert_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(chain, 0), "token"));
    const cJSON *rdir = dq_config_view(cfg, "registry.dir");
    assert_string_equal(dq_config_text(cfg, rdir, NULL, 0), "/srv/registry");
    dq_config_free(cfg);

    /* inside a section the reader uses, unset is still an error */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("registry:\n  dir: ${DQ_TEST_UNSET_REGISTRY_DIR}\n", f);
    fclose(f);
    assert_null(dq_config_load_sections(path, reader, err, sizeof err));
    assert_non_null(strstr(err, "${DQ_TEST_UNSET_REGISTRY_DIR} is not set"));
    assert_non_null(strstr(err, ":2:"));
    remove(path);
    rmdir(dir);
}

static void test_config_env_and_empty_file(void **state)
{
    (void)state;
    char dir[64], path[128], err[256];
    assert_int_equal(dq_test_tmpdir(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/deployq.yaml", dir);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("# nothing configured yet\n", f);
    fclose(f);
    setenv("DEPLOYQ_CONFIG", path, 1);
    dq_config *cfg = dq_config_load(NULL, err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, path);
    assert_null(dq_config_view(cfg, ""));
    assert_string_equal(cfg->redis_url, "redis://127.0.0.1:6379");
    dq_config_free(cfg);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("redis:\n  url: redis://from-config-env:6379\n", f);
    fclose(f);
    cfg = dq_config_load(NULL, err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(cfg->redis_url, "redis://from-config-env:6379");
    dq_config_free(cfg);

    /* A trailing document marker with nothing after it is harmless. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("---\nredis:\n  timeout: 3s\n...\n---\n", f);
    fclose(f);
    cfg = dq_config_load(path, err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(cfg->redis_timeout_ms, 3000);
    dq_config_free(cfg);

    /* An explicit path beats DEPLOYQ_CONFIG. */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing.yaml", dir);
    assert_null(dq_config_load(missing, err, sizeof err));
    char want[256];
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory", missing);
    assert_string_equal(err, want);

    assert_int_equal(dq_test_rm_rf(dir), 0);
}

typedef struct bad_case {
    const char *yaml;
    const char *err;
} bad_case;

static const bad_case bad_cases[] = {
    {"kafka:\n  a: 1\nkafak:\n  b: 2\n",
     "deployq.yaml:3: unknown top-level key 'kafak' (known: kafka, redis, validator, topics, "
     "schemas_dir, keys, services, providers, executor, monitor, rollback, registry, "
     "notifications, locks, health, drift)"},
    {"services:\n  api:\n    environments:\n      prod: [1\n",
     "deployq.yaml:5: flow sequence without a closing bracket"},
    {"redis:\n  url: a\n  url: b\n", "deployq.yaml:3: duplicate key"},
    {"- a\n- b\n", "deployq.yaml:1: the file must be a mapping of sections (kafka, redis, ...)"},
    {"kafka: [a]\n", "deployq.yaml:1: kafka: must be a mapping"},
    {"kafka:\n  linger.ms:\n", "deployq.yaml:2: kafka.linger.ms: must be a scalar value"},
    {"kafka:\n  linger.ms: {a: 1}\n", "deployq.yaml:2: kafka.linger.ms: must be a scalar value"},
    {"redis:\n  tmeout: 2s\n",
     "deployq.yaml:2: redis: unknown key 'tmeout' (known: url, timeout)"},
    {"redis:\n  timeout: soon\n",
     "deployq.yaml:2: redis.timeout: must be a duration above zero such as 1500ms, 2s, 5m"},
    {"redis:\n  url: [a]\n", "deployq.yaml:2: redis.url: must be a string"},
    {"validator:\n  max_request_bytes: 1023\n",
     "deployq.yaml:2: validator.max_request_bytes: must be an integer from 1024 to 1048576"},
    {"validator:\n  max_request_bytes: 1048577\n",
     "deployq.yaml:2: validator.max_request_bytes: must be an integer from 1024 to 1048576"},
    {"validator:\n\n  max_depth: 65\n",
     "deployq.yaml:3: validator.max_depth: must be an integer from 2 to 64"},
    {"validator:\n  max_depth: 1\n",
     "deployq.yaml:2: validator.max_depth: must be an integer from 2 to 64"},
    {"validator:\n  issued_at_window: 0s\n",
     "deployq.yaml:2: validator.issued_at_window: must be a duration above zero such as "
     "1500ms, 2s, 5m"},
    {"validator:\n  depth: 3\n",
     "deployq.yaml:2: validator: unknown key 'depth' (known: max_request_bytes, max_depth, "
     "issued_at_window)"},
    {"topics:\n  request: x\n",
     "deployq.yaml:2: topics: unknown key 'request' (known: requests, events, dead, group_prefix, "
     "replication, min_insync_replicas)"},
    {"topics:\n  replication: 0\n",
     "deployq.yaml:2: topics.replication: must be an integer from 1 to 32"},
    {"topics:\n  replication: three\n",
     "deployq.yaml:2: topics.replication: must be an integer from 1 to 32"},
    {"topics:\n  min_insync_replicas: 33\n",
     "deployq.yaml:2: topics.min_insync_replicas: must be an integer from 1 to 32"},
    {"topics:\n  min_insync_replicas: 3\n  replication: 2\n",
     "deployq.yaml:2: topics.min_insync_replicas: 3 is above topics.replication (2): every "
     "write would be refused"},
    {"topics:\n  group_prefix: 'a b'\n",
     "deployq.yaml:2: topics.group_prefix: a group prefix is 1 to 200 of letters, digits, '.', '_', '-'"},
    {"topics:\n  dead: 'bad topic'\n",
     "deployq.yaml:2: topics.dead: a topic name is 1 to 249 of letters, digits, '.', '_', '-'"},
    {"keys:\n  id: x\n", "deployq.yaml:1: keys: must be a sequence of {id, public_key, role}"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n  - id: a\n    public_key: " KEY_B "\n",
     "deployq.yaml:4: keys[1].id: duplicate key id 'a'"},
    {"keys:\n  - id: a\n    public_key: bm90IGEga2V5\n",
     "deployq.yaml:3: keys[0].public_key: must be the base64 of a 32-byte Ed25519 public key"},
    {"keys:\n  - id: a\n    public_key: 7qtt6Wyf8RD49W8BOtONL7FR79N98WXv539p7KG+zg==\n",
     "deployq.yaml:3: keys[0].public_key: must be the base64 of a 32-byte Ed25519 public key"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    role: admin\n",
     "deployq.yaml:4: keys[0].role: must be 'ci', 'approver' or 'operator'"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    retired: yes\n",
     "deployq.yaml:4: keys[0].retired: must be true or false"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    rol: ci\n",
     "deployq.yaml:4: keys[0]: unknown key 'rol' (known: id, public_key, role, retired, services, "
     "environments)"},
    /* An approver's scope: a non-empty list of configured names, and never on a CI key. */
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    role: approver\n    services: api\n",
     "deployq.yaml:5: keys[0].services: must be a list of names, e.g. [api, web]"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    role: approver\n    environments: []\n",
     "deployq.yaml:5: keys[0].environments: must name at least one; leave it out for all"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    role: approver\n    services:\n      - api\n"
     "      - API\n",
     "deployq.yaml:7: keys[0].services: entry 2: a name must match ^[a-z0-9][a-z0-9._-]{0,62}$"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    role: operator\n    services: [api, api]\n",
     "deployq.yaml:5: keys[0].services: 'api' is listed twice"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    role: approver\n    services: [{api: 1}]\n",
     "deployq.yaml:5: keys[0].services: entry 1: a name must match ^[a-z0-9][a-z0-9._-]{0,62}$"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    services: [api]\n",
     "deployq.yaml:4: keys[0].services: only an approver or operator key has a scope (key 'a' has "
     "role ci)"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    role: approver\n    services: [web]\n"
     "services:\n  api:\n    environments:\n      prod: {}\n",
     "deployq.yaml:5: keys[0].services: 'web' is not a service of services:"},
    {"services:\n  api:\n    environments:\n      prod: {}\n  web:\n    environments:\n      qa: {}\n"
     "keys:\n  - id: a\n    public_key: " KEY_A "\n    role: approver\n    services: [api]\n"
     "    environments: [qa]\n",
     "deployq.yaml:13: keys[0].environments: 'qa' is not an environment of the key's services"},
    {"keys:\n  - id: a\n    public_key: " KEY_A "\n    role: approver\n    environments: [prd]\n"
     "services:\n  api:\n    environments:\n      prod: {}\n",
     "deployq.yaml:5: keys[0].environments: 'prd' is not an environment of any service"},
    {"keys:\n  - public_key: " KEY_A "\n", "deployq.yaml:2: keys[0]: id is missing"},
    {"keys:\n  - id: a\n", "deployq.yaml:2: keys[0].public_key is missing (key 'a')"},
    {"keys:\n  - ci\n", "deployq.yaml:2: keys[0]: must be a mapping with id and public_key"},
    {"services:\n  API:\n    environments: {}\n",
     "deployq.yaml:2: services.API: a service name must match ^[a-z0-9][a-z0-9._-]{0,62}$"},
    {"services:\n  api:\n    enviroments: {}\n",
     "deployq.yaml:3: services.api: unknown key 'enviroments' (known: environments, github_deployments, checks, sentry)"},
    {"services:\n  api: [prod]\n",
     "deployq.yaml:2: services.api: must be a mapping with environments"},
    {"services:\n  api:\n    environments:\n      -prod: {}\n",
     "deployq.yaml:4: services.api.environments.-prod: an environment name must match "
     "^[a-z0-9][a-z0-9._-]{0,62}$"},
    {"services:\n  api:\n    environments:\n      prod: yes\n",
     "deployq.yaml:4: services.api.environments.prod: must be a mapping (or {} when empty)"},
    {"services:\n  api:\n    environments:\n      staging: {}\n      prod:\n"
     "        requires: staging\n        approval: always\n",
     "deployq.yaml:7: services.api.environments.prod: approval must be 'required' or 'none'"},
    {"services:\n  api:\n    environments:\n      staging: {}\n      prod:\n"
     "        requires: stagin\n",
     "deployq.yaml:6: services.api.environments.prod: requires 'stagin', which is not an "
     "environment of service api"},
    {"services:\n  api:\n    environments:\n      prod: {requires: prod}\n",
     "deployq.yaml:4: services.api.environments.prod: requires names itself"},
    {"services:\n  api:\n    environments:\n      a: {requires: b}\n      b: {requires: a}\n",
     "deployq.yaml:4: services.api.environments.a: requires forms a cycle, so no deploy "
     "could ever pass it"},
    {"services:\n  api:\n    environments:\n      a: {requires: b}\n      b: {requires: c}\n"
     "      c: {requires: b}\n",
     "deployq.yaml:5: services.api.environments.b: requires forms a cycle, so no deploy "
     "could ever pass it"},
    {"redis:\n  url: \"x${DQ_TEST_UNSET\"\n",
     "deployq.yaml:2: unterminated ${ reference (write $${ for a literal ${)"},
    {"redis:\n  url: \"${1X}\"\n",
     "deployq.yaml:2: ${1X} is not a valid reference: a name is letters, digits and _"},
    {"schemas_dir: ''\n", "deployq.yaml:1: schemas_dir: must not be empty"},
    {"redis:\n  url: redis://a\n---\nkafka:\n  acks: all\n",
     "deployq.yaml:4: a second YAML document starts here; the configuration is one document"},
    {"redis:\n  url: redis://a\n---\nkafka: [\n",
     "deployq.yaml:5: flow sequence without a closing bracket"},
    /* Keys are checked by deployq, not libfyaml (whose check is quadratic): still refused,
     * quoted or not. */
    {"redis:\n  url: a\n  \"url\": b\n", "deployq.yaml:3: duplicate key"},
    {"services:\n  api: {}\n  web: {}\n  db: {}\n  api: {}\n", "deployq.yaml:5: duplicate key"},
    {"providers:\n  ? [a]\n  : 1\n",
     "deployq.yaml:2: a mapping key must be a plain value, not a mapping or a list"},
    /* Aliases: each names an anchor before it, never one around it, never as a key. */
    {"providers:\n  a: *nope\n", "deployq.yaml:2: alias *nope: no anchor &nope before it"},
    {"providers:\n  a: *b\n  b: &b 1\n", "deployq.yaml:2: alias *b: no anchor &b before it"},
    {"providers:\n  a: &a [1, *a]\n", "deployq.yaml:2: alias *a is inside the node it names"},
    {"providers:\n  &k a: 1\n  *k : 2\n", "deployq.yaml:3: an alias (*k) cannot be a mapping key"},
    {"providers:\n  s: &s 1\n  m: {<<: *s}\n",
     "deployq.yaml:3: <<: a merge key takes an alias of a mapping (<<: *name) or a list of them"},
    {"providers:\n  m:\n    <<: [1, 2]\n",
     "deployq.yaml:3: <<: a merge key takes an alias of a mapping (<<: *name) or a list of them"},
    {"providers:\n  a: &a {x: 1}\n  m: {<<: &z [*a]}\n  n: *z\n",
     "deployq.yaml:3: <<: a merge key takes an alias of a mapping (<<: *name) or a list of them"},
    /* Found by tests/fuzz (fuzz_config): an item or key with no text of its own once sent
     * the line lookup of the error message back and forth between parent and child until
     * the stack overflowed. */
    {"-\n", "deployq.yaml:1: the file must be a mapping of sections (kafka, redis, ...)"},
    {": x\n", "deployq.yaml:1: unknown top-level key '' (known: kafka, redis, validator, topics, "
     "schemas_dir, keys, services, providers, executor, monitor, rollback, registry, "
     "notifications, locks, health, drift)"},
    /* Also found by fuzz_config: libfyaml 0.7 never returned from "%" followed by a byte
     * that is not UTF-8, so text that is not UTF-8 is refused before it is parsed. */
    {"kafka:\n  a: 1\n%\xfd\n", "deployq.yaml:3: not UTF-8 text (byte 15)"},
    {"redis:\n  url: \"\xc0\x80\"\n", "deployq.yaml:2: not UTF-8 text (byte 15)"},
    {"redis:\n  url: \"\xed\xa0\x80\"\n", "deployq.yaml:2: not UTF-8 text (byte 15)"},
};

/* topics.group_prefix: the workers' consumer groups of one installation. */
static void test_group_prefix(void **state)
{
    (void)state;
    char err[512] = "";
    dq_config *cfg = load_yaml("topics:\n  events: acme.events\n  group_prefix: acme-deployq\n", err,
                               sizeof err);
    assert_non_null(cfg);
    assert_string_equal(cfg->group_prefix, "acme-deployq");
    dq_config_free(cfg);
}

/* topics.replication and topics.min_insync_replicas: what a worker creates topics with. */
static void test_topic_replication(void **state)
{
    (void)state;
    char err[512] = "";
    dq_config *cfg = load_yaml("topics:\n  replication: 3\n  min_insync_replicas: 2\n", err,
                               sizeof err);
    assert_non_null(cfg);
    assert_int_equal(cfg->topic_replication, 3);
    assert_int_equal(cfg->topic_min_insync, 2);
    dq_config_free(cfg);
    /* a min ISR alone is checked against the cluster by the broker, not here */
    cfg = load_yaml("topics:\n  min_insync_replicas: 2\n", err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(cfg->topic_replication, 0);
    assert_int_equal(cfg->topic_min_insync, 2);
    dq_config_free(cfg);
}

/* keys[].services / .environments: the scope an approver or operator key decides in. */
static void test_key_scopes(void **state)
{
    (void)state;
    char err[512] = "";
    dq_config *cfg = load_yaml("keys:\n"
                               "  - id: alice\n    public_key: " KEY_A "\n    role: approver\n"
                               "    services: [api, web]\n    environments: [production]\n"
                               "  - id: bob\n    public_key: " KEY_B "\n    role: approver\n"
                               "    environments: [staging]\n"
                               "  - id: carol\n    public_key: " KEY_B "\n    role: operator\n"
                               "services:\n"
                               "  api:\n    environments:\n      staging: {}\n      production: {}\n"
                               "  web:\n    environments:\n      production: {}\n"
                               "  db:\n    environments:\n      production: {}\n",
                               err, sizeof err);
    assert_string_equal(err, "");
    assert_non_null(cfg);
    const dq_key *alice = dq_config_key(cfg, "alice"), *bob = dq_config_key(cfg, "bob"),
                 *carol = dq_config_key(cfg, "carol");
    assert_int_equal(alice->n_services, 2);
    assert_string_equal(alice->services[1], "web");
    assert_int_equal(alice->n_environments, 1);
    assert_true(dq_key_in_scope(alice, "api", "production"));
    assert_true(dq_key_in_scope(alice, "web", "production"));
    assert_false(dq_key_in_scope(alice, "db", "production"));  /* service not listed */
    assert_false(dq_key_in_scope(alice, "api", "staging"));    /* environment not listed */
    assert_null(bob->services);                                  /* absent: every service */
    assert_true(dq_key_in_scope(bob, "api", "staging"));
    assert_false(dq_key_in_scope(bob, "api", "production"));
    assert_null(carol->services);
    assert_null(carol->environments);
    assert_true(dq_key_in_scope(carol, "db", "production")); /* no scope: everything */
    assert_false(dq_key_in_scope(carol, NULL, "production"));
    assert_false(dq_key_in_scope(NULL, "api", "production"));
    dq_config_free(cfg);
}

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        char err[512] = "";
        dq_config *cfg = load_yaml(bad_cases[i].yaml, err, sizeof err);
        if (cfg != NULL || strcmp(err, bad_cases[i].err) != 0)
            print_error("case %zu:\n%s\ngot: %s\n", i, bad_cases[i].yaml, err);
        assert_null(cfg);
        assert_string_equal(err, bad_cases[i].err);
    }
}

static void test_env_references(void **state)
{
    (void)state;
    char err[256] = "";
    setenv("DQ_TEST_TOKEN", "tok-1234567890", 1);
    setenv("DQ_TEST_HOST", "db.internal", 1);
    setenv("DQ_TEST_PORT", "0042", 1);
    dq_config *cfg = load_yaml("redis:\n"
                               "  url: redis://${DQ_TEST_HOST}:6379/${DQ_TEST_PORT}\n"
                               "kafka:\n"
                               "  sasl.oauthbearer.config: \"token=${DQ_TEST_TOKEN}\"\n"
                               "  client.id: $${NOT_A_REF}-$HOME-$\n"
                               "  group.id: \"${DQ_TEST_HOST}${DQ_TEST_HOST}\"\n"
                               "providers:\n"
                               "  port: ${DQ_TEST_PORT}\n",
                               err, sizeof err);
    assert_string_equal(err, "");
    assert_non_null(cfg);
    assert_string_equal(cfg->redis_url, "redis://db.internal:6379/0042");
    assert_string_equal(dq_config_kafka_get(cfg, "sasl.oauthbearer.config"),
                        "token=tok-1234567890");
    assert_string_equal(dq_config_kafka_get(cfg, "client.id"), "${NOT_A_REF}-$HOME-$");
    assert_string_equal(dq_config_kafka_get(cfg, "group.id"), "db.internaldb.internal");

    /* A value from the environment is text, even when it looks like a number. */
    const cJSON *j = dq_config_view(cfg, "providers.port");
    assert_true(cJSON_IsString(j));
    assert_string_equal(j->valuestring, "0042");

    /* Every substituted value is masked from now on. */
    char out[256];
    dq_redact("auth failed with tok-1234567890 at db.internal", out, sizeof out);
    assert_string_equal(out, "auth failed with *** at ***");
    dq_config_free(cfg);
}

static void test_missing_env(void **state)
{
    (void)state;
    char err[256] = "";
    setenv("DQ_TEST_TOKEN", "tok-value-never-shown", 1);
    dq_config *cfg = load_yaml("# secrets come from the environment\n"
                               "kafka:\n"
                               "  sasl.password: ${DQ_TEST_TOKEN}${GITHUB_TOKEN}\n",
                               err, sizeof err);
    assert_null(cfg);
    assert_string_equal(err, "deployq.yaml:3: ${GITHUB_TOKEN} is not set in the environment");

    /* Also in a section this module does not read. */
    cfg = load_yaml("rollback:\n  notify:\n    - url: https://hooks/${GITHUB_TOKEN}\n", err,
                    sizeof err);
    assert_null(cfg);
    assert_string_equal(err, "deployq.yaml:3: ${GITHUB_TOKEN} is not set in the environment");

    /* Set but empty is a value, not a missing variable. */
    setenv("GITHUB_TOKEN", "", 1);
    cfg = load_yaml("kafka:\n  sasl.password: \"${GITHUB_TOKEN}\"\n", err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(dq_config_kafka_get(cfg, "sasl.password"), "");
    dq_config_free(cfg);
}

static void test_env_overrides(void **state)
{
    (void)state;
    char err[256] = "";
    setenv("DEPLOYQ_BROKERS", "env-broker:9092", 1);
    setenv("DEPLOYQ_REDIS_URL", "redis://:env-pass-word@env-redis:6379", 1);
    dq_config *cfg = load_yaml("kafka:\n  bootstrap.servers: file-broker:9092\n"
                               "redis:\n  url: redis://file-redis:6379\n",
                               err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(dq_config_kafka_get(cfg, "bootstrap.servers"), "env-broker:9092");
    assert_int_equal(cfg->n_kafka, 1);
    assert_string_equal(cfg->redis_url, "redis://:env-pass-word@env-redis:6379");

    /* A flag (-X) replaces the file's value; applying the environment again wins over it. */
    assert_int_equal(dq_config_set_kafka(cfg, "bootstrap.servers", "flag-broker:9092"), 0);
    assert_string_equal(dq_config_kafka_get(cfg, "bootstrap.servers"), "flag-broker:9092");
    dq_config_apply_env(cfg);
    assert_string_equal(dq_config_kafka_get(cfg, "bootstrap.servers"), "env-broker:9092");
    assert_int_equal(cfg->n_kafka, 1);

    /* The password in a Redis URL is masked. */
    char out[128];
    dq_redact("connect env-pass-word", out, sizeof out);
    assert_string_equal(out, "connect ***");
    dq_config_free(cfg);

    /* Defaults (no file) get the overrides too. */
    cfg = dq_config_load(NULL, err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(dq_config_kafka_get(cfg, "bootstrap.servers"), "env-broker:9092");
    assert_string_equal(cfg->redis_url, "redis://:env-pass-word@env-redis:6379");
    dq_config_free(cfg);

    assert_int_equal(dq_config_set_kafka(NULL, "a", "b"), -1);
    dq_config_apply_env(NULL);
}

static void test_kafka_order(void **state)
{
    (void)state;
    char err[256] = "";
    dq_config *cfg = load_yaml("kafka:\n"
                               "  zeta.key: z\n"
                               "  acks: all\n"
                               "  enable.idempotence: true\n"
                               "  linger.ms: 5\n"
                               "  ssl.key.password: \"pem-pass-1\"\n"
                               "  client.id: 'quoted'\n",
                               err, sizeof err);
    assert_non_null(cfg);
    static const char *const keys[] = {"zeta.key",  "acks",             "enable.idempotence",
                                       "linger.ms", "ssl.key.password", "client.id"};
    static const char *const values[] = {"z", "all", "true", "5", "pem-pass-1", "quoted"};
    assert_int_equal(cfg->n_kafka, 6);
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(cfg->kafka[i].key, keys[i]);
        assert_string_equal(cfg->kafka[i].value, values[i]);
    }
    /* A new key from a flag goes at the end; a known one is replaced in place. */
    assert_int_equal(dq_config_set_kafka(cfg, "debug", "broker"), 0);
    assert_int_equal(dq_config_set_kafka(cfg, "acks", "1"), 0);
    assert_int_equal(cfg->n_kafka, 7);
    assert_string_equal(cfg->kafka[1].value, "1");
    assert_string_equal(cfg->kafka[6].key, "debug");

    /* Kafka's password keys are secrets even when written literally. */
    char out[64];
    dq_redact("x pem-pass-1 y", out, sizeof out);
    assert_string_equal(out, "x *** y");
    dq_config_free(cfg);
}

static void test_view(void **state)
{
    (void)state;
    char err[256] = "";
    setenv("DQ_TEST_TOKEN", "ghp_0123456789", 1);
    dq_config *cfg = load_yaml("providers:\n"
                               "  t: true\n"
                               "  f: False\n"
                               "  i: 42\n"
                               "  neg: -7\n"
                               "  fl: 2.5\n"
                               "  exp: 1e3\n"
                               "  hex: 0x1F\n"
                               "  n1: null\n"
                               "  n2: ~\n"
                               "  n3:\n"
                               "  qs: \"42\"\n"
                               "  sq: 'true'\n"
                               "  tagged: !!str 17\n"
                               "  word: yes\n"
                               "  ver: 1.2.3\n"
                               "  inf: .inf\n"
                               "  tok: ${DQ_TEST_TOKEN}\n"
                               "  list: [1, a, {k: v}]\n"
                               "  empty: {}\n"
                               "  chain:\n"
                               "    - github-actions\n"
                               "    - name: command\n"
                               "      timeout: 10m\n"
                               "  anchor: &a {x: 1}\n"
                               "  alias: *a\n",
                               err, sizeof err);
    assert_string_equal(err, "");
    assert_non_null(cfg);
    const cJSON *p = dq_config_view(cfg, "providers");
    assert_non_null(p);
    char *text = cJSON_PrintUnformatted(p);
    assert_string_equal(text, "{\"t\":true,\"f\":false,\"i\":42,\"neg\":-7,\"fl\":2.5,\"exp\":1000,"
                              "\"hex\":31,\"n1\":null,\"n2\":null,\"n3\":null,\"qs\":\"42\","
                              "\"sq\":\"true\",\"tagged\":\"17\",\"word\":\"yes\","
                              "\"ver\":\"1.2.3\",\"inf\":\".inf\",\"tok\":\"ghp_0123456789\","
                              "\"list\":[1,\"a\",{\"k\":\"v\"}],\"empty\":{},"
                              "\"chain\":[\"github-actions\",{\"name\":\"command\","
                              "\"timeout\":\"10m\"}],\"anchor\":{\"x\":1},\"alias\":{\"x\":1}}");
    free(text);

    /* Lines: a scalar's own; a collection under a key, the key's. */
    assert_int_equal(dq_config_line(cfg, p), 1);
    const cJSON *chain = cJSON_GetObjectItemCaseSensitive(p, "chain");
    assert_int_equal(dq_config_line(cfg, chain), 21);
    assert_int_equal(dq_config_line(cfg, cJSON_GetArrayItem(chain, 1)), 23);
    assert_int_equal(dq_config_line(cfg, cJSON_GetObjectItemCaseSensitive(p, "tok")), 18);
    assert_int_equal(dq_config_line(cfg, cJSON_GetObjectItemCaseSensitive(p, "n3")), 11);
    assert_int_equal(dq_config_line(cfg, NULL), 0);
    assert_int_equal(dq_config_line(NULL, p), 0);

    /* Text: as written, whatever type the scalar became; none for a collection or empty. */
    assert_null(dq_config_text(cfg, cJSON_GetObjectItemCaseSensitive(p, "n3"), NULL, 0));
    assert_null(dq_config_text(cfg, chain, NULL, 0));
    assert_null(dq_config_text(cfg, NULL, NULL, 0));
    assert_string_equal(dq_config_text(cfg, cJSON_GetObjectItemCaseSensitive(p, "qs"), NULL, 0),
                        "42");
    assert_string_equal(dq_config_text(cfg, cJSON_GetObjectItemCaseSensitive(p, "hex"), NULL, 0),
                        "0x1F");
    assert_string_equal(dq_config_text(cfg, cJSON_GetObjectItemCaseSensitive(p, "f"), NULL, 0),
                        "False");
    assert_string_equal(dq_config_text(cfg, cJSON_GetObjectItemCaseSensitive(p, "n2"), NULL, 0),
                        "~");
    assert_string_equal(dq_config_text(cfg, cJSON_GetObjectItemCaseSensitive(p, "exp"), NULL, 0),
                        "1e3");
    dq_config_free(cfg);
}

/* The classic "billion laughs": nine levels of ten aliases, 10^9 nodes once expanded, from
 * 500 bytes. libfyaml expanded it until the memory ran out (gigabytes); under a memory
 * limit it then returned no document and no error, and the loader took that for an empty
 * file: all defaults. */
static const char alias_bomb[] = "providers:\n"
                                 "  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                                 "  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                                 "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                                 "  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                                 "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                                 "  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                                 "  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                                 "  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
                                 "  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";

static void test_alias_bomb(void **state)
{
    (void)state;
    char err[256] = "";
    /* Refused while walking, before anything is copied: the walk stops at the limit. */
    dq_config *cfg = load_yaml(alias_bomb, err, sizeof err);
    assert_null(cfg);
    assert_string_equal(err,
                        "deployq.yaml:7: alias *e: expanding aliases would make more than 250000 "
                        "nodes");

    /* Nesting through aliases is bounded too (each level here is 50 deep: libfyaml itself
     * refuses more than 64 in the text). */
    char deep[1024], open_[51], close_[51];
    memset(open_, '[', 50);
    memset(close_, ']', 50);
    open_[50] = close_[50] = '\0';
    snprintf(deep, sizeof deep, "providers:\n  a: &a %s%s\n  b: &b %s*a%s\n  c: %s*b%s\n", open_,
             close_, open_, close_, open_, close_);
    cfg = load_yaml(deep, err, sizeof err);
    assert_null(cfg);
    assert_string_equal(err,
                        "deployq.yaml:4: alias *b: nested more than 128 levels deep once expanded");

    /* libfyaml 0.7 spends time per anchor on every node it copies or frees. */
    size_t cap = 64 + 1001 * 32, n = 0;
    char *many = malloc(cap);
    assert_non_null(many);
    n += (size_t)snprintf(many + n, cap - n, "providers:\n");
    for (int i = 0; i < 1001; i++)
        n += (size_t)snprintf(many + n, cap - n, "  k%d: &a%d v\n", i, i);
    cfg = load_yaml(many, err, sizeof err);
    free(many);
    assert_null(cfg);
    assert_string_equal(err,
                        "deployq.yaml:1002: anchor &a1000: more than 1000 anchors in one file");
}

/* Aliases and merge keys within the limits work as YAML says. */
static void test_aliases(void **state)
{
    (void)state;
    char err[256] = "";
    dq_config *cfg = load_yaml("providers:\n"
                               "  base: &base {a: 1, b: [x, y]}\n"
                               "  more: &more {a: 2, c: 3}\n"
                               "  one:\n"
                               "    <<: *base\n"
                               "    a: 9\n"
                               "  two: {<<: [*more, *base]}\n"
                               "  list:\n"
                               "    - *base\n"
                               "services:\n"
                               "  api:\n"
                               "    environments:\n"
                               "      staging: &env {approval: required}\n"
                               "      production: *env\n"
                               "      canary:\n"
                               "        <<: *env\n"
                               "        requires: staging\n",
                               err, sizeof err);
    assert_string_equal(err, "");
    assert_non_null(cfg);
    const cJSON *p = dq_config_view(cfg, "providers");
    const cJSON *j = p;
    assert_non_null(j);
    /* The mapping's own keys win over merged ones; of merged mappings, the first wins. */
    const cJSON *one = cJSON_GetObjectItemCaseSensitive(j, "one");
    assert_int_equal(cJSON_GetArraySize(one), 2);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(one, "a")->valueint, 9);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(one, "b")), 2);
    const cJSON *two = cJSON_GetObjectItemCaseSensitive(j, "two");
    assert_int_equal(cJSON_GetArraySize(two), 3);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(two, "a")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(two, "c")->valueint, 3);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(two, "b"));
    assert_null(cJSON_GetObjectItemCaseSensitive(two, "<<"));
    char *text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, "list"));
    assert_string_equal(text, "[{\"a\":1,\"b\":[\"x\",\"y\"]}]");
    free(text);
    /* A copy made for an alias is where the alias is written. */
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "list");
    assert_int_equal(dq_config_line(cfg, cJSON_GetArrayItem(list, 0)), 9);

    const dq_environment *prod = dq_config_environment(cfg, "api", "production");
    assert_non_null(prod);
    assert_int_equal(prod->approval, 1);
    assert_int_equal(dq_config_line(cfg, prod->view), 14);
    const dq_environment *canary = dq_config_environment(cfg, "api", "canary");
    assert_non_null(canary);
    assert_int_equal(canary->approval, 1);
    assert_string_equal(canary->requires, "staging");
    dq_config_free(cfg);

    /* A name used for two anchors: an alias names the one before it. */
    cfg = load_yaml("providers:\n  x: &v one\n  y: *v\n  z: &v two\n  w: *v\n", err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(dq_config_view(cfg, "providers.y")->valuestring, "one");
    assert_string_equal(dq_config_view(cfg, "providers.w")->valuestring, "two");
    dq_config_free(cfg);
}

/* Many services: every one found again by name, and `requires` checked across all of them
 * (the lookups are indexed: no timing is asserted here, tests/bench has no place for it). */
static void test_many_services(void **state)
{
    (void)state;
    enum { N = 3000 };
    size_t cap = 64 + (size_t)N * 128, n = 0;
    char *yaml = malloc(cap), err[256] = "";
    assert_non_null(yaml);
    n += (size_t)snprintf(yaml + n, cap - n, "services:\n");
    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(yaml + n, cap - n,
                              "  svc-%d:\n    environments:\n      staging: {}\n"
                              "      production: {requires: staging}\n",
                              i);
    dq_config *cfg = load_yaml(yaml, err, sizeof err);
    assert_string_equal(err, "");
    assert_non_null(cfg);
    assert_int_equal(cfg->n_services, N);
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "svc-%d", i);
        const dq_service *svc = dq_config_service(cfg, name);
        assert_non_null(svc);
        assert_string_equal(svc->name, name);
        assert_ptr_equal(dq_config_environment(cfg, name, "production"), &svc->envs[1]);
        assert_null(dq_config_environment(cfg, name, "prod"));
    }
    assert_null(dq_config_service(cfg, "svc-3000"));
    dq_config_free(cfg);

    /* A long chain of environments that closes on itself. */
    n = (size_t)snprintf(yaml, cap, "services:\n  api:\n    environments:\n");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(yaml + n, cap - n, "      e%d: {requires: e%d}\n", i, (i + 1) % 1000);
    cfg = load_yaml(yaml, err, sizeof err);
    assert_null(cfg);
    assert_string_equal(err, "deployq.yaml:4: services.api.environments.e0: requires forms a "
                             "cycle, so no deploy could ever pass it");
    free(yaml);
}

/*
 * A document libfyaml gives up on without a diagnostic is an error, not an empty file. Out
 * of memory is how that happens: a child process under RLIMIT_AS loads 20,000 services
 * with 32 MiB to spare (libfyaml needs about 100 MiB for them). Exit status: 0 refused with
 * the expected message, 1 loaded (all defaults: the bug), 2 refused with another message.
 */
static void test_silent_parse_failure(void **state)
{
    (void)state;
    /* Text with no node in it is still an empty file: all defaults. */
    char err[256] = "";
    dq_config *cfg = load_yaml("# nothing yet\n  \n# still nothing\n", err, sizeof err);
    assert_non_null(cfg);
    assert_null(dq_config_view(cfg, ""));
    dq_config_free(cfg);
    cfg = load_yaml("# nothing yet\n\n--- # a marker\n...\n", err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(cfg->n_services, 0);
    dq_config_free(cfg);
#if defined(__SANITIZE_ADDRESS__)
    skip(); /* ASan reserves terabytes of address space: RLIMIT_AS cannot be used */
#else
    enum { N = 20000 };
    size_t cap = 64 + (size_t)N * 128, n = 0;
    char *yaml = malloc(cap);
    assert_non_null(yaml);
    n += (size_t)snprintf(yaml + n, cap - n, "services:\n");
    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(yaml + n, cap - n,
                              "  svc-%05d:\n    environments:\n      staging: {}\n"
                              "      production: {requires: staging, approval: required}\n",
                              i);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (f == NULL || fscanf(f, "%ld", &pages) != 1)
            _exit(3);
        fclose(f);
        struct rlimit rl;
        rl.rlim_cur = rl.rlim_max = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (32 << 20);
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(3);
        cfg = dq_config_load_string(yaml, n, "deployq.yaml", err, sizeof err);
        if (cfg != NULL)
            _exit(1);
        fprintf(stderr, "child: %s\n", err);
        _exit(strcmp(err, "deployq.yaml: the YAML could not be loaded and libfyaml gave no "
                          "reason (out of memory?)") == 0
                  ? 0
                  : 2);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    free(yaml);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

#endif
}

static void test_docs_example(void **state)
{
    (void)state;
    char path[512], err[512] = "";
    setenv("GITHUB_TOKEN", "ghp_example_token", 1);
    setenv("DQ_TEST_REDIS_PASSWORD", "unused", 1);
    snprintf(path, sizeof path, "%s/../../../docs/examples/deployq.yaml",
             getenv("DEPLOYQ_TEST_DATA"));
    setenv("REDIS_PASSWORD", "redis-example-pw", 1);
    setenv("KAFKA_PASSWORD", "kafka-example-pw", 1);
    /* the example's ${NAME} references (notifications, probe headers, router) */
    setenv("SLACK_DEPLOYS_URL", "https://hooks.example/T0/B0/x", 1);
    setenv("PROMETHEUS_TOKEN", "prom-example", 1);
    setenv("LB_TOKEN", "lb-example", 1);
    dq_config *cfg = dq_config_load(path, err, sizeof err);
    unsetenv("REDIS_PASSWORD");
    unsetenv("KAFKA_PASSWORD");
    unsetenv("SLACK_DEPLOYS_URL");
    unsetenv("PROMETHEUS_TOKEN");
    unsetenv("LB_TOKEN");
    assert_string_equal(err, "");
    assert_non_null(cfg);
    const dq_environment *prod = dq_config_environment(cfg, "api", "production");
    assert_non_null(prod);
    assert_string_equal(prod->requires, "staging");
    assert_int_equal(prod->approval, 1);
    assert_true(cfg->n_keys >= 2);
    /* the example's scoped approver */
    assert_true(dq_key_in_scope(dq_config_key(cfg, "alice"), "api", "production"));
    assert_false(dq_key_in_scope(dq_config_key(cfg, "alice"), "web", "production"));
    /* complete: staging is watched, so production's promotion can pass */
    assert_true(dq_config_env_watched(cfg, "api", "staging"));
    assert_true(dq_config_env_watched(cfg, "web", "preview"));
    dq_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, reset),
        cmocka_unit_test_setup(test_full_file, reset),
        cmocka_unit_test_setup(test_config_env_and_empty_file, reset),
        cmocka_unit_test_setup(test_group_prefix, reset),
        cmocka_unit_test_setup(test_topic_replication, reset),
        cmocka_unit_test_setup(test_errors, reset),
        cmocka_unit_test_setup(test_env_references, reset),
        cmocka_unit_test_setup(test_missing_env, reset),
        cmocka_unit_test_setup(test_env_overrides, reset),
        cmocka_unit_test_setup(test_kafka_order, reset),
        cmocka_unit_test_setup(test_view, reset),
        cmocka_unit_test_setup(test_docs_example, reset),
        cmocka_unit_test_setup(test_alias_bomb, reset),
        cmocka_unit_test_setup(test_aliases, reset),
        cmocka_unit_test_setup(test_many_services, reset),
        cmocka_unit_test_setup(test_silent_parse_failure, reset),
        cmocka_unit_test_setup(test_sections_without_secrets, reset),
        /* after test_silent_parse_failure: run before it, its allocations moved that test's
         * out-of-memory point to where libfyaml itself crashed (SIGSEGV at 0x10 in the
         * child), under meson only */
        cmocka_unit_test_setup(test_key_scopes, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
