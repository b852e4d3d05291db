/*
 * validate.c - the checks of deployq-validator and the verdict events it emits.
 * See validate.h for the order of the checks and why the nonce comes last.
 */
#include "validate.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gates.h"
#include "json.h"
#include "log.h"
#include "sign.h"
#include "util.h"

void dq_verdict_add_reasons(cJSON *data, const dq_verdict *v)
{
    cJSON *reasons = cJSON_AddArrayToObject(data, "reasons");

    for (int i = 0; reasons && i < v->n_reasons; i++) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "code", v->reasons[i].code);
        cJSON_AddStringToObject(o, "message", v->reasons[i].message);
        cJSON_AddItemToArray(reasons, o);
    }
}

void dq_validator_add_source(cJSON *data, const dq_message *m)
{
    cJSON *source = cJSON_AddObjectToObject(data, "source");

    cJSON_AddStringToObject(source, "topic", m->topic);
    cJSON_AddNumberToObject(source, "partition", m->partition);
    cJSON_AddNumberToObject(source, "offset", (double)m->offset);
}

const char *dq_validator_safe(const char *s, char *buf, size_t buflen)
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

void dq_verdict_add(dq_verdict *v, const char *code, const char *fmt, ...)
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

#define NONCE_EPOCH_KEY "deployq:nonce-epoch"

/* "<ms> fresh|reset" -> ms and whether it is a reset. -1 when it is neither. */
static int epoch_parse(const char *text, int64_t *ms, int *reset)
{
    char *end = NULL;
    long long v;

    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno || end == text || v < 0)
        return -1;
    if (strcmp(end, " fresh") == 0)
        *reset = 0;
    else if (strcmp(end, " reset") == 0)
        *reset = 1;
    else
        return -1;
    *ms = v;
    return 0;
}

int dq_validator_nonce_epoch(dq_validator *val, int64_t now_ms, int64_t *epoch_ms, char *err,
                             size_t errlen)
{
    char *text = NULL, mine[40];
    int reset = 0, tries;

    for (tries = 0; tries < 3; tries++) {
        int lost;

        if (dq_redis_get(val->redis, NONCE_EPOCH_KEY, &text) != 0) {
            snprintf(err, errlen, "redis: %s", dq_redis_errstr(val->redis));
            return -1;
        }
        if (text && epoch_parse(text, epoch_ms, &reset) != 0) {
            snprintf(err, errlen, "%s holds \"%.40s\", not \"<ms> fresh|reset\"; delete it to "
                     "start the replay memory again", NONCE_EPOCH_KEY, text);
            free(text);
            return -1;
        }
        /* Seen before and now gone, or replaced by a validator that started after the
         * loss and took Redis for new: the nonces were lost under us. A "reset" written by
         * another validator has dealt with it already. */
        lost = val->epoch_seen[0] &&
               (!text || (!reset && strcmp(text, val->epoch_seen) != 0));
        if (text && !lost) {
            dq_strlcpy(val->epoch_seen, text, sizeof val->epoch_seen);
            free(text);
            return 0;
        }
        if (lost) {
            redisReply *r;

            snprintf(mine, sizeof mine, "%lld reset", (long long)now_ms);
            dq_warn("replay memory: Redis lost the nonces (%s was \"%s\", now %s): requests "
                    "and approvals signed before now are refused as stale; run Redis with "
                    "appendonly yes", NONCE_EPOCH_KEY, val->epoch_seen,
                    text ? "a fresh one" : "gone");
            free(text);
            /* unconditional: it must replace a "fresh" one */
            r = dq_redis_command(val->redis, "SET %s %s", NONCE_EPOCH_KEY, mine);
            if (!r || r->type == REDIS_REPLY_ERROR) {
                snprintf(err, errlen, "redis: %s", r ? r->str : dq_redis_errstr(val->redis));
                if (r)
                    freeReplyObject(r);
                return -1;
            }
            freeReplyObject(r);
            dq_strlcpy(val->epoch_seen, mine, sizeof val->epoch_seen);
            *epoch_ms = now_ms;
            return 0;
        }
        free(text);
        text = NULL;
        snprintf(mine, sizeof mine, "%lld fresh",
                 (long long)(now_ms - val->cfg->issued_at_window_ms));
        if (dq_redis_set_nx(val->redis, NONCE_EPOCH_KEY, mine, 0) < 0) {
            snprintf(err, errlen, "redis: %s", dq_redis_errstr(val->redis));
            return -1;
        }
        /* ours or another validator's: read it back */
    }
    snprintf(err, errlen, "%s keeps vanishing", NONCE_EPOCH_KEY);
    return -1;
}

