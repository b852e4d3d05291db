/*
 * approval.c - deciding a deployment that waits for approval.
 *
 * `deployq approve|deny` sends, on deployq.requests, the same signed wrapper as a deploy
 * request whose inner text is an approval document (schemas/approval.json):
 *   {"schema":"deployq.approval/v1","deployment_id":"...","decision":"approve"|"deny",
 *    "reason":"...","approver":"...","nonce":"...","issued_at":"..."}
 * A decision counts only when it is signed by a configured, unretired key of role
 * approver, inside the issued_at window, with a fresh nonce, and that key may make it: not
 * approving a request it signed itself, and inside its scope (keys[].services and
 * .environments). A valid approver who may not is refused (approval.refused) and the
 * deployment keeps waiting for one who may. Anything else about a pending
 * deployment rejects it (fail closed: approval_unsigned, stale, ...), so a forged or
 * mangled approval can cancel a deploy but never let one through. The first decision
 * wins (deployq:decided:<id>, SET NX); the pending record is deleted once the verdict is
 * on deployq.events, and a message for a deployment with nothing pending is skipped.
 * A deployment nobody decides in time is rejected (approval_expired) by
 * dq_approval_expire_due(), which claims the decision the same way. Parking the request in
 * the first place (dq_approval_park) is here too, so the pending record and the expiry set
 * are written and read by this file alone; it uses validate.c, which never calls back.
 */
#include "approval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "pending.h"
#include "sign.h"
#include "util.h"
#include "validate.h"

static char *expiry_member(const dq_event *validated);

int dq_approval_peek(const dq_parsed *p)
{
    const char *schema = dq_json_str(p->inner, "schema");

    return p->wrapper && schema && strcmp(schema, DQ_APPROVAL_SCHEMA) == 0;
}

/* Who may sign an approval, and the one code every signature problem gets. */
static const dq_signed_rules approval_rules = {
    .role = "approver",
    .noun = "approval",
    .needs = "approvals need an approver key",
    .code_unsigned = "approval_unsigned",
    .code_role = "approval_unsigned",
    .code_signature = "approval_unsigned",
};

/* 1 when the two configured keys hold the same public key (compared as bytes: two
 * spellings of one key are one key). */
static int same_public_key(const dq_key *a, const dq_key *b)
{
    unsigned char ra[32], rb[32];

    return a->public_key && b->public_key && dq_base64_decode(a->public_key, ra, sizeof ra) == 32 &&
           dq_base64_decode(b->public_key, rb, sizeof rb) == 32 && memcmp(ra, rb, sizeof ra) == 0;
}

/* "api, web" (cut to fit), or "all" for no list. Returns buf. */
static const char *scope_text(char *const *names, size_t n, char *buf, size_t buflen)
{
    size_t o = 0;

    dq_strlcpy(buf, n ? "" : "all", buflen);
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(buf + o, buflen - o, "%s%s", i ? ", " : "", names[i]);

        if (w < 0 || (size_t)w >= buflen - o)
            break;
        o += (size_t)w;
    }
    return buf;
}

/* May the approver key decide the parked deployment (pending, its deploy.validated)?
 * Reasons into v: approver_is_signer when it approves a request signed by itself (the same
 * key id, or the same public key under another id: four eyes need two keys; a signer may
 * still deny, which only stops its own deploy), out_of_scope when the target is outside
 * the key's services/environments. */
static void check_authority(dq_validator *val, const dq_event *pending, const dq_key *key,
                            const char *decision, dq_verdict *v)
{
    const char *signer_id = dq_json_str(pending->data, "key_id");
    const dq_key *signer = signer_id ? dq_config_key(val->cfg, signer_id) : NULL;

    if (decision && strcmp(decision, "approve") == 0 && signer_id) {
        if (strcmp(signer_id, key->id) == 0)
            dq_verdict_add(v, "approver_is_signer",
                           "key %s signed the request; another approver must approve it", key->id);
        else if (signer && same_public_key(signer, key))
            dq_verdict_add(v, "approver_is_signer",
                           "key %s is the same public key as %s, which signed the request; another "
                           "approver must approve it",
                           key->id, signer->id);
    }
    if (!dq_key_in_scope(key, pending->service, pending->environment)) {
        char svcs[200], envs[200];

        dq_verdict_add(v, "out_of_scope", "key %s may not decide %s/%s: its scope is services %s, environments %s",
                       key->id, pending->service ? pending->service : "?",
                       pending->environment ? pending->environment : "?",
                       scope_text(key->services, key->n_services, svcs, sizeof svcs),
                       scope_text(key->environments, key->n_environments, envs, sizeof envs));
    }
}

