/*
 * validate.c - the checks of deployq-validator and the verdict events it emits.
 * See validate.h for the order of the checks and why the nonce comes last.
 */
#include "validate.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "sign.h"
#include "util.h"

/* Copy attacker-controlled text for a message: printable ASCII only, bounded. */
static const char *safe(const char *s, char *buf, size_t buflen)
{
    size_t i = 0;

    if (!s)
        s = "";
    for (; *s && i + 4 < buflen; s++)
        buf[i++] = (isprint((unsigned char)*s) && *s != '\\') ? *s : '?';
    if (*s && i + 4 >= buflen) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

static void add_reason(dq_verdict *v, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add_reason(dq_verdict *v, const char *code, const char *fmt, ...)
{
    va_list ap;
    dq_reason *r;

    if (v->n_reasons >= DQ_MAX_REASONS)
        return;
    r = &v->reasons[v->n_reasons++];
    r->code = code;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
}

/* ^[a-z0-9][a-z0-9._-]{0,62}$, the rule of the schemas and the configuration. */
static int valid_name(const char *s)
{
    size_t n;

    if (!s || !(islower((unsigned char)s[0]) || isdigit((unsigned char)s[0])))
        return 0;
    for (n = 0; s[n]; n++)
        if (!(islower((unsigned char)s[n]) || isdigit((unsigned char)s[n]) || s[n] == '.' ||
              s[n] == '_' || s[n] == '-'))
            return 0;
    return n <= 63;
}

static int valid_version(const char *s)
{
    size_t n;

    if (!s)
        return 0;
    for (n = 0; s[n]; n++)
        if (!isgraph((unsigned char)s[n]))
            return 0;
    return n >= 1 && n <= 128;
}

static const char *json_reason_code(dq_json_status st)
{
    switch (st) {
    case DQ_JSON_TOO_LARGE: return "too_large";
    case DQ_JSON_TOO_DEEP: return "too_deep";
    default: return "bad_json";
    }
}

void dq_verdict_clear(dq_verdict *v)
{
    if (!v)
        return;
    dq_request_free(v->request);
    memset(v, 0, sizeof *v);
}

/* Claim the nonce. 0 fresh or our own (a redelivery of this very message), 1 replayed,
 * -1 Redis unreachable. */
static int claim_nonce(dq_validator *val, const dq_message *m, const char *key_id,
                       const char *nonce, char *owner, size_t ownerlen)
{
    char key[256], me[256];
    char *prev = NULL;
    long ttl = (long)(val->cfg->issued_at_window_ms / 1000) * 2 + 60;
    int rc;

    /* The nonce must outlive the window in which its request is acceptable; past that,
     * issued_at alone refuses a replay, so nonces survive a Redis restart in effect. */
    snprintf(key, sizeof key, "deployq:nonce:%s:%s", key_id, nonce);
    snprintf(me, sizeof me, "%s/%d/%lld", m->topic, (int)m->partition, (long long)m->offset);
    rc = dq_redis_set_nx(val->redis, key, me, ttl);
    if (rc == 1)
        return 0;
    if (rc < 0 || dq_redis_get(val->redis, key, &prev) != 0)
        return -1;
    if (!prev) /* expired between the two calls: try once more */
        return dq_redis_set_nx(val->redis, key, me, ttl) == 1 ? 0 : -1;
    rc = strcmp(prev, me) == 0 ? 0 : 1;
    dq_strlcpy(owner, prev, ownerlen);
    free(prev);
    return rc;
}

int dq_validate(dq_validator *val, const dq_message *m, int64_t now_ms, dq_verdict *v)
{
    const dq_config *cfg = val->cfg;
    char err[1024], buf[160], buf2[160];
    dq_json_status st = DQ_JSON_OK;
    cJSON *wrapper = NULL, *inner = NULL;
    const char *request_text = NULL, *sig = NULL, *key_id = NULL;
    const dq_key *key = NULL;
    int sig_ok = 0, time_ok = 0;

    memset(v, 0, sizeof *v);
    if (!m->value || m->len == 0) {
        add_reason(v, "bad_json", "empty message");
        return 0;
    }
    wrapper = dq_json_parse(m->value, m->len, cfg->max_request_bytes, cfg->max_depth, &st, err,
                            sizeof err);
    if (!wrapper) {
        add_reason(v, json_reason_code(st), "%s", err);
        return 0;
    }
    if (dq_schema_validate(dq_schema_set_signed(val->schemas), wrapper, err, sizeof err) != 0) {
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(wrapper, "signature")) ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(wrapper, "key_id")))
            add_reason(v, "missing_signature", "the request is not signed (no signature or key_id)");
        else
            add_reason(v, "schema", "signed envelope: %s", safe(err, buf, sizeof buf));
    }
    key_id = dq_json_str(wrapper, "key_id");
    sig = dq_json_str(wrapper, "signature");
    request_text = dq_json_str(wrapper, "request");
    if (key_id)
        safe(key_id, v->key_id, sizeof v->key_id);
    if (!request_text) {
        if (v->n_reasons == 0)
            add_reason(v, "schema", "signed envelope: /request: required");
        goto done;
    }

    inner = dq_json_parse(request_text, strlen(request_text), cfg->max_request_bytes,
                          cfg->max_depth, &st, err, sizeof err);
    if (!inner) {
        add_reason(v, json_reason_code(st), "request: %s", err);
    } else {
        if (dq_schema_validate(dq_schema_set_request(val->schemas), inner, err, sizeof err) != 0)
            add_reason(v, "schema", "request: %s", safe(err, buf, sizeof buf));
        v->request = dq_request_from_json(inner);
    }

    if (key_id && sig) {
        key = dq_config_key(cfg, key_id);
        if (!key)
            add_reason(v, "unknown_key", "key id '%s' is not configured", safe(key_id, buf, 80));
        else if (key->retired)
            add_reason(v, "retired_key", "key id '%s' is retired", key->id);
        else if (key->role && strcmp(key->role, "ci") != 0)
            add_reason(v, "wrong_key_role", "key id '%s' has role %s; deploy requests need a ci key",
                       key->id, key->role);
        else {
            int ok = dq_verify(key->public_key, request_text, strlen(request_text), sig, err,
                               sizeof err);

            if (ok == 1)
                sig_ok = 1;
            else if (ok == 0)
                add_reason(v, "bad_signature", "signature does not match the request (key %s)",
                           key->id);
            else
                add_reason(v, "bad_signature", "malformed signature: %s", safe(err, buf, sizeof buf));
        }
    }

    if (v->request && v->request->issued_at) {
        int64_t t, window = cfg->issued_at_window_ms;

        if (dq_time_parse(v->request->issued_at, &t) == 0) {
            if (now_ms - t > window)
                add_reason(v, "stale", "issued_at %s is %lld s old; the window is %lld s",
                           safe(v->request->issued_at, buf, 40), (long long)((now_ms - t) / 1000),
                           (long long)(window / 1000));
            else if (t - now_ms > window)
                add_reason(v, "future", "issued_at %s is %lld s in the future; the window is %lld s",
                           safe(v->request->issued_at, buf, 40), (long long)((t - now_ms) / 1000),
                           (long long)(window / 1000));
            else
                time_ok = 1;
        }
    }

    if (v->request && v->request->service) {
        if (!dq_config_service(cfg, v->request->service))
            add_reason(v, "unknown_service", "service '%s' is not in the configuration",
                       safe(v->request->service, buf, 80));
        else if (v->request->environment &&
                 !dq_config_environment(cfg, v->request->service, v->request->environment))
            add_reason(v, "unknown_environment", "service '%s' has no environment '%s'",
                       safe(v->request->service, buf, 80),
                       safe(v->request->environment, buf2, 80));
    }

    if (sig_ok && time_ok && v->request && v->request->nonce) {
        char owner[256] = "";
        int rc = claim_nonce(val, m, key->id, v->request->nonce, owner, sizeof owner);

        if (rc < 0) {
            v->transient = 1;
            cJSON_Delete(inner);
            cJSON_Delete(wrapper);
            return -1;
        }
        if (rc == 1)
            add_reason(v, "replayed_nonce", "nonce already used by the request at %s", owner);
    }
