/*
 * test_fold.c - the state fold (common/domain/fold.c): a deploy's life folded into its target,
 * fencing (stale events flagged, never applied), rollbacks with evidence, timelines, and a
 * state hash that depends only on each partition's order; records read by dq_event_scan
 * fold exactly as decoded ones, with or without timelines, to the hash of before; canary
 * rollouts (their step and weight at any time, the abort and the executor's rollback).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fold.h"
#include "util.h"

#define D1 "11111111-1111-4111-8111-111111111111"
#define D2 "22222222-2222-4222-8222-222222222222"
#define D3 "33333333-3333-4333-8333-333333333333"

/* Fold one event given as envelope fields and a data text; returns dq_fold_apply's result. */
static int put(dq_fold *f, int32_t part, int64_t off, const char *type, const char *dep,
               const char *svc, const char *env, const char *ver, const char *at,
               int64_t fence, const char *data)
{
    dq_event *ev = dq_event_new(type, dep, svc, env, ver, "test@host/1");
    char name[64], *txt;
    int rc;

    assert_non_null(ev);
    snprintf(name, sizeof name, "%d/%lld", part, (long long)off);
    dq_event_set_id_from(ev, name);
    assert_int_equal(dq_time_parse(at, &ev->at_ms), 0);
    ev->fence = fence;
    if (data) {
        cJSON_Delete(ev->data);
        ev->data = cJSON_Parse(data);
        assert_non_null(ev->data);
    }
    txt = dq_event_encode(ev);
    assert_non_null(txt);
    rc = dq_fold_apply(f, part, off, txt, strlen(txt));
    free(txt);
    dq_event_free(ev);
    return rc;
}

static int64_t ms(const char *at)
{
    int64_t v = 0;

    assert_int_equal(dq_time_parse(at, &v), 0);
    return v;
}

#define VALIDATED_DATA                                                                     \
    "{\"key_id\":\"ci\",\"issued_at\":\"2026-01-01T09:59:00Z\",\"strategy\":\"rolling\","    \
    "\"commit_at\":\"2026-01-01T09:00:00Z\",\"source\":{\"topic\":\"t\",\"partition\":0,"     \
    "\"offset\":1}}"

static void test_deploy_lifecycle(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    const dq_fold_target *t;
    const dq_fold_deployment *d;

    assert_int_equal(put(f, 0, 0, DQ_EV_VALIDATED, D1, "api", "prod", "v1",
                         "2026-01-01T10:00:00Z", 0, VALIDATED_DATA), DQ_FOLD_APPLIED);
    assert_int_equal(put(f, 0, 1, DQ_EV_STARTED, D1, "api", "prod", "v1",
                         "2026-01-01T10:00:01Z", 7, NULL), DQ_FOLD_APPLIED);
    t = dq_fold_target_get(f, "api", "prod");
    assert_non_null(t);
    assert_null(t->current_version);
    assert_non_null(t->inflight);
    assert_string_equal(t->inflight->id, D1);
    assert_string_equal(t->inflight->step, "deploy.started");
    assert_int_equal(t->inflight->outcome, DQ_DEPLOY_RUNNING);

    put(f, 0, 2, DQ_EV_SUCCEEDED, D1, "api", "prod", "v1", "2026-01-01T10:05:00Z", 7, NULL);
    put(f, 0, 3, DQ_EV_MONITOR_STARTED, D1, "api", "prod", "v1", "2026-01-01T10:05:01Z", 7,
        NULL);
    assert_string_equal(t->current_version, "v1");
    assert_string_equal(t->current_deployment_id, D1);
    assert_int_equal(t->current_since_ms, ms("2026-01-01T10:05:00Z"));
    assert_null(t->last_verified_version);
    /* still in flight while it is being watched */
    assert_non_null(t->inflight);
    assert_string_equal(t->inflight->step, "monitor.started");

    put(f, 0, 4, DQ_EV_VERIFIED, D1, "api", "prod", "v1", "2026-01-01T10:20:00Z", 7, NULL);
    assert_string_equal(t->last_verified_version, "v1");
    assert_int_equal(t->last_verified_at_ms, ms("2026-01-01T10:20:00Z"));
    assert_null(t->inflight);
    assert_int_equal(t->max_fence, 7);
    assert_int_equal(t->n_events, 5);
    assert_int_equal(t->n_validated, 1);
    assert_int_equal(t->n_started, 1);
    assert_int_equal(t->n_succeeded, 1);
    assert_int_equal(t->n_verified, 1);

    d = dq_fold_deployment_get(f, D1);
    assert_non_null(d);
    assert_int_equal(d->outcome, DQ_DEPLOY_VERIFIED);
    assert_int_equal(d->commit_at_ms, ms("2026-01-01T09:00:00Z"));
    assert_int_equal(d->validated_at_ms, ms("2026-01-01T10:00:00Z"));
    assert_int_equal(d->succeeded_at_ms, ms("2026-01-01T10:05:00Z"));
    assert_int_equal(d->n_timeline, 5);
    assert_string_equal(d->timeline[2].type, "deploy.succeeded");
    assert_int_equal(d->timeline[2].offset, 2);
    assert_int_equal(d->timeline[2].fence, 7);

    /* a second deploy that fails leaves the current version alone */
    put(f, 0, 5, DQ_EV_VALIDATED, D2, "api", "prod", "v2", "2026-01-02T10:00:00Z", 0,
        VALIDATED_DATA);
    put(f, 0, 6, DQ_EV_FAILED, D2, "api", "prod", "v2", "2026-01-02T10:01:00Z", 8,
        "{\"reason\":\"build_failed\"}");
    assert_string_equal(t->current_version, "v1");
    assert_null(t->inflight);
    assert_int_equal(dq_fold_deployment_get(f, D2)->outcome, DQ_DEPLOY_FAILED);
    assert_int_equal(t->n_failed, 1);
    dq_fold_free(f);
}

