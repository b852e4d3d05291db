/*
 * fuzz_request.c - libFuzzer harness for the request path: one message value of
 * deployq.requests through the validator's real checks (workers/validator/validate.c,
 * linked in as is): size and depth limits, the JSON parser, the signed-wrapper and
 * request schemas, key lookup, the Ed25519 signature check, the issued_at window and the
 * service/environment lookup.
 *
 * There is no Redis: the validator's redis handle is NULL, which dq_redis_set_nx() treats
 * as "unreachable", so an input whose signature and time are good (a mutation of a signed
 * seed that keeps the request and signature intact) ends in the transient -1 result
 * without any network.
 *
 * Invariants checked beyond "no crash, no leak, no undefined behaviour":
 *  - dq_validate returns 0 or -1, and -1 only with v.transient set;
 *  - a verdict always names at least one reason (without Redis nothing can be accepted);
 *  - the deploy.rejected event built from any verdict encodes, decodes again, and is
 *    valid against schemas/ (what the registry and every consumer rely on).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "fuzz.h"
#include "json.h"
#include "validate.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static dq_config *cfg;
static dq_validator val;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dq_fuzz_quiet();
    cfg = dq_fuzz_request_config();
    val.cfg = cfg;
    val.schemas = dq_fuzz_schemas();
    val.redis = NULL;
    val.producer = NULL;
    snprintf(val.actor, sizeof val.actor, "deployq-validator@fuzz");
    return 0;
}

static void check_event(const dq_verdict *v, const dq_event *ev)
{
    char *json = dq_event_encode(ev);
    char err[1024];
    dq_event *back;
    cJSON *doc;
    dq_json_status st;

    DQ_FUZZ_CHECK(json != NULL, "the verdict event does not encode");
    back = dq_event_decode(json, strlen(json), err, sizeof err);
    DQ_FUZZ_CHECK(back != NULL, "the verdict event does not decode: %s", err);
    DQ_FUZZ_CHECK(strcmp(back->type, DQ_EV_REJECTED) == 0, "verdict type %s", back->type);
    doc = dq_json_parse(json, strlen(json), 1024 * 1024, 64, &st, err, sizeof err);
    DQ_FUZZ_CHECK(doc != NULL, "the verdict event is not JSON: %s", err);
    DQ_FUZZ_CHECK(dq_schema_validate_event(val.schemas, doc, err, sizeof err) == 0,
                  "the verdict event breaks its schema: %s (first reason %s)", err,
                  v->reasons[0].code);
    cJSON_Delete(doc);
    dq_event_free(back);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A Kafka message value is not NUL-terminated: neither is the copy the validator gets,
     * and its exact size lets ASan see a read one byte past the end. */
    char *value = malloc(size ? size : 1);
    dq_message m = {0};
    dq_verdict v;
    dq_event *ev;
    int rc;

    if (!value)
        return 0;
    if (size)
        memcpy(value, data, size);
    m.topic = "deployq.requests";
    m.partition = 0;
    m.offset = 42;
    m.value = value;
    m.len = size;

    rc = dq_validate(&val, &m, DQ_FUZZ_NOW_MS, &v);
    DQ_FUZZ_CHECK(rc == 0 || (rc == -1 && v.transient), "dq_validate returned %d", rc);
    if (rc == 0) {
        DQ_FUZZ_CHECK(v.n_reasons > 0 && v.n_reasons <= DQ_MAX_REASONS,
                      "a verdict without Redis has %d reasons", v.n_reasons);
        ev = dq_verdict_event(&val, &m, &v);
        DQ_FUZZ_CHECK(ev != NULL, "no verdict event");
        check_event(&v, ev);
        dq_event_free(ev);
    }
    dq_verdict_clear(&v);
    free(value);
    return 0;
}
