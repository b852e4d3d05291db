/*
 * main.c - deployq-executor: consumes deploy.validated from deployq.events, takes the
 * target's fenced lock, runs the target's provider chain (common/domain/execute.c) and emits
 * deploy.started / provider.failed / deploy.succeeded / deploy.failed.
 *
 * The consumer loop never runs a deploy itself: it hands each deploy.validated to the
 * queue of its target and keeps polling (so the group membership survives deploys that
 * take twenty minutes). Each target with work has one thread that runs its queue in
 * order, so a second deploy to a busy target waits its turn while other targets run in
 * parallel; across executors the Redis lock serialises a target. A message's offset is
 * stored only once its deploy reached a terminal event (DQ_DEFERRED + dq_consumer_ack),
 * so an executor that dies mid-deploy leaves the message to the next owner, which finds
 * the idempotency record and resumes polling the same provider deployment.
 *
 * That next owner comes only after Kafka's session.timeout.ms (45 s by default). Sooner,
 * within lock_ttl + executor.orphan_scan: every deploy that holds its lock is registered
 * (runlease.h), and a scanner thread of every executor adopts a registered deploy whose
 * lock expired: it queues the deploy.validated on its target like a message, with no
 * offset to acknowledge, and the normal path (lock, idempotency record) resumes it. When
 * Kafka then redelivers the message, it is acknowledged with the adopted run (still
 * queued or running here) or handled again (concluded: the same terminal event again).
 *
 * The operator's marks (opstate.h, set by the validator from `deployq pause|cancel`):
 * a paused target's thread starts nothing; its jobs stay queued in order, each told once
 * with deploy.queued, their offsets unstored (job_paused). A cancelled deployment ends
 * as deploy.failed reason cancelled: before it starts, or at the provider, where the
 * chain cancels and confirms it (dq_exec.cancel_requested, asked on each status poll).
 *
 * Blue-green and canary targets (bluegreen.h, canary.h) deploy to the idle color through
 * dq_exec's hooks; a canary's before_succeeded runs the whole rollout (steps of weight on
 * the router, analysis, abort) before deploy.succeeded, and a stopped rollout is resumed
 * like any run, from step 1.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bluegreen.h"
#include "canary.h"
#include "config.h"
#include "event.h"
#include "execute.h"
#include "json.h"
#include "kafka.h"
#include "lock.h"
#include "log.h"
#include "opstate.h"
#include "redis.h"
#include "runlease.h"
#include "util.h"
#include "worker.h"

#define SEND_TIMEOUT_MS 5000
#define RETRY_MIN_MS 200
#define RETRY_MAX_MS 5000
/* A target's thread touches 36-52 KB of stack (/proc/PID/smaps during
 * tests/bench/burst.sh; -fstack-usage agrees); 512 KB leaves room for libcurl, OpenSSL
 * and getaddrinfo. glibc's 8 MB default reserves 16 GB of address space for 2,000 targets
 * deploying at once (what is resident is the same: only touched pages count), which a
 * ulimit -v or strict overcommit refuses. */
#define TARGET_STACK_SIZE (512 * 1024)

static const char usage[] =
    "Usage: deployq-executor [options]\n"
    "\n"
    "Consume deploy.validated from deployq.events, take the target's lock and run its\n"
    "provider chain (failover when a provider is unavailable), emitting deploy.started,\n"
    "provider.failed, then deploy.succeeded or deploy.failed. Deploys to one target run one\n"
    "at a time in order; different targets run in parallel. Stops cleanly on SIGTERM/SIGINT\n"
    "(a deploy in progress is picked up again by the next executor, without a second deploy).\n"
    "A target paused with `deployq pause` starts nothing until `deployq resume`; `deployq\n"
    "cancel` drops a waiting deploy or cancels a running one at its provider.\n"
    "\n"
    DQ_WORKER_COMMON_USAGE;

typedef struct job {
    struct job *next;
    dq_event *ev; /* the deploy.validated */
    char *topic;  /* where its message is; NULL: an adopted run, no offset (guarded by mu) */
    int32_t partition;
    int64_t offset;
    int queued_told; /* deploy.queued was emitted for it (target paused); its target's thread only */
} job;

typedef struct target {
    struct target *next;
    char key[300]; /* service/environment */
    job *head, *tail; /* guarded by executor.mu; head is the job running */
    pthread_t thread;
    int joinable; /* a thread was started and not joined yet */
    int running;  /* that thread has not yet decided to exit (guarded by mu) */
    struct executor *ex;
} target;

typedef struct executor {
    dq_config *cfg;
    dq_exec_settings settings;
    dq_producer *producer;
    dq_consumer *consumer;
    dq_lock_pool *locks; /* every target's lease: one renewal thread, shared connections */
    char actor[256];
    volatile sig_atomic_t *stop;
    pthread_mutex_t mu;
    target *targets;
    uint64_t n_done; /* atomic */
    dq_metric *m_deploys, *m_failovers, *m_lock_wait; /* metrics.h, thread-safe */
} executor;

