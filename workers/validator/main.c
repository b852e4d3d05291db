/*
 * main.c - deployq-validator: consumes deployq.requests, judges each signed deploy
 * request (validate.c) and emits deploy.validated or deploy.rejected on deployq.events.
 * Run several in one consumer group to split the partitions; a request redelivered after
 * a crash or a rebalance yields the same verdict event (same id), never a second one.
 *
 * A second consumer on its own thread (group <group>-state, state.c) reads deployq.events
 * so the promotion gate knows which versions were verified where. A third thread rejects
 * the deployments whose approval expired (approval_expired, approval.c).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "approval.h"
#include "config.h"
#include "driftscan.h"
#include "gates.h"
#include "kafka.h"
#include "log.h"
#include "operator.h"
#include "redis.h"
#include "schema.h"
#include "util.h"
#include "validate.h"
#include "worker.h"

static const char usage[] =
    "Usage: deployq-validator [options]\n"
    "\n"
    "Consume deployq.requests, check each deploy request (size, JSON, schema, signature,\n"
    "issued_at window, nonce, service/environment) and emit deploy.validated or\n"
    "deploy.rejected with every reason on deployq.events. Approvals (deployq approve) and\n"
    "operator commands (deployq cancel|retry|pause|resume|hold|release) travel the same way and\n"
    "are verified here too. Stops cleanly on SIGTERM/SIGINT.\n"
    "\n"
    "Consumer group: deployq-validator by default (-g); the events consumer of the\n"
    "promotion gate uses <group>-state.\n"
    "\n"
    "With drift.scan_interval set, one validator instance at a time compares every\n"
    "environment's variables (by name and keyed value hash) with its `requires`\n"
    "environment's and with those recorded at its last deploy, and emits drift.detected\n"
    "once per new drift (docs/configuration.md, Drift by value).\n"
    "\n" DQ_WORKER_COMMON_USAGE;

/* How many requests are judged together: their nonces are claimed in one Redis round trip. */
#define BATCH_MAX 64
/* Verdicts produced and not yet acknowledged, at most; past that the loop waits for reports. */
#define INFLIGHT_MAX 10000

/* The consumer loop of deployq.requests and what one batch needs (allocated once). */
typedef struct requests {
    dq_validator *val;
    dq_consumer *consumer;
    volatile sig_atomic_t *stop;
    int inflight; /* verdicts queued whose delivery report has not come (this thread only) */
    dq_metric *m_verdicts; /* deployq_verdicts_total{service,env,verdict} */
    dq_parsed docs[BATCH_MAX];
    dq_verdict verdicts[BATCH_MAX];
    dq_nonce_claim claims[BATCH_MAX];
    int claim_of[BATCH_MAX]; /* index into claims, or -1 */
    int approval[BATCH_MAX];
    int operator_cmd[BATCH_MAX];
} requests;

/* Where a verdict in flight came from: its delivery report acknowledges that message. */
typedef struct verdict_ref {
    requests *rq;
    int32_t partition;
    int64_t offset;
    char topic[];
} verdict_ref;

/* A verdict's delivery report (it runs on this thread, in dq_producer_poll or a sync send):
 * acknowledged, the request's offset may be stored; failed for good, the request and what
 * follows it in its partition are read and judged again. The verdict then gets the same id
 * (dq_verdict_event), and its nonce, which names this very message as its owner, lets it
 * pass as a redelivery, not as a replay. */
static void verdict_delivered(void *ctx, rd_kafka_resp_err_t err)
{
    verdict_ref *r = ctx;

    r->rq->inflight--;
    if (!err) {
        dq_consumer_ack(r->rq->consumer, r->topic, r->partition, r->offset);
    } else {
        dq_warn("verdict for %s/%d/%lld not delivered (%s); judging it again", r->topic,
                (int)r->partition, (long long)r->offset, rd_kafka_err2str(err));
        dq_consumer_nack(r->rq->consumer, r->topic, r->partition, r->offset);
    }
    free(r);
}