/* Record a refused decision (approval.refused, its id from m's position so a redelivery
 * is a duplicate) and leave the deployment waiting. */
static dq_handle_result refuse(dq_validator *val, const dq_message *m, const dq_event *pending,
                               const dq_key *key, const char *decision, const dq_verdict *v,
                               char *err, size_t errlen)
{
    dq_event *ev = dq_event_new(DQ_EV_APPROVAL_REFUSED, pending->deployment_id, pending->service,
                                pending->environment, pending->version, val->actor);
    char name[256];
    dq_handle_result res = DQ_HANDLED;

    if (!ev) {
        snprintf(err, errlen, "out of memory refusing an approval");
        return DQ_FAILED;
    }
    snprintf(name, sizeof name, "refused:%s/%d/%lld", m->topic, (int)m->partition, (long long)m->offset);
    dq_event_set_id_from(ev, name);
    cJSON_AddStringToObject(ev->data, "decision", decision && strcmp(decision, "approve") == 0 ? "approve" : "deny");
    cJSON_AddStringToObject(ev->data, "key_id", key->id);
    dq_verdict_add_reasons(ev->data, v);
    dq_validator_add_source(ev->data, m);
    if (dq_validator_emit(val, ev, err, errlen) != 0) {
        dq_warn("cannot emit %s for %s/%d/%lld: %s; will retry", ev->type, m->topic, (int)m->partition,
                (long long)m->offset, err);
        res = DQ_RETRY;
    } else {
        dq_info("%s deployment %s: %s; it keeps waiting", ev->type, pending->deployment_id, v->reasons[0].message);
    }
    dq_event_free(ev);
    return res;
}

/* Claim the right to decide deployment_id for message m: 1 ours (first, or a
 * redelivery of m), 0 someone decided before, -1 Redis unreachable. */
static int claim_decision(dq_validator *val, const dq_message *m, const char *deployment_id,
                          long ttl)
{
    char key[128], me[256], *prev = NULL;
    int rc;

    snprintf(key, sizeof key, "%s%s", DQ_DECIDED_PREFIX, deployment_id);
    snprintf(me, sizeof me, "%s/%d/%lld", m->topic, (int)m->partition, (long long)m->offset);
    rc = dq_redis_set_nx(val->redis, key, me, ttl);
    if (rc != 0)
        return rc;
    if (dq_redis_get(val->redis, key, &prev) != 0)
        return -1;
    rc = prev && strcmp(prev, me) == 0;
    free(prev);
    return rc;
}

