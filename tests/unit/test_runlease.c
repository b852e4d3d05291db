/*
 * test_runlease.c - the registry of runs and the orphan scan (common/domain/runlease.c) against a
 * real redis-server of the test's own: a run is adopted only once its lock key is gone
 * (released, or expired as after a crash), by one claimant at a time, never when the
 * caller says it runs it, never after it was unregistered; expired registrations are
 * pruned; a scan pages through more runs than one ZRANGE page; the scanner thread adopts
 * on its own and stops when told; executor.orphan_scan (execute.h) drives it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "execute.h"
#include "lock.h"
#include "log.h"
#include "redis.h"
#include "runlease.h"
#include "testredis.h"
#include "util.h"

#define EVENT "{\"type\":\"deploy.validated\",\"deployment_id\":\"d-1\"}"

typedef dq_test_redis_fixture fixture;

/* What the adopt callback saw. */
typedef struct seen {
    int n;
    char id[128];
    char event[256];
    const char *skip_id; /* skip says "mine" for this id */
    dq_redis *r;         /* the connection the callback was given */
} seen;


static int flush(void **state)
{
    fixture *f = *state;
    redisReply *rep = dq_redis_command(f->r, "FLUSHALL");

    if (rep)
        freeReplyObject(rep);
    return rep ? 0 : -1;
}

static long long integer(fixture *f, const char *fmt, const char *key)
{
    redisReply *rep = dq_redis_command(f->r, fmt, key);
    long long v = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -99;

    if (rep)
        freeReplyObject(rep);
    return v;
}

static void set_px(fixture *f, const char *key, long ms)
{
    redisReply *rep = dq_redis_command(f->r, "SET %s holder PX %ld", key, ms);

    assert_non_null(rep);
    freeReplyObject(rep);
}

static void del(fixture *f, const char *key)
{
    redisReply *rep = dq_redis_command(f->r, "DEL %s", key);

    assert_non_null(rep);
    freeReplyObject(rep);
}

static int skip_cb(void *ctx, const char *id)
{
    seen *s = ctx;
    return s->skip_id && strcmp(s->skip_id, id) == 0;
}

static void adopt_cb(void *ctx, dq_redis *r, const char *id, const char *event_json)
{
    seen *s = ctx;

    snprintf(s->id, sizeof s->id, "%s", id);
    snprintf(s->event, sizeof s->event, "%s", event_json);
    s->r = r;
    __atomic_add_fetch(&s->n, 1, __ATOMIC_SEQ_CST); /* last: another thread reads the rest after it */
}

static int scan(fixture *f, const char *claimant, int64_t claim_ms, seen *s)
{
    char err[256];
    int n = dq_runlease_scan(f->r, DQ_RUNLEASE_KIND_EXEC, claimant, claim_ms, skip_cb, adopt_cb, s, err,
                             sizeof err);

    if (n < 0)
        fail_msg("scan failed: %s", err);
    return n;
}

static void test_register_and_unregister(void **state)
{
    fixture *f = *state;
    char err[256];
    long long ttl;

    assert_int_equal(dq_runlease_register(f->r, "exec", "d-1", "deployq:lock:api:staging", EVENT, err, sizeof err),
                     0);
    assert_int_equal(integer(f, "ZCARD %s", "deployq:runs:exec"), 1);
    assert_int_equal(integer(f, "HLEN %s", "deployq:runs:exec:job:d-1"), 2);
    /* nothing stays forever: both keys expire after the records' 7 days */
    ttl = integer(f, "TTL %s", "deployq:runs:exec:job:d-1");
    assert_true(ttl > DQ_RUNLEASE_TTL_S - 10 && ttl <= DQ_RUNLEASE_TTL_S);
    ttl = integer(f, "TTL %s", "deployq:runs:exec");
    assert_true(ttl > DQ_RUNLEASE_TTL_S - 10 && ttl <= DQ_RUNLEASE_TTL_S);
    /* the kinds do not mix */
    assert_int_equal(integer(f, "EXISTS %s", "deployq:runs:rollback"), 0);

    assert_int_equal(dq_runlease_unregister(f->r, "exec", "d-1", err, sizeof err), 0);
    assert_int_equal(integer(f, "EXISTS %s", "deployq:runs:exec"), 0);
    assert_int_equal(integer(f, "EXISTS %s", "deployq:runs:exec:job:d-1"), 0);
    /* again, and for a run never registered: fine */
    assert_int_equal(dq_runlease_unregister(f->r, "exec", "d-1", err, sizeof err), 0);
    assert_int_equal(dq_runlease_unregister(f->r, "exec", "never", err, sizeof err), 0);
    /* what a run needs */
    assert_int_equal(dq_runlease_register(f->r, "exec", "", "k", EVENT, err, sizeof err), -1);
    assert_int_equal(dq_runlease_register(f->r, "exec", "d-2", NULL, EVENT, err, sizeof err), -1);
}