/* What a running deploy checks between steps. */
typedef struct job_ctx {
    executor *ex;
    dq_lock *lock;
    char key[300];
    dq_redis *redis;           /* the run's connection (this thread's) */
    const char *deployment_id; /* borrowed from the job */
} job_ctx;

static int not_stopped(void *ctx)
{
    executor *ex = ctx;
    return !*ex->stop;
}

static int job_continue(void *ctx)
{
    job_ctx *j = ctx;
    return !*j->ex->stop && !dq_lock_lost(j->lock);
}

/* A canary's lock_held (canary.h): this run still holds the target's lock. */
static int job_lock_held(void *ctx)
{
    job_ctx *j = ctx;
    return !dq_lock_lost(j->lock);
}

/* dq_exec.cancel_requested: `deployq cancel` marked this deployment (opstate.h). Redis
 * unreachable counts as no: the next poll asks again. */
static int job_cancel_requested(void *ctx, char *by, size_t bylen)
{
    job_ctx *j = ctx;
    dq_opmark mark;

    if (dq_cancel_get(j->redis, j->deployment_id, &mark) != 1)
        return 0;
    dq_strlcpy(by, mark.by, bylen);
    return 1;
}

/* deploy.queued for a job that waits on its paused target (once per job). 0 told, -1 not
 * (it is tried again on the next look). */
static int tell_queued(executor *ex, job *jb, const dq_opmark *mark)
{
    const dq_event *v = jb->ev;
    char key[300], name[256], err[512], *json;
    dq_event *ev;
    int rc = -1;

    dq_target_key(v->service, v->environment, key, sizeof key);
    dq_info("deploy %s of %s %s: waiting, the target is paused by %s (%s)", v->deployment_id, key, v->version,
            mark->by, mark->reason[0] ? mark->reason : "no reason given");
    ev = dq_event_new(DQ_EV_QUEUED, v->deployment_id, v->service, v->environment, v->version, ex->actor);
    if (!ev)
        return -1;
    snprintf(name, sizeof name, "%s:%s", DQ_EV_QUEUED, v->deployment_id);
    dq_event_set_id_from(ev, name);
    cJSON_AddStringToObject(ev->data, "paused_by", mark->by);
    if (mark->reason[0])
        cJSON_AddStringToObject(ev->data, "paused_reason", mark->reason);
    json = dq_event_encode(ev);
    if (json && dq_producer_send(ex->producer, ex->cfg->topic_events, key, json, strlen(json), SEND_TIMEOUT_MS,
                                 NULL, NULL, err, sizeof err) == 0)
        rc = 0;
    else
        dq_warn("deploy %s: deploy.queued not delivered: %s", v->deployment_id, json ? err : "out of memory");
    free(json);
    dq_event_free(ev);
    return rc;
}

/* `deployq pause` (opstate.h): 1 when t's head job must wait because its target is
 * paused (it has not started, and no cancel is asked: a cancel drops it through
 * dq_execute), 0 go on, -1 Redis unreachable. Every job waiting on t is told with
 * deploy.queued, once. The head keeps its place and no Kafka offset of the target's
 * jobs is stored meanwhile, so they wait in order, and a restart reads them all again,
 * in order. Only t's thread removes jobs from t, so the jobs seen here stay. */
static int job_paused(executor *ex, dq_redis *redis, target *t, job *head)
{
    const dq_event *v = head->ev;
    dq_opmark mark;
    redisReply *r;
    int rc, started;

    rc = dq_opstate_get(redis, DQ_OPSTATE_PAUSED, v->service, v->environment, &mark);
    if (rc <= 0)
        return rc;
    rc = dq_cancel_get(redis, v->deployment_id, NULL);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    /* A deploy already at a provider (or concluded) is not held back: pausing stops
     * starts, never a run in progress (cancel that instead). */
    r = dq_redis_command(redis, "EXISTS deployq:exec:%s", v->deployment_id);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    started = r->integer > 0;
    freeReplyObject(r);
    if (started)
        return 0;
    for (;;) {
        job *jb;

        pthread_mutex_lock(&ex->mu);
        for (jb = t->head; jb && jb->queued_told; jb = jb->next)
            ;
        pthread_mutex_unlock(&ex->mu);
        if (!jb || tell_queued(ex, jb, &mark) != 0)
            break;
        jb->queued_told = 1;
    }
    return 1;
}

/* The Kafka sink: keep trying (a broker outage must not lose the outcome) until the
 * event is acknowledged, or the executor stops, or the lease is gone (then the event
 * must not be emitted by us at all). */
