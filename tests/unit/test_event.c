/*
 * test_event.c - event.h: the type list, the exact envelope bytes (member order, omitted
 * unknowns), decode of a good envelope and refusal of each broken member, deterministic
 * ids, target keys, and the request's fixed member order; dq_event_scan agreeing with the
 * decode on tricky inputs, on single-byte mutations of a stored event and on the fuzz
 * corpus (it may be unsure, never wrong).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "json.h"

#define AT_MS INT64_C(1795687200123) /* 2026-11-26T10:00:00.123Z */
#define ID "0b6f2c3e-9d7a-4f1e-8c2b-5a6d7e8f9a0b"
#define DEP "7c9e6679-7425-40de-944b-e07fc1f90ae7"

static void test_types(void **state)
{
    (void)state;
    size_t n = 0;
    while (dq_event_types[n] != NULL)
        n++;
    assert_int_equal(n, 31);
    assert_true(dq_event_type_known(DQ_EV_APPROVAL_REFUSED));
    assert_true(dq_event_type_known(DQ_EV_TARGET_PAUSED));
    assert_true(dq_event_type_known("operator.refused"));
    assert_true(dq_event_type_known(DQ_EV_DRIFT_DETECTED));
    assert_true(dq_event_type_known(DQ_EV_VALIDATED));
    assert_true(dq_event_type_known(DQ_EV_NOTIFICATION_FAILED));
    assert_true(dq_event_type_known(DQ_EV_DRIFT_DETECTED));
    assert_true(dq_event_type_known("rollback.requested"));
    assert_true(dq_event_type_known(DQ_EV_CANARY_STEP));
    assert_true(dq_event_type_known("canary.analysis"));
    assert_true(dq_event_type_known(DQ_EV_CANARY_PROMOTED));
    assert_true(dq_event_type_known("canary.aborted"));
    assert_false(dq_event_type_known("deploy.exploded"));
    assert_false(dq_event_type_known(NULL));
}

static void test_new_defaults(void **state)
{
    (void)state;
    int64_t before = dq_now_ms();
    dq_event *ev = dq_event_new(DQ_EV_STARTED, DEP, "api", "production", "abc123", "me@h/1");
    assert_non_null(ev);
    assert_true(dq_uuid_valid(ev->id));
    assert_string_equal(ev->type, "deploy.started");
    assert_string_equal(ev->service, "api");
    assert_int_equal(ev->fence, 0);
    assert_true(ev->at_ms >= before && ev->at_ms <= dq_now_ms());
    assert_true(cJSON_IsObject(ev->data));
    assert_null(ev->data->child);
    dq_event_free(ev);

    assert_null(dq_event_new(NULL, NULL, NULL, NULL, NULL, NULL));
    dq_event_free(NULL);
}

static void test_encode_exact(void **state)
{
    (void)state;
    dq_event *ev = dq_event_new(DQ_EV_SUCCEEDED, DEP, "api", "production", "abc123",
                                "deployq-executor@h/7");
    assert_non_null(ev);
    memcpy(ev->id, ID, sizeof ID);
    ev->at_ms = AT_MS;
    ev->fence = 42;
    cJSON_AddStringToObject(ev->data, "provider", "railway");

    char *text = dq_event_encode(ev);
    assert_string_equal(text,
                        "{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\","
                        "\"type\":\"deploy.succeeded\",\"deployment_id\":\"" DEP "\","
                        "\"service\":\"api\",\"environment\":\"production\",\"version\":\"abc123\","
                        "\"at\":\"2026-11-26T10:00:00.123Z\",\"actor\":\"deployq-executor@h/7\","
                        "\"fence\":42,\"data\":{\"provider\":\"railway\"}}");
    free(text);
    /* Encoding did not take the data away from the event. */
    assert_string_equal(dq_json_str(ev->data, "provider"), "railway");
    dq_event_free(ev);
}

