/*
 * follow.c - the recorders' shared machinery (follow.h): their consumer thread, the
 * bounded attempts, the failure report and the URL templates.
 */
#include "follow.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "util.h"

#define BACKOFF_BASE_MS 500
#define BACKOFF_CAP_MS 5000
#define SEND_TIMEOUT_MS 10000

/* ---- the thread ---- */

struct dq_follow {
    pthread_t thread;
    dq_consumer *consumer;
    dq_handler_fn handler;
    void *ctx;
    volatile sig_atomic_t *stop;
    char name[32];
};

static void *follow_thread(void *arg)
{
    dq_follow *f = arg;

    if (dq_consumer_run(f->consumer, f->handler, f->ctx, f->stop) != 0)
        dq_error("%s: the consumer stopped on an error; deploys are no longer recorded there until the worker "
                 "restarts (rollbacks go on)", f->name);
    return NULL;
}

dq_follow *dq_follow_start(const dq_config *cfg, const char *name, const char *group, dq_handler_fn handler,
                           void *ctx, volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    dq_follow *f = calloc(1, sizeof *f);
    const char *topics[] = {cfg->topic_events};
    dq_consumer_opts copts = {.group_id = group, .topics = topics, .n_topics = 1};

    if (!f) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->handler = handler;
    f->ctx = ctx;
    f->stop = stop;
    dq_strlcpy(f->name, name, sizeof f->name);
    if (!(f->consumer = dq_consumer_new(cfg, &copts, NULL, err, errlen)))
        goto fail;
    if (pthread_create(&f->thread, NULL, follow_thread, f) != 0) {
        snprintf(err, errlen, "%s: cannot start its thread", name);
        goto fail;
    }
    return f;
fail:
    dq_consumer_free(f->consumer);
    free(f);
    return NULL;
}

void dq_follow_stop(dq_follow *f)
{
    if (!f)
        return;
    *f->stop = 1;
    pthread_join(f->thread, NULL);
    dq_consumer_free(f->consumer);
    free(f);
}

/* ---- attempts ---- */

int dq_follow_nap(volatile sig_atomic_t *stop, int64_t ms)
{
    for (int64_t end = dq_mono_ms() + ms; dq_mono_ms() < end;) {
        if (stop && *stop)
            return 1;
        dq_sleep_ms(end - dq_mono_ms() < 100 ? end - dq_mono_ms() : 100);
    }
    return stop && *stop;
}

dq_follow_rc dq_follow_attempts(const dq_follow_policy *pol, volatile sig_atomic_t *stop, dq_follow_try_fn attempt,
                                void *arg, dq_follow_outcome *out, int *stopped)
{
    int64_t start = dq_mono_ms(), wait = BACKOFF_BASE_MS;
    dq_follow_rc rc;

    memset(out, 0, sizeof *out);
    *stopped = 0;
    for (;;) {
        int64_t pause;

        out->error[0] = '\0';
        out->http_status = 0;
        out->retry_after_ms = -1;
        out->attempts++;
        rc = attempt(arg, out);
        if (rc != DQ_FOLLOW_DOWN || out->attempts > pol->retries)
            return rc;
        pause = out->retry_after_ms > wait ? out->retry_after_ms : wait; /* the remote's Retry-After wins */
        /* no attempt that could not end (at one timeout) within the budget */
        if (dq_mono_ms() + pause + pol->timeout_ms - start > pol->retry_budget_ms)
            return rc;
        if (dq_follow_nap(stop, pause)) {
            *stopped = 1; /* stopping: the next owner reads it again */
            return DQ_FOLLOW_DOWN;
        }
        wait = wait * 2 > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : wait * 2;
    }
}

int dq_follow_report(const dq_config *cfg, dq_producer *producer, const char *actor, const char *channel,
                     const dq_event *trigger, const char *what, const dq_follow_outcome *o, const cJSON *extra)
{
    dq_event *ev = dq_event_new(DQ_EV_NOTIFICATION_FAILED, trigger->deployment_id, trigger->service,
                                trigger->environment, trigger->version, actor);
    char name[200], clean[512], key[320], err[512];
    const cJSON *it;
    char *json = NULL;
    int rc = -1;

    if (!ev)
        return -1;
    snprintf(name, sizeof name, "%s:%s:%s", channel, trigger->id, what);
    dq_event_set_id_from(ev, name); /* a redelivery reports with the same id */
    ev->fence = trigger->fence;
    dq_redact(o->error[0] ? o->error : "failed", clean, sizeof clean);
    if (!cJSON_AddStringToObject(ev->data, "channel", channel) ||
        !cJSON_AddStringToObject(ev->data, "trigger_event_id", trigger->id) ||
        !cJSON_AddStringToObject(ev->data, "trigger_type", trigger->type) ||
        !cJSON_AddNumberToObject(ev->data, "attempts", o->attempts > 0 ? o->attempts : 1) ||
        (o->http_status >= 100 && o->http_status <= 599 &&
         !cJSON_AddNumberToObject(ev->data, "http_status", (double)o->http_status)) ||
        !cJSON_AddStringToObject(ev->data, "error", clean))
        goto done;
    cJSON_ArrayForEach(it, extra) {
        if (!cJSON_AddItemToObject(ev->data, it->string, cJSON_Duplicate(it, 1)))
            goto done;
    }
    if (!(json = dq_event_encode(ev)))
        goto done;
    dq_target_key(trigger->service, trigger->environment, key, sizeof key);
    if (dq_producer_send(producer, cfg->topic_events, key, json, strlen(json), SEND_TIMEOUT_MS, NULL, NULL, err,
                         sizeof err) != 0) {
        dq_warn("%s: could not report the failure of %s: %s", channel, trigger->id, err);
        goto done;
    }
    rc = 0;
done:
    free(json);
    dq_event_free(ev);
    return rc;
}

/* ---- templates ---- */

char *dq_follow_fill(const char *tmpl, const dq_event *ev)
{
    size_t cap = strlen(tmpl) + 1, o = 0;
    char *out;

    for (const char *p = tmpl; *p; p++)
        if (*p == '{')
            cap += 256; /* room for any value a placeholder may take */
    if (!(out = malloc(cap)))
        return NULL;
    for (const char *p = tmpl; *p;) {
        static const char *const names[] = {"{service}", "{environment}", "{version}", "{deployment_id}", NULL};
        const char *vals[] = {ev ? ev->service : NULL, ev ? ev->environment : NULL, ev ? ev->version : NULL,
                              ev ? ev->deployment_id : NULL};
        size_t i;

        for (i = 0; names[i] && strncmp(p, names[i], strlen(names[i])) != 0; i++)
            ;
        if (names[i]) {
            size_t n = vals[i] ? strnlen(vals[i], 255) : 0;

            memcpy(out + o, vals[i] ? vals[i] : "", n);
            o += n;
            p += strlen(names[i]);
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return out;
}