static int kafka_sink(void *ctx, const dq_event *ev, char *err, size_t errlen)
{
    job_ctx *j = ctx;
    char *json = dq_event_encode(ev);
    int64_t backoff = RETRY_MIN_MS;
    int rc = -1;

    if (!json) {
        snprintf(err, errlen, "out of memory encoding %s", ev->type);
        return -1;
    }
    while (job_continue(j)) {
        if (dq_producer_send(j->ex->producer, j->ex->cfg->topic_events, j->key, json, strlen(json),
                             SEND_TIMEOUT_MS, NULL, NULL, err, errlen) == 0) {
            rc = 0;
            break;
        }
        dq_warn("deploy %s: %s not delivered, retrying: %s", ev->deployment_id, ev->type, err);
        dq_sleep_ms(backoff);
        backoff = backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2;
    }
    if (rc != 0 && !err[0])
        snprintf(err, errlen, "%s", *j->ex->stop ? "stopping" : "lease lost");
    free(json);
    return rc;
}

/* ---- blue-green (bluegreen.h): deploy to the idle color, probe it, move traffic ---- */

typedef struct bg_job {
    job_ctx *jc;
    dq_redis *redis;
    const dq_event *v; /* the deploy.validated */
    dq_bluegreen *bg;
    char color[DQ_BG_COLOR_LEN]; /* the idle color this deployment goes to */
    int canary;                  /* a canary (canary.h): the rollout moves the traffic */
    dq_canary cn;                /* its steps, when canary */
} bg_job;

/* dq_exec.chain_load: the idle color's provider chain. */
static int bg_chain_load(void *ctx, dq_provider ***providers, size_t *n, char *err, size_t errlen)
{
    bg_job *b = ctx;
    const dq_event *v = b->v;

    if (b->canary && dq_canary_load(b->jc->ex->cfg, v->service, v->environment, &b->cn, err, errlen) != 0)
        return -1;
    if (!b->bg)
        b->bg = dq_bg_load(b->jc->ex->cfg, v->service, v->environment, err, errlen);
    if (!b->bg)
        return -1;
    if (dq_bg_pick_idle(b->redis, v->service, v->environment, v->deployment_id, b->color, err,
                        errlen) != 0)
        return -1;
    dq_info("deploy %s of %s: %s, to the idle color %s", v->deployment_id, b->jc->key,
            b->canary ? "canary" : "blue-green", b->color);
    return dq_bg_color_chain(b->bg, b->color, providers, n, err, errlen);
}

/* Traffic is on b->color: record it and emit traffic.switched (st: the state before).
 * 0, or 1 to stop and retry (Redis, the broker). */
static int bg_went_live(bg_job *b, const dq_bg_state *st)
{
    const dq_event *v = b->v;
    dq_event *ev;
    char seed[128], err[512];
    int rc;

    if (dq_bg_set_live(b->redis, v->service, v->environment, b->color, v->version, err,
                       sizeof err) != 0) {
        dq_warn("deploy %s: traffic moved to %s but not recorded: %s; will retry",
                v->deployment_id, b->color, err);
        return 1;
    }
    snprintf(seed, sizeof seed, "%s:traffic.switched:%s", v->deployment_id, b->color);
    ev = dq_bg_switched_event(v->deployment_id, v->service, v->environment, v->version,
                              b->jc->ex->actor, dq_lock_fence(b->jc->lock),
                              strcmp(st->live, b->color) == 0 ? dq_bg_other(b->color) : st->live,
                              b->color, dq_bg_router_name(b->bg), seed);
    rc = ev && kafka_sink(b->jc, ev, err, sizeof err) == 0 ? 0 : 1;
    dq_event_free(ev);
    if (rc == 0)
        dq_info("deploy %s: traffic of %s moved to %s (router %s)", v->deployment_id, b->jc->key,
                b->color, dq_bg_router_name(b->bg));
    return rc;
}

/* dq_exec.before_succeeded: probe the idle color, switch the router, record it, and
 * emit traffic.switched, all before deploy.succeeded. */
static int bg_before_succeeded(void *ctx, const dq_chain_result *res, char *reason, size_t reasonlen,
                               char *detail, size_t len)
{
    bg_job *b = ctx;
    const dq_event *v = b->v;
    dq_bg_state st;
    char err[512];
    int rc;

    (void)res;
    (void)reason;
    (void)reasonlen;
    rc = dq_bg_probe(b->bg, b->color, job_continue, b->jc, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            snprintf(detail, len, "blue-green: the idle color %s failed its probe, traffic not moved: %s",
                     b->color, err);
        return rc;
    }
    if (dq_bg_state_read(b->redis, v->service, v->environment, &st, err, sizeof err) != 0) {
        dq_warn("deploy %s: %s; will retry", v->deployment_id, err);
        return 1;
    }
    if (dq_bg_switch(b->bg, b->color, dq_lock_fence(b->jc->lock), err, sizeof err) != 0) {
        snprintf(detail, len, "blue-green: %s is healthy but traffic was not moved: %s", b->color, err);
        return -1;
    }
    return bg_went_live(b, &st);
}

