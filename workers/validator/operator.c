/*
 * operator.c - operator commands (operator.h): verified like a deploy request, applied
 * in Redis (opstate.h), recorded on deployq.events. Uses validate.c (the signature check,
 * reasons, nonces, gates, emitting) and approval.c (a retry that needs approval is parked
 * like a request); neither calls back.
 */
#include "operator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "approval.h"
#include "json.h"
#include "log.h"
#include "opstate.h"
#include "runrecord.h"
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

/* Who may sign an operator command, and the codes of operator.refused. */
static const dq_signed_rules operator_rules = {
    .role = "operator",
    .noun = "command",
    .needs = "operator commands need an operator key",
    .code_unsigned = "unsigned",
    .code_role = "wrong_role",
    .code_signature = "bad_signature",
};

/* The verbs that name a deployment (else a target). */
static int deployment_verb(const char *verb)
{
    return verb && (strcmp(verb, "cancel") == 0 || strcmp(verb, "retry") == 0);
}

void dq_operator_check(const dq_validator *val, const dq_parsed *p, int64_t now_ms, dq_verdict *v,
                       const dq_key **key_out)
{
    const char *verb = dq_json_str(p->inner, "verb");
    char err[512], buf[320];

    *key_out = NULL;
    if (val->operator_cmd && dq_schema_validate(val->operator_cmd, p->inner, err, sizeof err) != 0)
        dq_verdict_add(v, "schema", "operator command: %s", dq_validator_safe(err, buf, 300));
    if (deployment_verb(verb) && !dq_uuid_valid(dq_json_str(p->inner, "deployment_id")))
        dq_verdict_add(v, "schema", "%s: /deployment_id: required, a UUID", verb);
    if (target_verb(verb)) {
        const char *s = dq_json_str(p->inner, "service"), *e = dq_json_str(p->inner, "environment");

        if (!s || !e)
            dq_verdict_add(v, "schema", "%s: /service and /environment are required", verb);
        else if (!dq_config_env_view(val->cfg, s, e))
            dq_verdict_add(v, "unknown_target", "%s/%s is not a configured target",
                           dq_validator_safe(s, buf, 70), dq_validator_safe(e, err, 70));
    }
    dq_validator_check_signed(val, p, &operator_rules, now_ms, v, key_out);
}

/* What the executor's run record (execute.h) says of a deployment. */
enum run_state { RUN_NONE, RUN_STARTED, RUN_SUCCEEDED, RUN_FAILED, RUN_OTHER, RUN_ERROR };

/* Read deployq:exec:<deployment_id>: RUN_NONE without a record, RUN_STARTED without a
 * terminal event in it, else the terminal event's outcome; RUN_ERROR when Redis could not
 * be asked. */
static enum run_state run_state(dq_validator *val, const char *deployment_id)
{
    char key[128], *text = NULL;
    cJSON *rec, *term;
    enum run_state st = RUN_STARTED;

    snprintf(key, sizeof key, "%s%s", DQ_RUNRECORD_KEY_EXEC, deployment_id);
    if (dq_redis_get(val->redis, key, &text) != 0)
        return RUN_ERROR;
    if (!text)
        return RUN_NONE;
    rec = dq_json_parse(text, strlen(text), 1 << 20, 64, NULL, NULL, 0);
    term = rec && dq_json_str(rec, "terminal")
               ? dq_json_parse(dq_json_str(rec, "terminal"), strlen(dq_json_str(rec, "terminal")), 1 << 20, 64,
                               NULL, NULL, 0)
               : NULL;
    if (term) {
        const char *t = dq_json_str(term, "type");

        st = !t ? RUN_OTHER : strcmp(t, DQ_EV_SUCCEEDED) == 0 ? RUN_SUCCEEDED
                            : strcmp(t, DQ_EV_FAILED) == 0    ? RUN_FAILED
                                                              : RUN_OTHER;
    }
    cJSON_Delete(term);
    cJSON_Delete(rec);
    free(text);
    return st;
}

/* The deployment record of state.c (validate.h DQ_DEPLOYMENT_KEY) of deployment_id: *out
 * the parsed record, NULL when there is none (never validated, or expired). -1 Redis. */
static int deployment_record(dq_validator *val, const char *deployment_id, cJSON **out)
{
    char key[128], *text = NULL;

    *out = NULL;
    snprintf(key, sizeof key, "%s%s", DQ_DEPLOYMENT_KEY, deployment_id);
    if (dq_redis_get(val->redis, key, &text) != 0)
        return -1;
    if (text)
        *out = dq_json_parse(text, strlen(text), 1 << 16, 8, NULL, NULL, 0);
    free(text);
    return 0;
}

