/*
 * test_pending.c - reading the deployments that wait for approval (common/domain/pending.c)
 * against a real redis-server of the test's own, written in the layout the validator
 * writes (workers/validator/approval.c): soonest expiry first, with since, until and the
 * signing key; a decided deployment, one whose pending record is gone and an unreadable
 * member are not listed; an empty set lists nothing; a Redis error is reported.
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
#include "pending.h"
#include "redis.h"
#include "testredis.h"

#define D1 "11111111-1111-4111-8111-111111111111"
#define D2 "22222222-2222-4222-8222-222222222222"
#define D3 "33333333-3333-4333-8333-333333333333"
#define D4 "44444444-4444-4444-8444-444444444444"

typedef dq_test_redis_fixture fixture;

/* A command's reply, which must not be an error. */
static void ok(redisReply *r)
{
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

/* Park dep as the validator does: the pending deploy.validated and its expiry member. */
static void park(fixture *f, const char *dep, const char *service, const char *version, int64_t at_ms,
                 const char *expires_ms, const char *requested_by)
{
    dq_event *ev = dq_event_new(DQ_EV_VALIDATED, dep, service, "production", version, "test@host/1");
    char key[128], member[256], *json;

    assert_non_null(ev);
    ev->at_ms = at_ms;
    cJSON_AddStringToObject(ev->data, "key_id", "ci-2026");
    if (requested_by)
        cJSON_AddStringToObject(ev->data, "requested_by", requested_by);
    json = dq_event_encode(ev);
    assert_non_null(json);
    snprintf(key, sizeof key, "%s%s", DQ_PENDING_PREFIX, dep);
    ok(dq_redis_command(f->r, "SET %s %s", key, json));
    snprintf(member, sizeof member,
             "{\"deployment_id\":\"%s\",\"service\":\"%s\",\"environment\":\"production\",\"version\":\"%s\"}",
             dep, service, version);
    ok(dq_redis_command(f->r, "ZADD %s %s %s", DQ_PENDING_EXPIRIES, expires_ms, member));
    free(json);
    dq_event_free(ev);
}

static void test_list(void **state)
{
    fixture *f = *state;
    dq_pending *list = NULL;
    size_t n = 9;
    char err[256] = "";

    ok(dq_redis_command(f->r, "FLUSHALL"));
    assert_int_equal(dq_pending_list(f->r, &list, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    dq_pending_list_free(list, n);

    park(f, D1, "api", "v1", 1764151200000LL, "1764237600000", "ci-bot");
    park(f, D2, "web", "v2", 1764151300000LL, "1764151900000", NULL); /* expires first */
    park(f, D3, "api", "v3", 1764151400000LL, "1764237700000", NULL);
    park(f, D4, "api", "v4", 1764151500000LL, "1764237800000", NULL);
    /* D3 decided (the pending record not yet deleted), D4's record gone (expired, not yet
     * rejected), and a member nobody can read */
    ok(dq_redis_command(f->r, "SET %s%s %s", DQ_DECIDED_PREFIX, D3, "deployq.requests/0/12"));
    ok(dq_redis_command(f->r, "DEL %s%s", DQ_PENDING_PREFIX, D4));
    ok(dq_redis_command(f->r, "ZADD %s 1 %s", DQ_PENDING_EXPIRIES, "not json"));

    assert_int_equal(dq_pending_list(f->r, &list, &n, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_int_equal(n, 2);
    assert_string_equal(list[0].deployment_id, D2);
    assert_string_equal(list[0].service, "web");
    assert_int_equal(list[0].expires_ms, 1764151900000LL);
    assert_null(list[0].requested_by);
    assert_string_equal(list[1].deployment_id, D1);
    assert_string_equal(list[1].environment, "production");
    assert_string_equal(list[1].version, "v1");
    assert_string_equal(list[1].key_id, "ci-2026");
    assert_string_equal(list[1].requested_by, "ci-bot");
    assert_int_equal(list[1].since_ms, 1764151200000LL);
    assert_int_equal(list[1].expires_ms, 1764237600000LL);
    dq_pending_list_free(list, n);
}

/* Redis answers with an error (here: the key holds the wrong type): -1 with the reason,
 * nothing listed. */
static void test_redis_error(void **state)
{
    fixture *f = *state;
    char err[256] = "";
    dq_pending *list = NULL;
    size_t n = 9;

    ok(dq_redis_command(f->r, "FLUSHALL"));
    ok(dq_redis_command(f->r, "SET %s %s", DQ_PENDING_EXPIRIES, "not a sorted set"));
    assert_int_equal(dq_pending_list(f->r, &list, &n, err, sizeof err), -1);
    assert_null(list);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err, "WRONGTYPE"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_redis_error),
    };

    return cmocka_run_group_tests(tests, dq_test_redis_setup, dq_test_redis_teardown);
}
