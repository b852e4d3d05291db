/*
 * fuzz_config.c - libFuzzer harness for the YAML configuration loader,
 * dq_config_load_string (libfyaml underneath), and for the readers every worker then
 * calls on the loaded configuration: service, environment and key lookups, the cJSON view
 * of every environment (dq_config_env_view) with its lines and texts, and the unknown-key
 * check over the whole view.
 *
 * ${NAME} references resolve against the process environment; the harness sets
 * FUZZ_SECRET and FUZZ_EMPTY so the seeds can exercise substitution, and clears the
 * redaction list after each input so it cannot grow over a run.
 *
 * Invariants beyond "no crash, no leak, no undefined behaviour":
 *  - a refusal always says why (a non-empty error);
 *  - every service and environment listed in the result is found again by name.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int strict; /* DQ_FUZZ_STRICT=1: no known issue is worked around */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dq_fuzz_quiet();
    strict = getenv("DQ_FUZZ_STRICT") != NULL && strcmp(getenv("DQ_FUZZ_STRICT"), "1") == 0;
    setenv("FUZZ_SECRET", "s3cr3t-fuzz-value", 1);
    setenv("FUZZ_EMPTY", "", 1);
    /* The loader's overrides must not depend on the machine the fuzzer runs on. */
    unsetenv("DEPLOYQ_BROKERS");
    unsetenv("DEPLOYQ_REDIS_URL");
    unsetenv("DEPLOYQ_SCHEMAS");
    return 0;
}

static void walk_view(const dq_config *cfg, const cJSON *item)
{
    static const char *const none[] = {NULL};
    char num[32], err[256];
    const cJSON *child;

    if (item == NULL)
        return;
    DQ_FUZZ_CHECK(dq_config_line(cfg, item) > 0, "an item of the view without a line");
    (void)dq_config_text(cfg, item, num, sizeof num);
    /* every key is unknown to an empty list: the message's line lookup runs on each map */
    DQ_FUZZ_CHECK(dq_config_check_keys(cfg, item, none, "x", err, sizeof err) ==
                      (cJSON_IsObject(item) && item->child != NULL ? -1 : 0),
                  "dq_config_check_keys");
    for (child = item->child; child != NULL; child = child->next)
        walk_view(cfg, child);
}

static void walk(const dq_config *cfg)
{
    for (size_t i = 0; i < cfg->n_services; i++) {
        const dq_service *svc = &cfg->services[i];

        DQ_FUZZ_CHECK(dq_config_service(cfg, svc->name) != NULL, "service %zu not found", i);
        for (size_t j = 0; j < svc->n_envs; j++) {
            const dq_environment *env = &svc->envs[j];
            const cJSON *view = dq_config_env_view(cfg, svc->name, env->name);

            DQ_FUZZ_CHECK(dq_config_environment(cfg, svc->name, env->name) != NULL,
                          "environment %zu of service %zu not found", j, i);
            DQ_FUZZ_CHECK(view == env->view, "dq_config_env_view is not the environment's view");
            DQ_FUZZ_CHECK(view == NULL || dq_config_line(cfg, view) > 0,
                          "an environment of the file without a line");
        }
    }
    for (size_t i = 0; i < cfg->n_keys; i++) {
        const dq_key *key = &cfg->keys[i];

        DQ_FUZZ_CHECK(dq_config_key(cfg, key->id) != NULL, "key %zu not found", i);
        /* a scope names only configured services, and its key decides in each of them */
        for (size_t j = 0; j < key->n_services; j++)
            DQ_FUZZ_CHECK(dq_config_service(cfg, key->services[j]) != NULL,
                          "key %zu: scoped service %zu not configured", i, j);
        DQ_FUZZ_CHECK((key->services == NULL && key->environments == NULL) || strcmp(key->role, "ci") != 0,
                      "key %zu: a ci key with a scope", i);
    }
    for (size_t i = 0; i < cfg->n_kafka; i++)
        DQ_FUZZ_CHECK(dq_config_kafka_get(cfg, cfg->kafka[i].key) != NULL, "kafka %zu", i);
    /* The whole view, so the sections of later workers (providers, monitor, ...) are read
     * the way their loaders read them: every item has a line, every scalar its text. */
    walk_view(cfg, dq_config_view(cfg, ""));
}

/* KNOWN ISSUE, reported to the lead (docs/reliability.md, "Fuzzing"): libfyaml 0.7.12
 * (Debian 12) crashes in fy_parser_destroy on some placements of a tab after an explicit
 * key, e.g. the 6 bytes of tests/fuzz/known/libfyaml-0.7-segv-explicit-key-tab.yaml.
 * A crash in the system library cannot be caught, so inputs with a tab are not fed to the
 * loader; DQ_FUZZ_STRICT=1 feeds them anyway. */
static int skip_known(const uint8_t *data, size_t size)
{
    return !strict && memchr(data, '\t', size) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024] = "";
    dq_config *cfg;

    if (skip_known(data, size))
        return 0;
    cfg = dq_config_load_string((const char *)data, size, "fuzz.yaml", err, sizeof err);

    if (!cfg) {
        DQ_FUZZ_CHECK(err[0] != '\0', "a refused configuration without a reason");
    } else {
        walk(cfg);
        dq_config_free(cfg);
    }
    dq_log_redact_clear();
    return 0;
}