/* A retry: the old deployment's service, environment and version (dep, its record), judged
 * again as a new request by the gates (dq_validate_gates), under a new deployment id derived
 * from the command (key id and nonce: a redelivery yields the same id, a replay is refused
 * by its nonce). Returns the verdict event to emit as it is (deploy.validated,
 * deploy.rejected, or deploy.awaiting_approval once parked), with data.retry_of; NULL with
 * *transient (Redis) or on allocation failure. */
static dq_event *retry(dq_validator *val, const dq_message *m, const dq_parsed *p, const dq_key *key,
                       const cJSON *dep, int *transient)
{
    const char *old = dq_json_str(p->inner, "deployment_id");
    const char *who = dq_json_str(p->inner, "operator"), *reason = dq_json_str(p->inner, "reason");
    char name[400], id[DQ_UUID_LEN + 1];
    cJSON *doc = cJSON_CreateObject();
    dq_verdict v;
    dq_event *ev = NULL, *out;

    memset(&v, 0, sizeof v);
    snprintf(name, sizeof name, "retry:%s:%s", key->id, dq_json_str(p->inner, "nonce"));
    dq_uuid_from_name(name, id);
    if (!doc || !cJSON_AddStringToObject(doc, "deployment_id", id) ||
        !cJSON_AddStringToObject(doc, "service", dq_json_str(dep, "service")) ||
        !cJSON_AddStringToObject(doc, "environment", dq_json_str(dep, "environment")) ||
        !cJSON_AddStringToObject(doc, "version", dq_json_str(dep, "version")) ||
        (dq_json_str(dep, "strategy") && !cJSON_AddStringToObject(doc, "strategy", dq_json_str(dep, "strategy"))) ||
        !cJSON_AddStringToObject(doc, "requested_by", who ? who : key->id) ||
        !cJSON_AddStringToObject(doc, "nonce", dq_json_str(p->inner, "nonce")) ||
        !cJSON_AddStringToObject(doc, "issued_at", dq_json_str(p->inner, "issued_at")))
        goto out;
    v.request = dq_request_from_json(doc);
    if (!v.request)
        goto out;
    dq_strlcpy(v.key_id, key->id, sizeof v.key_id);
    /* the same gates as a request: freeze (no override for a retry), promotion, drift,
     * approval */
    if (dq_validate_gates(val, &v, NULL, dq_now_ms()) != 0) {
        *transient = 1;
        goto out;
    }
    ev = dq_verdict_event(val, m, &v);
    if (!ev || !cJSON_AddStringToObject(ev->data, "retry_of", old) ||
        (reason && !cJSON_AddStringToObject(ev->data, "retry_reason", reason))) {
        dq_event_free(ev);
        ev = NULL;
        goto out;
    }
    if (v.n_reasons == 0 && v.awaiting) {
        out = dq_approval_park(val, m, &v, ev, transient);
        dq_event_free(ev);
        ev = out;
        if (ev && !cJSON_AddStringToObject(ev->data, "retry_of", old)) {
            dq_event_free(ev);
            ev = NULL;
        }
    }
out:
    cJSON_Delete(doc);
    dq_verdict_clear(&v);
    return ev;
}

/* The target of a verified command, and whether key may act on it: target verbs name it,
 * cancel and retry find it in the deployment record (*dep, the caller frees it). A key
 * scoped to services or environments may not act on a deployment whose target is not
 * known. 0 (reasons in v when refused), -1 Redis. */
static int check_scope(dq_validator *val, const dq_parsed *p, const dq_key *key, dq_verdict *v, cJSON **dep)
{
    const char *verb = dq_json_str(p->inner, "verb"), *id = dq_json_str(p->inner, "deployment_id");
    const char *s = dq_json_str(p->inner, "service"), *e = dq_json_str(p->inner, "environment");

    *dep = NULL;
    if (deployment_verb(verb)) {
        if (deployment_record(val, id, dep) != 0)
            return -1;
        s = dq_json_str(*dep, "service");
        e = dq_json_str(*dep, "environment");
    }
    if (!key->services && !key->environments)
        return 0;
    if (!s || !e)
        dq_verdict_add(v, "out_of_scope", "key %s is scoped, and deployment %s's target is not known here", key->id,
                       id);
    else if (!dq_key_in_scope(key, s, e))
        dq_verdict_add(v, "out_of_scope", "key %s may not act on %s/%s (outside its services or environments)",
                       key->id, s, e);
    return 0;
}