dq_handle_result dq_approval_handle(dq_validator *val, const dq_message *m, const dq_parsed *p,
                                    char *err, size_t errlen)
{
    dq_verdict v;
    dq_event *pending = NULL, *ev = NULL;
    const dq_key *key = NULL;
    const char *dep, *decision, *reason;
    char pkey[128], name[256], buf[600], schema_err[512], *text = NULL;
    dq_handle_result res = DQ_HANDLED;
    int64_t now = dq_now_ms();
    int approved;

    memset(&v, 0, sizeof v);
    if (!dq_approval_peek(p))
        return DQ_HANDLED; /* the caller asked dq_approval_peek: cannot happen */
    dep = dq_json_str(p->inner, "deployment_id");
    decision = dq_json_str(p->inner, "decision");
    reason = dq_json_str(p->inner, "reason");
    if (!dep || !dq_uuid_valid(dep)) {
        /* Nothing can be decided without a deployment id: a plain rejection of the message. */
        dq_verdict_add(&v, "schema", "approval: /deployment_id: required, a UUID");
        ev = dq_verdict_event(val, m, &v);
        goto emit;
    }
    snprintf(pkey, sizeof pkey, "%s%s", DQ_PENDING_PREFIX, dep);
    if (dq_redis_get(val->redis, pkey, &text) != 0) {
        res = DQ_RETRY;
        goto out;
    }
    if (!text) {
        dq_warn("approval at %s/%d/%lld for deployment %s: nothing pending (decided, expired or unknown); skipped",
                m->topic, (int)m->partition, (long long)m->offset, dep);
        goto out;
    }
    pending = dq_event_decode(text, strlen(text), buf, sizeof buf);
    if (!pending) {
        redisReply *r = dq_redis_command(val->redis, "DEL %s", pkey);

        dq_warn("pending record of %s unreadable (%s); dropped", dep, buf);
        if (r)
            freeReplyObject(r);
        goto out;
    }
    if (val->approval &&
        dq_schema_validate(val->approval, p->inner, schema_err, sizeof schema_err) != 0)
        dq_verdict_add(&v, "schema", "approval: %s", dq_validator_safe(schema_err, buf, 300));
    dq_validator_check_signed(val, p, &approval_rules, now, &v, &key);
    if (key && v.n_reasons == 0) {
        char owner[256] = "";
        const char *nonce = dq_json_str(p->inner, "nonce");
        const char *issued = dq_json_str(p->inner, "issued_at");
        int64_t issued_ms = 0;
        int rc = 0;

        /* dq_validator_check_signed refused a missing or unreadable issued_at already */
        if (nonce && issued && dq_time_parse(issued, &issued_ms) == 0)
            rc = dq_validator_claim_nonce(val, m, key->id, nonce, issued_ms, owner, sizeof owner);
        if (rc < 0) {
            res = DQ_RETRY;
            goto out;
        }
        if (rc == 1)
            dq_verdict_add(&v, "replayed_nonce", "nonce already used by the message at %s", owner);
        if (rc == 2)
            dq_verdict_add(&v, "stale",
                           "the approval was issued before %s, when the replay memory (Redis) "
                           "began: a replay could not be told from it; sign it again",
                           owner);
    }
    if (key && v.n_reasons == 0) {
        /* A valid approver's decision that this approver may not make: recorded, and the
         * deployment keeps waiting for one who may (nothing is claimed). */
        dq_verdict refusal;

        memset(&refusal, 0, sizeof refusal);
        check_authority(val, pending, key, decision, &refusal);
        if (refusal.n_reasons > 0) {
            res = refuse(val, m, pending, key, decision, &refusal, err, errlen);
            dq_verdict_clear(&refusal);
            goto out;
        }
    }
    {
        int rc = claim_decision(val, m, dep, 7L * 24 * 3600);

        if (rc < 0) {
            res = DQ_RETRY;
            goto out;
        }
        if (rc == 0) {
            dq_warn("deployment %s was already decided; approval at %s/%d/%lld skipped", dep, m->topic,
                    (int)m->partition, (long long)m->offset);
            goto out;
        }
    }
    approved = v.n_reasons == 0 && decision && strcmp(decision, "approve") == 0;
    if (v.n_reasons == 0 && !approved) {
        if (reason)
            dq_verdict_add(&v, "denied", "denied by %s: %s", key->id, dq_validator_safe(reason, buf, 500));
        else
            dq_verdict_add(&v, "denied", "denied by %s", key->id);
    }
    snprintf(name, sizeof name, "decision:%s/%d/%lld", m->topic, (int)m->partition,
             (long long)m->offset);
    if (approved) {
        /* The parked deploy.validated, now with who approved it. */
        ev = pending;
        pending = NULL;
        dq_event_set_id_from(ev, name);
        ev->at_ms = now;
        free(ev->actor);
        ev->actor = strdup(val->actor);
        cJSON_DeleteItemFromObjectCaseSensitive(ev->data, "approved_by");
        cJSON_AddStringToObject(ev->data, "approved_by", key->id);
    } else {
        ev = dq_event_new(DQ_EV_REJECTED, pending->deployment_id, pending->service,
                          pending->environment, pending->version, val->actor);
        if (!ev)
            goto oom;
        dq_event_set_id_from(ev, name);
        dq_verdict_add_reasons(ev->data, &v);
        if (v.key_id[0] && dq_config_key(val->cfg, v.key_id))
            cJSON_AddStringToObject(ev->data, "key_id", v.key_id);
        dq_validator_add_source(ev->data, m);
    }
emit:
    if (!ev || !ev->actor)
        goto oom;
    if (dq_validator_emit(val, ev, err, errlen) != 0) {
        dq_warn("cannot emit %s for %s/%d/%lld: %s; will retry", ev->type, m->topic, (int)m->partition,
                (long long)m->offset, err);
        res = DQ_RETRY;
        goto out;
    }
    if (text) {
        redisReply *r = dq_redis_command(val->redis, "DEL %s", pkey);
        /* Decided: its expiry must never fire, however long the decided marker lives. The
         * parked event was moved into ev when approved. */
        char *member = expiry_member(pending ? pending : ev);

        if (r)
            freeReplyObject(r);
        r = member ? dq_redis_command(val->redis, "ZREM %s %s", DQ_APPROVAL_EXPIRIES, member) : NULL;
        if (r)
            freeReplyObject(r);
        free(member);
    }
    if (strcmp(ev->type, DQ_EV_VALIDATED) == 0)
        val->n_validated++;
    else
        val->n_rejected++;
    dq_info("%s deployment %s after %s: %s", ev->type, ev->deployment_id ? ev->deployment_id : "-",
            decision ? dq_validator_safe(decision, buf, 16) : "an approval",
            v.n_reasons ? v.reasons[0].message : "approved");
    goto out;
oom:
    snprintf(err, errlen, "out of memory deciding an approval");
    res = DQ_FAILED;
out:
    dq_event_free(ev);
    dq_event_free(pending);
    free(text);
    dq_verdict_clear(&v);
    return res;
}

