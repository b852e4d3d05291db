/*
 * operator.c - operator commands (operator.h): verified like a deploy request, applied
 * in Redis (opstate.h), recorded on deployq.events. Uses validate.c (reasons, nonces,
 * emitting), which never calls back.
 */
#include "operator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "opstate.h"
#include "sign.h"
#include "util.h"

int dq_operator_peek(const dq_parsed *p)
{
    const char *schema = dq_json_str(p->inner, "schema");

    return p->wrapper && schema && strcmp(schema, DQ_OPERATOR_SCHEMA) == 0;
}

static int target_verb(const char *verb)
{
    return verb && (strcmp(verb, "pause") == 0 || strcmp(verb, "resume") == 0 || strcmp(verb, "hold") == 0 ||
                    strcmp(verb, "release") == 0);
}

void dq_operator_check(const dq_validator *val, const dq_parsed *p, int64_t now_ms, dq_verdict *v,
                       const dq_key **key_out)
{
    const char *key_id = dq_json_str(p->wrapper, "key_id");
    const char *sig = dq_json_str(p->wrapper, "signature");
    const char *issued = dq_json_str(p->inner, "issued_at");
    const char *verb = dq_json_str(p->inner, "verb");
    const dq_key *key;
    char err[512], buf[320];
    int64_t t;

    *key_out = NULL;
    if (val->operator_cmd && dq_schema_validate(val->operator_cmd, p->inner, err, sizeof err) != 0)
        dq_verdict_add(v, "schema", "operator command: %s", dq_validator_safe(err, buf, 300));
    if (verb && strcmp(verb, "cancel") == 0 && !dq_uuid_valid(dq_json_str(p->inner, "deployment_id")))
        dq_verdict_add(v, "schema", "cancel: /deployment_id: required, a UUID");
    if (target_verb(verb)) {
        const char *s = dq_json_str(p->inner, "service"), *e = dq_json_str(p->inner, "environment");

        if (!s || !e)
            dq_verdict_add(v, "schema", "%s: /service and /environment are required", verb);
        else if (!dq_config_env_view(val->cfg, s, e))
            dq_verdict_add(v, "unknown_target", "%s/%s is not a configured target",
                           dq_validator_safe(s, buf, 70), dq_validator_safe(e, err, 70));
    }
    if (!key_id || !sig) {
        dq_verdict_add(v, "unsigned", "the command is not signed (no signature or key_id)");
        return;
    }
    dq_validator_safe(key_id, v->key_id, sizeof v->key_id);
    key = dq_config_key(val->cfg, key_id);
    if (!key)
        dq_verdict_add(v, "unsigned", "key id '%s' is not configured", dq_validator_safe(key_id, buf, 80));
    else if (key->retired)
        dq_verdict_add(v, "unsigned", "key id '%s' is retired", key->id);
    else if (!key->role || strcmp(key->role, "operator") != 0)
        dq_verdict_add(v, "wrong_role", "key id '%s' has role %s; operator commands need an operator key",
                       key->id, key->role ? key->role : "ci");
    else if (!p->request_text ||
             dq_verify(key->public_key, p->request_text, strlen(p->request_text), sig, err, sizeof err) != 1)
        dq_verdict_add(v, "bad_signature", "signature does not match the command (key %s)", key->id);
    else
        *key_out = key;
    if (!issued || dq_time_parse(issued, &t) != 0)
        return; /* the schema check reports it */
    if (now_ms - t > val->cfg->issued_at_window_ms)
        dq_verdict_add(v, "stale", "the command's issued_at %s is %lld s old", dq_validator_safe(issued, buf, 40),
                       (long long)((now_ms - t) / 1000));
    else if (t - now_ms > val->cfg->issued_at_window_ms)
        dq_verdict_add(v, "future", "the command's issued_at %s is in the future",
                       dq_validator_safe(issued, buf, 40));
}

static void add_source(cJSON *data, const dq_message *m)
{
    cJSON *source = cJSON_AddObjectToObject(data, "source");

    cJSON_AddStringToObject(source, "topic", m->topic);
    cJSON_AddNumberToObject(source, "partition", m->partition);
    cJSON_AddNumberToObject(source, "offset", (double)m->offset);
}

/* A cancel of a deployment whose run concluded: its terminal event's type (malloc'd), or
 * NULL (none, or Redis: *transient). The run record is execute.h's. */
