/*
 * state.c - what the validator learns from deployq.events for the promotion gate.
 *
 * A second consumer (group <group>-state, on its own thread and Redis connection) reads
 * deployq.events and records every deploy.verified and deploy.succeeded as
 * deployq:<verified|succeeded>:<service>:<env>:<version> (kept 90 days). The promotion
 * gate of validate.c asks for that key. Recording is idempotent, so redeliveries are
 * harmless; an event that is not one of those two types is skipped.
 */
#include <stdio.h>
#include <string.h>

#include "event.h"
#include "gates.h"
#include "log.h"
#include "validate.h"

#define STATE_TTL_S (90L * 24 * 3600)

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