static void test_stale_fence_flagged_not_applied(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    const dq_fold_target *t;
    const dq_fold_stale_event *st;
    size_t n;

    put(f, 2, 10, DQ_EV_STARTED, D1, "web", "prod", "v1", "2026-01-01T10:00:00Z", 4, NULL);
    put(f, 2, 11, DQ_EV_STARTED, D2, "web", "prod", "v2", "2026-01-01T10:01:00Z", 5, NULL);
    /* the holder of fence 4 lost its lease and still reports success: ignored */
    assert_int_equal(put(f, 2, 12, DQ_EV_SUCCEEDED, D1, "web", "prod", "v1",
                         "2026-01-01T10:02:00Z", 4, NULL), DQ_FOLD_STALE);
    t = dq_fold_target_get(f, "web", "prod");
    assert_null(t->current_version);
    assert_int_equal(t->n_succeeded, 0);
    assert_int_equal(t->n_stale, 1);
    assert_int_equal(t->max_fence, 5);
    assert_int_equal(dq_fold_deployment_get(f, D1)->outcome, DQ_DEPLOY_RUNNING);
    st = dq_fold_stale(f, &n);
    assert_int_equal(n, 1);
    assert_string_equal(st[0].type, "deploy.succeeded");
    assert_string_equal(st[0].target, "web/prod");
    assert_string_equal(st[0].deployment_id, D1);
    assert_int_equal(st[0].partition, 2);
    assert_int_equal(st[0].offset, 12);
    assert_int_equal(st[0].fence, 4);
    assert_int_equal(st[0].newest_fence, 5);
    /* the stale event is on the timeline, marked */
    assert_int_equal(dq_fold_deployment_get(f, D1)->n_timeline, 2);
    assert_int_equal(dq_fold_deployment_get(f, D1)->timeline[1].stale, 1);

    /* a deployment only a stale holder speaks of is not made up */
    assert_int_equal(put(f, 2, 99, DQ_EV_SUCCEEDED, "44444444-4444-4444-8444-444444444444",
                         "web", "prod", "evil", "2026-01-01T10:02:30Z", 3, NULL),
                     DQ_FOLD_STALE);
    assert_null(dq_fold_deployment_get(f, "44444444-4444-4444-8444-444444444444"));
    assert_int_equal(t->n_stale, 2);
    assert_null(t->current_version);

    /* the same fence as the newest is current; fence 0 (before any lock) always applies */
    assert_int_equal(put(f, 2, 13, DQ_EV_SUCCEEDED, D2, "web", "prod", "v2",
                         "2026-01-01T10:03:00Z", 5, NULL), DQ_FOLD_APPLIED);
    assert_string_equal(t->current_version, "v2");
    assert_int_equal(put(f, 2, 14, DQ_EV_VALIDATED, D3, "web", "prod", "v3",
                         "2026-01-01T11:00:00Z", 0, VALIDATED_DATA), DQ_FOLD_APPLIED);
    assert_string_equal(t->inflight->id, D3);
    dq_fold_free(f);
}

static void test_rollback_with_evidence(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    const dq_fold_target *t;
    const dq_fold_rollback *r;
    dq_fold_rollback *const *all;
    size_t n;

    put(f, 1, 0, DQ_EV_SUCCEEDED, D1, "api", "prod", "v1", "2026-01-01T10:00:00Z", 1, NULL);
    put(f, 1, 1, DQ_EV_VERIFIED, D1, "api", "prod", "v1", "2026-01-01T10:15:00Z", 1, NULL);
    put(f, 1, 2, DQ_EV_VALIDATED, D2, "api", "prod", "v2", "2026-01-02T10:00:00Z", 0,
        VALIDATED_DATA);
    put(f, 1, 3, DQ_EV_SUCCEEDED, D2, "api", "prod", "v2", "2026-01-02T10:05:00Z", 2, NULL);
    put(f, 1, 4, DQ_EV_ROLLBACK_REQUESTED, D2, "api", "prod", "v2", "2026-01-02T10:09:00Z",
        2,
        "{\"reason\":\"error rate\",\"requested_by\":\"deployq-monitor\",\"to_version\":\"v1\","
        "\"evidence\":{\"probe\":\"http\",\"kind\":\"status\",\"observed\":503,"
        "\"threshold\":200,\"first_failure_at\":\"2026-01-02T10:07:00Z\","
        "\"detected_at\":\"2026-01-02T10:08:30Z\"}}");
    t = dq_fold_target_get(f, "api", "prod");
    r = t->last_rollback;
    assert_non_null(r);
    assert_int_equal(r->status, DQ_ROLLBACK_REQUESTED);
    assert_string_equal(r->reason, "error rate");
    assert_string_equal(r->deployment_id, D2);
    assert_string_equal(r->from_version, "v2");
    assert_int_equal(r->detected_at_ms, ms("2026-01-02T10:07:00Z"));
    assert_int_equal(cJSON_GetObjectItem(r->evidence, "observed")->valueint, 503);
    assert_null(t->inflight);
    assert_int_equal(dq_fold_deployment_get(f, D2)->outcome, DQ_DEPLOY_ROLLED_BACK);

    put(f, 1, 5, DQ_EV_ROLLBACK_STARTED, D2, "api", "prod", "v2", "2026-01-02T10:09:10Z", 3,
        "{\"to_version\":\"v1\",\"method\":\"redeploy\"}");
    assert_int_equal(r->status, DQ_ROLLBACK_STARTED);
    put(f, 1, 6, DQ_EV_ROLLBACK_SUCCEEDED, D2, "api", "prod", "v2", "2026-01-02T10:12:00Z", 3,
        "{\"to_version\":\"v1\",\"method\":\"redeploy\","
        "\"restored_at\":\"2026-01-02T10:11:30Z\"}");
    assert_int_equal(r->status, DQ_ROLLBACK_SUCCEEDED);
    assert_int_equal(r->restored_at_ms, ms("2026-01-02T10:11:30Z"));
    assert_string_equal(t->current_version, "v1");
    assert_null(t->current_deployment_id);
    assert_string_equal(t->last_verified_version, "v1");
    assert_int_equal(t->n_rollbacks, 1);
    assert_int_equal(t->n_rollbacks_succeeded, 1);
    all = dq_fold_rollbacks(f, &n);
    assert_int_equal(n, 1);
    assert_ptr_equal(all[0], r);

    /* a rollback that starts without a request still counts as one */
    put(f, 1, 7, DQ_EV_ROLLBACK_STARTED, NULL, "api", "prod", NULL, "2026-01-03T10:00:00Z", 4,
        "{\"to_version\":\"v0\",\"method\":\"redeploy\"}");
    put(f, 1, 8, DQ_EV_ROLLBACK_FAILED, NULL, "api", "prod", NULL, "2026-01-03T10:01:00Z", 4,
        "{\"reason\":\"provider down\"}");
    assert_int_equal(t->n_rollbacks, 2);
    assert_int_equal(t->last_rollback->status, DQ_ROLLBACK_FAILED);
    assert_string_equal(t->last_rollback->to_version, "v0");
    assert_string_equal(t->current_version, "v1");
    dq_fold_free(f);
}

/* Two targets in two partitions: the order across partitions must not matter.
 * interleave: p1, p0, p1, p0, ... instead of all of p0 then all of p1. drop_last: leave out
 * web's deploy.succeeded. */
static void fold_scenario(dq_fold *f, int interleave, int drop_last)
{
    static const char *const types[] = {DQ_EV_VALIDATED, DQ_EV_STARTED, DQ_EV_SUCCEEDED};
    static const char *const times[] = {"2026-01-01T10:00:00Z", "2026-01-01T10:01:00Z",
                                        "2026-01-01T10:02:00Z"};
    int order[6][2];
    int n = 0;

    for (int i = 0; i < 6; i++) {
        int part = interleave ? 1 - i % 2 : i / 3;
        int step = interleave ? i / 2 : i % 3;

        order[n][0] = part;
        order[n][1] = step;
        n++;
    }
    for (int i = 0; i < n; i++) {
        int part = order[i][0], step = order[i][1];

        if (drop_last && part == 1 && step == 2)
            continue;
        put(f, part, step, types[step], part == 0 ? D1 : D2, part == 0 ? "api" : "web",
            "prod", "v9", times[step], step ? 3 : 0, step == 0 ? VALIDATED_DATA : NULL);
    }
}