static char *concluded_as(dq_validator *val, const char *deployment_id, int *transient)
{
    char key[128], *text = NULL, *type = NULL;
    cJSON *rec, *term;

    snprintf(key, sizeof key, "deployq:exec:%s", deployment_id);
    if (dq_redis_get(val->redis, key, &text) != 0) {
        *transient = 1;
        return NULL;
    }
    if (!text)
        return NULL;
    rec = dq_json_parse(text, strlen(text), 1 << 20, 64, NULL, NULL, 0);
    term = rec && dq_json_str(rec, "terminal")
               ? dq_json_parse(dq_json_str(rec, "terminal"), strlen(dq_json_str(rec, "terminal")), 1 << 20, 64,
                               NULL, NULL, 0)
               : NULL;
    if (term && dq_json_str(term, "type")) {
        const char *t = dq_json_str(term, "type");

        type = strdup(strcmp(t, DQ_EV_SUCCEEDED) == 0 ? "succeeded" : strcmp(t, DQ_EV_FAILED) == 0 ? "failed" : t);
    }
    cJSON_Delete(term);
    cJSON_Delete(rec);
    free(text);
    return type;
}

/* Apply a verified command in Redis and build its event. NULL with *transient (Redis) or
 * with a reason in v (nothing to act on), or on allocation failure. */
static dq_event *apply(dq_validator *val, const dq_parsed *p, const dq_key *key, dq_verdict *v, int *transient)
{
    const char *verb = dq_json_str(p->inner, "verb");
    const char *reason = dq_json_str(p->inner, "reason");
    const char *who = dq_json_str(p->inner, "operator");
    const char *s = dq_json_str(p->inner, "service"), *e = dq_json_str(p->inner, "environment");
    dq_opmark mark;
    dq_event *ev = NULL;
    int rc = 0;

    memset(&mark, 0, sizeof mark);
    dq_strlcpy(mark.by, key->id, sizeof mark.by);
    dq_strlcpy(mark.reason, reason ? reason : "", sizeof mark.reason);
    dq_time_format(dq_now_ms(), mark.at);
    if (strcmp(verb, "cancel") == 0) {
        const char *dep = dq_json_str(p->inner, "deployment_id");
        char *done = concluded_as(val, dep, transient);

        if (done) {
            dq_verdict_add(v, "nothing_to_cancel", "nothing to cancel: deployment %s already %s", dep, done);
            free(done);
            return NULL;
        }
        if (*transient || dq_cancel_set(val->redis, dep, &mark) != 0) {
            *transient = 1;
            return NULL;
        }
        ev = dq_event_new(DQ_EV_CANCEL_REQUESTED, dep, NULL, NULL, NULL, key->id);
    } else if (strcmp(verb, "pause") == 0 || strcmp(verb, "hold") == 0) {
        int pause = strcmp(verb, "pause") == 0;

        if (dq_opstate_set(val->redis, pause ? DQ_OPSTATE_PAUSED : DQ_OPSTATE_HELD, s, e, &mark) != 0) {
            *transient = 1;
            return NULL;
        }
        ev = dq_event_new(pause ? DQ_EV_TARGET_PAUSED : DQ_EV_TARGET_HELD, NULL, s, e, NULL, key->id);
    } else {
        int resume = strcmp(verb, "resume") == 0;

        rc = dq_opstate_clear(val->redis, resume ? DQ_OPSTATE_PAUSED : DQ_OPSTATE_HELD, s, e);
        if (rc < 0) {
            *transient = 1;
            return NULL;
        }
        ev = dq_event_new(resume ? DQ_EV_TARGET_RESUMED : DQ_EV_TARGET_RELEASED, NULL, s, e, NULL, key->id);
        if (ev)
            cJSON_AddBoolToObject(ev->data, resume ? "was_paused" : "was_held", rc == 1);
    }
    if (!ev)
        return NULL;
    cJSON_AddStringToObject(ev->data, "by", key->id);
    if (reason)
        cJSON_AddStringToObject(ev->data, "reason", reason);
    if (who)
        cJSON_AddStringToObject(ev->data, "operator", who);
    return ev;
}