/* dq_exec.before_succeeded of a canary (canary.h): probe the idle color, walk the steps,
 * and once promoted record the color as live and emit traffic.switched, all before
 * deploy.succeeded. An aborted rollout ends the deploy as deploy.failed reason
 * canary_aborted (cancelled for a cancel); a stopped one is resumed later from step 1. */
static int canary_before_succeeded(void *ctx, const dq_chain_result *res, char *reason,
                                   size_t reasonlen, char *detail, size_t len)
{
    bg_job *b = ctx;
    const dq_event *v = b->v;
    dq_canary_rollout ro;
    dq_canary_outcome out;
    dq_bg_state st;
    char err[512];
    int rc;

    (void)res;
    rc = dq_bg_probe(b->bg, b->color, job_continue, b->jc, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            snprintf(detail, len, "canary: the idle color %s failed its probe, traffic not moved: %s",
                     b->color, err);
        return rc;
    }
    if (dq_bg_state_read(b->redis, v->service, v->environment, &st, err, sizeof err) != 0) {
        dq_warn("deploy %s: %s; will retry", v->deployment_id, err);
        return 1;
    }
    if (strcmp(st.live, b->color) == 0) {
        /* an earlier run promoted it and stopped before its outcome: traffic stays */
        int w[2] = {strcmp(b->color, "blue") == 0 ? 100 : 0, strcmp(b->color, "green") == 0 ? 100 : 0};

        dq_info("deploy %s: %s was promoted by an earlier run", v->deployment_id, b->color);
        if (dq_bg_set_weights(b->bg, w, dq_lock_fence(b->jc->lock), err, sizeof err) != 0) {
            snprintf(detail, len, "canary: %s was promoted but the router does not say so: %s", b->color, err);
            return -1;
        }
        return bg_went_live(b, &st);
    }
    memset(&ro, 0, sizeof ro);
    ro.canary = &b->cn;
    ro.bg = b->bg;
    ro.deployment_id = v->deployment_id;
    ro.service = v->service;
    ro.environment = v->environment;
    ro.actor = b->jc->ex->actor;
    ro.fence = dq_lock_fence(b->jc->lock);
    ro.canary_color = b->color;
    ro.stable_color = st.live;
    ro.canary_version = v->version;
    ro.stable_version = st.live[0] ? dq_bg_state_version(&st, st.live) : NULL;
    ro.sink = kafka_sink;
    ro.sink_ctx = b->jc;
    ro.should_continue = job_continue;
    ro.cancel_requested = job_cancel_requested;
    ro.lock_held = job_lock_held;
    ro.ctx = b->jc;
    switch (dq_canary_run(&ro, &out)) {
    case DQ_CANARY_PROMOTED:
        return bg_went_live(b, &st);
    case DQ_CANARY_ABORTED:
        if (!st.live[0]) /* a first deploy: nothing served, the router would not take it */
            snprintf(detail, len, "canary: the first deploy's color %s could not take the traffic: %s", b->color,
                     out.detail);
        else
            snprintf(detail, len, "canary: aborted at step %d (%d%% of traffic): %s: %s; %s", out.step,
                     out.weight, out.reason, out.detail,
                     out.weight_restored ? "the stable version has all traffic again"
                                         : "the router did NOT confirm the canary's weight 0");
        if (st.live[0])
            snprintf(reason, reasonlen, "%s", strcmp(out.reason, "cancelled") == 0 ? "cancelled" : "canary_aborted");
        return -1;
    case DQ_CANARY_STOPPED:
    default:
        dq_warn("deploy %s: canary rollout stopped at step %d (%s); it restarts at step 1 when resumed",
                v->deployment_id, out.step, out.detail);
        return 1;
    }
}

/* ---- end of blue-green ---- */

/* One attempt at a job. 1 when it reached its terminal event (the message may be
 * acknowledged), 0 when it must be tried again (or left to the next owner on stop), 2
 * when its target is paused (job_paused: look again shortly). */