/* One verdict counted: a bump of a series, no allocation once the target was seen. */
static void count_verdict(requests *rq, const dq_event *ev, const char *verdict)
{
    const char *values[] = {ev->service ? ev->service : "unknown",
                            ev->environment ? ev->environment : "unknown", verdict};

    dq_metric_add(rq->m_verdicts, values, 1);
}

static void log_verdict(const dq_event *ev, const dq_verdict *v)
{
    char key[256];

    if (ev->service && ev->environment)
        dq_target_key(ev->service, ev->environment, key, sizeof key);
    else
        dq_strlcpy(key, "unknown", sizeof key);
    if (v->n_reasons == 0 && v->awaiting)
        dq_info("%s %s deployment %s version %s", ev->type, key, ev->deployment_id, ev->version);
    else if (v->n_reasons == 0)
        dq_info("%s %s deployment %s version %s%s%s", ev->type, key, ev->deployment_id, ev->version,
                v->override_freeze[0] ? "; freeze overridden: " : "", v->override_freeze);
    else
        dq_info("%s %s deployment %s: %s: %s%s", ev->type, key,
                ev->deployment_id ? ev->deployment_id : "-", v->reasons[0].code,
                v->reasons[0].message, v->n_reasons > 1 ? " (and more)" : "");
}

/* Finish judging the request m (dq_validate_finish) and emit its verdict: on deployq.events
 * keyed service/environment without waiting (DQ_DEFERRED: verdict_delivered acknowledges
 * it), or, when it awaits approval, parked and deploy.awaiting_approval emitted in its place,
 * synchronously (rare; DQ_HANDLED once acknowledged). */
static dq_handle_result judge(requests *rq, const dq_message *m, const dq_parsed *p,
                              dq_verdict *v, const dq_nonce_claim *claim, char *err,
                              size_t errlen)
{
    dq_validator *val = rq->val;
    dq_event *ev = NULL, *out = NULL;
    dq_handle_result res = DQ_HANDLED;
    verdict_ref *ref;

    if (dq_validate_finish(val, p, dq_now_ms(), v, claim ? claim->rc : 0,
                           claim ? claim->owner : "") != 0) {
        dq_warn("redis %s unavailable (%s); will retry %s/%d/%lld", dq_redis_where(val->redis),
                dq_redis_errstr(val->redis), m->topic, (int)m->partition, (long long)m->offset);
        return DQ_RETRY;
    }
    ev = dq_verdict_event(val, m, v);
    if (!ev) {
        snprintf(err, errlen, "out of memory building the verdict");
        return DQ_FAILED;
    }
    if (v->n_reasons == 0 && v->awaiting) {
        int transient = 0;

        out = dq_approval_park(val, m, v, ev, &transient);
        if (!out) {
            if (transient)
                dq_warn("redis %s unavailable (%s); will retry %s/%d/%lld", dq_redis_where(val->redis),
                        dq_redis_errstr(val->redis), m->topic, (int)m->partition, (long long)m->offset);
            else
                snprintf(err, errlen, "out of memory parking the request for approval");
            res = transient ? DQ_RETRY : DQ_FAILED;
        } else if (dq_validator_emit(val, out, err, errlen) != 0) {
            dq_warn("cannot emit %s for %s/%d/%lld: %s; will retry", out->type, m->topic,
                    (int)m->partition, (long long)m->offset, err);
            res = DQ_RETRY;
        } else {
            val->n_awaiting++;
            count_verdict(rq, out, "awaiting_approval");
            log_verdict(out, v);
        }
        dq_event_free(out);
        dq_event_free(ev);
        return res;
    }
    ref = malloc(sizeof *ref + strlen(m->topic) + 1);
    if (!ref) {
        snprintf(err, errlen, "out of memory emitting the verdict");
        dq_event_free(ev);
        return DQ_FAILED;
    }
    ref->rq = rq;
    ref->partition = m->partition;
    ref->offset = m->offset;
    memcpy(ref->topic, m->topic, strlen(m->topic) + 1);
    if (dq_validator_emit_async(val, ev, verdict_delivered, ref, err, errlen) != 0) {
        dq_warn("cannot emit %s for %s/%d/%lld: %s; will retry", ev->type, m->topic,
                (int)m->partition, (long long)m->offset, err);
        free(ref);
        dq_event_free(ev);
        return DQ_RETRY;
    }
    rq->inflight++;
    if (v->n_reasons == 0)
        val->n_validated++;
    else
        val->n_rejected++;
    count_verdict(rq, ev, v->n_reasons == 0 ? "validated" : "rejected");
    log_verdict(ev, v);
    dq_event_free(ev);
    return DQ_DEFERRED;
}

