/*
 * test_opstate.c - the operator's marks in Redis (opstate.h): pause and hold per target,
 * cancel per deployment; set, read, cleared; an unreadable value reads as set (fail safe).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "log.h"
#include "opstate.h"
#include "testredis.h"

#define DEP "7c9e6679-7425-40de-944b-e07fc1f90ae7"

static int setup(void **state)
{
    dq_log_init("test_opstate", DQ_LOG_OFF, 0);
    return dq_test_redis_setup(state);
}

static void test_target_marks(void **state)
{
    dq_test_redis_fixture *f = *state;
    dq_opmark mark = {.by = "op-1", .reason = "incident 42", .at = "2026-12-03T10:00:00.000Z"}, got;
    redisReply *r;

    assert_int_equal(dq_opstate_get(f->r, DQ_OPSTATE_PAUSED, "api", "prod", &got), 0);
    assert_int_equal(dq_opstate_set(f->r, DQ_OPSTATE_PAUSED, "api", "prod", &mark), 0);
    assert_int_equal(dq_opstate_get(f->r, DQ_OPSTATE_PAUSED, "api", "prod", &got), 1);
    assert_string_equal(got.by, "op-1");
    assert_string_equal(got.reason, "incident 42");
    assert_string_equal(got.at, "2026-12-03T10:00:00.000Z");
    /* the key is the documented one; a pause is not a hold, and targets are apart */
    r = dq_redis_command(f->r, "EXISTS deployq:paused:api/prod");
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    assert_int_equal(dq_opstate_get(f->r, DQ_OPSTATE_HELD, "api", "prod", NULL), 0);
    assert_int_equal(dq_opstate_get(f->r, DQ_OPSTATE_PAUSED, "api", "staging", NULL), 0);
    assert_int_equal(dq_opstate_clear(f->r, DQ_OPSTATE_PAUSED, "api", "prod"), 1);
    assert_int_equal(dq_opstate_clear(f->r, DQ_OPSTATE_PAUSED, "api", "prod"), 0);
    assert_int_equal(dq_opstate_get(f->r, DQ_OPSTATE_PAUSED, "api", "prod", &got), 0);

    /* unreadable: still held (fail safe), by "?" */
    r = dq_redis_command(f->r, "SET deployq:held:api/prod %s", "not json");
    freeReplyObject(r);
    assert_int_equal(dq_opstate_get(f->r, DQ_OPSTATE_HELD, "api", "prod", &got), 1);
    assert_string_equal(got.by, "?");
}

static void test_cancel_mark(void **state)
{
    dq_test_redis_fixture *f = *state;
    dq_opmark mark = {.by = "op-2", .reason = "", .at = "2026-12-03T10:00:00.000Z"}, got;
    redisReply *r;

    assert_int_equal(dq_cancel_get(f->r, DEP, &got), 0);
    assert_int_equal(dq_cancel_set(f->r, DEP, &mark), 0);
    assert_int_equal(dq_cancel_get(f->r, DEP, &got), 1);
    assert_string_equal(got.by, "op-2");
    r = dq_redis_command(f->r, "TTL deployq:cancel:%s", DEP);
    assert_true(r->integer > DQ_CANCEL_TTL_S - 60 && r->integer <= DQ_CANCEL_TTL_S);
    freeReplyObject(r);
}

static void test_redis_down(void **state)
{
    dq_test_redis_fixture *f = *state;
    char err[256];
    dq_redis *dead = dq_redis_connect(f->url, 500, err, sizeof err);

    assert_non_null(dead);
    dq_test_redis_stop(f->pid);
    f->pid = -1;
    assert_int_equal(dq_opstate_get(dead, DQ_OPSTATE_PAUSED, "api", "prod", NULL), -1);
    assert_int_equal(dq_cancel_get(dead, DEP, NULL), -1);
    assert_int_equal(dq_opstate_clear(dead, DQ_OPSTATE_HELD, "api", "prod"), -1);
    dq_redis_free(dead);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target_marks),
        cmocka_unit_test(test_cancel_mark),
        cmocka_unit_test(test_redis_down), /* last: it stops the server */
    };
    return cmocka_run_group_tests(tests, setup, dq_test_redis_teardown);
}