static void test_encode_omits_unknown(void **state)
{
    (void)state;
    dq_event *ev = dq_event_new(DQ_EV_REJECTED, NULL, NULL, NULL, NULL, "v@h/1");
    assert_non_null(ev);
    memcpy(ev->id, ID, sizeof ID);
    ev->at_ms = AT_MS;
    char *text = dq_event_encode(ev);
    assert_string_equal(text, "{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\","
                              "\"type\":\"deploy.rejected\",\"at\":\"2026-11-26T10:00:00.123Z\","
                              "\"actor\":\"v@h/1\",\"fence\":0,\"data\":{}}");
    free(text);
    dq_event_free(ev);
}

static void test_round_trip(void **state)
{
    (void)state;
    dq_event *ev = dq_event_new(DQ_EV_HEALTH_DEGRADED, DEP, "api", "staging", "v2", "m@h/2");
    assert_non_null(ev);
    ev->fence = 123456789012345; /* cJSON prints 15 significant digits exactly */
    cJSON_AddNumberToObject(ev->data, "failures", 3);
    char *text = dq_event_encode(ev);
    assert_non_null(text);

    char err[128] = "";
    dq_event *back = dq_event_decode(text, strlen(text), err, sizeof err);
    assert_non_null(back);
    assert_string_equal(err, "");
    assert_string_equal(back->id, ev->id);
    assert_string_equal(back->type, ev->type);
    assert_string_equal(back->deployment_id, DEP);
    assert_string_equal(back->service, "api");
    assert_string_equal(back->environment, "staging");
    assert_string_equal(back->version, "v2");
    assert_string_equal(back->actor, "m@h/2");
    assert_int_equal(back->at_ms, ev->at_ms);
    assert_int_equal(back->fence, ev->fence);
    assert_true(dq_json_num(back->data, "failures", 0) == 3.0);

    char *again = dq_event_encode(back);
    assert_string_equal(again, text);
    free(again);
    free(text);
    dq_event_free(back);
    dq_event_free(ev);
}

static void expect_decode_error(const char *text, const char *reason)
{
    char err[128] = "";
    dq_event *ev = dq_event_decode(text, strlen(text), err, sizeof err);
    if (ev != NULL)
        fail_msg("decoded %s", text);
    assert_string_equal(err, reason);
}

#define GOOD_TAIL "\"type\":\"deploy.started\",\"at\":\"2026-11-26T10:00:00.123Z\""

static void test_decode_refuses(void **state)
{
    (void)state;
    expect_decode_error("[]", "JSON root is not an object");
    expect_decode_error("{\"schema\":\"deployq.event/v2\",\"id\":\"" ID "\"," GOOD_TAIL
                        ",\"fence\":1,\"data\":{}}",
                        "event schema is not deployq.event/v1");
    expect_decode_error("{\"schema\":\"deployq.event/v1\",\"id\":\"not-a-uuid\"," GOOD_TAIL
                        ",\"fence\":1,\"data\":{}}",
                        "event id is not a UUID");
    expect_decode_error("{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\",\"type\":7,"
                        "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":1,\"data\":{}}",
                        "event type is missing or not a string");
    expect_decode_error("{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\","
                        "\"type\":\"deploy.started\",\"at\":\"yesterday\",\"fence\":1,\"data\":{}}",
                        "event at is not an RFC 3339 time");
    expect_decode_error("{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\"," GOOD_TAIL
                        ",\"fence\":-1,\"data\":{}}",
                        "event fence is not a non-negative integer");
    expect_decode_error("{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\"," GOOD_TAIL
                        ",\"fence\":1.5,\"data\":{}}",
                        "event fence is not a non-negative integer");
    expect_decode_error("{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\"," GOOD_TAIL
                        ",\"fence\":\"1\",\"data\":{}}",
                        "event fence is not a non-negative integer");
    expect_decode_error("{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\"," GOOD_TAIL
                        ",\"fence\":1,\"data\":[]}",
                        "event data is not an object");
    expect_decode_error("{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\"," GOOD_TAIL
                        ",\"fence\":1}",
                        "event data is not an object");
    expect_decode_error("{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\"," GOOD_TAIL
                        ",\"service\":5,\"fence\":1,\"data\":{}}",
                        "event member service is not a string");
}