/* The real lock (lock.h) decides: held -> not adopted; released -> adopted, once. */
static void test_adopted_only_without_its_lock(void **state)
{
    fixture *f = *state;
    dq_lock *l = NULL;
    seen s = {0};
    char err[256];

    assert_int_equal(dq_lock_try(f->url, 2000, "api", "staging", 5000, &l, err, sizeof err), DQ_LOCK_TAKEN);
    assert_int_equal(dq_runlease_register(f->r, "exec", "d-1", dq_lock_key(l), EVENT, err, sizeof err), 0);
    assert_int_equal(scan(f, "b", 5000, &s), 0);
    assert_int_equal(s.n, 0);

    /* the holder is gone (here: released; a crash lets it expire, below) */
    assert_int_equal(dq_lock_release(l), 1);
    assert_int_equal(scan(f, "b", 5000, &s), 1);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.id, "d-1");
    assert_string_equal(s.event, EVENT);
    assert_ptr_equal(s.r, f->r);
    /* claimed: neither b again nor another scanner takes it while b takes the lock */
    assert_int_equal(scan(f, "b", 5000, &s), 0);
    assert_int_equal(scan(f, "c", 5000, &s), 0);
    assert_int_equal(s.n, 1);
    /* the adopter takes the lock and registers the run again: its claim is done */
    assert_int_equal(dq_lock_try(f->url, 2000, "api", "staging", 5000, &l, err, sizeof err), DQ_LOCK_TAKEN);
    assert_int_equal(dq_runlease_register(f->r, "exec", "d-1", dq_lock_key(l), EVENT, err, sizeof err), 0);
    assert_int_equal(integer(f, "EXISTS %s", "deployq:runs:exec:claim:d-1"), 0);
    assert_int_equal(scan(f, "c", 5000, &s), 0);
    /* concluded: unregistered under the lock, then released: never adopted again */
    assert_int_equal(dq_runlease_unregister(f->r, "exec", "d-1", err, sizeof err), 0);
    assert_int_equal(dq_lock_release(l), 1);
    assert_int_equal(scan(f, "c", 5000, &s), 0);
    assert_int_equal(s.n, 1);
}

/* A crashed holder: its lease runs out by itself; the claim runs out too when its
 * adopter never took the lock. */
static void test_expired_lease_and_claim(void **state)
{
    fixture *f = *state;
    seen s = {0};
    char err[256];

    set_px(f, "deployq:lock:web:prod", 300);
    assert_int_equal(dq_runlease_register(f->r, "exec", "d-9", "deployq:lock:web:prod", EVENT, err, sizeof err), 0);
    assert_int_equal(scan(f, "b", 200, &s), 0);
    dq_test_sleep_ms(400);
    assert_int_equal(scan(f, "b", 200, &s), 1);
    assert_string_equal(s.id, "d-9");
    assert_int_equal(scan(f, "c", 200, &s), 0);
    /* b died before it took the lock: after claim_ms c adopts it */
    dq_test_sleep_ms(300);
    assert_int_equal(scan(f, "c", 200, &s), 1);
    assert_int_equal(s.n, 2);
    /* kinds are separate registries */
    {
        char e2[256];
        int n = dq_runlease_scan(f->r, DQ_RUNLEASE_KIND_ROLLBACK, "c", 200, skip_cb, adopt_cb, &s, e2, sizeof e2);
        assert_int_equal(n, 0);
    }
}

