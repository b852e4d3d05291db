/*
 * test_lock.c - the fenced Redis lease (common/clients/lock.c) against a real redis-server of
 * the test's own: exclusion, a fence that only grows, renewal that keeps the lease,
 * compare-and-delete that never deletes another holder's lease, and lease loss when the
 * key is taken over or Redis goes away.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock.h"
#include "log.h"
#include "redis.h"
#include "testredis.h"

typedef dq_test_redis_fixture fixture;


/* The remaining TTL of key in ms (-2 absent). */
static long long pttl(fixture *f, const char *key)
{
    redisReply *rep = dq_redis_command(f->r, "PTTL %s", key);
    long long v = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -99;
    if (rep)
        freeReplyObject(rep);
    return v;
}

static char *get(fixture *f, const char *key)
{
    char *v = NULL;
    assert_int_equal(dq_redis_get(f->r, key, &v), 0);
    return v;
}

static void test_exclusion_and_fence(void **state)
{
    fixture *f = *state;
    dq_lock *a = NULL, *b = NULL;
    char err[256];
    char *v;

    assert_int_equal(dq_lock_try(f->url, 2000, "api", "staging", 5000, &a, err, sizeof err), DQ_LOCK_TAKEN);
    assert_non_null(a);
    assert_int_equal(dq_lock_fence(a), 1);
    assert_string_equal(dq_lock_key(a), "deployq:lock:api:staging");
    assert_int_equal(strlen(dq_lock_token(a)), DQ_LOCK_TOKEN_LEN);
    v = get(f, "deployq:lock:api:staging");
    assert_string_equal(v, dq_lock_token(a));
    free(v);
    assert_in_range(pttl(f, "deployq:lock:api:staging"), 1, 5000);

    /* busy for everyone else; another target is independent */
    assert_int_equal(dq_lock_try(f->url, 2000, "api", "staging", 5000, &b, err, sizeof err), DQ_LOCK_BUSY);
    assert_null(b);
    assert_int_equal(dq_lock_try(f->url, 2000, "api", "production", 5000, &b, err, sizeof err), DQ_LOCK_TAKEN);
    assert_int_equal(dq_lock_fence(b), 1);
    assert_int_equal(dq_lock_release(b), 1);

    assert_int_equal(dq_lock_release(a), 1);
    assert_int_equal(pttl(f, "deployq:lock:api:staging"), -2);

    /* the next holder's fence is larger */
    assert_int_equal(dq_lock_try(f->url, 2000, "api", "staging", 5000, &a, err, sizeof err), DQ_LOCK_TAKEN);
    assert_int_equal(dq_lock_fence(a), 2);
    assert_string_not_equal(dq_lock_token(a), "");
    assert_int_equal(dq_lock_release(a), 1);
    v = get(f, "deployq:fence:api:staging");
    assert_string_equal(v, "2");
    free(v);
    assert_int_equal(dq_lock_release(NULL), 0);
}

static void test_renewal_keeps_lease(void **state)
{
    fixture *f = *state;
    dq_lock *a = NULL;
    char err[256];

    assert_int_equal(dq_lock_try(f->url, 2000, "svc", "env", 600, &a, err, sizeof err), DQ_LOCK_TAKEN);
    dq_test_sleep_ms(2000); /* more than three ttls */
    assert_int_equal(dq_lock_lost(a), 0);
    assert_in_range(pttl(f, "deployq:lock:svc:env"), 1, 600);
    assert_int_equal(dq_lock_release(a), 1);
}

static void test_takeover_detected_and_not_deleted(void **state)
{
    fixture *f = *state;
    dq_lock *a = NULL;
    char err[256];
    redisReply *rep;
    char *v;

    assert_int_equal(dq_lock_try(f->url, 2000, "svc", "takeover", 600, &a, err, sizeof err), DQ_LOCK_TAKEN);
    /* the lease passes to someone else behind a's back (as after an expiry) */
    rep = dq_redis_command(f->r, "SET deployq:lock:svc:takeover other-token PX 60000");
    assert_non_null(rep);
    freeReplyObject(rep);
    for (int i = 0; i < 50 && !dq_lock_lost(a); i++)
        dq_test_sleep_ms(50);
    assert_int_equal(dq_lock_lost(a), 1);
    /* compare-and-delete leaves the other holder's lease alone */
    assert_int_equal(dq_lock_release(a), 0);
    v = get(f, "deployq:lock:svc:takeover");
    assert_string_equal(v, "other-token");
    free(v);
}