static void test_state_hash_order_independent(void **state)
{
    (void)state;
    dq_fold *a = dq_fold_new(), *b = dq_fold_new(), *c = dq_fold_new(), *e = dq_fold_new();
    char ha[DQ_FOLD_HASH_HEX_LEN + 1], hb[DQ_FOLD_HASH_HEX_LEN + 1];
    char hc[DQ_FOLD_HASH_HEX_LEN + 1], he[DQ_FOLD_HASH_HEX_LEN + 1];
    dq_fold_totals ta, tb;

    fold_scenario(a, 0, 0);
    fold_scenario(b, 1, 0);
    fold_scenario(c, 0, 1);
    dq_fold_get_totals(a, &ta);
    dq_fold_get_totals(b, &tb);
    assert_int_equal(ta.events, 6);
    assert_int_equal(tb.events, 6);
    assert_string_equal(dq_fold_target_get(b, "web", "prod")->current_version, "v9");
    dq_fold_state_hash(a, ha);
    dq_fold_state_hash(b, hb);
    dq_fold_state_hash(c, hc);
    dq_fold_state_hash(e, he);
    assert_int_equal(strlen(ha), 64);
    assert_string_equal(ha, hb);
    assert_string_not_equal(ha, hc);
    assert_string_not_equal(ha, he);
    /* the hash of an empty fold is fixed: sha256("deployq.state/v1\n0;0;0;0;0;0;") */
    assert_string_equal(he, "8d3f87596fa82019fab67d1bffd0bbbf14a1194b99f84f17bb0563cb6f30d455");
    dq_fold_free(a);
    dq_fold_free(b);
    dq_fold_free(c);
    dq_fold_free(e);
}

static void test_unreadable_and_untargeted(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    dq_fold_totals tot;
    size_t n;

    assert_int_equal(dq_fold_apply(f, 0, 0, "{not json", 9), DQ_FOLD_UNREADABLE);
    assert_int_equal(dq_fold_apply(f, 0, 1, "", 0), DQ_FOLD_UNREADABLE);
    assert_int_equal(put(f, 0, 2, DQ_EV_REJECTED, NULL, NULL, NULL, NULL,
                         "2026-01-01T10:00:00Z", 0,
                         "{\"reasons\":[{\"code\":\"bad_json\",\"message\":\"x\"}]}"),
                     DQ_FOLD_APPLIED);
    dq_fold_get_totals(f, &tot);
    assert_int_equal(tot.events, 3);
    assert_int_equal(tot.unreadable, 2);
    assert_int_equal(tot.untargeted, 1);
    assert_int_equal(tot.targets, 0);
    assert_null(dq_fold_targets(f, &n));
    assert_int_equal(n, 0);
    dq_fold_free(f);
}

static void test_targets_sorted_and_json(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    dq_fold_target *const *ts;
    size_t n;
    cJSON *j, *st;
    char *txt;

    put(f, 0, 0, DQ_EV_SUCCEEDED, D1, "web", "staging", "w1", "2026-01-01T10:00:00Z", 2, NULL);
    put(f, 1, 0, DQ_EV_STARTED, D2, "api", "prod", "a1", "2026-01-01T10:00:00Z", 3, NULL);
    put(f, 2, 0, DQ_EV_VERIFIED, D3, "api", "dev", "d1", "2026-01-01T10:00:00Z", 1, NULL);
    ts = dq_fold_targets(f, &n);
    assert_int_equal(n, 3);
    assert_string_equal(ts[0]->key, "api/dev");
    assert_string_equal(ts[1]->key, "api/prod");
    assert_string_equal(ts[2]->key, "web/staging");

    j = dq_fold_target_json(ts[1]);
    txt = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "in_flight"));
    assert_string_equal(txt, "{\"deployment_id\":\"" D2 "\",\"version\":\"a1\","
                             "\"step\":\"deploy.started\",\"outcome\":\"running\","
                             "\"since\":\"2026-01-01T10:00:00.000Z\","
                             "\"last_at\":\"2026-01-01T10:00:00.000Z\"}");
    free(txt);
    cJSON_Delete(j);

    st = dq_fold_state_json(f);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(st, "targets")), 3);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(st, "totals"), "events")->valueint,
                     3);
    assert_int_equal(strlen(cJSON_GetObjectItem(st, "state_hash")->valuestring), 64);
    cJSON_Delete(st);

    j = dq_fold_deployment_json(dq_fold_deployment_get(f, D1), 1);
    assert_string_equal(cJSON_GetObjectItem(j, "outcome")->valuestring, "succeeded");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "timeline")), 1);
    cJSON_Delete(j);
    dq_fold_free(f);
}

/* A timeout whose cancel was not confirmed leaves the target's outcome unknown until a
 * deploy or a rollback of it succeeds; a known failure does not. */
static void test_outcome_unknown(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    const dq_fold_target *t;
    char before[DQ_FOLD_HASH_HEX_LEN + 1], after[DQ_FOLD_HASH_HEX_LEN + 1];

    put(f, 0, 0, DQ_EV_SUCCEEDED, D1, "api", "prod", "v1", "2026-01-01T10:00:00Z", 1, NULL);
    dq_fold_state_hash(f, before);
    put(f, 0, 1, DQ_EV_FAILED, D2, "api", "prod", "v2", "2026-01-01T11:00:00Z", 2,
        "{\"reason\":\"timeout\",\"cancel\":\"unconfirmed\",\"outcome\":\"unknown\"}");
    t = dq_fold_target_get(f, "api", "prod");
    assert_string_equal(t->unknown_deployment_id, D2);
    assert_string_equal(t->unknown_version, "v2");
    assert_int_equal(t->unknown_since_ms, ms("2026-01-01T11:00:00Z"));
    assert_string_equal(t->current_version, "v1"); /* what was last known */
    dq_fold_state_hash(f, after);
    assert_string_not_equal(before, after);
    cJSON *j = dq_fold_target_json(t);
    const cJSON *u = cJSON_GetObjectItem(j, "outcome_unknown");
    assert_non_null(u);
    assert_string_equal(cJSON_GetObjectItem(u, "deployment_id")->valuestring, D2);
    assert_string_equal(cJSON_GetObjectItem(u, "since")->valuestring, "2026-01-01T11:00:00.000Z");
    cJSON_Delete(j);

    /* a later known failure leaves it unknown; a success makes it known again */
    put(f, 0, 2, DQ_EV_FAILED, D3, "api", "prod", "v3", "2026-01-01T12:00:00Z", 3,
        "{\"reason\":\"timeout\",\"cancel\":\"confirmed\"}");
    assert_string_equal(t->unknown_deployment_id, D2);
    put(f, 0, 3, DQ_EV_SUCCEEDED, D3, "api", "prod", "v3", "2026-01-01T12:30:00Z", 4, NULL);
    assert_null(t->unknown_deployment_id);
    assert_null(t->unknown_version);
    j = dq_fold_target_json(t);
    assert_null(cJSON_GetObjectItem(j, "outcome_unknown"));
    cJSON_Delete(j);

    /* a rollback that succeeded does the same */
    put(f, 0, 4, DQ_EV_FAILED, D1, "api", "prod", "v4", "2026-01-01T13:00:00Z", 5,
        "{\"reason\":\"timeout\",\"cancel\":\"off\",\"outcome\":\"unknown\"}");
    assert_non_null(t->unknown_deployment_id);
    put(f, 0, 5, DQ_EV_ROLLBACK_SUCCEEDED, D1, "api", "prod", "v4", "2026-01-01T13:05:00Z", 6,
        "{\"to_version\":\"v3\"}");
    assert_null(t->unknown_deployment_id);
    dq_fold_free(f);
}