static void test_set_id_from(void **state)
{
    (void)state;
    dq_event *a = dq_event_new(DQ_EV_VALIDATED, DEP, "api", "prod", "v1", NULL);
    dq_event *b = dq_event_new(DQ_EV_VALIDATED, DEP, "api", "prod", "v1", NULL);
    assert_string_not_equal(a->id, b->id);
    dq_event_set_id_from(a, DEP "/validated");
    dq_event_set_id_from(b, DEP "/validated");
    assert_string_equal(a->id, b->id);
    assert_true(dq_uuid_valid(a->id));
    assert_int_equal(a->id[14], '5');
    dq_event_free(a);
    dq_event_free(b);
}

static void test_target_key(void **state)
{
    (void)state;
    char key[64], small[6];
    assert_string_equal(dq_target_key("api", "production", key, sizeof key), "api/production");
    assert_string_equal(dq_target_key("api", "production", small, sizeof small), "api/p");
}

static void test_request_encode_order(void **state)
{
    (void)state;
    dq_request r = {
        .issued_at = "2026-11-26T10:00:00.000Z",
        .nonce = "n-1",
        .ci_run_url = "https://ci/run/1",
        .requested_by = "alice",
        .commit_at = "2026-11-26T09:00:00Z",
        .strategy = "rolling",
        .version = "abc123",
        .environment = "production",
        .service = "api",
        .deployment_id = DEP,
    };
    char *text = dq_request_encode(&r);
    assert_string_equal(text, "{\"schema\":\"deployq.request/v1\",\"deployment_id\":\"" DEP "\","
                              "\"service\":\"api\",\"environment\":\"production\","
                              "\"version\":\"abc123\",\"strategy\":\"rolling\","
                              "\"commit_at\":\"2026-11-26T09:00:00Z\",\"requested_by\":\"alice\","
                              "\"ci_run_url\":\"https://ci/run/1\",\"nonce\":\"n-1\","
                              "\"issued_at\":\"2026-11-26T10:00:00.000Z\"}");
    free(text);

    dq_request minimal = {.deployment_id = DEP, .service = "api", .environment = "prod",
                          .version = "v1", .nonce = "n", .issued_at = "2026-11-26T10:00:00Z"};
    text = dq_request_encode(&minimal);
    assert_string_equal(text, "{\"schema\":\"deployq.request/v1\",\"deployment_id\":\"" DEP "\","
                              "\"service\":\"api\",\"environment\":\"prod\",\"version\":\"v1\","
                              "\"nonce\":\"n\",\"issued_at\":\"2026-11-26T10:00:00Z\"}");
    free(text);
}

