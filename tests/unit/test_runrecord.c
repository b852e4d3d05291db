/*
 * test_runrecord.c - the run record (common/domain/runrecord.c) against a real redis-server of
 * the test's own: a record is written and read back with its ttl; an unreadable one
 * counts as none; a write Redis refuses (an OOM error reply, or Redis stopped) stays
 * pending, is not tried before its retry time, and is written by a later poll once Redis
 * takes it; a newer record replaces a pending older one, written or not; a pending started
 * record never overwrites the terminal record that followed it.
 *
 * Redis refuses writes here with `CONFIG SET maxmemory 1` (noeviction: every SET answers
 * -OOM, reads still work), which is what a full Redis does in production.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "redis.h"
#include "runrecord.h"
#include "testredis.h"

#define STARTED_1 "{\"provider\":\"wh\",\"provider_id\":\"p-1\",\"attempt\":1}"
#define RESUME_2 "{\"resume_from\":2,\"fence\":7}"
#define STARTED_2 "{\"provider\":\"wh2\",\"provider_id\":\"p-2\",\"attempt\":2}"
#define INTENT_1 "{\"intent\":true,\"fence\":1}"
#define TERMINAL "{\"terminal\":\"{\\\"type\\\":\\\"deploy.succeeded\\\"}\"}"

#define AFTER_RETRY_MS (DQ_RUNRECORD_RETRY_MS + 150)

typedef dq_test_redis_fixture fixture;

static const dq_runrecord_opts opts = {
    .prefix = DQ_RUNRECORD_KEY_EXEC,
    .noun = "deploy",
    .ttl_s = 600,
    .tries = 2,
    .max_bytes = 4096,
    .max_depth = 8,
};


/* A clean Redis that takes writes (started again if a failed test left it stopped). */
static int flush(void **state)
{
    fixture *f = *state;
    redisReply *a;
    redisReply *b;
    int ok;

    if (f->pid <= 0 && dq_test_redis_start_on(f->port, NULL, &f->pid) != 0)
        return -1;
    a = dq_redis_command(f->r, "CONFIG SET maxmemory 0");
    b = dq_redis_command(f->r, "FLUSHALL");
    ok = a && b && b->type == REDIS_REPLY_STATUS;
    if (a)
        freeReplyObject(a);
    if (b)
        freeReplyObject(b);
    return ok ? 0 : -1;
}

/* refuse 1: every SET answers -OOM from now on; 0: Redis takes writes again. */
static void refuse(fixture *f, int on)
{
    redisReply *rep = dq_redis_command(f->r, "CONFIG SET maxmemory %s", on ? "1" : "0");

    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
}

/* What Redis holds at key, malloc'd, or NULL when nothing. */
static char *stored(fixture *f, const char *key)
{
    char *s = NULL;

    assert_int_equal(dq_redis_get(f->r, key, &s), 0);
    return s;
}

static void assert_stored(fixture *f, const char *key, const char *want)
{
    char *s = stored(f, key);

    if (want) {
        assert_non_null(s);
        assert_string_equal(s, want);
    } else {
        assert_null(s);
    }
    free(s);
}

/* DEL key: 0 when Redis answered. */
static int redis_del(fixture *f, const char *key)
{
    redisReply *rep = dq_redis_command(f->r, "DEL %s", key);

    if (!rep)
        return -1;
    freeReplyObject(rep);
    return 0;
}

static void assert_pending(const dq_runrecord *rr, const char *want)
{
    assert_non_null(dq_runrecord_pending(rr));
    assert_string_equal(dq_runrecord_pending(rr), want);
}