/* 1 when an earlier item of item i's partition was not done: then i must wait for it. */
static int partition_blocked(const dq_batch_item *items, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (items[j].m.partition == items[i].m.partition &&
            items[j].result != DQ_HANDLED && items[j].result != DQ_DEFERRED &&
            strcmp(items[j].m.topic, items[i].m.topic) == 0)
            return 1;
    return 0;
}

/* The batch handler of deployq.requests (kafka.h dq_consumer_run_batch). Each message is
 * parsed once; approval documents go to approval.c, requests are judged (validate.c) with
 * every nonce of the batch claimed in one Redis round trip, and then, in order, each
 * verdict is emitted. It lives here, above both, because it is the one place that needs
 * both: validate.c never calls approval.c. Redis unreachable leaves the whole batch to be
 * read again (DQ_RETRY): nothing of it was emitted. */
static void handle_batch(void *ctx, dq_batch_item *items, size_t n)
{
    requests *rq = ctx;
    dq_validator *val = rq->val;
    size_t n_claims = 0;
    int64_t now = dq_now_ms();

    /* the reports of verdicts sent before: acknowledgements, and rewinds for failures */
    dq_producer_poll(val->producer, 0);
    while (rq->inflight >= INFLIGHT_MAX && !*rq->stop)
        dq_producer_poll(val->producer, 100);
    if (n > BATCH_MAX)
        n = BATCH_MAX; /* cannot happen: the loop's batches are at most BATCH_MAX */
    for (size_t i = 0; i < n; i++) {
        dq_parse_message(val, &items[i].m, &rq->docs[i]);
        rq->approval[i] = dq_approval_peek(&rq->docs[i]);
        rq->operator_cmd[i] = dq_operator_peek(&rq->docs[i]);
        rq->claim_of[i] = -1;
        memset(&rq->verdicts[i], 0, sizeof rq->verdicts[i]);
        if (rq->approval[i] || rq->operator_cmd[i])
            continue;
        dq_validate_start(val, &rq->docs[i], now, &rq->verdicts[i]);
        if (rq->verdicts[i].claim) {
            dq_nonce_claim *cl = &rq->claims[n_claims];

            cl->m = &items[i].m;
            cl->key_id = rq->verdicts[i].claim_key_id;
            cl->nonce = rq->verdicts[i].request->nonce;
            cl->issued_ms = rq->verdicts[i].issued_ms;
            rq->claim_of[i] = (int)n_claims++;
        }
    }
    if (dq_validator_claim_nonces(val, rq->claims, n_claims) != 0) {
        dq_warn("redis %s unavailable (%s); will retry %zu request(s)", dq_redis_where(val->redis),
                dq_redis_errstr(val->redis), n);
        goto out; /* every result stays DQ_RETRY */
    }
    for (size_t i = 0; i < n; i++) {
        dq_batch_item *it = &items[i];

        if (partition_blocked(items, i))
            continue;
        if (rq->approval[i])
            it->result = dq_approval_handle(val, &it->m, &rq->docs[i], it->err, sizeof it->err);
        else if (rq->operator_cmd[i])
            it->result = dq_operator_handle(val, &it->m, &rq->docs[i], it->err, sizeof it->err);
        else
            it->result = judge(rq, &it->m, &rq->docs[i], &rq->verdicts[i],
                               rq->claim_of[i] >= 0 ? &rq->claims[rq->claim_of[i]] : NULL,
                               it->err, sizeof it->err);
    }
out:
    for (size_t i = 0; i < n; i++) {
        dq_verdict_clear(&rq->verdicts[i]);
        dq_parsed_clear(&rq->docs[i]);
    }
}