static int run_job(executor *ex, dq_redis **redis, target *t, job *jb)
{
    const dq_event *v = jb->ev;
    job_ctx jc = {.ex = ex};
    dq_exec x;
    int64_t lock_t0;
    dq_provider_request req = {.deployment_id = v->deployment_id, .service = v->service,
                               .environment = v->environment, .version = v->version};
    dq_exec_outcome out;
    dq_exec_status st;
    char err[1024];
    bg_job bgj = {.jc = &jc, .v = v}; /* blue-green only */

    dq_target_key(v->service, v->environment, jc.key, sizeof jc.key);
    if (!*redis) {
        *redis = dq_redis_connect(ex->cfg->redis_url, ex->cfg->redis_timeout_ms, err, sizeof err);
        if (!*redis) {
            dq_warn("deploy %s: redis: %s; will retry", v->deployment_id, err);
            return 0;
        }
    }
    switch (job_paused(ex, *redis, t, jb)) {
    case 1:
        return 2;
    case -1:
        dq_warn("deploy %s: redis %s unavailable (%s) to read whether the target is paused; will retry",
                v->deployment_id, dq_redis_where(*redis), dq_redis_errstr(*redis));
        return 0;
    default:
        break;
    }
    jc.redis = *redis;
    jc.deployment_id = v->deployment_id;
    /* Waits as long as the target is busy: queued, in order, never dropped. */
    lock_t0 = dq_now_ms();
    if (dq_lock_pool_acquire(ex->locks, v->service, v->environment, ex->settings.lock_ttl_ms, -1,
                             not_stopped, ex, &jc.lock, err, sizeof err) != DQ_LOCK_TAKEN)
        return 0;
    {
        const char *tv[] = {v->service, v->environment};

        dq_metric_observe(ex->m_lock_wait, tv, (double)(dq_now_ms() - lock_t0) / 1000.0);
    }
    dq_info("deploy %s of %s %s: lock taken (fence %lld)", v->deployment_id, jc.key, v->version,
            (long long)dq_lock_fence(jc.lock));
    /* From here, if this process dies, another executor adopts the run once the lock
     * expired (runlease.h) instead of waiting for Kafka's rebalance. */
    {
        char *json = dq_event_encode(v);

        if (!json || dq_runlease_register(*redis, DQ_RUNLEASE_KIND_EXEC, v->deployment_id,
                                          dq_lock_key(jc.lock), json, err, sizeof err) != 0)
            dq_warn("deploy %s: not registered for adoption (a crash is then resumed only after "
                    "Kafka's rebalance): %s", v->deployment_id, json ? err : "out of memory");
        free(json);
    }

    memset(&x, 0, sizeof x);
    x.cfg = ex->cfg;
    x.redis = *redis;
    x.fence = dq_lock_fence(jc.lock);
    x.actor = ex->actor;
    x.sink = kafka_sink;
    x.sink_ctx = &jc;
    x.should_continue = job_continue;
    /* an earlier holder's unrecorded deployment: its orphan scanner writes it within about
     * a scan of Redis' return (runrecord.h) */
    x.intent_wait_ms = ex->settings.lock_ttl_ms + 2 * ex->settings.orphan_scan_ms + 1000;
    x.cancel_requested = job_cancel_requested;
    x.ctx = &jc;
    x.chain.cancel_on_timeout = ex->settings.cancel_on_timeout;
    x.chain.cancel_wait_ms = ex->settings.cancel_wait_ms;
    x.m_deploys = ex->m_deploys;
    x.m_failovers = ex->m_failovers;
    /* blue-green (bluegreen.h): the idle color's chain, then probe and switch; a canary
     * (canary.h) the same chain, then probe and the rollout */
    if (dq_canary_applies(ex->cfg, v->service, v->environment, dq_json_str(v->data, "strategy"))) {
        bgj.redis = *redis;
        bgj.canary = 1;
        x.chain_load = bg_chain_load;
        x.before_succeeded = canary_before_succeeded;
        x.hook_ctx = &bgj;
    } else if (dq_bg_applies(ex->cfg, v->service, v->environment, dq_json_str(v->data, "strategy"))) {
        bgj.redis = *redis;
        x.chain_load = bg_chain_load;
        x.before_succeeded = bg_before_succeeded;
        x.hook_ctx = &bgj;
    }
    st = dq_execute(&x, &req, &out, err, sizeof err);
    dq_bg_free(bgj.bg);

    if (st == DQ_EXEC_STOPPED && dq_lock_lost(jc.lock))
        dq_error("deploy %s: lease on %s lost; stopped, will take the lock again and resume",
                 v->deployment_id, jc.key);
    else if (st == DQ_EXEC_STOPPED && !*ex->stop)
        dq_warn("deploy %s: stopped: %s; will retry", v->deployment_id, err);
    else if (st == DQ_EXEC_ERROR)
        dq_warn("deploy %s: %s; will retry", v->deployment_id, err);
    /* concluded: unregistered while the lock is still held, so no scan adopts it */
    if (st == DQ_EXEC_DONE &&
        dq_runlease_unregister(*redis, DQ_RUNLEASE_KIND_EXEC, v->deployment_id, err, sizeof err) != 0)
        dq_warn("deploy %s: still registered for adoption (it would only repeat its outcome): %s",
                v->deployment_id, err);
    dq_lock_release(jc.lock);
    if (st == DQ_EXEC_ERROR) {
        /* a fresh connection next time */
        dq_redis_free(*redis);
        *redis = NULL;
    }
    return st == DQ_EXEC_DONE;
}

static void job_free(job *jb)
{
    if (!jb)
        return;
    dq_event_free(jb->ev);
    free(jb->topic);
    free(jb);
}