static void test_written_and_read_back(void **state)
{
    fixture *f = *state;
    dq_runrecord *rr = dq_runrecord_new(f->r, &opts, "d-1");
    cJSON *rec = (cJSON *)1;
    redisReply *ttl;

    assert_non_null(rr);
    assert_string_equal(dq_runrecord_key(rr), "deployq:exec:d-1");
    assert_int_equal(dq_runrecord_read(rr, &rec), 0);
    assert_null(rec); /* none yet */

    assert_int_equal(dq_runrecord_write(rr, STARTED_1), 0);
    assert_null(dq_runrecord_pending(rr));
    assert_stored(f, "deployq:exec:d-1", STARTED_1);
    ttl = dq_redis_command(f->r, "TTL deployq:exec:d-1");
    assert_non_null(ttl);
    assert_true(ttl->integer > 590 && ttl->integer <= 600);
    freeReplyObject(ttl);

    assert_int_equal(dq_runrecord_read(rr, &rec), 0);
    assert_non_null(rec);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(rec, "provider_id")->valuestring, "p-1");
    cJSON_Delete(rec);
    assert_int_equal(dq_runrecord_poll(rr), 0); /* nothing pending: nothing to do */
    dq_runrecord_free(rr);

    /* the other key space, same rules */
    dq_runrecord_opts ro = opts;
    ro.prefix = DQ_RUNRECORD_KEY_ROLLBACK;
    ro.noun = "rollback";
    rr = dq_runrecord_new(f->r, &ro, "req-9");
    assert_non_null(rr);
    assert_string_equal(dq_runrecord_key(rr), "deployq:rb:req:req-9");
    assert_int_equal(dq_runrecord_write(rr, STARTED_1), 0);
    assert_stored(f, "deployq:rb:req:req-9", STARTED_1);
    dq_runrecord_free(rr);
}

static void test_unreadable_counts_as_none(void **state)
{
    fixture *f = *state;
    dq_runrecord *rr = dq_runrecord_new(f->r, &opts, "d-bad");
    cJSON *rec = NULL;
    char big[5000];
    redisReply *rep;

    assert_non_null(rr);
    rep = dq_redis_command(f->r, "SET deployq:exec:d-bad %s", "{not json");
    freeReplyObject(rep);
    assert_int_equal(dq_runrecord_read(rr, &rec), 0);
    assert_null(rec);

    /* longer than max_bytes: unreadable too */
    memset(big, ' ', sizeof big - 3);
    big[0] = '{';
    big[sizeof big - 2] = '}';
    big[sizeof big - 1] = '\0';
    assert_int_equal(dq_runrecord_write(rr, big), 0);
    assert_int_equal(dq_runrecord_read(rr, &rec), 0);
    assert_null(rec);
    /* the same limits for a record from elsewhere */
    assert_null(dq_runrecord_parse(rr, big));
    rec = dq_runrecord_parse(rr, RESUME_2);
    assert_non_null(rec);
    cJSON_Delete(rec);

    /* a Redis that cannot answer the GET is not "no record" */
    rep = dq_redis_command(f->r, "DEL deployq:exec:d-bad");
    freeReplyObject(rep);
    rep = dq_redis_command(f->r, "LPUSH deployq:exec:d-bad x");
    freeReplyObject(rep);
    assert_int_equal(dq_runrecord_read(rr, &rec), -1);
    assert_null(rec);
    assert_non_null(strstr(dq_runrecord_errstr(rr), "WRONGTYPE"));
    dq_runrecord_free(rr);
}

static void test_refused_write_pending_until_redis_takes_it(void **state)
{
    fixture *f = *state;
    dq_runrecord *rr = dq_runrecord_new(f->r, &opts, "d-2");

    assert_non_null(rr);
    refuse(f, 1);
    assert_int_equal(dq_runrecord_write(rr, STARTED_1), -1);
    assert_non_null(strstr(dq_runrecord_errstr(rr), "OOM"));
    assert_pending(rr, STARTED_1);
    assert_stored(f, "deployq:exec:d-2", NULL);

    /* its time has come, Redis still refuses: still pending */
    dq_test_sleep_ms(AFTER_RETRY_MS);
    assert_int_equal(dq_runrecord_poll(rr), -1);
    assert_pending(rr, STARTED_1);

    /* Redis takes writes again, but the next try is a retry interval away */
    refuse(f, 0);
    assert_int_equal(dq_runrecord_poll(rr), 0);
    assert_stored(f, "deployq:exec:d-2", NULL);
    assert_pending(rr, STARTED_1);

    dq_test_sleep_ms(AFTER_RETRY_MS);
    assert_int_equal(dq_runrecord_poll(rr), 1);
    assert_null(dq_runrecord_pending(rr));
    assert_stored(f, "deployq:exec:d-2", STARTED_1);
    assert_int_equal(dq_runrecord_poll(rr), 0);
    dq_runrecord_free(rr);
}