done:
    cJSON_Delete(inner);
    cJSON_Delete(wrapper);
    return 0;
}

dq_event *dq_verdict_event(const dq_validator *val, const dq_message *m, const dq_verdict *v)
{
    const dq_request *r = v->request;
    int ok = v->n_reasons == 0;
    dq_event *ev;
    cJSON *source;
    char name[256];

    ev = dq_event_new(ok ? DQ_EV_VALIDATED : DQ_EV_REJECTED,
                      r && r->deployment_id && dq_uuid_valid(r->deployment_id) ? r->deployment_id
                                                                                : NULL,
                      r && valid_name(r->service) ? r->service : NULL,
                      r && valid_name(r->service) && valid_name(r->environment) ? r->environment
                                                                                 : NULL,
                      r && valid_version(r->version) ? r->version : NULL, val->actor);
    if (!ev)
        return NULL;
    /* The same message always yields the same event id: a redelivery is a duplicate, not
     * a second verdict. */
    snprintf(name, sizeof name, "verdict:%s/%d/%lld", m->topic, (int)m->partition,
             (long long)m->offset);
    dq_event_set_id_from(ev, name);
    if (ok) {
        cJSON_AddStringToObject(ev->data, "key_id", v->key_id);
        cJSON_AddStringToObject(ev->data, "issued_at", r->issued_at);
        cJSON_AddStringToObject(ev->data, "strategy", r->strategy ? r->strategy : "rolling");
        if (r->commit_at)
            cJSON_AddStringToObject(ev->data, "commit_at", r->commit_at);
        if (r->requested_by)
            cJSON_AddStringToObject(ev->data, "requested_by", r->requested_by);
        if (r->ci_run_url)
            cJSON_AddStringToObject(ev->data, "ci_run_url", r->ci_run_url);
    } else {
        cJSON *reasons = cJSON_AddArrayToObject(ev->data, "reasons");

        for (int i = 0; i < v->n_reasons; i++) {
            cJSON *o = cJSON_CreateObject();

            cJSON_AddStringToObject(o, "code", v->reasons[i].code);
            cJSON_AddStringToObject(o, "message", v->reasons[i].message);
            cJSON_AddItemToArray(reasons, o);
        }
        if (v->key_id[0] && dq_config_key(val->cfg, v->key_id))
            cJSON_AddStringToObject(ev->data, "key_id", v->key_id);
    }
    source = cJSON_AddObjectToObject(ev->data, "source");
    cJSON_AddStringToObject(source, "topic", m->topic);
    cJSON_AddNumberToObject(source, "partition", m->partition);
    cJSON_AddNumberToObject(source, "offset", (double)m->offset);
    return ev;
}

