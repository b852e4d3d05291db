/*
 * test_event.c - event.h: the type list, the exact envelope bytes (member order, omitted
 * unknowns), decode of a good envelope and refusal of each broken member, deterministic
 * ids, target keys, and the request's fixed member order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

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
    assert_int_equal(n, 17);
    assert_true(dq_event_type_known(DQ_EV_VALIDATED));
    assert_true(dq_event_type_known(DQ_EV_NOTIFICATION_FAILED));
    assert_true(dq_event_type_known("rollback.requested"));
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