static void test_redis_stopped_then_back(void **state)
{
    fixture *f = *state;
    dq_runrecord *rr = dq_runrecord_new(f->r, &opts, "d-3");

    assert_non_null(rr);
    dq_test_redis_stop(f->pid);
    f->pid = 0;
    assert_int_equal(dq_runrecord_write(rr, STARTED_1), -1);
    assert_non_null(strstr(dq_runrecord_errstr(rr), "127.0.0.1"));
    assert_pending(rr, STARTED_1);

    assert_int_equal(dq_test_redis_start_on(f->port, NULL, &f->pid), 0);
    dq_test_sleep_ms(AFTER_RETRY_MS);
    assert_int_equal(dq_runrecord_poll(rr), 1); /* the connection comes back by itself */
    assert_null(dq_runrecord_pending(rr));
    assert_stored(f, "deployq:exec:d-3", STARTED_1);
    dq_runrecord_free(rr);
}

static void test_newer_record_replaces_pending(void **state)
{
    fixture *f = *state;
    dq_runrecord *rr = dq_runrecord_new(f->r, &opts, "d-4");

    assert_non_null(rr);
    /* both refused: the newer one is what waits */
    refuse(f, 1);
    assert_int_equal(dq_runrecord_write(rr, STARTED_1), -1);
    assert_int_equal(dq_runrecord_write(rr, RESUME_2), -1);
    assert_pending(rr, RESUME_2);
    refuse(f, 0);
    dq_test_sleep_ms(AFTER_RETRY_MS);
    assert_int_equal(dq_runrecord_poll(rr), 1);
    assert_stored(f, "deployq:exec:d-4", RESUME_2);

    /* the older refused, the newer taken: the older is never written after it */
    refuse(f, 1);
    assert_int_equal(dq_runrecord_write(rr, RESUME_2), -1);
    refuse(f, 0);
    assert_int_equal(dq_runrecord_write(rr, STARTED_2), 0);
    assert_null(dq_runrecord_pending(rr));
    assert_stored(f, "deployq:exec:d-4", STARTED_2);

    /* a newer record the caller could not even build: the older one goes all the same */
    refuse(f, 1);
    assert_int_equal(dq_runrecord_write(rr, STARTED_1), -1);
    assert_int_equal(dq_runrecord_write(rr, NULL), -1);
    assert_null(dq_runrecord_pending(rr));
    refuse(f, 0);
    assert_stored(f, "deployq:exec:d-4", STARTED_2);
    dq_runrecord_free(rr);
}

static void test_pending_started_never_overwrites_terminal(void **state)
{
    fixture *f = *state;
    dq_runrecord *rr = dq_runrecord_new(f->r, &opts, "d-5");

    assert_non_null(rr);
    /* started refused, terminal taken */
    refuse(f, 1);
    assert_int_equal(dq_runrecord_write(rr, STARTED_1), -1);
    refuse(f, 0);
    assert_int_equal(dq_runrecord_write(rr, TERMINAL), 0);
    dq_test_sleep_ms(AFTER_RETRY_MS);
    assert_int_equal(dq_runrecord_poll(rr), 0);
    assert_stored(f, "deployq:exec:d-5", TERMINAL);
    dq_runrecord_free(rr);

    /* both refused: the terminal record is the one written once Redis takes it */
    rr = dq_runrecord_new(f->r, &opts, "d-6");
    assert_non_null(rr);
    refuse(f, 1);
    assert_int_equal(dq_runrecord_write(rr, STARTED_1), -1);
    assert_int_equal(dq_runrecord_write(rr, TERMINAL), -1);
    refuse(f, 0);
    dq_test_sleep_ms(AFTER_RETRY_MS);
    assert_int_equal(dq_runrecord_poll(rr), 1);
    assert_stored(f, "deployq:exec:d-6", TERMINAL);
    assert_int_equal(dq_runrecord_poll(rr), 0);
    assert_stored(f, "deployq:exec:d-6", TERMINAL);
    dq_runrecord_free(rr); /* nothing pending: nothing lost */
}