/* deploy.succeeded says whether a health watch follows (data.watch): false concludes the
 * deployment there; true, or no field (older executors), keeps it in flight. */
static void test_succeeded_watch_field(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    const dq_fold_target *t;
    const dq_fold_deployment *d;
    cJSON *j;

    put(f, 0, 0, DQ_EV_VALIDATED, D1, "api", "dev", "v1", "2026-01-01T10:00:00Z", 0, VALIDATED_DATA);
    put(f, 0, 1, DQ_EV_SUCCEEDED, D1, "api", "dev", "v1", "2026-01-01T10:01:00Z", 3,
        "{\"provider\":\"p\",\"provider_deployment_id\":\"x\",\"duration_ms\":5,\"watch\":false}");
    t = dq_fold_target_get(f, "api", "dev");
    assert_non_null(t);
    assert_null(t->inflight); /* concluded: not "in flight · deployed" forever */
    assert_string_equal(t->current_version, "v1");
    d = dq_fold_deployment_get(f, D1);
    assert_int_equal(d->outcome, DQ_DEPLOY_SUCCEEDED);
    assert_int_equal(d->unwatched, 1);
    j = dq_fold_deployment_json(d, 0);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "watch")));
    cJSON_Delete(j);
    j = dq_fold_target_json(t);
    assert_null(cJSON_GetObjectItemCaseSensitive(j, "in_flight"));
    cJSON_Delete(j);

    /* watch true: in flight until verified */
    put(f, 0, 2, DQ_EV_VALIDATED, D2, "api", "dev", "v2", "2026-01-02T10:00:00Z", 0, VALIDATED_DATA);
    put(f, 0, 3, DQ_EV_SUCCEEDED, D2, "api", "dev", "v2", "2026-01-02T10:01:00Z", 4,
        "{\"provider\":\"p\",\"provider_deployment_id\":\"x\",\"duration_ms\":5,\"watch\":true}");
    assert_non_null(t->inflight);
    assert_string_equal(t->inflight->id, D2);
    assert_int_equal(dq_fold_deployment_get(f, D2)->unwatched, 0);
    put(f, 0, 4, DQ_EV_VERIFIED, D2, "api", "dev", "v2", "2026-01-02T10:10:00Z", 4, NULL);
    assert_null(t->inflight);

    /* no field (an older executor): today's behaviour, still in flight */
    put(f, 0, 5, DQ_EV_VALIDATED, D3, "api", "dev", "v3", "2026-01-03T10:00:00Z", 0, VALIDATED_DATA);
    put(f, 0, 6, DQ_EV_SUCCEEDED, D3, "api", "dev", "v3", "2026-01-03T10:01:00Z", 5,
        "{\"provider\":\"p\",\"provider_deployment_id\":\"x\",\"duration_ms\":5}");
    assert_non_null(t->inflight);
    assert_string_equal(t->inflight->id, D3);
    dq_fold_free(f);
}

/* Under `rollback: notify` the rollback worker ends the request with rollback.failed and
 * data.policy "notify": the rollback record closes as not attempted, not as a failure. */
static void test_rollback_notify_policy(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    const dq_fold_target *t;
    cJSON *j;

    put(f, 0, 0, DQ_EV_VALIDATED, D1, "api", "prod", "v1", "2026-01-01T10:00:00Z", 0, VALIDATED_DATA);
    put(f, 0, 1, DQ_EV_SUCCEEDED, D1, "api", "prod", "v1", "2026-01-01T10:01:00Z", 3,
        "{\"provider\":\"p\",\"provider_deployment_id\":\"x\",\"duration_ms\":5,\"watch\":true}");
    put(f, 0, 2, DQ_EV_ROLLBACK_REQUESTED, D1, "api", "prod", "v1", "2026-01-01T10:02:00Z", 3,
        "{\"reason\":\"health\",\"requested_by\":\"deployq-monitor\"}");
    t = dq_fold_target_get(f, "api", "prod");
    assert_int_equal(t->last_rollback->status, DQ_ROLLBACK_REQUESTED);
    put(f, 0, 3, DQ_EV_ROLLBACK_FAILED, D1, "api", "prod", "v1", "2026-01-01T10:02:01Z", 0,
        "{\"reason\":\"policy notify: nothing was rolled back; a person must decide\","
        "\"policy\":\"notify\"}");
    assert_int_equal(t->last_rollback->status, DQ_ROLLBACK_FAILED);
    assert_int_equal(t->last_rollback->not_attempted, 1);
    assert_int_equal(t->n_rollbacks_failed, 0);
    assert_null(t->inflight);
    assert_string_equal(t->current_version, "v1"); /* still serving the degraded version */
    j = dq_fold_target_json(t);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(j, "last_rollback"), "policy")->valuestring,
                        "notify");
    cJSON_Delete(j);

    /* a real failure still counts */
    put(f, 0, 4, DQ_EV_ROLLBACK_REQUESTED, D1, "api", "prod", "v1", "2026-01-01T11:00:00Z", 3,
        "{\"reason\":\"health\",\"requested_by\":\"deployq-monitor\"}");
    put(f, 0, 5, DQ_EV_ROLLBACK_FAILED, D1, "api", "prod", "v1", "2026-01-01T11:00:01Z", 3,
        "{\"reason\":\"provider down\"}");
    assert_int_equal(t->last_rollback->not_attempted, 0);
    assert_int_equal(t->n_rollbacks_failed, 1);
    dq_fold_free(f);
}

/* An approval nobody gave in time: the validator's deploy.rejected (approval_expired)
 * ends the deployment that was awaiting approval. */
