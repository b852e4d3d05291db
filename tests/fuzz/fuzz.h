/*
 * fuzz.h - what the libFuzzer harnesses of tests/fuzz/ share: the fuzzing-only signing
 * key, the configuration the request harness judges against, the fixed clock, and the
 * one way a harness reports a broken invariant.
 *
 * Header-only (static functions) so each harness stays one .c file that build.sh links
 * against the common/ sources. The key below exists only to sign seed requests; it is in
 * no configuration outside tests/fuzz/ and grants nothing.
 */
#ifndef DQ_FUZZ_H
#define DQ_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "schema.h"
#include "sign.h"
#include "util.h"

#ifndef DQ_FUZZ_SCHEMAS
#define DQ_FUZZ_SCHEMAS "schemas"
#endif

/* Ed25519, generated for the fuzzers with `openssl genpkey -algorithm ed25519`. */
static const char dq_fuzz_key_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                                      "MC4CAQAwBQYDK2VwBCIEIAsKcenjT+nFL7BkNkq/hS8BC+1jYGenL31sVd1NHpmg\n"
                                      "-----END PRIVATE KEY-----\n";

/* The validator's clock in the request harness: one minute after the issued_at of the
 * seed requests (2026-11-26T10:00:00.000Z), so a seed with an intact signature passes the
 * time window and reaches the nonce step. */
#define DQ_FUZZ_NOW_MS (1795687200000LL + 60000LL)

#define DQ_FUZZ_KEY_CI "fuzz-ci"

/* A broken invariant is a finding: say which, then abort so libFuzzer saves the input. */
#define DQ_FUZZ_CHECK(cond, ...)                                                           \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz invariant broken: %s: ", #cond);                         \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* The schemas/ set: $DEPLOYQ_SCHEMAS, else the source tree's (baked in by build.sh).
 * Exits on failure: a harness without its schemas would fuzz nothing. */
static inline dq_schema_set *dq_fuzz_schemas(void)
{
    const char *dir = getenv("DEPLOYQ_SCHEMAS");
    char err[512];
    dq_schema_set *set = dq_schema_set_load(dir ? dir : DQ_FUZZ_SCHEMAS, err, sizeof err);

    if (!set) {
        fprintf(stderr, "fuzz: cannot load the schemas: %s\n", err);
        exit(1);
    }
    return set;
}

/* Quiet logs: a fuzzer runs millions of inputs, and the warnings of bad input are the
 * expected outcome, not news. */
static inline void dq_fuzz_quiet(void)
{
    setenv("DEPLOYQ_LOG_LEVEL", "off", 1);
    dq_log_init("fuzz", DQ_LOG_OFF, 0);
}

/* The configuration the request harness judges against: the fuzz key as a ci key, and
 * again as retired and as approver (so the fuzzer can reach those refusals by changing
 * key_id alone), and two services. Exits on failure. */
static inline dq_config *dq_fuzz_request_config(void)
{
    char err[512], yaml[2048];
    dq_signer *s = dq_signer_from_pem(dq_fuzz_key_pem, sizeof dq_fuzz_key_pem - 1, err, sizeof err);
    char *pub = s ? dq_signer_public_b64(s) : NULL;
    dq_config *cfg = NULL;

    if (!pub) {
        fprintf(stderr, "fuzz: the fuzz key does not load: %s\n", s ? "no public key" : err);
        exit(1);
    }
    snprintf(yaml, sizeof yaml,
             "validator:\n"
             "  issued_at_window: 300s\n"
             "keys:\n"
             "  - {id: " DQ_FUZZ_KEY_CI ", public_key: \"%s\", role: ci}\n"
             "  - {id: fuzz-old, public_key: \"%s\", retired: true}\n"
             "  - {id: fuzz-approver, public_key: \"%s\", role: approver}\n"
             "services:\n"
             "  api:\n"
             "    environments:\n"
             "      staging: {}\n"
             "      production: {requires: staging, approval: required}\n"
             "  web:\n"
             "    environments:\n"
             "      preview:\n",
             pub, pub, pub);
    cfg = dq_config_load_string(yaml, strlen(yaml), "fuzz.yaml", err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "fuzz: the request harness config does not load: %s\n", err);
        exit(1);
    }
    free(pub);
    dq_signer_free(s);
    return cfg;
}

#endif