static void test_request_from_json(void **state)
{
    (void)state;
    const char *text = "{\"schema\":\"deployq.request/v1\",\"deployment_id\":\"" DEP "\","
                       "\"service\":\"api\",\"environment\":\"prod\",\"version\":\"v1\","
                       "\"strategy\":\"blue-green\",\"requested_by\":7,\"nonce\":\"n\","
                       "\"issued_at\":\"2026-11-26T10:00:00Z\"}";
    char err[128];
    cJSON *obj = dq_json_parse(text, strlen(text), DQ_JSON_MAX_BYTES_DEFAULT,
                               DQ_JSON_MAX_DEPTH_DEFAULT, NULL, err, sizeof err);
    assert_non_null(obj);
    dq_request *r = dq_request_from_json(obj);
    cJSON_Delete(obj); /* the request holds copies */
    assert_non_null(r);
    assert_string_equal(r->deployment_id, DEP);
    assert_string_equal(r->service, "api");
    assert_string_equal(r->environment, "prod");
    assert_string_equal(r->version, "v1");
    assert_string_equal(r->strategy, "blue-green");
    assert_null(r->commit_at);
    assert_null(r->requested_by); /* not a string */
    assert_null(r->ci_run_url);
    assert_string_equal(r->nonce, "n");
    assert_string_equal(r->issued_at, "2026-11-26T10:00:00Z");

    /* Encoding what was read gives the same text minus the non-string member. */
    char *again = dq_request_encode(r);
    assert_string_equal(again, "{\"schema\":\"deployq.request/v1\",\"deployment_id\":\"" DEP "\","
                               "\"service\":\"api\",\"environment\":\"prod\",\"version\":\"v1\","
                               "\"strategy\":\"blue-green\",\"nonce\":\"n\","
                               "\"issued_at\":\"2026-11-26T10:00:00Z\"}");
    free(again);
    dq_request_free(r);
    dq_request_free(NULL);
}

/* ---- dq_event_scan: sure only where the decode agrees --------------------------------- */

static int span_is(dq_event_span sp, const char *s)
{
    return s ? dq_event_span_eq(sp, s) : sp.p == NULL;
}

/* A peek's "no" must hold: a peeked string is the decoded member, a peeked non-string
 * means no string there, unless the decode refuses the record altogether. */
static void peek_agrees(const char *text, size_t len, const dq_event *ev)
{
    static const char *const names[] = {"service", "environment", "deployment_id", "type"};

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        dq_event_span sp;
        int r = dq_event_peek(text, len, names[i], &sp);
        const char *got = !ev ? NULL
                          : i == 0 ? ev->service
                          : i == 1 ? ev->environment
                          : i == 2 ? ev->deployment_id
                                   : ev->type;

        if (ev && r == 1 && !dq_event_span_eq(sp, got ? got : ""))
            fail_msg("peek %s disagrees with the decode on %.*s", names[i], (int)len, text);
        if (ev && r == 1 && !got)
            fail_msg("peek %s found what the decode did not in %.*s", names[i], (int)len, text);
        if (ev && r == 2 && got)
            fail_msg("peek %s saw no string where the decode has one: %.*s", names[i], (int)len,
                     text);
    }
}

/* The scan's answer for text; when sure, every value must equal the decode's. */
static int scan_agrees(const char *text, size_t len)
{
    dq_event_view v;
    int sure = dq_event_scan(text, len, &v);
    dq_event *ev = dq_event_decode(text, len, NULL, 0);

    peek_agrees(text, len, ev);

    if (sure) {
        if (ev == NULL)
            fail_msg("scan is sure of an event the decode refuses: %.*s", (int)len, text);
        if (!dq_event_span_eq(v.id, ev->id) || !span_is(v.type, ev->type) ||
            !span_is(v.deployment_id, ev->deployment_id) || !span_is(v.service, ev->service) ||
            !span_is(v.environment, ev->environment) || !span_is(v.version, ev->version) ||
            !span_is(v.actor, ev->actor) || v.at_ms != ev->at_ms || v.fence != ev->fence)
            fail_msg("scan and decode disagree on %.*s", (int)len, text);
        /* the data span is the data object's text */
        cJSON *data = cJSON_ParseWithLength(v.data.p, v.data.n);
        assert_non_null(data);
        assert_true(cJSON_Compare(data, ev->data, 1));
        cJSON_Delete(data);
    }
    dq_event_free(ev);
    return sure;
}

static int scan_str(const char *text)
{
    return scan_agrees(text, strlen(text));
}

#define HEAD "{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\",\"type\":\"deploy.started\","
#define TAIL "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":7,\"data\":{\"n\":1}}"
#define STORED                                                                             \
    HEAD "\"deployment_id\":\"" DEP "\",\"service\":\"svc7\",\"environment\":\"staging\","   \
         "\"version\":\"v1\"," TAIL