/* Apply a verified command in Redis and build its event. NULL with *transient (Redis) or
 * with a reason in v (nothing to act on), or on allocation failure. *complete: the event
 * is whole (a retry's verdict: its id and source are set), else the caller sets them. */
static dq_event *apply(dq_validator *val, const dq_message *m, const dq_parsed *p, const dq_key *key,
                       const cJSON *dep, dq_verdict *v, int *transient, int *complete)
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
        const char *id = dq_json_str(p->inner, "deployment_id");
        enum run_state st = run_state(val, id);

        if (st == RUN_SUCCEEDED || st == RUN_FAILED) {
            dq_verdict_add(v, "nothing_to_cancel", "nothing to cancel: deployment %s already %s", id,
                           st == RUN_SUCCEEDED ? "succeeded" : "failed");
            return NULL;
        }
        if (st == RUN_ERROR || dq_cancel_set(val->redis, id, &mark) != 0) {
            *transient = 1;
            return NULL;
        }
        ev = dq_event_new(DQ_EV_CANCEL_REQUESTED, id, NULL, NULL, NULL, key->id);
    } else if (strcmp(verb, "retry") == 0) {
        const char *id = dq_json_str(p->inner, "deployment_id");
        enum run_state st = dep ? run_state(val, id) : RUN_NONE;

        if (st == RUN_ERROR) {
            *transient = 1;
            return NULL;
        }
        if (!dep || !dq_json_str(dep, "service") || !dq_json_str(dep, "environment") || !dq_json_str(dep, "version"))
            dq_verdict_add(v, "unknown_deployment",
                           "deployment %s is not known here (never validated, or validated over 7 days ago)", id);
        else if (st == RUN_SUCCEEDED)
            dq_verdict_add(v, "nothing_to_retry",
                           "nothing to retry: deployment %s succeeded; to deploy its version again, submit a "
                           "new request (deployq submit)", id);
        else if (st != RUN_FAILED)
            dq_verdict_add(v, "not_concluded",
                           "deployment %s has no outcome yet (waiting, running, or never run); cancel it "
                           "first, or wait for its outcome", id);
        else if (!dq_config_environment(val->cfg, dq_json_str(dep, "service"), dq_json_str(dep, "environment")))
            dq_verdict_add(v, "unknown_target", "deployment %s's target %s/%s is no longer configured", id,
                           dq_json_str(dep, "service"), dq_json_str(dep, "environment"));
        if (v->n_reasons)
            return NULL;
        *complete = 1;
        return retry(val, m, p, key, dep, transient);
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
    cJSON *deprec = NULL; /* cancel, retry: the deployment's record (state.c) */
    int transient = 0, complete = 0;

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
    if (v.n_reasons == 0 && check_scope(val, p, key, &v, &deprec) != 0)
        transient = 1;
    if (v.n_reasons == 0 && !transient)
        ev = apply(val, m, p, key, deprec, &v, &transient, &complete);
    if (transient) {
        dq_warn("redis %s unavailable (%s); will retry the operator command at %s/%d/%lld",
                dq_redis_where(val->redis), dq_redis_errstr(val->redis), m->topic, (int)m->partition,
                (long long)m->offset);
        res = DQ_RETRY;
        goto out;
    }
    if (v.n_reasons > 0) {
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
        dq_verdict_add_reasons(ev->data, &v);
        if (v.key_id[0] && dq_config_key(val->cfg, v.key_id))
            cJSON_AddStringToObject(ev->data, "key_id", v.key_id);
    }
    if (!ev)
        goto oom;
    if (!complete) {
        snprintf(name, sizeof name, "operator:%s/%d/%lld", m->topic, (int)m->partition, (long long)m->offset);
        dq_event_set_id_from(ev, name);
        dq_validator_add_source(ev->data, m);
    }
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
        dq_info("%s by %s%s%s", ev->type, key->id, complete ? ", retrying " : "",
                complete ? dq_json_str(p->inner, "deployment_id") : "");
    goto out;
oom:
    snprintf(err, errlen, "out of memory handling an operator command");
    res = DQ_FAILED;
out:
    cJSON_Delete(deprec);
    dq_event_free(ev);
    dq_verdict_clear(&v);
    return res;
}