static void test_acquire_waits(void **state)
{
    fixture *f = *state;
    dq_lock *a = NULL, *b = NULL;
    char err[256];

    assert_int_equal(dq_lock_try(f->url, 2000, "svc", "wait", 5000, &a, err, sizeof err), DQ_LOCK_TAKEN);
    assert_int_equal(dq_lock_acquire(f->url, 2000, "svc", "wait", 5000, 300, NULL, NULL, &b, err, sizeof err),
                     DQ_LOCK_BUSY);
    assert_null(b);
    assert_int_equal(dq_lock_release(a), 1);
    assert_int_equal(dq_lock_acquire(f->url, 2000, "svc", "wait", 5000, 300, NULL, NULL, &b, err, sizeof err),
                     DQ_LOCK_TAKEN);
    assert_int_equal(dq_lock_fence(b), 2);
    assert_int_equal(dq_lock_release(b), 1);
}

static void test_unreachable_and_lost_when_redis_goes(void **state)
{
    fixture *f = *state;
    dq_lock *a = NULL;
    char err[256], url[96];
    int port = dq_test_free_port();
    pid_t pid;

    snprintf(url, sizeof url, "redis://:s3cret-pw@127.0.0.1:%d", port);
    assert_int_equal(dq_lock_try(url, 500, "svc", "env", 600, &a, err, sizeof err), DQ_LOCK_ERROR);
    assert_null(a);
    assert_null(strstr(err, "s3cret-pw"));
    assert_non_null(strstr(err, "127.0.0.1"));

    /* a lease whose Redis disappears is lost after one ttl without renewal */
    assert_int_equal(dq_test_redis_start_on(port, NULL, &pid), 0);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    assert_int_equal(dq_lock_try(url, 300, "svc", "gone", 600, &a, err, sizeof err), DQ_LOCK_TAKEN);
    assert_int_equal(dq_lock_lost(a), 0);
    dq_test_redis_stop(pid);
    for (int i = 0; i < 60 && !dq_lock_lost(a); i++)
        dq_test_sleep_ms(50);
    assert_int_equal(dq_lock_lost(a), 1);
    assert_int_equal(dq_lock_release(a), -1);
    (void)f;
}

/* The number of clients connected to the fixture's Redis. */
static long long clients(fixture *f)
{
    redisReply *rep = dq_redis_command(f->r, "INFO clients");
    const char *at = rep && rep->type == REDIS_REPLY_STRING ? strstr(rep->str, "connected_clients:") : NULL;
    long long v = at ? strtoll(at + strlen("connected_clients:"), NULL, 10) : -1;
    if (rep)
        freeReplyObject(rep);
    return v;
}

/* Leases of one pool: one renewal thread keeps them all, over shared connections, and
 * each is still judged on its own (a takeover of one leaves the other held). */