dq_handle_result dq_validator_handle(void *ctx, const dq_message *m, char *err, size_t errlen)
{
    dq_validator *val = ctx;
    dq_verdict v;
    dq_event *ev = NULL;
    char *json = NULL, key[256];
    dq_handle_result res = DQ_HANDLED;

    if (dq_validate(val, m, dq_now_ms(), &v) != 0) {
        dq_warn("redis %s unavailable (%s); will retry %s/%d/%lld", dq_redis_where(val->redis),
                dq_redis_errstr(val->redis), m->topic, (int)m->partition, (long long)m->offset);
        dq_verdict_clear(&v);
        return DQ_RETRY;
    }
    ev = dq_verdict_event(val, m, &v);
    json = ev ? dq_event_encode(ev) : NULL;
    if (!json) {
        snprintf(err, errlen, "out of memory building the verdict");
        res = DQ_FAILED;
        goto out;
    }
    if (ev->service && ev->environment)
        dq_target_key(ev->service, ev->environment, key, sizeof key);
    else
        dq_strlcpy(key, "unknown", sizeof key);
    if (dq_producer_send(val->producer, val->cfg->topic_events, key, json, strlen(json), 10000,
                         NULL, NULL, err, errlen) != 0) {
        dq_warn("cannot emit %s for %s/%d/%lld: %s; will retry", ev->type, m->topic,
                (int)m->partition, (long long)m->offset, err);
        res = DQ_RETRY;
        goto out;
    }
    if (v.n_reasons == 0) {
        val->n_validated++;
        dq_info("%s %s deployment %s version %s", ev->type, key, ev->deployment_id, ev->version);
    } else {
        val->n_rejected++;
        dq_info("%s %s deployment %s: %s: %s%s", ev->type, key,
                ev->deployment_id ? ev->deployment_id : "-", v.reasons[0].code,
                v.reasons[0].message, v.n_reasons > 1 ? " (and more)" : "");
    }
out:
    free(json);
    dq_event_free(ev);
    dq_verdict_clear(&v);
    return res;
}
