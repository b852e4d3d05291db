/*
 * state.c - what the validator learns from deployq.events for the promotion gate.
 *
 * A second consumer (group <group>-state, on its own thread and Redis connection) reads
 * deployq.events and records every deploy.verified and deploy.succeeded as
 * deployq:<verified|succeeded>:<service>:<env>:<version> (kept 90 days). The promotion
 * gate of validate.c asks for that key. Each deploy.validated is recorded as
 * DQ_DEPLOYMENT_KEY<deployment_id> (validate.h), what `deployq retry` and scoped operator
 * keys learn of a deployment. Recording is idempotent, so redeliveries are harmless; an
 * event of another type is skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "gates.h"
#include "json.h"
#include "log.h"
#include "validate.h"

#define STATE_TTL_S (90L * 24 * 3600)

/* DQ_DEPLOYMENT_KEY<id> = {"service","environment","version","strategy"} of a deploy.validated. */
static dq_handle_result record_deployment(dq_state *st, const dq_event *ev)
{
    cJSON *rec;
    char key[128], *json = NULL;
    redisReply *r;

    if (!ev->deployment_id || !ev->service || !ev->environment || !ev->version)
        return DQ_HANDLED;
    rec = cJSON_CreateObject();
    if (rec && cJSON_AddStringToObject(rec, "service", ev->service) &&
        cJSON_AddStringToObject(rec, "environment", ev->environment) &&
        cJSON_AddStringToObject(rec, "version", ev->version) &&
        (!dq_json_str(ev->data, "strategy") ||
         cJSON_AddStringToObject(rec, "strategy", dq_json_str(ev->data, "strategy"))))
        json = cJSON_PrintUnformatted(rec);
    cJSON_Delete(rec);
    if (!json)
        return DQ_RETRY;
    snprintf(key, sizeof key, "%s%s", DQ_DEPLOYMENT_KEY, ev->deployment_id);
    r = dq_redis_command(st->redis, "SET %s %s EX %ld", key, json, DQ_DEPLOYMENT_TTL_S);
    free(json);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        dq_warn("redis %s: cannot record %s (%s); will retry", dq_redis_where(st->redis), key,
                r ? r->str : dq_redis_errstr(st->redis));
        if (r)
            freeReplyObject(r);
        return DQ_RETRY;
    }
    freeReplyObject(r);
    st->n_recorded++;
    return DQ_HANDLED;
}

dq_handle_result dq_state_handle(void *ctx, const dq_message *m, char *err, size_t errlen)
{
    dq_state *st = ctx;
    dq_event *ev;
    const char *state;
    char key[512], why[256];
    redisReply *r;

    (void)err;
    (void)errlen;
    if (!m->value || m->len == 0)
        return DQ_HANDLED;
    ev = dq_event_decode(m->value, m->len, why, sizeof why);
    if (!ev)
        return DQ_HANDLED; /* not ours to judge: other workers dead-letter bad events */
    if (strcmp(ev->type, DQ_EV_VALIDATED) == 0) {
        dq_handle_result res = record_deployment(st, ev);

        dq_event_free(ev);
        return res;
    }
    if (strcmp(ev->type, DQ_EV_VERIFIED) == 0)
        state = "verified";
    else if (strcmp(ev->type, DQ_EV_SUCCEEDED) == 0)
        state = "succeeded";
    else
        state = NULL;
    if (!state || !ev->service || !ev->environment || !ev->version) {
        dq_event_free(ev);
        return DQ_HANDLED;
    }
    dq_gates_state_key(state, ev->service, ev->environment, ev->version, key, sizeof key);
    r = dq_redis_command(st->redis, "SET %s %s EX %ld", key, ev->id, STATE_TTL_S);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        dq_warn("redis %s: cannot record %s (%s); will retry", dq_redis_where(st->redis), key,
                r ? r->str : dq_redis_errstr(st->redis));
        if (r)
            freeReplyObject(r);
        dq_event_free(ev);
        return DQ_RETRY;
    }
    freeReplyObject(r);
    st->n_recorded++;
    dq_debug("recorded %s", key);
    dq_event_free(ev);
    return DQ_HANDLED;
}