static void test_approval_expired(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new();
    const dq_fold_target *t;
    const dq_fold_deployment *d;

    put(f, 0, 0, DQ_EV_AWAITING_APPROVAL, D1, "api", "prod", "v1", "2026-01-01T10:00:00Z", 0,
        "{\"approval_role\":\"approver\",\"expires_at\":\"2026-01-01T10:00:05Z\"}");
    t = dq_fold_target_get(f, "api", "prod");
    assert_non_null(t->inflight);
    assert_int_equal(t->inflight->outcome, DQ_DEPLOY_AWAITING_APPROVAL);
    put(f, 0, 1, DQ_EV_REJECTED, D1, "api", "prod", "v1", "2026-01-01T10:00:05Z", 0,
        "{\"reasons\":[{\"code\":\"approval_expired\",\"message\":\"no approver decided\"}]}");
    assert_null(t->inflight);
    d = dq_fold_deployment_get(f, D1);
    assert_int_equal(d->outcome, DQ_DEPLOY_REJECTED);
    assert_int_equal(d->rejected_at_ms, ms("2026-01-01T10:00:05Z"));
    assert_int_equal(t->n_rejected, 1);
    dq_fold_free(f);
}

/* An operator's pause and hold (target.paused/resumed/held/released) are the target's,
 * with who, why and since when; a retry's verdict names the deployment it retries. The
 * marks enter the state hash only while set (a log without them hashes as before:
 * test_scanned_records_fold_as_decoded's known hash). */
static void test_operator_marks_and_retry(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new(), *g = dq_fold_new();
    char hf[DQ_FOLD_HASH_HEX_LEN + 1], hg[DQ_FOLD_HASH_HEX_LEN + 1];
    const dq_fold_target *t;
    const dq_fold_deployment *d;
    cJSON *j;
    const char *src = "\"source\":{\"topic\":\"deployq.requests\",\"partition\":0,\"offset\":4}";
    char paused[256], held[256], resumed[256];

    snprintf(paused, sizeof paused, "{\"by\":\"op-1\",\"reason\":\"incident 42\",%s}", src);
    snprintf(held, sizeof held, "{\"by\":\"op-2\",%s}", src);
    snprintf(resumed, sizeof resumed, "{\"by\":\"op-1\",\"was_paused\":false,%s}", src);
    for (int k = 0; k < 2; k++) {
        dq_fold *x = k ? g : f;

        put(x, 0, 0, DQ_EV_VALIDATED, D1, "api", "prod", "v1", "2026-01-01T10:00:00Z", 0,
            VALIDATED_DATA);
        put(x, 0, 1, DQ_EV_FAILED, D1, "api", "prod", "v1", "2026-01-01T10:01:00Z", 1,
            "{\"reason\":\"provider_failed\"}");
        put(x, 0, 2, DQ_EV_VALIDATED, D2, "api", "prod", "v1", "2026-01-01T10:02:00Z", 0,
            "{\"key_id\":\"op-1\",\"retry_of\":\"" D1 "\",\"retry_reason\":\"provider back\"}");
        /* g: the same log with a resume where f has the pause (the same counters) */
        assert_int_equal(put(x, 0, 3, k ? DQ_EV_TARGET_RESUMED : DQ_EV_TARGET_PAUSED, NULL, "api",
                             "prod", NULL, "2026-01-01T10:03:00Z", 0, k ? resumed : paused),
                         DQ_FOLD_APPLIED);
        put(x, 0, 4, DQ_EV_TARGET_HELD, NULL, "api", "prod", NULL, "2026-01-01T10:04:00Z", 0, held);
    }
    t = dq_fold_target_get(f, "api", "prod");
    assert_string_equal(t->paused_by, "op-1");
    assert_string_equal(t->paused_reason, "incident 42");
    assert_int_equal(t->paused_since_ms, ms("2026-01-01T10:03:00Z"));
    assert_string_equal(t->held_by, "op-2");
    assert_null(t->held_reason);
    assert_int_equal(t->held_since_ms, ms("2026-01-01T10:04:00Z"));
    assert_null(dq_fold_target_get(g, "api", "prod")->paused_by);
    dq_fold_state_hash(f, hf);
    dq_fold_state_hash(g, hg);
    assert_string_not_equal(hf, hg); /* the pause is part of the state */

    d = dq_fold_deployment_get(f, D2);
    assert_string_equal(d->retry_of, D1);
    assert_null(dq_fold_deployment_get(f, D1)->retry_of);
    assert_ptr_equal(t->inflight, d);

    j = dq_fold_target_json(t);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "paused"), "by")->valuestring, "op-1");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "paused"), "reason")->valuestring,
                        "incident 42");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "paused"), "since")->valuestring,
                        "2026-01-01T10:03:00.000Z");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "held"), "by")->valuestring, "op-2");
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "held"), "reason"));
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "in_flight"), "retry_of")->valuestring, D1);
    cJSON_Delete(j);
    j = dq_fold_deployment_json(d, 0);
    assert_string_equal(cJSON_GetObjectItem(j, "retry_of")->valuestring, D1);
    cJSON_Delete(j);

    /* resume and release clear them; a refused retry keeps its link too */
    put(f, 0, 5, DQ_EV_TARGET_RESUMED, NULL, "api", "prod", NULL, "2026-01-01T10:05:00Z", 0, resumed);
    put(f, 0, 6, DQ_EV_TARGET_RELEASED, NULL, "api", "prod", NULL, "2026-01-01T10:06:00Z", 0,
        "{\"by\":\"op-2\",\"was_held\":true}");
    assert_null(t->paused_by);
    assert_null(t->paused_reason);
    assert_int_equal(t->paused_since_ms, 0);
    assert_null(t->held_by);
    j = dq_fold_target_json(t);
    assert_null(cJSON_GetObjectItem(j, "paused"));
    assert_null(cJSON_GetObjectItem(j, "held"));
    cJSON_Delete(j);
    put(f, 0, 7, DQ_EV_REJECTED, D3, "api", "prod", "v1", "2026-01-01T10:07:00Z", 0,
        "{\"retry_of\":\"" D1 "\",\"reasons\":[{\"code\":\"freeze\",\"message\":\"frozen\"}]}");
    assert_string_equal(dq_fold_deployment_get(f, D3)->retry_of, D1);
    assert_int_equal(t->n_events, 8);
    dq_fold_free(f);
    dq_fold_free(g);
}

/* ---- canary rollouts ------------------------------------------------------------------- */

#define STEP(n, w)                                                                          \
    "{\"step\":" #n ",\"steps\":4,\"weight\":" #w ",\"canary_color\":\"green\","              \
    "\"stable_color\":\"blue\",\"canary_version\":\"v2\",\"stable_version\":\"v1\","           \
    "\"router\":\"edge\",\"kind\":\"analysis\",\"hold_ms\":10000}"

