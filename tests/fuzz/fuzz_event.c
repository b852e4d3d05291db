/*
 * fuzz_event.c - libFuzzer harness for the event path every consumer of deployq.events
 * runs on each message: dq_event_decode (envelope checks, json.h limits) and
 * dq_schema_validate_event (the envelope schema, then data against its type's schema).
 *
 * Invariants checked beyond "no crash, no leak, no undefined behaviour":
 *  - an event that decodes re-encodes, and the re-encoded text decodes to the same id,
 *    type, target, version, actor and fence (workers relay and rebuild events);
 *  - an event that passes the schemas still passes them after that round trip, so a
 *    worker that decodes and re-emits an event never turns a valid one invalid.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "fuzz.h"
#include "json.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static dq_schema_set *schemas;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dq_fuzz_quiet();
    schemas = dq_fuzz_schemas();
    return 0;
}

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* 0 when text is valid against the schemas, else the error count (reason in err). */
static int schema_check(const char *text, size_t len, char *err, size_t errlen)
{
    dq_json_status st;
    cJSON *doc = dq_json_parse(text, len, DQ_JSON_MAX_BYTES_DEFAULT, DQ_JSON_MAX_DEPTH_DEFAULT,
                               &st, err, errlen);
    int rc;

    if (!doc)
        return -1;
    rc = dq_schema_validate_event(schemas, doc, err, errlen);
    cJSON_Delete(doc);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    char err[1024];
    dq_event *ev, *back;
    char *json;
    int valid;

    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);
    valid = schema_check(buf, size, err, sizeof err) == 0;
    ev = dq_event_decode(buf, size, err, sizeof err);
    if (!ev) {
        DQ_FUZZ_CHECK(!valid, "a schema-valid event does not decode: %s", err);
        free(buf);
        return 0;
    }
    json = dq_event_encode(ev);
    DQ_FUZZ_CHECK(json != NULL, "a decoded event does not encode");
    back = dq_event_decode(json, strlen(json), err, sizeof err);
    DQ_FUZZ_CHECK(back != NULL, "a re-encoded event does not decode: %s", err);
    DQ_FUZZ_CHECK(strcmp(ev->id, back->id) == 0 && same(ev->type, back->type) &&
                      same(ev->deployment_id, back->deployment_id) &&
                      same(ev->service, back->service) &&
                      same(ev->environment, back->environment) &&
                      same(ev->version, back->version) && same(ev->actor, back->actor) &&
                      ev->fence == back->fence,
                  "the round trip changed the event %s", ev->id);
    if (valid)
        DQ_FUZZ_CHECK(schema_check(json, strlen(json), err, sizeof err) == 0,
                      "a valid event is invalid after decode+encode: %s", err);
    free(json);
    dq_event_free(back);
    dq_event_free(ev);
    free(buf);
    return 0;
}