/* The expiry set's member for a parked deployment (the same text from the parked
 * deploy.validated, so a decision can remove it). NULL on allocation failure. */
static char *expiry_member(const dq_event *validated)
{
    cJSON *o = cJSON_CreateObject();
    char *member;

    if (!o || !validated->deployment_id ||
        !cJSON_AddStringToObject(o, "deployment_id", validated->deployment_id) ||
        !cJSON_AddStringToObject(o, "service", validated->service ? validated->service : "") ||
        !cJSON_AddStringToObject(o, "environment", validated->environment ? validated->environment : "") ||
        !cJSON_AddStringToObject(o, "version", validated->version ? validated->version : "")) {
        cJSON_Delete(o);
        return NULL;
    }
    member = dq_json_print(o);
    cJSON_Delete(o);
    return member;
}

/* Schedule validated's expiry at expires_ms. 0, -1 when Redis did not take it. */
static int schedule_expiry(dq_validator *val, const dq_event *validated, int64_t expires_ms)
{
    char *member = expiry_member(validated);
    redisReply *r;
    int rc;

    if (!member)
        return -1;
    /* NX: a redelivered request keeps its first expiry. */
    r = dq_redis_command(val->redis, "ZADD %s NX %lld %s", DQ_APPROVAL_EXPIRIES, (long long)expires_ms,
                         member);
    rc = r && r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (r)
        freeReplyObject(r);
    free(member);
    return rc;
}

dq_event *dq_approval_park(dq_validator *val, const dq_message *m, const dq_verdict *v,
                           const dq_event *validated, int *transient)
{
    char key[128], name[256], *json = dq_event_encode(validated);
    long ttl = (long)(v->approval_timeout_ms / 1000);
    int64_t expires_ms = dq_now_ms() + (ttl > 0 ? ttl : 1) * 1000LL;
    dq_event *ev;

    if (!json)
        return NULL;
    snprintf(key, sizeof key, "%s%s", DQ_PENDING_PREFIX, validated->deployment_id);
    /* NX: a redelivered request must not resurrect a deployment already decided (the
     * decision deletes the key; deployq:decided:<id> then stops a new one). */
    if (dq_redis_set_nx(val->redis, key, json, ttl > 0 ? ttl : 1) < 0 ||
        schedule_expiry(val, validated, expires_ms) != 0) {
        free(json);
        *transient = 1;
        return NULL;
    }
    free(json);
    ev = dq_event_new(DQ_EV_AWAITING_APPROVAL, validated->deployment_id, validated->service,
                      validated->environment, validated->version, val->actor);
    if (!ev)
        return NULL;
    snprintf(name, sizeof name, "awaiting:%s/%d/%lld", m->topic, (int)m->partition,
             (long long)m->offset);
    dq_event_set_id_from(ev, name);
    cJSON_AddStringToObject(ev->data, "approval_role", "approver");
    if (v->request->requested_by)
        cJSON_AddStringToObject(ev->data, "requested_by", v->request->requested_by);
    if (v->request->ci_run_url)
        cJSON_AddStringToObject(ev->data, "ci_run_url", v->request->ci_run_url);
    {
        char until[DQ_TIME_LEN + 1];

        cJSON_AddStringToObject(ev->data, "expires_at", dq_time_format(expires_ms, until));
    }
    dq_validator_add_source(ev->data, m);
    return ev;
}

/* Put a claimed member back, for the next pass. */
static void expiry_unclaim(dq_validator *val, const char *member, size_t len, int64_t due_ms)
{
    redisReply *r = dq_redis_command(val->redis, "ZADD %s %lld %b", DQ_APPROVAL_EXPIRIES, (long long)due_ms,
                                     member, len);

    if (!r || r->type != REDIS_REPLY_INTEGER)
        dq_warn("approval expiry %.*s could not be put back: it will not be rejected", (int)len, member);
    if (r)
        freeReplyObject(r);
}