/* A canary's log: two steps, a failed analysis, the abort, the executor's rollback. */
static const struct {
    const char *type, *at, *data;
} canary_log[] = {
    {DQ_EV_VALIDATED, "2026-01-01T10:00:00Z", "{\"strategy\":\"canary\"}"},
    {DQ_EV_STARTED, "2026-01-01T10:00:01Z", "{}"},
    {DQ_EV_CANARY_STEP, "2026-01-01T10:00:10Z", STEP(1, 5)},
    {DQ_EV_CANARY_ANALYSIS, "2026-01-01T10:00:20Z", "{\"step\":1,\"steps\":4,\"weight\":5,"
                                                   "\"passed\":true,\"result\":\"pass\"}"},
    {DQ_EV_CANARY_STEP, "2026-01-01T10:00:21Z", STEP(2, 25)},
    {DQ_EV_CANARY_ANALYSIS, "2026-01-01T10:00:28Z", "{\"step\":2,\"steps\":4,\"weight\":25,"
                                                   "\"passed\":false,\"result\":\"fail\"}"},
    {DQ_EV_CANARY_ABORTED, "2026-01-01T10:00:29Z",
     "{\"step\":2,\"weight\":25,\"max_weight\":25,\"reason\":\"analysis\",\"detail\":\"error rate "
     "20%\",\"canary_color\":\"green\",\"stable_color\":\"blue\",\"weight_restored\":true,"
     "\"first_bad_at\":\"2026-01-01T10:00:23Z\",\"restored_at\":\"2026-01-01T10:00:29Z\"}"},
    {DQ_EV_ROLLBACK_STARTED, "2026-01-01T10:00:29Z",
     "{\"method\":\"canary_abort\",\"requested_by\":\"deployq-executor\",\"reason\":"
     "\"canary_aborted\",\"from_version\":\"v2\",\"to_version\":\"v1\",\"detected_at\":"
     "\"2026-01-01T10:00:23Z\"}"},
    {DQ_EV_ROLLBACK_SUCCEEDED, "2026-01-01T10:00:30Z",
     "{\"method\":\"canary_abort\",\"requested_by\":\"deployq-executor\",\"reason\":"
     "\"canary_aborted\",\"from_version\":\"v2\",\"to_version\":\"v1\",\"detected_at\":"
     "\"2026-01-01T10:00:23Z\",\"restored_at\":\"2026-01-01T10:00:29Z\",\"mttr_ms\":6000}"},
    {DQ_EV_FAILED, "2026-01-01T10:00:31Z", "{\"reason\":\"canary_aborted\"}"},
};

/* The canary's log folded up to at (every event whose time is at or before it, as
 * `deployq replay --at` does), after v1 went live on blue. */
static dq_fold *canary_fold_until(const char *at)
{
    dq_fold *f = dq_fold_new();
    int64_t until = ms(at);

    assert_non_null(f);
    put(f, 0, 0, DQ_EV_SUCCEEDED, D1, "web", "prod", "v1", "2026-01-01T09:00:00Z", 1, NULL);
    for (size_t i = 0; i < sizeof canary_log / sizeof canary_log[0]; i++)
        if (ms(canary_log[i].at) <= until)
            assert_int_equal(put(f, 0, 1 + (int64_t)i, canary_log[i].type, D2, "web", "prod", "v2",
                                 canary_log[i].at, 2, canary_log[i].data),
                             DQ_FOLD_APPLIED);
    return f;
}

static void test_canary_steps_and_replay_at(void **state)
{
    (void)state;
    dq_fold *f;
    const dq_fold_target *t;
    char h0[DQ_FOLD_HASH_HEX_LEN + 1], h1[DQ_FOLD_HASH_HEX_LEN + 1];
    cJSON *j, *c;

    /* before the first step: no canary, and the hash of a log without canary events */
    f = canary_fold_until("2026-01-01T10:00:09Z");
    t = dq_fold_target_get(f, "web", "prod");
    assert_int_equal(t->canary.status, DQ_CANARY_NONE);
    j = dq_fold_target_json(t);
    assert_null(cJSON_GetObjectItem(j, "canary"));
    cJSON_Delete(j);
    dq_fold_state_hash(f, h0);
    dq_fold_free(f);

    /* during step 1: 5% */
    f = canary_fold_until("2026-01-01T10:00:15Z");
    t = dq_fold_target_get(f, "web", "prod");
    assert_int_equal(t->canary.status, DQ_CANARY_RUNNING);
    assert_int_equal(t->canary.step, 1);
    assert_int_equal(t->canary.steps, 4);
    assert_int_equal(t->canary.weight, 5);
    assert_string_equal(t->canary.deployment_id, D2);
    assert_string_equal(t->canary.version, "v2");
    assert_string_equal(t->canary.canary_color, "green");
    assert_string_equal(t->canary.stable_color, "blue");
    assert_int_equal(t->canary.since_ms, ms("2026-01-01T10:00:10Z"));
    assert_null(t->canary.reason);
    assert_int_equal(dq_fold_deployment_get(f, D2)->canary_max_weight, 5);
    dq_fold_state_hash(f, h1);
    assert_string_not_equal(h0, h1); /* the canary is part of the state */
    dq_fold_free(f);

    /* during step 2, after its analysis failed but before the abort: 25%, still running */
    f = canary_fold_until("2026-01-01T10:00:28Z");
    t = dq_fold_target_get(f, "web", "prod");
    assert_int_equal(t->canary.status, DQ_CANARY_RUNNING);
    assert_int_equal(t->canary.step, 2);
    assert_int_equal(t->canary.weight, 25);
    assert_int_equal(t->canary.since_ms, ms("2026-01-01T10:00:21Z"));
    assert_string_equal(t->inflight->step, "canary.analysis");
    j = dq_fold_target_json(t);
    c = cJSON_GetObjectItem(j, "canary");
    assert_string_equal(cJSON_GetObjectItem(c, "status")->valuestring, "running");
    assert_int_equal(cJSON_GetObjectItem(c, "step")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(c, "steps")->valueint, 4);
    assert_int_equal(cJSON_GetObjectItem(c, "weight")->valueint, 25);
    assert_string_equal(cJSON_GetObjectItem(c, "canary_color")->valuestring, "green");
    assert_string_equal(cJSON_GetObjectItem(c, "since")->valuestring, "2026-01-01T10:00:21.000Z");
    assert_string_equal(cJSON_GetObjectItem(c, "deployment_id")->valuestring, D2);
    cJSON_Delete(j);
    dq_fold_free(f);

    /* the whole log: aborted at 25% */
    f = canary_fold_until("2026-01-02T00:00:00Z");
    t = dq_fold_target_get(f, "web", "prod");
    assert_int_equal(t->canary.status, DQ_CANARY_ABORTED);
    assert_int_equal(t->canary.weight, 25);
    assert_string_equal(t->canary.reason, "analysis");
    assert_string_equal(t->canary.detail, "error rate 20%");
    assert_int_equal(t->canary.since_ms, ms("2026-01-01T10:00:29Z"));
    assert_int_equal(dq_fold_deployment_get(f, D2)->canary_max_weight, 25);
    assert_int_equal(dq_fold_deployment_get(f, D2)->canary_aborted, 1);
    assert_int_equal(dq_fold_deployment_get(f, D2)->outcome, DQ_DEPLOY_FAILED);
    assert_int_equal(dq_fold_deployment_get(f, D1)->canary_max_weight, 0);
    j = dq_fold_deployment_json(dq_fold_deployment_get(f, D2), 0);
    c = cJSON_GetObjectItem(j, "canary");
    assert_int_equal(cJSON_GetObjectItem(c, "max_weight")->valueint, 25);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(c, "aborted")));
    cJSON_Delete(j);
    dq_fold_free(f);
}