/* The process memory: a started record Redis refused outlives its handle (the run lost
 * its lease), so the next run of the id in this process reads it, resumes and writes it;
 * once the outcome is in Redis, it is forgotten. */
static void test_process_memory_resumes_the_next_run(void **state)
{
    fixture *f = *state;
    dq_runrecord *rr = dq_runrecord_new(f->r, &opts, "d-8");
    cJSON *rec = NULL;

    assert_non_null(rr);
    refuse(f, 1);
    assert_int_equal(dq_runrecord_start(rr, STARTED_1), -1);
    dq_runrecord_free(rr); /* the run gave up; its pending record goes with it */
    refuse(f, 0);
    assert_stored(f, "deployq:exec:d-8", NULL);

    rr = dq_runrecord_new(f->r, &opts, "d-8"); /* the next run of d-8 in this process */
    assert_non_null(rr);
    assert_int_equal(dq_runrecord_read(rr, &rec), 0);
    assert_non_null(rec);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(rec, "provider_id")), "p-1");
    cJSON_Delete(rec);
    assert_stored(f, "deployq:exec:d-8", STARTED_1); /* and Redis has it now */

    assert_int_equal(dq_runrecord_finish(rr, TERMINAL), 0);
    dq_runrecord_free(rr);
    assert_int_equal(redis_del(f, "deployq:exec:d-8"), 0);
    rr = dq_runrecord_new(f->r, &opts, "d-8");
    assert_non_null(rr);
    assert_int_equal(dq_runrecord_read(rr, &rec), 0);
    assert_null(rec); /* the outcome was recorded: nothing remembered any more */
    dq_runrecord_free(rr);

    /* forget: the record in Redis already had the outcome */
    rr = dq_runrecord_new(f->r, &opts, "d-9");
    assert_non_null(rr);
    assert_int_equal(dq_runrecord_start(rr, STARTED_1), 0);
    dq_runrecord_forget(rr);
    dq_runrecord_free(rr);
    assert_int_equal(redis_del(f, "deployq:exec:d-9"), 0);
    rr = dq_runrecord_new(f->r, &opts, "d-9");
    assert_non_null(rr);
    assert_int_equal(dq_runrecord_read(rr, &rec), 0);
    assert_null(rec);
    dq_runrecord_free(rr);
}

/* CI's 0700, seed 13438933: a provider accepted while Redis was down, the run ended (or
 * lost its lease) without Redis taking its record, and another executor adopted the run
 * and deployed again. The process that saw the acceptance writes what it remembers as soon
 * as Redis is back (the orphan scanner calls dq_runrecord_flush), over the run's intent
 * record but never over a newer record; and its own next run prefers it to the intent. */
