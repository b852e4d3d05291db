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
#include "kafka.h"
#include "log.h"
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
    "deploy.rejected with every reason on deployq.events. Stops cleanly on SIGTERM/SIGINT.\n"
    "\n"
    "Consumer group: deployq-validator by default (-g); the events consumer of the\n"
    "promotion gate uses <group>-state.\n"
    "\n" DQ_WORKER_COMMON_USAGE;

/* The handler of deployq.requests: an approval document goes to approval.c; a deploy
 * request is judged (validate.c), its verdict emitted on deployq.events keyed
 * service/environment (or, when it awaits approval, parked and deploy.awaiting_approval
 * emitted instead), and only then may its offset be stored. It lives here, above both,
 * because it is the one place that needs both: validate.c never calls approval.c. */
static dq_handle_result handle_request(void *ctx, const dq_message *m, char *err, size_t errlen)
{
    dq_validator *val = ctx;
    dq_verdict v;
    dq_event *ev = NULL, *out = NULL;
    dq_handle_result res = DQ_HANDLED;
    char key[256];

    if (dq_approval_peek(val, m))
        return dq_approval_handle(val, m, err, errlen);
    if (dq_validate(val, m, dq_now_ms(), &v) != 0) {
        dq_warn("redis %s unavailable (%s); will retry %s/%d/%lld", dq_redis_where(val->redis),
                dq_redis_errstr(val->redis), m->topic, (int)m->partition, (long long)m->offset);
        dq_verdict_clear(&v);
        return DQ_RETRY;
    }
    ev = dq_verdict_event(val, m, &v);
    if (!ev) {
        snprintf(err, errlen, "out of memory building the verdict");
        res = DQ_FAILED;
        goto out;
    }
    out = ev;
    if (v.n_reasons == 0 && v.awaiting) {
        int transient = 0;

        out = dq_approval_park(val, m, &v, ev, &transient);
        if (!out) {
            if (transient)
                dq_warn("redis %s unavailable (%s); will retry %s/%d/%lld", dq_redis_where(val->redis),
                        dq_redis_errstr(val->redis), m->topic, (int)m->partition, (long long)m->offset);
            else
                snprintf(err, errlen, "out of memory parking the request for approval");
            res = transient ? DQ_RETRY : DQ_FAILED;
            goto out;
        }
    }
    if (dq_validator_emit(val, out, err, errlen) != 0) {
        dq_warn("cannot emit %s for %s/%d/%lld: %s; will retry", out->type, m->topic,
                (int)m->partition, (long long)m->offset, err);
        res = DQ_RETRY;
        goto out;
    }
    if (out->service && out->environment)
        dq_target_key(out->service, out->environment, key, sizeof key);
    else
        dq_strlcpy(key, "unknown", sizeof key);
    if (v.n_reasons == 0 && v.awaiting) {
        val->n_awaiting++;
        dq_info("%s %s deployment %s version %s", out->type, key, out->deployment_id, out->version);
    } else if (v.n_reasons == 0) {
        val->n_validated++;
        dq_info("%s %s deployment %s version %s%s%s", ev->type, key, ev->deployment_id, ev->version,
                v.override_freeze[0] ? "; freeze overridden: " : "", v.override_freeze);
    } else {
        val->n_rejected++;
        dq_info("%s %s deployment %s: %s: %s%s", ev->type, key,
                ev->deployment_id ? ev->deployment_id : "-", v.reasons[0].code,
                v.reasons[0].message, v.n_reasons > 1 ? " (and more)" : "");
    }
out:
    if (out != ev)
        dq_event_free(out);
    dq_event_free(ev);
    dq_verdict_clear(&v);
    return res;
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

int main(int argc, char **argv)
{
    dq_worker w = {.program = "deployq-validator", .group = "deployq-validator"};
    const char *group;
    int rc;
    char err[1024];
    dq_config *cfg = NULL;
    dq_validator val = {0};
    dq_consumer *consumer = NULL;
    state_thread st = {0};
    pthread_t st_tid, ex_tid;
    int st_started = 0, ex_started = 0;
    expiry_thread ex = {0};
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
    /* Each verdict is sent synchronously (its offset is stored only once it is
     * acknowledged), so batching delay is pure latency: 5 ms of linger capped the
     * validator at ~160 requests/s, none gives ~1,400 (docs/performance.md). */
    if (!dq_config_kafka_get(cfg, "linger.ms"))
        dq_config_set_kafka(cfg, "linger.ms", "0");
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
    dq_info("consuming %s as group %s (and %s as %s); emitting to %s", cfg->topic_requests, group,
            cfg->topic_events, state_group, cfg->topic_events);
    rc = dq_consumer_run(consumer, handle_request, &val, stop) == 0 ? 0 : 1;
    dq_info("stopping: %llu validated, %llu rejected, %llu awaiting approval",
            (unsigned long long)val.n_validated, (unsigned long long)val.n_rejected,
            (unsigned long long)val.n_awaiting);
out:
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
    dq_producer_free(ex.val.producer);
    dq_redis_free(ex.val.redis);
    dq_consumer_free(st.consumer);
    dq_redis_free(st.state.redis);
    dq_schema_free(val.approval);
    dq_consumer_free(consumer);
    dq_producer_free(val.producer);
    dq_redis_free(val.redis);
    dq_schema_set_free(val.schemas);
    dq_worker_finish(&w);
    return rc;
}
