/*
 * fuzz_event.c - libFuzzer harness for the event path every consumer of deployq.events
 * runs on each message: dq_event_decode (envelope checks, json.h limits) and
 * dq_schema_validate_event (the envelope schema, then data against its type's schema).
 *
 * Invariants checked beyond "no crash, no leak, no undefined behaviour":
 *  - an event that decodes re-encodes, and the re-encoded text decodes to the same id,
 *    type, target, version, actor and fence (workers relay and rebuild events);
 *  - an event that passes the schemas still passes them after that round trip, so a
 *    worker that decodes and re-emits an event never turns a valid one invalid;
 *  - the registry readers' fast path agrees with the decode: dq_event_scan is sure only of
 *    what dq_event_decode accepts, with the same envelope and data, and dq_event_peek never
 *    answers a member differently from the decode (history must neither drop nor keep an
 *    event wrongly).
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

static int span_is(dq_event_span sp, const char *s)
{
    return s ? dq_event_span_eq(sp, s) : sp.p == NULL;
}

/* The invariants of the fast path (event.h dq_event_scan, dq_event_peek) against ev, the
 * full decode of the same bytes (NULL when it refused them). */
static void check_scan(const char *buf, size_t size, const dq_event *ev)
{
    static const char *const names[] = {"service", "environment", "deployment_id", "type"};
    dq_event_view v;

    if (dq_event_scan(buf, size, &v)) {
        cJSON *d;

        DQ_FUZZ_CHECK(ev != NULL, "the scan is sure of an event the decode refuses");
        DQ_FUZZ_CHECK(dq_event_span_eq(v.id, ev->id) && span_is(v.type, ev->type) &&
                          span_is(v.deployment_id, ev->deployment_id) &&
                          span_is(v.service, ev->service) &&
                          span_is(v.environment, ev->environment) &&
                          span_is(v.version, ev->version) && span_is(v.actor, ev->actor) &&
                          v.at_ms == ev->at_ms && v.fence == ev->fence,
                      "the scan and the decode disagree on event %s", ev->id);
        d = cJSON_ParseWithLength(v.data.p, v.data.n);
        DQ_FUZZ_CHECK(d != NULL && cJSON_Compare(d, ev->data, 1),
                      "the scan's data differs from the decode's in event %s", ev->id);
        cJSON_Delete(d);
    }
    if (!ev)
        return;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *want = i == 0 ? ev->service
                           : i == 1 ? ev->environment
                           : i == 2 ? ev->deployment_id
                                    : ev->type;
        dq_event_span sp;
        int r = dq_event_peek(buf, size, names[i], &sp);

        DQ_FUZZ_CHECK(r != 1 || (want && dq_event_span_eq(sp, want)),
                      "peek reads %s differently from the decode", names[i]);
        DQ_FUZZ_CHECK(r != 2 || !want, "peek says %s is not a string, the decode says it is",
                      names[i]);
    }
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
    check_scan(buf, size, ev);
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