static void test_pool_renews_all_and_shares_connections(void **state)
{
    fixture *f = *state;
    dq_lock_pool *p;
    dq_lock *l[8] = {NULL}, *b = NULL;
    char err[256], env[64];
    long long before = clients(f);
    char *v;

    p = dq_lock_pool_new(f->url, 2000, err, sizeof err);
    assert_non_null(p);
    for (int i = 0; i < 8; i++) {
        snprintf(env, sizeof env, "e%d", i);
        assert_int_equal(dq_lock_pool_try(p, "pool", env, 600, &l[i], err, sizeof err), DQ_LOCK_TAKEN);
        assert_int_equal(dq_lock_fence(l[i]), 1);
    }
    /* exclusion holds within the pool as across processes */
    assert_int_equal(dq_lock_pool_try(p, "pool", "e0", 600, &b, err, sizeof err), DQ_LOCK_BUSY);
    assert_null(b);
    /* taken one after the other: one connection serves them all */
    assert_int_equal(clients(f) - before, 1);
    dq_test_sleep_ms(2000); /* more than three ttls */
    for (int i = 0; i < 8; i++) {
        snprintf(env, sizeof env, "deployq:lock:pool:e%d", i);
        assert_int_equal(dq_lock_lost(l[i]), 0);
        assert_in_range(pttl(f, env), 1, 600);
    }
    assert_in_range(clients(f) - before, 1, 2);

    redisReply *rep = dq_redis_command(f->r, "SET deployq:lock:pool:e3 other-token PX 60000");
    assert_non_null(rep);
    freeReplyObject(rep);
    for (int i = 0; i < 50 && !dq_lock_lost(l[3]); i++)
        dq_test_sleep_ms(50);
    assert_int_equal(dq_lock_lost(l[3]), 1);
    assert_int_equal(dq_lock_release(l[3]), 0);
    v = get(f, "deployq:lock:pool:e3");
    assert_string_equal(v, "other-token");
    free(v);
    for (int i = 0; i < 8; i++) {
        if (i == 3)
            continue;
        assert_int_equal(dq_lock_lost(l[i]), 0);
        assert_int_equal(dq_lock_release(l[i]), 1);
    }
    assert_int_equal(dq_lock_pool_acquire(p, "pool", "e0", 600, 300, NULL, NULL, &b, err, sizeof err),
                     DQ_LOCK_TAKEN);
    assert_int_equal(dq_lock_fence(b), 2);
    assert_int_equal(dq_lock_release(b), 1);
    dq_lock_pool_free(p);
    assert_int_equal(clients(f), before);
}

/* A script Redis has not seen (a fresh or restarted server) is sent as text once. */
static void test_scripts_after_flush(void **state)
{
    fixture *f = *state;
    dq_lock_pool *p = dq_lock_pool_new(f->url, 2000, NULL, 0);
    dq_lock *a = NULL;
    char err[256];
    redisReply *rep;

    assert_non_null(p);
    rep = dq_redis_command(f->r, "SCRIPT FLUSH");
    assert_non_null(rep);
    freeReplyObject(rep);
    assert_int_equal(dq_lock_pool_try(p, "svc", "flush", 5000, &a, err, sizeof err), DQ_LOCK_TAKEN);
    rep = dq_redis_command(f->r, "SCRIPT FLUSH");
    assert_non_null(rep);
    freeReplyObject(rep);
    assert_int_equal(dq_lock_release(a), 1);
    assert_int_equal(pttl(f, "deployq:lock:svc:flush"), -2);
    dq_lock_pool_free(p);
}

/* A lease of a pool whose Redis disappears is lost after one ttl, as one of its own. */
static void test_pool_lost_when_redis_goes(void **state)
{
    dq_lock_pool *p;
    dq_lock *a = NULL;
    char err[256], url[96];
    int port = dq_test_free_port();
    pid_t pid;

    assert_int_equal(dq_test_redis_start_on(port, NULL, &pid), 0);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    p = dq_lock_pool_new(url, 300, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(dq_lock_pool_try(p, "svc", "gone", 600, &a, err, sizeof err), DQ_LOCK_TAKEN);
    assert_int_equal(dq_lock_lost(a), 0);
    dq_test_redis_stop(pid);
    for (int i = 0; i < 60 && !dq_lock_lost(a); i++)
        dq_test_sleep_ms(50);
    assert_int_equal(dq_lock_lost(a), 1);
    assert_int_equal(dq_lock_release(a), -1);
    dq_lock_pool_free(p);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exclusion_and_fence),
        cmocka_unit_test(test_renewal_keeps_lease),
        cmocka_unit_test(test_takeover_detected_and_not_deleted),
        cmocka_unit_test(test_acquire_waits),
        cmocka_unit_test(test_unreachable_and_lost_when_redis_goes),
        cmocka_unit_test(test_pool_renews_all_and_shares_connections),
        cmocka_unit_test(test_scripts_after_flush),
        cmocka_unit_test(test_pool_lost_when_redis_goes),
    };
    dq_log_init("test_lock", DQ_LOG_ERROR, 1);
    return cmocka_run_group_tests(tests, dq_test_redis_setup, dq_test_redis_teardown);
}