/* "topic/partition/offset": the owner a nonce names, so that a redelivery of the message
 * that claimed it is told from a replay. */
static void nonce_owner(const dq_message *m, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%d/%lld", m->topic, (int)m->partition, (long long)m->offset);
}

static void nonce_key(const dq_nonce_claim *cl, char *out, size_t outlen)
{
    snprintf(out, outlen, "deployq:nonce:%s:%s", cl->key_id, cl->nonce);
}

/* Run cmds[0..n) in one round trip; replies[] as dq_redis_pipeline. The commands are freed. */
static int pipeline(dq_validator *val, size_t n, char **cmds, size_t *lens, redisReply **replies)
{
    int rc = dq_redis_pipeline(val->redis, n, cmds, lens, replies);

    for (size_t i = 0; i < n; i++) {
        redisFreeCommand(cmds[i]);
        cmds[i] = NULL;
    }
    return rc;
}

int dq_validator_claim_nonces(dq_validator *val, dq_nonce_claim *claims, size_t n)
{
    char key[256], me[256], err[256];
    long ttl = (long)(val->cfg->issued_at_window_ms / 1000) * 2 + 60;
    int64_t epoch;
    size_t k = 0, *idx = NULL, *lens = NULL;
    char **cmds = NULL;
    redisReply **replies = NULL;
    int rc = -1;

    if (n == 0)
        return 0;
    /* The nonce outlives the window in which its message is acceptable; past that,
     * issued_at alone refuses a replay. Inside the window only the nonce can, so a message
     * signed before Redis' memory of nonces began (a restart without persistence) is
     * refused rather than possibly run twice. Read for every batch: Redis may lose its
     * data at any moment. */
    if (dq_validator_nonce_epoch(val, dq_now_ms(), &epoch, err, sizeof err) != 0) {
        dq_warn("replay memory: %s", err);
        return -1;
    }
    idx = calloc(n, sizeof *idx);
    lens = calloc(n, sizeof *lens);
    cmds = calloc(n, sizeof *cmds);
    replies = calloc(n, sizeof *replies);
    if (!idx || !lens || !cmds || !replies)
        goto out;
    for (size_t i = 0; i < n; i++) {
        dq_nonce_claim *cl = &claims[i];
        int len;

        cl->rc = 0;
        cl->owner[0] = '\0';
        if (cl->issued_ms < epoch) {
            char at[DQ_TIME_LEN + 1];

            dq_strlcpy(cl->owner, dq_time_format(epoch, at), sizeof cl->owner);
            cl->rc = 2;
            continue;
        }
        nonce_key(cl, key, sizeof key);
        nonce_owner(cl->m, me, sizeof me);
        len = redisFormatCommand(&cmds[k], "SET %s %s NX EX %ld", key, me, ttl);
        if (len < 0)
            goto out;
        lens[k] = (size_t)len;
        idx[k++] = i;
    }
    if (pipeline(val, k, cmds, lens, replies) != 0)
        goto out;
    /* Taken: by this very message before (a redelivery), or by another (a replay). */
    {
        size_t k2 = 0;

        for (size_t j = 0; j < k; j++) {
            redisReply *r = replies[j];

            if (r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0)
                continue;
            if (r->type != REDIS_REPLY_NIL) {
                dq_warn("redis %s: SET: %s", dq_redis_where(val->redis),
                        r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
                goto out;
            }
            nonce_key(&claims[idx[j]], key, sizeof key);
            int len = redisFormatCommand(&cmds[k2], "GET %s", key);
            if (len < 0)
                goto out;
            lens[k2] = (size_t)len;
            idx[k2++] = idx[j];
        }
        for (size_t j = 0; j < k; j++) {
            freeReplyObject(replies[j]);
            replies[j] = NULL;
        }
        k = k2;
    }
    if (pipeline(val, k, cmds, lens, replies) != 0)
        goto out;
    for (size_t j = 0; j < k; j++) {
        dq_nonce_claim *cl = &claims[idx[j]];
        redisReply *r = replies[j];

        nonce_owner(cl->m, me, sizeof me);
        if (r->type == REDIS_REPLY_NIL) {
            /* expired between the two round trips: try once more */
            nonce_key(cl, key, sizeof key);
            if (dq_redis_set_nx(val->redis, key, me, ttl) != 1)
                goto out;
            continue;
        }
        if (r->type != REDIS_REPLY_STRING) {
            dq_warn("redis %s: GET: %s", dq_redis_where(val->redis),
                    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            goto out;
        }
        if (strcmp(r->str, me) != 0) {
            cl->rc = 1;
            dq_strlcpy(cl->owner, r->str, sizeof cl->owner);
        }
    }
    rc = 0;
out:
    for (size_t j = 0; replies && j < n; j++)
        freeReplyObject(replies[j]);
    for (size_t j = 0; cmds && j < n; j++)
        redisFreeCommand(cmds[j]);
    free(replies);
    free(cmds);
    free(lens);
    free(idx);
    return rc;
}

int dq_validator_claim_nonce(dq_validator *val, const dq_message *m, const char *key_id,
                             const char *nonce, int64_t issued_ms, char *owner, size_t ownerlen)
{
    dq_nonce_claim cl = {.m = m, .key_id = key_id, .nonce = nonce, .issued_ms = issued_ms};

    if (dq_validator_claim_nonces(val, &cl, 1) != 0)
        return -1;
    dq_strlcpy(owner, cl.owner, ownerlen);
    return cl.rc;
}

void dq_validator_check_signed(const dq_validator *val, const dq_parsed *p, const dq_signed_rules *rules,
                               int64_t now_ms, dq_verdict *v, const dq_key **key_out)
{
    const char *key_id = dq_json_str(p->wrapper, "key_id");
    const char *sig = dq_json_str(p->wrapper, "signature");
    const char *issued = dq_json_str(p->inner, "issued_at");
    const dq_key *key;
    char err[256], buf[128];
    int64_t t;

    *key_out = NULL;
    if (!key_id || !sig) {
        dq_verdict_add(v, rules->code_unsigned, "the %s is not signed (no signature or key_id)", rules->noun);
        return;
    }
    dq_validator_safe(key_id, v->key_id, sizeof v->key_id);
    key = dq_config_key(val->cfg, key_id);
    if (!key)
        dq_verdict_add(v, rules->code_unsigned, "key id '%s' is not configured", dq_validator_safe(key_id, buf, 80));
    else if (key->retired)
        dq_verdict_add(v, rules->code_unsigned, "key id '%s' is retired", key->id);
    else if (!key->role || strcmp(key->role, rules->role) != 0)
        dq_verdict_add(v, rules->code_role, "key id '%s' has role %s; %s", key->id, key->role ? key->role : "ci",
                       rules->needs);
    else if (!p->request_text ||
             dq_verify(key->public_key, p->request_text, strlen(p->request_text), sig, err, sizeof err) != 1)
        dq_verdict_add(v, rules->code_signature, "signature does not match the %s (key %s)", rules->noun, key->id);
    else
        *key_out = key;
    if (!issued || dq_time_parse(issued, &t) != 0)
        return; /* the schema check reports it */
    if (now_ms - t > val->cfg->issued_at_window_ms)
        dq_verdict_add(v, "stale", "the %s's issued_at %s is %lld s old", rules->noun,
                       dq_validator_safe(issued, buf, 40), (long long)((now_ms - t) / 1000));
    else if (t - now_ms > val->cfg->issued_at_window_ms)
        dq_verdict_add(v, "future", "the %s's issued_at %s is in the future", rules->noun,
                       dq_validator_safe(issued, buf, 40));
}

static void gate_report(void *ctx, const char *code, const char *message)
{
    dq_verdict_add(ctx, code, "%s", message);
}

/* Record the target's variable hashes as of this request (gates.h, recorded hash sets):
 * what `deployq drift` and the scan compare with. -1 when Redis cannot be asked. */
static int record_vars(dq_validator *val, const dq_request *r, const dq_drift_vars *vars)
{
    char key[512], *json = dq_drift_record_json(&val->drift->key, vars, r->version, dq_now_ms());
    redisReply *rep;
    int ok;

    if (!json)
        return 0; /* out of memory: the record is a convenience, the verdict is not held up */
    dq_drift_record_key(r->service, r->environment, key, sizeof key);
    rep = dq_redis_command(val->redis, "SET %s %s", key, json);
    ok = rep && rep->type != REDIS_REPLY_ERROR;
    if (rep)
        freeReplyObject(rep);
    free(json);
    return ok ? 0 : -1;
}

/* The gates of common/domain/gates.h for a request that is signed, on time and aimed at a
 * configured target. -1 when Redis cannot be asked (retry), else 0 with reasons added. */
int dq_validate_gates(dq_validator *val, dq_verdict *v, const cJSON *inner, int64_t now_ms)
{
    const dq_config *cfg = val->cfg;
    const dq_request *r = v->request;
    const dq_environment *e = dq_config_environment(cfg, r->service, r->environment);
    const char *override = dq_json_str(cJSON_GetObjectItemCaseSensitive(inner, "override_freeze"),
                                       "reason");
    const dq_freeze_window *fw;
    dq_gates *g, *src = NULL;
    dq_drift_vars vars = {0};
    char err[512], t1[DQ_TIME_LEN + 1], buf[160];

    g = dq_gates_load(cfg, r->service, r->environment, err, sizeof err);
    if (!g) {
        dq_verdict_add(v, "internal", "configuration: %s", err);
        return 0;
    }
    if (override)
        dq_validator_safe(override, v->override_freeze, sizeof v->override_freeze);
    fw = dq_gates_frozen(g, now_ms);
    if (fw && !override)
        dq_verdict_add(v, "freeze", "%s is frozen until %s (%s); pass --override-freeze REASON to deploy anyway",
                   g->target, dq_time_format(fw->until_ms, t1), fw->reason);
    if (e->requires && valid_version(r->version)) {
        const char *state = g->needs_succeeded ? "succeeded" : "verified";
        const char *word = g->needs_succeeded ? "deployed successfully" : "verified";
        char key[512];
        redisReply *rep;
        long long found;

        dq_gates_state_key(state, r->service, e->requires, r->version, key, sizeof key);
        rep = dq_redis_command(val->redis, "EXISTS %s", key);
        if (!rep || rep->type != REDIS_REPLY_INTEGER) {
            if (rep)
                freeReplyObject(rep);
            dq_gates_free(g);
            return -1;
        }
        found = rep->integer;
        freeReplyObject(rep);
        if (!found)
            dq_verdict_add(v, "promotion", "version %s has not been %s in %s (%s requires: %s)",
                       dq_validator_safe(r->version, buf, sizeof buf), word, e->requires, r->environment,
                       e->requires);
        src = dq_gates_load(cfg, r->service, e->requires, err, sizeof err);
    }
    dq_gates_check_drift_values(g, src, val->drift ? &val->drift->key : NULL, gate_report, v, &vars);
    if (v->n_reasons == 0 && vars.n == 0 && val->drift && val->drift->key.persistent &&
        dq_gates_can_read_vars(g) && dq_gates_read_hashed(g, &val->drift->key, &vars, err, sizeof err) != 0)
        dq_warn("%s: variables not recorded for `deployq drift`: %s", g->target, err); /* no gate asked */
    if (v->n_reasons == 0 && vars.n > 0 && val->drift && val->drift->key.persistent &&
        record_vars(val, r, &vars) != 0) {
        dq_drift_vars_clear(&vars);
        dq_gates_free(src);
        dq_gates_free(g);
        return -1;
    }
    dq_drift_vars_clear(&vars);
    v->awaiting = e->approval;
    v->approval_timeout_ms = g->approval_timeout_ms;
    dq_gates_free(src);
    dq_gates_free(g);
    return 0;
}

void dq_parse_message(const dq_validator *val, const dq_message *m, dq_parsed *p)
{
    const dq_config *cfg = val->cfg;

    memset(p, 0, sizeof *p);
    if (!m->value || m->len == 0) {
        p->wrapper_st = DQ_JSON_INVALID; /* reported as bad_json */
        dq_strlcpy(p->wrapper_err, "empty message", sizeof p->wrapper_err);
        return;
    }
    p->wrapper = dq_json_parse(m->value, m->len, cfg->max_request_bytes, cfg->max_depth,
                               &p->wrapper_st, p->wrapper_err, sizeof p->wrapper_err);
    p->request_text = dq_json_str(p->wrapper, "request");
    if (p->request_text)
        p->inner = dq_json_parse(p->request_text, strlen(p->request_text),
                                 cfg->max_request_bytes, cfg->max_depth, &p->inner_st,
                                 p->inner_err, sizeof p->inner_err);
}

void dq_parsed_clear(dq_parsed *p)
{
    if (!p)
        return;
    cJSON_Delete(p->inner);
    cJSON_Delete(p->wrapper);
    memset(p, 0, sizeof *p);
}

void dq_validate_start(dq_validator *val, const dq_parsed *p, int64_t now_ms, dq_verdict *v)
{
    const dq_config *cfg = val->cfg;
    char err[1024], buf[160], buf2[160];
    const cJSON *wrapper = p->wrapper, *inner = p->inner;
    const char *request_text = p->request_text, *sig = NULL, *key_id = NULL;
    const dq_key *key = NULL;
    int sig_ok = 0, time_ok = 0;
    int64_t issued_ms = 0;

    memset(v, 0, sizeof *v);
    if (!wrapper) {
        dq_verdict_add(v, json_reason_code(p->wrapper_st), "%s", p->wrapper_err);
        return;
    }
    if (dq_schema_validate(dq_schema_set_signed(val->schemas), wrapper, err, sizeof err) != 0) {
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(wrapper, "signature")) ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(wrapper, "key_id")))
            dq_verdict_add(v, "missing_signature", "the request is not signed (no signature or key_id)");
        else
            dq_verdict_add(v, "schema", "signed envelope: %s", dq_validator_safe(err, buf, sizeof buf));
    }
    key_id = dq_json_str(wrapper, "key_id");
    sig = dq_json_str(wrapper, "signature");
    if (key_id)
        dq_validator_safe(key_id, v->key_id, sizeof v->key_id);
    if (!request_text) {
        if (v->n_reasons == 0)
            dq_verdict_add(v, "schema", "signed envelope: /request: required");
        return;
    }

    if (!inner) {
        dq_verdict_add(v, json_reason_code(p->inner_st), "request: %s", p->inner_err);
    } else {
        if (dq_schema_validate(dq_schema_set_request(val->schemas), inner, err, sizeof err) != 0)
            dq_verdict_add(v, "schema", "request: %s", dq_validator_safe(err, buf, sizeof buf));
        v->request = dq_request_from_json(inner);
    }

    if (key_id && sig) {
        key = dq_config_key(cfg, key_id);
        if (!key)
            dq_verdict_add(v, "unknown_key", "key id '%s' is not configured", dq_validator_safe(key_id, buf, 80));
        else if (key->retired)
            dq_verdict_add(v, "retired_key", "key id '%s' is retired", key->id);
        else if (key->role && strcmp(key->role, "ci") != 0)
            dq_verdict_add(v, "wrong_key_role", "key id '%s' has role %s; deploy requests need a ci key",
                       key->id, key->role);
        else {
            int ok = dq_verify(key->public_key, request_text, strlen(request_text), sig, err,
                               sizeof err);

            if (ok == 1)
                sig_ok = 1;
            else if (ok == 0)
                dq_verdict_add(v, "bad_signature", "signature does not match the request (key %s)",
                           key->id);
            else
                dq_verdict_add(v, "bad_signature", "malformed signature: %s", dq_validator_safe(err, buf, sizeof buf));
        }
    }

    if (v->request && v->request->issued_at) {
        int64_t t, window = cfg->issued_at_window_ms;

        if (dq_time_parse(v->request->issued_at, &t) == 0) {
            issued_ms = t;
            if (now_ms - t > window)
                dq_verdict_add(v, "stale", "issued_at %s is %lld s old; the window is %lld s",
                           dq_validator_safe(v->request->issued_at, buf, 40), (long long)((now_ms - t) / 1000),
                           (long long)(window / 1000));
            else if (t - now_ms > window)
                dq_verdict_add(v, "future", "issued_at %s is %lld s in the future; the window is %lld s",
                           dq_validator_safe(v->request->issued_at, buf, 40), (long long)((t - now_ms) / 1000),
                           (long long)(window / 1000));
            else
                time_ok = 1;
        }
    }

    if (v->request && v->request->service) {
        if (!dq_config_service(cfg, v->request->service))
            dq_verdict_add(v, "unknown_service", "service '%s' is not in the configuration",
                       dq_validator_safe(v->request->service, buf, 80));
        else if (v->request->environment &&
                 !dq_config_environment(cfg, v->request->service, v->request->environment))
            dq_verdict_add(v, "unknown_environment", "service '%s' has no environment '%s'",
                       dq_validator_safe(v->request->service, buf, 80),
                       dq_validator_safe(v->request->environment, buf2, 80));
    }

    v->signed_in_time = sig_ok && time_ok;
    if (v->signed_in_time && v->request && v->request->nonce) {
        v->claim = 1;
        v->claim_key_id = key->id;
        v->issued_ms = issued_ms;
    }
}