/* The executor's rollback after an abort: no rollback.requested, so rollback.started says who
 * (automatic: deployq-executor), why, and since when (the first bad sample). */
static void test_canary_abort_rollback(void **state)
{
    (void)state;
    dq_fold *f = canary_fold_until("2026-01-02T00:00:00Z");
    const dq_fold_target *t = dq_fold_target_get(f, "web", "prod");
    const dq_fold_rollback *r = t->last_rollback;

    assert_non_null(r);
    assert_int_equal(r->status, DQ_ROLLBACK_SUCCEEDED);
    assert_string_equal(r->requested_by, "deployq-executor");
    assert_string_equal(r->reason, "canary_aborted");
    assert_string_equal(r->from_version, "v2");
    assert_string_equal(r->to_version, "v1");
    assert_int_equal(r->requested_at_ms, 0);
    assert_int_equal(r->detected_at_ms, ms("2026-01-01T10:00:23Z"));
    assert_int_equal(r->started_at_ms, ms("2026-01-01T10:00:29Z"));
    assert_int_equal(r->restored_at_ms, ms("2026-01-01T10:00:29Z"));
    assert_string_equal(t->current_version, "v1");
    assert_int_equal(t->n_rollbacks, 1);
    dq_fold_free(f);
}

/* A promoted canary, the first deploy of a target (one step at 100, no stable color), a new
 * canary replacing the last one; the decoded path folds canary events as the scanned one. */
static void test_canary_promoted_and_next(void **state)
{
    (void)state;
    dq_fold *f = dq_fold_new(), *g = dq_fold_new();
    const dq_fold_target *t;
    cJSON *a, *b;

    put(f, 0, 0, DQ_EV_CANARY_STEP, D1, "web", "prod", "v1", "2026-01-01T10:00:00Z", 1,
        "{\"step\":1,\"steps\":1,\"weight\":100,\"canary_color\":\"blue\",\"router\":\"edge\","
        "\"kind\":\"pause\",\"hold_ms\":0}");
    put(f, 0, 1, DQ_EV_CANARY_PROMOTED, D1, "web", "prod", "v1", "2026-01-01T10:00:01Z", 1,
        "{\"steps\":1,\"canary_color\":\"blue\",\"duration_ms\":1000}");
    t = dq_fold_target_get(f, "web", "prod");
    assert_int_equal(t->canary.status, DQ_CANARY_PROMOTED);
    assert_int_equal(t->canary.weight, 100);
    assert_int_equal(t->canary.step, 1);
    assert_null(t->canary.stable_color);
    assert_int_equal(dq_fold_deployment_get(f, D1)->canary_max_weight, 100);
    assert_int_equal(dq_fold_deployment_get(f, D1)->canary_aborted, 0);

    /* the next deployment's first step starts a new canary */
    put(f, 0, 2, DQ_EV_CANARY_ABORTED, D2, "web", "prod", "v2", "2026-01-01T11:00:00Z", 2,
        "{\"step\":1,\"weight\":5,\"max_weight\":5,\"reason\":\"probe\",\"canary_color\":\"green\","
        "\"weight_restored\":true}");
    assert_int_equal(t->canary.status, DQ_CANARY_ABORTED);
    assert_string_equal(t->canary.deployment_id, D2);
    assert_string_equal(t->canary.version, "v2");
    assert_string_equal(t->canary.canary_color, "green");
    assert_null(t->canary.stable_color); /* nothing carried over from D1's */
    assert_null(t->canary.detail);
    assert_int_equal(t->canary.steps, 0);

    /* the decode path (dq_fold_apply_event) gives the same target */
    for (int k = 0; k < 3; k++) {
        const char *types[] = {DQ_EV_CANARY_STEP, DQ_EV_CANARY_PROMOTED, DQ_EV_CANARY_ABORTED};
        const char *data[] = {"{\"step\":1,\"steps\":1,\"weight\":100,\"canary_color\":\"blue\","
                              "\"router\":\"edge\",\"kind\":\"pause\",\"hold_ms\":0}",
                              "{\"steps\":1,\"canary_color\":\"blue\",\"duration_ms\":1000}",
                              "{\"step\":1,\"weight\":5,\"max_weight\":5,\"reason\":\"probe\","
                              "\"canary_color\":\"green\",\"weight_restored\":true}"};
        const char *at[] = {"2026-01-01T10:00:00Z", "2026-01-01T10:00:01Z", "2026-01-01T11:00:00Z"};
        dq_event *ev = dq_event_new(types[k], k < 2 ? D1 : D2, "web", "prod", k < 2 ? "v1" : "v2",
                                    "test@host/1");
        char name[32];

        snprintf(name, sizeof name, "0/%d", k);
        dq_event_set_id_from(ev, name);
        ev->at_ms = ms(at[k]);
        ev->fence = k < 2 ? 1 : 2;
        cJSON_Delete(ev->data);
        ev->data = cJSON_Parse(data[k]);
        assert_int_equal(dq_fold_apply_event(g, ev, 0, k), DQ_FOLD_APPLIED);
        dq_event_free(ev);
    }
    a = dq_fold_target_json(t);
    b = dq_fold_target_json(dq_fold_target_get(g, "web", "prod"));
    assert_true(cJSON_Compare(a, b, 1));
    cJSON_Delete(a);
    cJSON_Delete(b);
    dq_fold_free(f);
    dq_fold_free(g);
}

/* ---- the scanned path folds as the decoded one ---------------------------------------- */

#define ENV(type, dep, svc, at, fence, data)                                               \
    "{\"schema\":\"deployq.event/v1\",\"id\":\"" dep "\",\"type\":\"" type                  \
    "\",\"deployment_id\":\"" dep "\",\"service\":\"" svc "\",\"environment\":\"prod\","     \
    "\"version\":\"v-" type "\",\"at\":\"" at "\",\"actor\":\"t@h/1\",\"fence\":" #fence        \
    ",\"data\":" data "}"

/* Every type the fold reads, with the data members it reads; and records the scan leaves
 * to the decode: escapes, a BOM, pretty-printing, a duplicate, not JSON. */