static void *target_main(void *arg)
{
    target *t = arg;
    executor *ex = t->ex;
    dq_redis *redis = NULL;
    int64_t backoff = RETRY_MIN_MS;

    for (;;) {
        job *jb;
        int done;

        pthread_mutex_lock(&ex->mu);
        jb = t->head;
        if (!jb || *ex->stop) {
            t->running = 0; /* decided under mu: the loop starts a new thread from now on */
            pthread_mutex_unlock(&ex->mu);
            break;
        }
        pthread_mutex_unlock(&ex->mu);

        done = run_job(ex, &redis, t, jb);
        if (done == 2) {
            /* paused: look again in a second, in short sleeps so a stop is seen */
            for (int i = 0; i < 10 && !*ex->stop; i++)
                dq_sleep_ms(100);
            backoff = RETRY_MIN_MS;
            continue;
        }
        if (done) {
            int has_offset;

            __atomic_add_fetch(&ex->n_done, 1, __ATOMIC_SEQ_CST);
            pthread_mutex_lock(&ex->mu);
            t->head = jb->next;
            if (!t->head)
                t->tail = NULL;
            /* an adopted run gets its message's offset when Kafka redelivers it meanwhile */
            has_offset = jb->topic != NULL;
            pthread_mutex_unlock(&ex->mu);
            if (has_offset)
                dq_consumer_ack(ex->consumer, jb->topic, jb->partition, jb->offset);
            job_free(jb);
            backoff = RETRY_MIN_MS;
            continue;
        }
        if (*ex->stop)
            continue; /* the top of the loop exits; the job stays unacknowledged */
        dq_sleep_ms(backoff);
        backoff = backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2;
    }
    dq_redis_free(redis);
    return NULL;
}

/* The job of deployment_id queued or running on any target, or NULL. Called under mu. */
static job *job_find(executor *ex, const char *deployment_id)
{
    for (target *t = ex->targets; t; t = t->next)
        for (job *jb = t->head; jb; jb = jb->next)
            if (strcmp(jb->ev->deployment_id, deployment_id) == 0)
                return jb;
    return NULL;
}

/* Append jb to the queue of its target and make sure a thread runs that queue. Called
 * under mu (which it may drop for a moment to join a thread that is exiting). 0, or -1
 * out of memory (jb is then still the caller's). */
static int job_queue(executor *ex, job *jb)
{
    target *t;
    pthread_attr_t attr;
    int started;
    char key[300];

    dq_target_key(jb->ev->service, jb->ev->environment, key, sizeof key);
    for (t = ex->targets; t; t = t->next)
        if (strcmp(t->key, key) == 0)
            break;
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t)
            return -1;
        dq_strlcpy(t->key, key, sizeof t->key);
        t->ex = ex;
        t->next = ex->targets;
        ex->targets = t;
    }
    if (t->tail)
        t->tail->next = jb;
    else
        t->head = jb;
    t->tail = jb;
    if (!t->running) {
        /* This caller starts the queue's thread. running is set before mu may be dropped
         * below, so that the other thread that queues (the consumer's, the orphan
         * scanner's) only appends meanwhile and never joins the same thread twice. */
        t->running = 1;
        if (t->joinable) {
            /* it decided to exit under mu and only returns now: a short join */
            pthread_t old = t->thread;

            t->joinable = 0;
            pthread_mutex_unlock(&ex->mu);
            pthread_join(old, NULL);
            pthread_mutex_lock(&ex->mu);
        }
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, TARGET_STACK_SIZE);
        started = pthread_create(&t->thread, &attr, target_main, t) == 0;
        pthread_attr_destroy(&attr);
        if (!started) {
            t->running = 0;
            dq_error("cannot start a thread for %s; the deploy waits for the next message", key);
        } else {
            t->joinable = 1;
        }
    }
    return 0;
}

/* The consumer handler: pick out deploy.validated and queue it on its target. */
static dq_handle_result handle(void *ctx, const dq_message *m, char *err, size_t errlen)
{
    executor *ex = ctx;
    dq_event *ev;
    job *jb, *adopted;
    char why[512], key[300];

    /* No value: a placeholder `deployq up --data` writes so that the embedded broker's
     * offsets continue the registry's log; nothing to do, nothing to warn about. */
    if (!m->value)
        return DQ_HANDLED;
    ev = dq_event_decode(m->value ? m->value : "", m->len, why, sizeof why);
    if (!ev) {
        /* deployq.events is the workers' log; something unreadable is not ours to judge */
        dq_warn("skipping unreadable event at %s [%d] %lld: %s", m->topic, (int)m->partition,
                (long long)m->offset, why);
        return DQ_HANDLED;
    }
    if (strcmp(ev->type, DQ_EV_VALIDATED) != 0) {
        dq_event_free(ev);
        return DQ_HANDLED;
    }
    if (!ev->deployment_id || !ev->service || !ev->environment || !ev->version) {
        snprintf(err, errlen, "deploy.validated without deployment_id/service/environment/version");
        dq_event_free(ev);
        return DQ_POISON;
    }
    jb = calloc(1, sizeof *jb);
    if (!jb || !(jb->topic = strdup(m->topic))) {
        free(jb);
        dq_event_free(ev);
        return DQ_RETRY;
    }
    jb->ev = ev;
    jb->partition = m->partition;
    jb->offset = m->offset;
    dq_target_key(ev->service, ev->environment, key, sizeof key);

    pthread_mutex_lock(&ex->mu);
    adopted = job_find(ex, ev->deployment_id);
    if (adopted && !adopted->topic) {
        /* Kafka redelivers a deploy this executor adopted and still runs: one run, and
         * this message is acknowledged when it concludes. */
        adopted->topic = jb->topic;
        adopted->partition = jb->partition;
        adopted->offset = jb->offset;
        jb->topic = NULL;
        pthread_mutex_unlock(&ex->mu);
        dq_info("deploy %s of %s %s: redelivered while its adopted run is here; acknowledged when it concludes",
                ev->deployment_id, key, ev->version);
        job_free(jb); /* and ev with it */
        return DQ_DEFERRED;
    }
    if (job_queue(ex, jb) != 0) {
        pthread_mutex_unlock(&ex->mu);
        job_free(jb);
        return DQ_RETRY;
    }
    pthread_mutex_unlock(&ex->mu);
    dq_info("deploy %s of %s %s queued", ev->deployment_id, key, ev->version);
    return DQ_DEFERRED;
}