/* After the loop: wait for the reports of the verdicts in flight, so that their offsets are
 * stored before the consumer commits and leaves; what does not come in time is purged
 * (reported as failed, so read again by the next owner). */
static void drain_verdicts(requests *rq)
{
    rd_kafka_t *rk = dq_producer_handle(rq->val->producer);

    dq_producer_flush(rq->val->producer, 10000);
    if (dq_producer_outq_len(rq->val->producer) > 0) {
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        dq_producer_flush(rq->val->producer, 1000);
    }
}

typedef struct state_thread {
    dq_consumer *consumer;
    dq_state state;
    volatile sig_atomic_t *stop;
    int rc;
} state_thread;

static void *state_main(void *arg)
{
    state_thread *t = arg;

    t->rc = dq_consumer_run(t->consumer, dq_state_handle, &t->state, t->stop);
    if (t->rc != 0)
        dq_error("the deployq.events consumer stopped; promotion gates see no new verifications");
    return NULL;
}

/* The approval expiry pass (approval.h dq_approval_expire_due) once a second, on its own
 * thread with its own Redis connection and producer: a slow send here never holds up the
 * requests, and a send timeout here never purges one of theirs. */
typedef struct expiry_thread {
    dq_validator val;
    volatile sig_atomic_t *stop;
} expiry_thread;

static void *expiry_main(void *arg)
{
    expiry_thread *t = arg;

    while (!*t->stop) {
        /* Short sleeps so that a stop is seen within 100 ms. */
        for (int i = 0; i < 10 && !*t->stop; i++)
            dq_sleep_ms(100);
        if (!*t->stop && dq_approval_expire_due(&t->val, dq_now_ms()) < 0)
            dq_warn("approval expiry: redis %s or the broker unavailable; will retry",
                    dq_redis_where(t->val.redis));
    }
    return NULL;
}

/* The drift scan (driftscan.h) every drift.scan_interval, on its own thread with its own
 * Redis connection and producer: it calls providers, which can take seconds. */
typedef struct scan_thread {
    dq_validator val;
    volatile sig_atomic_t *stop;
} scan_thread;

static void *scan_main(void *arg)
{
    scan_thread *t = arg;
    int64_t next = dq_now_ms();

    while (!*t->stop) {
        if (dq_now_ms() >= next) {
            if (dq_driftscan_run(&t->val, dq_now_ms()) < 0)
                dq_warn("drift scan: redis %s or the broker unavailable; will retry next interval",
                        dq_redis_where(t->val.redis));
            next = dq_now_ms() + t->val.drift->scan_interval_ms;
        }
        dq_sleep_ms(100); /* short, so that a stop is seen at once */
    }
    return NULL;
}