int dq_validate_finish(dq_validator *val, const dq_parsed *p, int64_t now_ms, dq_verdict *v,
                       int claim_rc, const char *owner)
{
    const dq_config *cfg = val->cfg;
    char buf[160];
    int replayed = 0;

    if (v->claim && claim_rc == 1) {
        dq_verdict_add(v, "replayed_nonce", "nonce already used by the request at %s", owner);
        replayed = 1;
    }
    if (v->claim && claim_rc == 2) {
        dq_verdict_add(v, "stale",
                       "issued_at %s is before %s, when the replay memory (Redis) began: a "
                       "replay could not be told from it; sign it again",
                       dq_validator_safe(v->request->issued_at, buf, 40), owner);
        replayed = 1;
    }
    /* The gates may call a provider: only for a request that is signed, on time, aimed at
     * a configured target and not a replay. */
    if (v->signed_in_time && !replayed && v->request && v->request->service &&
        v->request->environment &&
        dq_config_environment(cfg, v->request->service, v->request->environment) &&
        dq_validate_gates(val, v, p->inner, now_ms) != 0) {
        v->transient = 1;
        return -1;
    }
    return 0;
}

int dq_validate(dq_validator *val, const dq_message *m, int64_t now_ms, dq_verdict *v)
{
    dq_parsed p;
    char owner[256] = "";
    int claim_rc = 0, rc;

    dq_parse_message(val, m, &p);
    dq_validate_start(val, &p, now_ms, v);
    if (v->claim) {
        claim_rc = dq_validator_claim_nonce(val, m, v->claim_key_id, v->request->nonce,
                                            v->issued_ms, owner, sizeof owner);
        if (claim_rc < 0) {
            v->transient = 1;
            dq_parsed_clear(&p);
            return -1;
        }
    }
    rc = dq_validate_finish(val, &p, now_ms, v, claim_rc, owner);
    dq_parsed_clear(&p);
    return rc;
}