/* ---- orphaned deploys (runlease.h): adopted from a dead executor ---- */

/* dq_runlease_skip_fn: a deploy queued or running here is not an orphan. */
static int orphan_skip(void *ctx, const char *id)
{
    executor *ex = ctx;
    int mine;

    pthread_mutex_lock(&ex->mu);
    mine = job_find(ex, id) != NULL;
    pthread_mutex_unlock(&ex->mu);
    return mine;
}

/* dq_runlease_adopt_fn: queue the deploy.validated as a job without an offset. */
static void orphan_adopt(void *ctx, dq_redis *r, const char *id, const char *event_json)
{
    executor *ex = ctx;
    dq_event *ev;
    job *jb;
    char why[512], key[300];

    (void)r;
    ev = dq_event_decode(event_json, strlen(event_json), why, sizeof why);
    if (!ev || strcmp(ev->type, DQ_EV_VALIDATED) != 0 || !ev->deployment_id || !ev->service ||
        !ev->environment || !ev->version || strcmp(ev->deployment_id, id) != 0) {
        /* not something an executor registered: leave it (it expires with its keys) */
        dq_error("run %s registered for adoption is not a deploy.validated of that deployment: %s", id,
                 ev ? "wrong type or fields" : why);
        dq_event_free(ev);
        return;
    }
    dq_target_key(ev->service, ev->environment, key, sizeof key);
    jb = calloc(1, sizeof *jb);
    if (!jb) {
        dq_event_free(ev);
        return;
    }
    jb->ev = ev;
    jb->offset = -1;
    pthread_mutex_lock(&ex->mu);
    if (job_find(ex, id)) {
        /* Kafka gave it to us since the scan looked */
        pthread_mutex_unlock(&ex->mu);
        job_free(jb);
        return;
    }
    if (job_queue(ex, jb) != 0) {
        pthread_mutex_unlock(&ex->mu);
        job_free(jb);
        return;
    }
    pthread_mutex_unlock(&ex->mu);
    dq_info("deploy %s of %s: orphaned (lock expired), resuming", id, key);
}

static void targets_free(executor *ex)
{
    while (ex->targets) {
        target *t = ex->targets;
        ex->targets = t->next;
        if (t->joinable)
            pthread_join(t->thread, NULL);
        while (t->head) {
            job *jb = t->head;
            t->head = jb->next;
            job_free(jb);
        }
        free(t);
    }
}