static void test_flush_writes_what_redis_missed(void **state)
{
    fixture *f = *state;
    dq_runrecord *rr;
    cJSON *rec = NULL;

    /* d-20: the intent went in before the deploy call; then Redis refused everything */
    rr = dq_runrecord_new(f->r, &opts, "d-20");
    assert_non_null(rr);
    assert_int_equal(dq_runrecord_write(rr, INTENT_1), 0);
    refuse(f, 1);
    assert_int_equal(dq_runrecord_start(rr, STARTED_1), -1);
    assert_int_equal(dq_runrecord_finish(rr, TERMINAL), -1); /* the run ended all the same */
    dq_runrecord_free(rr);
    /* d-21: the same, but meanwhile another run recorded an outcome: left alone */
    rr = dq_runrecord_new(f->r, &opts, "d-21");
    assert_non_null(rr);
    assert_int_equal(dq_runrecord_start(rr, STARTED_2), -1);
    dq_runrecord_free(rr);
    refuse(f, 0);
    rr = dq_runrecord_new(f->r, &opts, "d-21");
    assert_non_null(rr);
    assert_int_equal(dq_runrecord_write(rr, TERMINAL), 0);
    dq_runrecord_free(rr);
    assert_stored(f, "deployq:exec:d-20", INTENT_1);

    /* d-22: this process's own next run prefers what it remembers to the intent */
    rr = dq_runrecord_new(f->r, &opts, "d-22");
    assert_non_null(rr);
    assert_int_equal(dq_runrecord_write(rr, INTENT_1), 0);
    refuse(f, 1);
    assert_int_equal(dq_runrecord_start(rr, STARTED_1), -1);
    dq_runrecord_free(rr);
    refuse(f, 0);
    rr = dq_runrecord_new(f->r, &opts, "d-22");
    assert_non_null(rr);
    assert_int_equal(dq_runrecord_read(rr, &rec), 0);
    assert_non_null(rec);
    assert_false(dq_runrecord_is_intent(rec));
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(rec, "provider_id")), "p-1");
    cJSON_Delete(rec);
    dq_runrecord_free(rr);
    assert_stored(f, "deployq:exec:d-22", STARTED_1);

    /* Redis is back: the scanner's flush writes d-20's started record over its intent */
    assert_true(dq_runrecord_flush(f->r) >= 1);
    assert_stored(f, "deployq:exec:d-20", STARTED_1);
    assert_stored(f, "deployq:exec:d-21", TERMINAL);
    assert_int_equal(dq_runrecord_flush(f->r), 0); /* once */
    assert_int_equal(dq_runrecord_flush(NULL), 0);

    /* an adopter that reads d-20 now resumes p-1 instead of deploying again */
    rr = dq_runrecord_new(f->r, &opts, "d-20");
    assert_non_null(rr);
    assert_int_equal(dq_runrecord_read(rr, &rec), 0);
    assert_non_null(rec);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(rec, "provider_id")), "p-1");
    cJSON_Delete(rec);
    dq_runrecord_forget(rr);
    dq_runrecord_free(rr);
}

static void test_without_redis(void **state)
{
    dq_runrecord *rr = dq_runrecord_new(NULL, &opts, "d-7");
    dq_runrecord_opts bad = opts;
    cJSON *rec = (cJSON *)1;

    assert_non_null(rr);
    assert_string_equal(dq_runrecord_key(rr), "deployq:exec:d-7"); /* the process memory's key */
    assert_int_equal(dq_runrecord_read(rr, &rec), 0);
    assert_null(rec);
    assert_int_equal(dq_runrecord_write(rr, STARTED_1), 0);
    assert_null(dq_runrecord_pending(rr));
    assert_int_equal(dq_runrecord_poll(rr), 0);
    dq_runrecord_free(rr);
    dq_runrecord_free(NULL);

    bad.tries = 0;
    assert_null(dq_runrecord_new(NULL, &bad, "d-7"));
    bad = opts;
    bad.ttl_s = 0;
    assert_null(dq_runrecord_new(NULL, &bad, "d-7"));
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_written_and_read_back, flush),
        cmocka_unit_test_setup(test_unreadable_counts_as_none, flush),
        cmocka_unit_test_setup(test_refused_write_pending_until_redis_takes_it, flush),
        cmocka_unit_test_setup(test_redis_stopped_then_back, flush),
        cmocka_unit_test_setup(test_newer_record_replaces_pending, flush),
        cmocka_unit_test_setup(test_pending_started_never_overwrites_terminal, flush),
        cmocka_unit_test_setup(test_process_memory_resumes_the_next_run, flush),
        cmocka_unit_test_setup(test_flush_writes_what_redis_missed, flush),
        cmocka_unit_test(test_without_redis),
    };
    dq_log_init("test_runrecord", DQ_LOG_OFF, 1);
    return cmocka_run_group_tests(tests, dq_test_redis_setup, dq_test_redis_teardown);
}