static int peek(const char *text, const char *name, dq_event_span *sp)
{
    return dq_event_peek(text, strlen(text), name, sp);
}

static void test_scan_tricky(void **state)
{
    (void)state;
    dq_event_view v;
    dq_event_span sp;
    char big[DQ_JSON_MAX_BYTES_DEFAULT + 64];

    /* what the registry stores: sure, values in place */
    assert_int_equal(scan_str(STORED), 1);
    assert_int_equal(dq_event_scan(STORED, strlen(STORED), &v), 1);
    assert_true(dq_event_span_eq(v.service, "svc7"));
    /* the peek reads up to the member: "no" before a broken rest, "not sure" otherwise */
    assert_int_equal(peek(STORED, "service", &sp), 1);
    assert_true(dq_event_span_eq(sp, "svc7"));
    assert_int_equal(peek(HEAD "\"service\":\"svc8\",\"x\":nope", "service", &sp), 1);
    assert_true(dq_event_span_eq(sp, "svc8"));
    assert_int_equal(peek(HEAD "\"service\":null,", "service", &sp), 2);
    assert_int_equal(peek(HEAD "\"service\":[\"svc7\"]," TAIL, "service", &sp), 2);
    assert_int_equal(peek(HEAD "\"service\":\"svc\\u0037\"," TAIL, "service", &sp), 0);
    assert_int_equal(peek(HEAD TAIL, "service", &sp), 0);
    assert_int_equal(peek("{\"a\":{\"service\":\"svc8\"},\"service\":\"svc7\"}", "service", &sp), 1);
    assert_true(dq_event_span_eq(sp, "svc7"));
    assert_int_equal(dq_event_scan(STORED, strlen(STORED), &v), 1);
    assert_true(dq_event_span_eq(v.environment, "staging"));
    assert_false(dq_event_span_eq(v.service, "svc"));
    assert_int_equal(v.at_ms, AT_MS);
    assert_int_equal(v.fence, 7);
    assert_null(v.actor.p);
    /* whitespace between tokens, pretty-printed, UTF-8 in a value, null optionals */
    assert_int_equal(scan_str(" \n{ \"schema\" : \"deployq.event/v1\" ,\r\n\t\"id\":\"" ID
                              "\",\"type\":\"deploy.started\",\"service\":\"s\xc3\xa9rvice\","
                              "\"environment\":null," TAIL "\n"), 1);
    assert_int_equal(scan_str(HEAD "\"service\":null," TAIL), 1);
    /* an escape anywhere: unsure, though the decode reads service "svc7" */
    assert_int_equal(scan_str(HEAD "\"service\":\"svc\\u0037\"," TAIL), 0);
    assert_int_equal(scan_str(HEAD "\"ser\\u0076ice\":\"other\",\"service\":\"svc7\"," TAIL), 0);
    assert_int_equal(scan_str(HEAD "\"service\":\"svc7\",\"x\":\"a\\\"b\"," TAIL), 0);
    /* duplicates, at the top or inside data: the decode refuses them */
    assert_int_equal(scan_str(HEAD "\"service\":\"svc7\",\"service\":\"svc8\"," TAIL), 0);
    assert_int_equal(scan_str(HEAD "\"x\":1,\"x\":2," TAIL), 0);
    assert_int_equal(
        scan_str(HEAD "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":7,\"data\":{\"a\":{\"b\":1,"
                      "\"b\":2}}}"),
        0);
    /* whitespace JSON does not allow (cJSON skips any byte <= 32), a BOM, control bytes */
    assert_int_equal(scan_str("{\f\"schema\":\"deployq.event/v1\",\"id\":\"" ID
                              "\",\"type\":\"deploy.started\"," TAIL),
                     0);
    assert_int_equal(scan_str("\xef\xbb\xbf" STORED), 0);
    assert_int_equal(scan_str(HEAD "\"service\":\"svc\t7\"," TAIL), 0);
    /* numbers: only integers are read for fence; anything else is left to the decode */
    assert_int_equal(scan_str(HEAD "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":7.0,\"data\":{}}"), 0);
    assert_int_equal(scan_str(HEAD "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":7e0,\"data\":{}}"), 0);
    assert_int_equal(scan_str(HEAD "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":-1,\"data\":{}}"), 0);
    assert_int_equal(scan_str(HEAD "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":07,\"data\":{}}"), 0);
    /* read as cJSON reads it: 2^53 + 1 rounds to 2^53 (accepted by both), 2^53 + 2 is over */
    assert_int_equal(scan_str(HEAD "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":9007199254740993,"
                                   "\"data\":{}}"), 1);
    assert_int_equal(scan_str(HEAD "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":9007199254740994,"
                                   "\"data\":{}}"), 0);
    assert_int_equal(scan_str(HEAD "\"x\":[1.5e-3,-0,true,false,null,{},[]]," TAIL), 1);
    /* broken documents and envelopes */
    assert_int_equal(scan_str(STORED "x"), 0);
    assert_int_equal(scan_str(STORED " "), 1);
    assert_int_equal(scan_str(HEAD "\"service\":\"svc7\"," TAIL "}"), 0);
    assert_int_equal(scan_str(HEAD "\"service\":\"svc7\",}"), 0);
    assert_int_equal(scan_str(HEAD "\"service\":7," TAIL), 0);
    assert_int_equal(scan_str(HEAD "\"actor\":true," TAIL), 0);
    assert_int_equal(scan_str("{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "\",\"type\":\"\"," TAIL), 0);
    assert_int_equal(scan_str("{\"schema\":\"deployq.event/v1\",\"id\":\"" ID "x\",\"type\":\"t\"," TAIL), 0);
    assert_int_equal(scan_str("{}"), 0);
    assert_int_equal(scan_str("[]"), 0);
    assert_int_equal(scan_agrees(STORED, 0), 0);
    assert_int_equal(scan_agrees(STORED, strlen(STORED) - 1), 0);
    /* depth: 16 levels pass, 17 do not (json.h's limit) */
    assert_int_equal(scan_str(HEAD "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":7,\"data\":"
                                   "{\"a\":[[[[[[[[[[[[[[1]]]]]]]]]]]]]]}}"), 1);
    assert_int_equal(scan_str(HEAD "\"at\":\"2026-11-26T10:00:00.123Z\",\"fence\":7,\"data\":"
                                   "{\"a\":[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}}"), 0);
    /* size: over json.h's limit is never sure */
    memset(big, ' ', sizeof big);
    memcpy(big, STORED, strlen(STORED));
    assert_int_equal(scan_agrees(big, DQ_JSON_MAX_BYTES_DEFAULT), 1);
    assert_int_equal(scan_agrees(big, DQ_JSON_MAX_BYTES_DEFAULT + 1), 0);
}