dq_handle_result dq_operator_handle(dq_validator *val, const dq_message *m, const dq_parsed *p, char *err,
                                    size_t errlen)
{
    dq_verdict v;
    const dq_key *key = NULL;
    dq_event *ev = NULL;
    dq_handle_result res = DQ_HANDLED;
    const char *verb = dq_json_str(p->inner, "verb");
    char name[256], buf[64];
    int transient = 0;

    memset(&v, 0, sizeof v);
    dq_operator_check(val, p, dq_now_ms(), &v, &key);
    if (!verb || !dq_json_str(p->inner, "nonce") || !dq_json_str(p->inner, "issued_at"))
        dq_verdict_add(&v, "schema", "operator command: /verb, /nonce and /issued_at are required");
    if (key && v.n_reasons == 0) {
        /* the nonce last, and only for a good signature: a forger cannot burn nonces */
        const char *nonce = dq_json_str(p->inner, "nonce");
        int64_t issued_ms = 0;
        char owner[256] = "";
        int rc;

        dq_time_parse(dq_json_str(p->inner, "issued_at"), &issued_ms); /* checked above */
        rc = dq_validator_claim_nonce(val, m, key->id, nonce, issued_ms, owner, sizeof owner);
        if (rc < 0) {
            res = DQ_RETRY;
            goto out;
        }
        if (rc == 1)
            dq_verdict_add(&v, "replayed_nonce", "nonce already used by the message at %s", owner);
        if (rc == 2)
            dq_verdict_add(&v, "stale", "the command was issued before %s, when the replay memory (Redis) began; "
                                        "sign it again", owner);
    }
    if (v.n_reasons == 0) {
        ev = apply(val, p, key, &v, &transient);
        if (transient) {
            dq_warn("redis %s unavailable (%s); will retry the operator command at %s/%d/%lld",
                    dq_redis_where(val->redis), dq_redis_errstr(val->redis), m->topic, (int)m->partition,
                    (long long)m->offset);
            res = DQ_RETRY;
            goto out;
        }
    }
    if (v.n_reasons > 0) {
        cJSON *reasons;
        const char *s = dq_json_str(p->inner, "service"), *e = dq_json_str(p->inner, "environment");
        const char *dep = dq_json_str(p->inner, "deployment_id");
        int target_ok = s && e && dq_config_env_view(val->cfg, s, e);

        /* what the message says is named only when it is known to be harmless */
        ev = dq_event_new(DQ_EV_OPERATOR_REFUSED, dq_uuid_valid(dep) ? dep : NULL, target_ok ? s : NULL,
                          target_ok ? e : NULL, NULL, val->actor);
        if (!ev)
            goto oom;
        if (verb)
            cJSON_AddStringToObject(ev->data, "verb", dq_validator_safe(verb, buf, 17));
        reasons = cJSON_AddArrayToObject(ev->data, "reasons");
        for (int i = 0; i < v.n_reasons; i++) {
            cJSON *o = cJSON_CreateObject();

            cJSON_AddStringToObject(o, "code", v.reasons[i].code);
            cJSON_AddStringToObject(o, "message", v.reasons[i].message);
            cJSON_AddItemToArray(reasons, o);
        }
        if (v.key_id[0] && dq_config_key(val->cfg, v.key_id))
            cJSON_AddStringToObject(ev->data, "key_id", v.key_id);
    }
    if (!ev)
        goto oom;
    snprintf(name, sizeof name, "operator:%s/%d/%lld", m->topic, (int)m->partition, (long long)m->offset);
    dq_event_set_id_from(ev, name);
    add_source(ev->data, m);
    if (dq_validator_emit(val, ev, err, errlen) != 0) {
        dq_warn("cannot emit %s for %s/%d/%lld: %s; will retry", ev->type, m->topic, (int)m->partition,
                (long long)m->offset, err);
        res = DQ_RETRY;
        goto out;
    }
    if (v.n_reasons)
        dq_warn("operator command at %s/%d/%lld refused: %s: %s%s", m->topic, (int)m->partition,
                (long long)m->offset, v.reasons[0].code, v.reasons[0].message, v.n_reasons > 1 ? " (and more)" : "");
    else
        dq_info("%s by %s", ev->type, key->id);
    goto out;
oom:
    snprintf(err, errlen, "out of memory handling an operator command");
    res = DQ_FAILED;
out:
    dq_event_free(ev);
    dq_verdict_clear(&v);
    return res;
}