/* Reject one member due, already claimed by ZREM. 1 rejected, 0 nothing to do (decided
 * before, unreadable), -1 retry later. */
static int expire_one(dq_validator *val, const char *member, size_t len, int64_t due_ms)
{
    cJSON *o = dq_json_parse(member, len, 4096, 4, NULL, NULL, 0), *reasons, *x;
    const char *dep = dq_json_str(o, "deployment_id");
    char key[128], until[DQ_TIME_LEN + 1], msg[256], name[160], err[512], *prev = NULL;
    dq_event *ev = NULL;
    int rc = -1, mine;

    if (!dep || !dq_uuid_valid(dep)) {
        dq_warn("approval expiry %.*s unreadable; dropped", (int)len, member);
        cJSON_Delete(o);
        return 0;
    }
    /* The decision, claimed as an approval claims it (approval.c claim_decision): the first
     * of the two wins. Ours also when a pass of ours claimed it and then failed to emit. */
    snprintf(key, sizeof key, "%s%s", DQ_DECIDED_PREFIX, dep);
    if (dq_redis_set_nx(val->redis, key, "expired", 7L * 24 * 3600) < 0 ||
        dq_redis_get(val->redis, key, &prev) != 0)
        goto out;
    mine = prev && strcmp(prev, "expired") == 0;
    if (!mine) {
        dq_info("deployment %s was decided before its approval expired", dep);
        rc = 0;
        goto out;
    }
    ev = dq_event_new(DQ_EV_REJECTED, dep, dq_json_str(o, "service"), dq_json_str(o, "environment"),
                      dq_json_str(o, "version"), val->actor);
    if (!ev)
        goto out;
    snprintf(name, sizeof name, "approval-expired:%s", dep);
    dq_event_set_id_from(ev, name);
    snprintf(msg, sizeof msg, "no approver decided before %s (the environment's approval_timeout)",
             dq_time_format(due_ms, until));
    reasons = cJSON_AddArrayToObject(ev->data, "reasons");
    x = cJSON_CreateObject();
    if (!reasons || !x || !cJSON_AddStringToObject(x, "code", "approval_expired") ||
        !cJSON_AddStringToObject(x, "message", msg)) {
        cJSON_Delete(x);
        goto out;
    }
    cJSON_AddItemToArray(reasons, x);
    if (dq_validator_emit(val, ev, err, sizeof err) != 0) {
        dq_warn("cannot emit the approval expiry of %s: %s; will retry", dep, err);
        goto out;
    }
    snprintf(key, sizeof key, "%s%s", DQ_PENDING_PREFIX, dep);
    {
        redisReply *r = dq_redis_command(val->redis, "DEL %s", key);

        if (r)
            freeReplyObject(r);
    }
    val->n_rejected++;
    dq_info("%s deployment %s: approval_expired: %s", ev->type, dep, msg);
    rc = 1;
out:
    dq_event_free(ev);
    free(prev);
    cJSON_Delete(o);
    return rc;
}

int dq_approval_expire_due(dq_validator *val, int64_t now_ms)
{
    redisReply *r = dq_redis_command(val->redis, "ZRANGEBYSCORE %s -inf %lld WITHSCORES LIMIT 0 64",
                                     DQ_APPROVAL_EXPIRIES, (long long)now_ms);
    int n = 0;

    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *m = r->element[i], *sc = r->element[i + 1];
        int64_t due = sc->type == REDIS_REPLY_STRING ? strtoll(sc->str, NULL, 10) : now_ms;
        redisReply *z;
        int claimed, rc;

        if (m->type != REDIS_REPLY_STRING)
            continue;
        /* The claim: of all validators, only the one whose ZREM removed it goes on. */
        z = dq_redis_command(val->redis, "ZREM %s %b", DQ_APPROVAL_EXPIRIES, m->str, m->len);
        claimed = z && z->type == REDIS_REPLY_INTEGER && z->integer == 1;
        if (z)
            freeReplyObject(z);
        if (!claimed)
            continue;
        rc = expire_one(val, m->str, m->len, due);
        if (rc < 0) {
            expiry_unclaim(val, m->str, m->len, due);
            n = -1;
            break;
        }
        n += rc;
    }
    freeReplyObject(r);
    return n;
}