/* Every single-byte change of a stored event (deleted, or replaced by a byte that matters
 * to JSON): the scan is never sure of one the decode would read differently. */
static void test_scan_mutations(void **state)
{
    (void)state;
    static const char repl[] = {'"', '\\', ' ', '\t', '\f', '{', '}', '[', ']', ',', ':',
                                '0', '-', 'e', '.', 'a', 'n', '\x01', '\x7f', '\xff'};
    const char *base = STORED;
    size_t len = strlen(base);
    char buf[512];
    int sure = 0, total = 0;

    for (size_t i = 0; i < len; i++) {
        memcpy(buf, base, i);
        memcpy(buf + i, base + i + 1, len - i - 1);
        sure += scan_agrees(buf, len - 1);
        total++;
        for (size_t k = 0; k < sizeof repl; k++) {
            memcpy(buf, base, len);
            buf[i] = repl[k];
            sure += scan_agrees(buf, len);
            total++;
        }
    }
    /* and it is sure of the harmless ones (a changed letter in a value) */
    assert_true(sure > 0 && sure < total);
}

/* The fuzz corpus of the event harness (tests/fuzz/corpus/event): the same agreement. */
static void test_scan_fuzz_corpus(void **state)
{
    (void)state;
    const char *data = getenv("DEPLOYQ_TEST_DATA");
    char dir[1024], path[1400];
    DIR *d;
    struct dirent *de;
    int files = 0;

    if (!data)
        skip();
    snprintf(dir, sizeof dir, "%s/../../fuzz/corpus/event", data);
    d = opendir(dir);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        FILE *fp;
        char *buf;
        long n;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        fp = fopen(path, "rb");
        assert_non_null(fp);
        fseek(fp, 0, SEEK_END);
        n = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        buf = malloc((size_t)n + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
        fclose(fp);
        scan_agrees(buf, (size_t)n);
        free(buf);
        files++;
    }
    closedir(d);
    assert_true(files > 0);
}