static const char *const scan_log[] = {
    ENV("deploy.validated", D1, "api", "2026-01-01T10:00:00.000Z", 0,
        "{\"commit_at\":\"2026-01-01T09:00:00Z\"}"),
    ENV("deploy.started", D1, "api", "2026-01-01T10:00:01.000Z", 3, "{}"),
    ENV("deploy.succeeded", D1, "api", "2026-01-01T10:00:02.000Z", 3, "{\"watch\":true}"),
    ENV("monitor.started", D1, "api", "2026-01-01T10:00:03.000Z", 3, "{}"),
    ENV("health.degraded", D1, "api", "2026-01-01T10:00:04.000Z", 3, "{}"),
    ENV("rollback.requested", D1, "api", "2026-01-01T10:00:05.000Z", 3,
        "{\"reason\":\"5xx\",\"requested_by\":\"monitor\",\"to_version\":\"v0\","
        "\"evidence\":{\"first_failure_at\":\"2026-01-01T10:00:03.500Z\",\"errors\":[1,2]}}"),
    ENV("rollback.started", D1, "api", "2026-01-01T10:00:06.000Z", 3, "{\"from_version\":\"v9\"}"),
    ENV("rollback.succeeded", D1, "api", "2026-01-01T10:00:07.000Z", 3,
        "{\"restored_at\":\"2026-01-01T10:00:06.500Z\"}"),
    ENV("notification.sent", D1, "api", "2026-01-01T10:00:08.000Z", 3, "{}"),
    ENV("deploy.started", D1, "api", "2026-01-01T10:00:09.000Z", 2, "{}"), /* stale fence */
    ENV("deploy.awaiting_approval", D2, "web", "2026-01-01T11:00:00.000Z", 0, "{}"),
    ENV("deploy.rejected", D2, "web", "2026-01-01T11:00:01.000Z", 0, "{}"),
    ENV("deploy.validated", D3, "web", "2026-01-01T12:00:00.000Z", 0, "{}"),
    ENV("deploy.failed", D3, "web", "2026-01-01T12:00:01.000Z", 5, "{\"outcome\":\"unknown\"}"),
    ENV("rollback.failed", D3, "web", "2026-01-01T12:00:02.000Z", 5, "{\"policy\":\"notify\"}"),
    ENV("traffic.switched", D3, "web", "2026-01-01T12:00:03.000Z", 5, "{}"),
    ENV("x.unknown", D3, "web", "2026-01-01T12:00:04.000Z", 5, "{}"),
    ENV("deploy.succeeded", D3, "db", "2026-01-01T13:00:00.000Z", 1, "{\"watch\":false}"),
    ENV("deploy.verified", D3, "db", "2026-01-01T13:00:01.000Z", 1, "{}"),
    /* left to the decode */
    ENV("deploy.verified", D1, "ap\\u0069", "2026-01-01T14:00:00.000Z", 4, "{}"),
    "\xef\xbb\xbf" ENV("deploy.started", D2, "db", "2026-01-01T14:00:01.000Z", 1, "{}"),
    "{\n  \"schema\": \"deployq.event/v1\",\n  \"id\": \"" D2 "\",\n  \"type\": "
    "\"deploy.failed\",\n  \"service\": \"db\",\n  \"environment\": \"prod\",\n  \"at\": "
    "\"2026-01-01T14:00:02.000Z\",\n  \"fence\": 1e0,\n  \"data\": {}\n}",
    ENV("deploy.started", D2, "db", "2026-01-01T14:00:03.000Z", 1, "{\"a\":1,\"a\":2}"),
    "not an event",
    "{\"schema\":\"deployq.event/v1\",\"id\":\"" D1 "\",\"type\":\"deploy.started\","
    "\"at\":\"2026-01-01T15:00:00.000Z\",\"fence\":0,\"data\":{}}", /* untargeted */
};

static char *state_text(dq_fold *f)
{
    cJSON *j = dq_fold_state_json(f);
    size_t n;
    dq_fold_deployment *const *ds = dq_fold_deployments(f, &n);
    cJSON *arr = cJSON_AddArrayToObject(j, "deployments");
    char *txt;

    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, dq_fold_deployment_json(ds[i], 0));
    txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return txt;
}

static void test_scanned_records_fold_as_decoded(void **state)
{
    (void)state;
    dq_fold *scanned = dq_fold_new(), *decoded = dq_fold_new(), *lean = dq_fold_new();
    char hs[DQ_FOLD_HASH_HEX_LEN + 1], hd[DQ_FOLD_HASH_HEX_LEN + 1], hl[DQ_FOLD_HASH_HEX_LEN + 1];
    char *ts, *td, *tl;
    size_t n, n_scanned = 0;

    dq_fold_set_timelines(lean, 0);
    for (size_t i = 0; i < sizeof scan_log / sizeof scan_log[0]; i++) {
        const char *rec = scan_log[i];
        size_t len = strlen(rec);
        dq_event_view v;
        dq_event *ev = dq_event_decode(rec, len, NULL, 0);
        int rs = dq_fold_apply(scanned, 0, (int64_t)i, rec, len);

        assert_int_equal(dq_fold_apply(lean, 0, (int64_t)i, rec, len), rs);
        /* the way before the scan: decode, then fold the event */
        assert_int_equal(ev ? dq_fold_apply_event(decoded, ev, 0, (int64_t)i)
                            : dq_fold_apply(decoded, 0, (int64_t)i, rec, len),
                         rs);
        dq_event_free(ev);
        n_scanned += (size_t)dq_event_scan(rec, len, &v);
    }
    assert_int_equal(n_scanned, 20); /* all but the five left to the decode */

    ts = state_text(scanned);
    td = state_text(decoded);
    tl = state_text(lean);
    assert_string_equal(ts, td);
    assert_string_equal(tl, td);
    dq_fold_state_hash(scanned, hs);
    dq_fold_state_hash(decoded, hd);
    dq_fold_state_hash(lean, hl);
    assert_string_equal(hs, hd);
    assert_string_equal(hl, hd);
    /* the hash deployq 6c4fa08 (before the scan) printed for this log */
    assert_string_equal(hd, "43afc5c16953a38cc03099d7676ac14e5960a0a1ae5a9ea4081a688a84ce37cd");

    /* timelines: the same with the scan, none when turned off */
    dq_fold_deployment *const *a = dq_fold_deployments(scanned, &n);
    dq_fold_deployment *const *b = dq_fold_deployments(decoded, &n);
    dq_fold_deployment *const *c = dq_fold_deployments(lean, &n);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        cJSON *ja = dq_fold_deployment_json(a[i], 1), *jb = dq_fold_deployment_json(b[i], 1);

        assert_true(a[i]->n_timeline > 0);
        assert_true(cJSON_Compare(ja, jb, 1));
        assert_int_equal(c[i]->n_timeline, 0);
        cJSON_Delete(ja);
        cJSON_Delete(jb);
    }
    free(ts);
    free(td);
    free(tl);
    dq_fold_free(scanned);
    dq_fold_free(decoded);
    dq_fold_free(lean);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deploy_lifecycle),
        cmocka_unit_test(test_stale_fence_flagged_not_applied),
        cmocka_unit_test(test_rollback_with_evidence),
        cmocka_unit_test(test_state_hash_order_independent),
        cmocka_unit_test(test_unreadable_and_untargeted),
        cmocka_unit_test(test_targets_sorted_and_json),
        cmocka_unit_test(test_outcome_unknown),
        cmocka_unit_test(test_succeeded_watch_field),
        cmocka_unit_test(test_rollback_notify_policy),
        cmocka_unit_test(test_approval_expired),
        cmocka_unit_test(test_operator_marks_and_retry),
        cmocka_unit_test(test_canary_steps_and_replay_at),
        cmocka_unit_test(test_canary_abort_rollback),
        cmocka_unit_test(test_canary_promoted_and_next),
        cmocka_unit_test(test_scanned_records_fold_as_decoded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