static void test_skip_and_prune(void **state)
{
    fixture *f = *state;
    seen s = {.skip_id = "d-1"};
    char err[256];

    assert_int_equal(dq_runlease_register(f->r, "exec", "d-1", "deployq:lock:a:b", EVENT, err, sizeof err), 0);
    /* this process runs it (e.g. between two attempts): not an orphan, no claim taken */
    assert_int_equal(scan(f, "b", 5000, &s), 0);
    assert_int_equal(integer(f, "EXISTS %s", "deployq:runs:exec:claim:d-1"), 0);
    s.skip_id = NULL;
    assert_int_equal(scan(f, "b", 5000, &s), 1);

    /* a registration whose hash expired: dropped from the ZSET, not adopted */
    assert_int_equal(dq_runlease_register(f->r, "exec", "d-2", "deployq:lock:a:c", EVENT, err, sizeof err), 0);
    del(f, "deployq:runs:exec:job:d-2");
    s.n = 0;
    assert_int_equal(scan(f, "b", 5000, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(integer(f, "ZCARD %s", "deployq:runs:exec"), 1); /* d-1 stays, d-2 went */
}

/* More runs than one ZRANGE page: the one orphan among them is found. */
static void test_pages(void **state)
{
    fixture *f = *state;
    seen s = {0};
    char err[256], id[32], lock[64];

    for (int i = 0; i < 600; i++) {
        snprintf(id, sizeof id, "d-%03d", i);
        snprintf(lock, sizeof lock, "deployq:lock:svc%d:prod", i);
        if (i != 517)
            set_px(f, lock, 60000);
        assert_int_equal(dq_runlease_register(f->r, "exec", id, lock, EVENT, err, sizeof err), 0);
    }
    assert_int_equal(scan(f, "b", 5000, &s), 1);
    assert_string_equal(s.id, "d-517");
}

static void test_scanner_thread(void **state)
{
    fixture *f = *state;
    seen s = {0};
    volatile sig_atomic_t stop = 0;
    dq_runlease_opts o = {.redis_url = f->url, .redis_timeout_ms = 2000, .kind = "rollback",
                          .claimant = "scanner@test/1", .interval_ms = 100, .claim_ms = 60000,
                          .skip = skip_cb, .adopt = adopt_cb, .ctx = &s, .stop = &stop};
    dq_runlease_scanner *sc;
    char err[256];
    int64_t t0;

    sc = dq_runlease_scanner_start(&o, err, sizeof err);
    assert_non_null(sc);
    assert_int_equal(dq_runlease_register(f->r, "rollback", "req-1", "deployq:lock:x:y", EVENT, err, sizeof err), 0);
    t0 = dq_mono_ms();
    while (__atomic_load_n(&s.n, __ATOMIC_SEQ_CST) == 0 && dq_mono_ms() - t0 < 3000)
        dq_test_sleep_ms(20);
    assert_int_equal(__atomic_load_n(&s.n, __ATOMIC_SEQ_CST), 1);
    assert_string_equal(s.id, "req-1");
    assert_ptr_not_equal(s.r, f->r); /* its own connection */
    /* the process's stop flag ends it; stop joins promptly */
    stop = 1;
    t0 = dq_mono_ms();
    dq_runlease_scanner_stop(sc);
    assert_true(dq_mono_ms() - t0 < 1000);
    dq_runlease_scanner_stop(NULL);
    /* Redis down at start is not an error */
    o.redis_url = "redis://127.0.0.1:1";
    stop = 0;
    sc = dq_runlease_scanner_start(&o, err, sizeof err);
    assert_non_null(sc);
    dq_test_sleep_ms(250);
    dq_runlease_scanner_stop(sc);
    o.interval_ms = 0;
    assert_null(dq_runlease_scanner_start(&o, err, sizeof err));
}

static int settings_of(const char *yaml, dq_exec_settings *st, char *err, size_t errlen)
{
    dq_config *cfg = dq_config_load_string(yaml, strlen(yaml), "deployq.yaml", err, errlen);
    int rc;

    assert_non_null(cfg);
    rc = dq_exec_settings_load(cfg, st, err, errlen);
    dq_config_free(cfg);
    return rc;
}

/* executor.orphan_scan: 1 s by default, so an orphan goes on within lock_ttl + 1 s. */
static void test_orphan_scan_setting(void **state)
{
    dq_exec_settings st;
    char err[256];

    (void)state;
    assert_int_equal(dq_exec_settings_load(NULL, &st, err, sizeof err), 0);
    assert_int_equal(st.orphan_scan_ms, 1000);
    assert_int_equal(st.lock_ttl_ms, 30000);
    assert_int_equal(settings_of("executor:\n  lock_ttl: 3s\n  orphan_scan: 250ms\n", &st, err, sizeof err), 0);
    assert_int_equal(st.orphan_scan_ms, 250);
    assert_int_equal(settings_of("executor:\n  orphan_scan: 0\n", &st, err, sizeof err), 0);
    assert_int_equal(st.orphan_scan_ms, 0);
    assert_int_equal(settings_of("executor:\n  orphan_scan: 50ms\n", &st, err, sizeof err), -1);
    assert_non_null(strstr(err, "deployq.yaml:2: executor.orphan_scan: at least 100ms, or 0"));
    assert_int_equal(settings_of("executor:\n  orphan_scan: soon\n", &st, err, sizeof err), -1);
    assert_non_null(strstr(err, "executor.orphan_scan: expected a duration"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_register_and_unregister, flush),
        cmocka_unit_test_setup(test_adopted_only_without_its_lock, flush),
        cmocka_unit_test_setup(test_expired_lease_and_claim, flush),
        cmocka_unit_test_setup(test_skip_and_prune, flush),
        cmocka_unit_test_setup(test_pages, flush),
        cmocka_unit_test_setup(test_scanner_thread, flush),
        cmocka_unit_test(test_orphan_scan_setting),
    };
    dq_log_init("test_runlease", DQ_LOG_ERROR, 1);
    return cmocka_run_group_tests(tests, dq_test_redis_setup, dq_test_redis_teardown);
}