dq_event *dq_verdict_event(const dq_validator *val, const dq_message *m, const dq_verdict *v)
{
    const dq_request *r = v->request;
    int ok = v->n_reasons == 0;
    dq_event *ev;
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
        if (v->override_freeze[0])
            cJSON_AddStringToObject(cJSON_AddObjectToObject(ev->data, "override_freeze"), "reason",
                                    v->override_freeze);
    } else {
        dq_verdict_add_reasons(ev->data, v);
        if (v->key_id[0] && dq_config_key(val->cfg, v->key_id))
            cJSON_AddStringToObject(ev->data, "key_id", v->key_id);
    }
    dq_validator_add_source(ev->data, m);
    return ev;
}

/* ev as JSON (malloc'd) and its key (service/environment, or "unknown"). */
static char *emit_prepare(const dq_event *ev, char *key, size_t keylen)
{
    if (ev->service && ev->environment)
        dq_target_key(ev->service, ev->environment, key, keylen);
    else
        dq_strlcpy(key, "unknown", keylen);
    return dq_event_encode(ev);
}

int dq_validator_emit(dq_validator *val, const dq_event *ev, char *err, size_t errlen)
{
    char key[256], *json = emit_prepare(ev, key, sizeof key);
    int rc;

    if (!json) {
        snprintf(err, errlen, "out of memory encoding %s", ev->type);
        return -1;
    }
    rc = dq_producer_send(val->producer, val->cfg->topic_events, key, json, strlen(json), 10000,
                          NULL, NULL, err, errlen);
    free(json);
    return rc;
}

int dq_validator_emit_async(dq_validator *val, const dq_event *ev, dq_delivery_fn fn, void *ctx,
                            char *err, size_t errlen)
{
    char key[256], *json = emit_prepare(ev, key, sizeof key);
    int rc;

    if (!json) {
        snprintf(err, errlen, "out of memory encoding %s", ev->type);
        return -1;
    }
    rc = dq_producer_send_cb(val->producer, val->cfg->topic_events, key, json, strlen(json),
                             10000, fn, ctx);
    if (rc != 0)
        snprintf(err, errlen, "cannot queue %s for %s", ev->type, val->cfg->topic_events);
    free(json);
    return rc;
}