int main(int argc, char **argv)
{
    dq_worker w = {.program = "deployq-validator", .group = "deployq-validator"};
    const char *group;
    int rc;
    char err[1024];
    dq_config *cfg = NULL;
    dq_validator val = {0};
    dq_consumer *consumer = NULL;
    requests *rq = NULL;
    state_thread st = {0};
    pthread_t st_tid, ex_tid;
    int st_started = 0, ex_started = 0;
    expiry_thread ex = {0};
    scan_thread sc = {0};
    pthread_t sc_tid;
    int sc_started = 0;
    dq_drift_settings drift = {0};
    char state_group[256];
    volatile sig_atomic_t *stop;

    rc = dq_worker_start(&w, argc, argv, usage, NULL, NULL, NULL, NULL);
    if (rc >= 0) {
        dq_worker_finish(&w);
        return rc;
    }
    rc = 1;
    cfg = w.cfg;
    stop = w.stop;
    group = w.group;

    val.cfg = cfg;
    if (dq_drift_settings_load(cfg, &drift, err, sizeof err) != 0) {
        dq_error("%s", err);
        goto out;
    }
    val.drift = &drift;
    /* A promotion that can never pass (deployq check refuses it too): warned, not refused,
     * so a running deployq keeps serving every other target of the same file. */
    for (size_t i = 0; i < cfg->n_services; i++)
        for (size_t j = 0; j < cfg->services[i].n_envs; j++)
            if (dq_gates_promotion_unverifiable(cfg, cfg->services[i].name,
                                                cfg->services[i].envs[j].name, err, sizeof err))
                dq_warn("%s", err);
    dq_actor("deployq-validator", val.actor, sizeof val.actor);
    val.schemas = dq_schema_set_load(cfg->schemas_dir, err, sizeof err);
    if (!val.schemas) {
        dq_error("schemas: %s", err);
        goto out;
    }
    {
        char path[4096];

        snprintf(path, sizeof path, "%s/approval.json", cfg->schemas_dir);
        val.approval = dq_schema_load_file(path, err, sizeof err);
        if (!val.approval) {
            dq_error("schemas: %s", err);
            goto out;
        }
        snprintf(path, sizeof path, "%s/operator.json", cfg->schemas_dir);
        val.operator_cmd = dq_schema_load_file(path, err, sizeof err);
        if (!val.operator_cmd) {
            dq_error("schemas: %s", err);
            goto out;
        }
    }
    /* Redis may still be starting (compose, systemd): wait for it a while at start; later
     * outages are handled per message (retry, never a lost request). */
    val.redis = dq_worker_redis(&w);
    if (!val.redis)
        goto out;
    {
        /* Learn where the replay memory began (validate.h) before the first message, so
         * that a Redis that loses its nonces later is noticed as such. */
        int64_t epoch;

        if (dq_validator_nonce_epoch(&val, dq_now_ms(), &epoch, err, sizeof err) != 0)
            dq_warn("replay memory: %s (asked again for every message)", err);
    }
    dq_worker_ensure_topics(&w);
    /* Verdicts are sent without waiting, but approvals and dead letters still wait for
     * theirs, where any linger is pure latency (docs/performance.md). */
    if (!dq_config_kafka_get(cfg, "linger.ms"))
        dq_config_set_kafka(cfg, "linger.ms", "0");
    /* A verdict that cannot be delivered comes back as a failed report after this long,
     * and its request is judged again: as the 10 s a synchronous send used to wait. */
    if (!dq_config_kafka_get(cfg, "message.timeout.ms"))
        dq_config_set_kafka(cfg, "message.timeout.ms", "10000");
    val.producer = dq_producer_new(cfg, err, sizeof err);
    if (!val.producer) {
        dq_error("%s", err);
        goto out;
    }
    {
        const char *topics[] = {cfg->topic_requests};
        dq_consumer_opts copts = {.group_id = group, .topics = topics, .n_topics = 1};

        consumer = dq_consumer_new(cfg, &copts, val.producer, err, sizeof err);
    }
    if (!consumer) {
        dq_error("%s", err);
        goto out;
    }
    dq_worker_watch(&w, consumer);
    {
        const char *topics[] = {cfg->topic_events};
        dq_consumer_opts copts = {.group_id = state_group, .topics = topics, .n_topics = 1};

        snprintf(state_group, sizeof state_group, "%s-state", group);
        st.state.cfg = cfg;
        st.stop = stop;
        st.state.redis = dq_redis_connect(cfg->redis_url, cfg->redis_timeout_ms, err, sizeof err);
        if (!st.state.redis) {
            dq_error("redis: %s", err);
            goto out;
        }
        st.consumer = dq_consumer_new(cfg, &copts, NULL, err, sizeof err);
        if (!st.consumer) {
            dq_error("%s", err);
            goto out;
        }
        dq_worker_watch(&w, st.consumer);
        if (pthread_create(&st_tid, NULL, state_main, &st) != 0) {
            dq_error("cannot start the deployq.events consumer thread");
            goto out;
        }
        st_started = 1;
    }
    ex.val.cfg = cfg;
    ex.stop = stop;
    dq_strlcpy(ex.val.actor, val.actor, sizeof ex.val.actor);
    ex.val.redis = dq_redis_connect(cfg->redis_url, cfg->redis_timeout_ms, err, sizeof err);
    if (!ex.val.redis) {
        dq_error("redis: %s", err);
        goto out;
    }
    ex.val.producer = dq_producer_new(cfg, err, sizeof err);
    if (!ex.val.producer) {
        dq_error("%s", err);
        goto out;
    }
    if (pthread_create(&ex_tid, NULL, expiry_main, &ex) != 0) {
        dq_error("cannot start the approval expiry thread");
        goto out;
    }
    ex_started = 1;
    if (drift.scan_interval_ms > 0) {
        sc.val.cfg = cfg;
        sc.val.drift = &drift;
        sc.stop = stop;
        dq_strlcpy(sc.val.actor, val.actor, sizeof sc.val.actor);
        sc.val.redis = dq_redis_connect(cfg->redis_url, cfg->redis_timeout_ms, err, sizeof err);
        if (!sc.val.redis) {
            dq_error("redis: %s", err);
            goto out;
        }
        sc.val.producer = dq_producer_new(cfg, err, sizeof err);
        if (!sc.val.producer) {
            dq_error("%s", err);
            goto out;
        }
        if (pthread_create(&sc_tid, NULL, scan_main, &sc) != 0) {
            dq_error("cannot start the drift scan thread");
            goto out;
        }
        sc_started = 1;
        dq_info("drift scan every %lld ms%s", (long long)drift.scan_interval_ms,
                drift.key.persistent ? "" : " (no drift.key: environments compared, nothing recorded)");
    }
    dq_info("consuming %s as group %s (and %s as %s); emitting to %s", cfg->topic_requests, group,
            cfg->topic_events, state_group, cfg->topic_events);
    rq = calloc(1, sizeof *rq);
    if (!rq) {
        dq_error("out of memory");
        goto out;
    }
    rq->val = &val;
    rq->consumer = consumer;
    rq->stop = stop;
    {
        static const char *const labels[] = {"service", "env", "verdict", NULL};

        rq->m_verdicts = dq_metrics_counter(w.metrics, "deployq_verdicts_total",
                                            "Deploy requests judged, by verdict.", labels);
    }
    rc = dq_consumer_run_batch(consumer, handle_batch, rq, BATCH_MAX, stop) == 0 ? 0 : 1;
    drain_verdicts(rq);
    dq_info("stopping: %llu validated, %llu rejected, %llu awaiting approval",
            (unsigned long long)val.n_validated, (unsigned long long)val.n_rejected,
            (unsigned long long)val.n_awaiting);
out:
    dq_worker_health_stop(&w); /* it reads the consumers freed below */
    if (st_started) {
        /* The main loop may have ended on its own (a fatal consumer error): stop the
         * state thread too. */
        *stop = 1;
        pthread_join(st_tid, NULL);
    }
    if (ex_started) {
        *stop = 1;
        pthread_join(ex_tid, NULL);
    }
    if (sc_started) {
        *stop = 1;
        pthread_join(sc_tid, NULL);
    }
    dq_producer_free(sc.val.producer);
    dq_redis_free(sc.val.redis);
    dq_drift_settings_clear(&drift);
    dq_producer_free(ex.val.producer);
    dq_redis_free(ex.val.redis);
    dq_consumer_free(st.consumer);
    dq_redis_free(st.state.redis);
    dq_schema_free(val.approval);
    dq_schema_free(val.operator_cmd);
    dq_consumer_free(consumer);
    free(rq);
    dq_producer_free(val.producer);
    dq_redis_free(val.redis);
    dq_schema_set_free(val.schemas);
    dq_worker_finish(&w);
    return rc;
}