int main(int argc, char **argv)
{
    dq_worker w = {.program = "deployq-executor", .group = "deployq-executor"};
    const char *group;
    int rc;
    char err[1024];
    executor ex;
    dq_runlease_scanner *scanner = NULL;

    memset(&ex, 0, sizeof ex);
    rc = dq_worker_start(&w, argc, argv, usage, NULL, NULL, NULL, NULL);
    if (rc >= 0) {
        dq_worker_finish(&w);
        return rc;
    }
    rc = 1;
    ex.cfg = w.cfg;
    ex.stop = w.stop;
    group = w.group;
    {
        static const char *const deploy_labels[] = {"service", "env", "provider", "outcome", NULL};
        static const char *const failover_labels[] = {"service", "env", "provider", "reason", NULL};
        static const char *const target_labels[] = {"service", "env", NULL};

        ex.m_deploys = dq_metrics_counter(w.metrics, "deployq_deploys_total",
                                          "Deploys concluded, by outcome (provider: the one "
                                          "that ran it, none when none could).",
                                          deploy_labels);
        ex.m_failovers = dq_metrics_counter(w.metrics, "deployq_failovers_total",
                                            "Providers found unavailable with another after them "
                                            "in the chain (provider: the one that failed).",
                                            failover_labels);
        ex.m_lock_wait = dq_metrics_histogram(w.metrics, "deployq_lock_wait_seconds",
                                              "Time spent taking a target's lock.", target_labels,
                                              dq_lock_wait_buckets, DQ_LOCK_WAIT_BUCKETS);
    }
    if (dq_exec_settings_load(ex.cfg, &ex.settings, err, sizeof err) != 0) {
        dq_error("%s", err);
        goto out;
    }
    /* Check every configured chain now, so a typo shows at start and not at 3 a.m. */
    for (size_t i = 0; i < ex.cfg->n_services; i++) {
        const dq_service *s = &ex.cfg->services[i];
        for (size_t k = 0; k < s->n_envs; k++) {
            const char *e = s->envs[k].name;
            dq_provider **ps;
            size_t np;
            dq_canary cn;
            dq_bluegreen *bg;

            /* a blue-green or canary target deploys through its colors' chains */
            if (!dq_bg_applies(ex.cfg, s->name, e, NULL) && !dq_canary_applies(ex.cfg, s->name, e, NULL)) {
                if (dq_exec_chain_load(ex.cfg, s->name, e, &ps, &np, err, sizeof err) == 0)
                    dq_exec_chain_free(ps, np);
                else
                    dq_warn("%s (deploys to it will fail)", err);
            }
            if (dq_bg_configured(ex.cfg, s->name, e)) {
                if (!(bg = dq_bg_load(ex.cfg, s->name, e, err, sizeof err)))
                    dq_warn("%s (blue-green and canary deploys to it will fail)", err);
                for (int c = 0; bg && c < 2; c++) {
                    if (dq_bg_color_chain(bg, c ? "green" : "blue", &ps, &np, err, sizeof err) == 0)
                        dq_exec_chain_free(ps, np);
                    else
                        dq_warn("%s (deploys to it will fail)", err);
                }
                dq_bg_free(bg);
            }
            if (dq_canary_configured(ex.cfg, s->name, e) &&
                dq_canary_load(ex.cfg, s->name, e, &cn, err, sizeof err) != 0)
                dq_warn("%s (canary deploys to it will fail)", err);
        }
    }
    ex.locks = dq_lock_pool_new(ex.cfg->redis_url, ex.cfg->redis_timeout_ms, err, sizeof err);
    if (!ex.locks) {
        dq_error("%s", err);
        goto out;
    }
    dq_actor("deployq-executor", ex.actor, sizeof ex.actor);
    dq_worker_ensure_topics(&w);
    ex.producer = dq_producer_new(ex.cfg, err, sizeof err);
    if (!ex.producer) {
        dq_error("%s", err);
        goto out;
    }
    {
        const char *topics[] = {ex.cfg->topic_events};
        dq_consumer_opts copts = {.group_id = group, .topics = topics, .n_topics = 1};

        ex.consumer = dq_consumer_new(ex.cfg, &copts, ex.producer, err, sizeof err);
    }
    if (!ex.consumer) {
        dq_error("%s", err);
        goto out;
    }
    dq_worker_watch(&w, ex.consumer);
    if (ex.settings.orphan_scan_ms > 0) {
        dq_runlease_opts so = {.redis_url = ex.cfg->redis_url,
                               .redis_timeout_ms = ex.cfg->redis_timeout_ms,
                               .kind = DQ_RUNLEASE_KIND_EXEC,
                               .claimant = ex.actor,
                               .interval_ms = ex.settings.orphan_scan_ms,
                               .claim_ms = ex.settings.lock_ttl_ms,
                               .skip = orphan_skip,
                               .adopt = orphan_adopt,
                               .ctx = &ex,
                               .stop = ex.stop};

        scanner = dq_runlease_scanner_start(&so, err, sizeof err);
        if (!scanner) {
            dq_error("%s", err);
            goto out;
        }
    }
    dq_info("consuming %s as group %s (lock ttl %lld ms, orphan scan every %lld ms)",
            ex.cfg->topic_events, group, (long long)ex.settings.lock_ttl_ms,
            (long long)ex.settings.orphan_scan_ms);
    rc = dq_consumer_run(ex.consumer, handle, &ex, ex.stop) == 0 ? 0 : 1;
    /* a fatal consumer error also stops the deploy threads */
    *ex.stop = 1;
    dq_info("stopping: waiting for deploy threads");
out:
    dq_worker_health_stop(&w); /* it reads the consumer freed below */
    dq_runlease_scanner_stop(scanner); /* before the targets: it may still queue a job */
    targets_free(&ex);
    dq_lock_pool_free(ex.locks); /* after the targets: their locks are released */
    dq_info("stopped: %llu deploy(s) concluded",
            (unsigned long long)__atomic_load_n(&ex.n_done, __ATOMIC_SEQ_CST));
    dq_consumer_free(ex.consumer);
    dq_producer_free(ex.producer);
    dq_worker_finish(&w);
    pthread_mutex_destroy(&ex.mu);
    return rc;
}