/* The scan reads the canonical time itself: it must agree with dq_time_parse everywhere. */
static int scan_at(const char *at)
{
    char text[512];

    snprintf(text, sizeof text, HEAD "\"at\":\"%s\",\"fence\":7,\"data\":{}}", at);
    return scan_str(text);
}

static void test_scan_times(void **state)
{
    (void)state;
    char at[64];

    assert_int_equal(scan_at("2024-02-29T23:59:59.999Z"), 1);
    assert_int_equal(scan_at("2000-02-29T00:00:00.000Z"), 1);
    assert_int_equal(scan_at("1969-12-31T23:59:59.999Z"), 1);
    assert_int_equal(scan_at("0000-01-01T00:00:00.000Z"), 1);
    assert_int_equal(scan_at("9999-12-31T23:59:59.999Z"), 1);
    assert_int_equal(scan_at("2026-11-26T10:00:00.123456Z"), 1); /* via dq_time_parse */
    assert_int_equal(scan_at("2026-11-26t10:00:00.123z"), 1);
    assert_int_equal(scan_at("2026-11-26T10:00:00+02:00"), 1);
    assert_int_equal(scan_at("2016-12-31T23:59:60.000Z"), 1);
    assert_int_equal(scan_at("2026-02-29T00:00:00.000Z"), 0);
    assert_int_equal(scan_at("1900-02-29T00:00:00.000Z"), 0);
    assert_int_equal(scan_at("2026-13-01T00:00:00.000Z"), 0);
    assert_int_equal(scan_at("2026-04-31T00:00:00.000Z"), 0);
    assert_int_equal(scan_at("2026-04-30T24:00:00.000Z"), 0);
    assert_int_equal(scan_at("2026-04-30T23:60:00.000Z"), 0);
    assert_int_equal(scan_at("2026-04-30T23:00:00.00aZ"), 0);
    /* every day of four centuries around now, at a time of day that moves with it */
    for (int64_t day = -150000; day < 150000; day += 7) {
        int64_t ms = day * 86400000 + (day * 7919 % 86400000 + 86400000) % 86400000;

        dq_time_format(ms, at);
        assert_int_equal(scan_at(at), 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_new_defaults),
        cmocka_unit_test(test_encode_exact),
        cmocka_unit_test(test_encode_omits_unknown),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_decode_refuses),
        cmocka_unit_test(test_set_id_from),
        cmocka_unit_test(test_target_key),
        cmocka_unit_test(test_request_encode_order),
        cmocka_unit_test(test_request_from_json),
        cmocka_unit_test(test_scan_tricky),
        cmocka_unit_test(test_scan_times),
        cmocka_unit_test(test_scan_mutations),
        cmocka_unit_test(test_scan_fuzz_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
