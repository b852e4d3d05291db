/*
 * notify.c - notifications (notify.h): the settings of a target, the message, delivery
 * to a Slack-compatible incoming webhook and to a generic JSON webhook, and the
 * notification.* event that reports the delivery.
 *
 * The URLs are credentials: they are registered for redaction as soon as they are read,
 * and an error about a delivery is built here from the status and curl's transport class,
 * never from text that could hold the URL.
 */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include "http.h"
#include "json.h"
#include "log.h"
#include "util.h"

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_RETRIES 3
#define DEFAULT_BUDGET_MS 15000

#define KIND_FAILOVER "failover"
/* A secret shorter than this is refused: it would be guessable. */
#define MIN_SECRET_LEN 16

/* The bit of a kind in on_mask is its index here: append, never reorder. */
const char *const dq_notify_types[] = {
    DQ_EV_ROLLBACK_REQUESTED, DQ_EV_ROLLBACK_SUCCEEDED, DQ_EV_ROLLBACK_FAILED,
    DQ_EV_FAILED,             DQ_EV_SUCCEEDED,          DQ_EV_VERIFIED,
    DQ_EV_REJECTED,           DQ_EV_AWAITING_APPROVAL,  KIND_FAILOVER,
    DQ_EV_DRIFT_DETECTED,     DQ_EV_APPROVAL_REFUSED,
    NULL,
};

/* The default `on`: what needs a person. A rollback (requested, done, failed) and a
 * failed deploy as before; a failover (a provider is down although the deploy went on)
 * an approval waiting (nothing happens until someone decides) and a drift the scan found
 * (a variable changed behind deployq's back). Not a rejection:
 * whoever submitted it is told by `deployq submit --wait`, and a storm of them (a
 * misconfigured CI) would bury the rest. Not a refused approval either (opt-in): it
 * changes nothing (the deployment keeps waiting, and its deploy.awaiting_approval was
 * notified already); a channel of approvers who want to hear that a decision did not
 * count adds approval.refused to `on`. */
#define DEFAULT_ON_MASK (0x0fu | 1u << 7 | 1u << 8 | 1u << 9)

static int type_bit(const char *type)
{
    for (int i = 0; type && dq_notify_types[i]; i++)
        if (strcmp(dq_notify_types[i], type) == 0)
            return i;
    return -1;
}

const char *dq_notify_kind(const dq_event *ev)
{
    if (!ev || !ev->type)
        return NULL;
    if (strcmp(ev->type, DQ_EV_STARTED) == 0) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(ev->data, "failed_over_from");
        return cJSON_IsArray(f) && cJSON_GetArraySize(f) > 0 ? KIND_FAILOVER : NULL;
    }
    if (strcmp(ev->type, KIND_FAILOVER) == 0)
        return NULL; /* a kind, not an event type */
    int bit = type_bit(ev->type);
    return bit < 0 ? NULL : dq_notify_types[bit];
}

/* ---- configuration ---- */

void dq_notify_config_clear(dq_notify_config *nc)
{
    if (!nc)
        return;
    free(nc->slack_url);
    free(nc->webhook_url);
    if (nc->webhook_secret) {
        OPENSSL_cleanse(nc->webhook_secret, strlen(nc->webhook_secret));
        free(nc->webhook_secret);
    }
    free(nc->dashboard_url);
    memset(nc, 0, sizeof *nc);
}

/* A URL member: absent is fine, anything but an http(s) URL is an error. The message
 * names the key, never the value. */
static int url_key(const dq_config *cfg, const cJSON *sec, const char *where, const char *key,
                   char **out, char *err, size_t errlen)
{
    const cJSON *v = dq_json_get(sec, key);
    char num[32];
    const char *text = dq_config_text(cfg, v, num, sizeof num);

    if (!v)
        return 0;
    /* An absolute URL: the scheme, then a host (no space anywhere: a pasted line with a
     * comment or two URLs is a mistake, not an address). */
    size_t skip = !text ? 0 : strncmp(text, "https://", 8) == 0 ? 8 : strncmp(text, "http://", 7) == 0 ? 7 : 0;
    if (!skip || !text[skip] || text[skip] == '/' || text[skip] == ':' || strpbrk(text, " \t\r\n"))
        return dq_config_fail(cfg, v, err, errlen, "%s.%s: expected an absolute http:// or https:// URL", where,
                              key);
    *out = strdup(text);
    if (!*out) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int dq_rollback_policy_load(const dq_config *cfg, const char *service, const char *environment, char *err,
                            size_t errlen)
{
    const cJSON *v = dq_json_get(dq_config_env_view(cfg, service, environment), "rollback");
    char num[32];
    const char *s = dq_config_text(cfg, v, num, sizeof num);

    if (!v || (s && strcmp(s, "auto") == 0))
        return 1;
    if (s && strcmp(s, "notify") == 0)
        return 0;
    return dq_config_fail(cfg, v, err, errlen, "services.%s.environments.%s.rollback: expected auto or notify",
                          service, environment);
}

int dq_notify_config_load(const dq_config *cfg, const char *service, const char *environment,
                          dq_notify_config *nc, char *err, size_t errlen)
{
    const cJSON *sec = dq_json_get(dq_config_env_view(cfg, service, environment), "notify");
    const char *where = "notify";

    if (!sec) {
        sec = dq_config_view(cfg, "notifications");
        where = "notifications";
    }
    return dq_notify_config_read(cfg, sec, where, nc, err, errlen);
}

int dq_notify_config_read(const dq_config *cfg, const cJSON *sec, const char *where,
                          dq_notify_config *nc, char *err, size_t errlen)
{
    static const char *const known[] = {"slack_webhook", "webhook", "webhook_secret", "on",
                                        "dashboard_url", "timeout", "retries", "retry_budget", NULL};
    const cJSON *v;
    char num[32];

    memset(nc, 0, sizeof *nc);
    nc->on_mask = DEFAULT_ON_MASK;
    nc->timeout_ms = DEFAULT_TIMEOUT_MS;
    nc->retries = DEFAULT_RETRIES;
    nc->retry_budget_ms = DEFAULT_BUDGET_MS;
    if (!sec)
        return 0;
    if (!cJSON_IsObject(sec))
        return dq_config_fail(cfg, sec, err, errlen, "%s: expected a mapping", where);
    if (dq_config_check_keys(cfg, sec, known, where, err, errlen) != 0)
        goto fail;
    if (url_key(cfg, sec, where, "slack_webhook", &nc->slack_url, err, errlen) != 0 ||
        url_key(cfg, sec, where, "webhook", &nc->webhook_url, err, errlen) != 0 ||
        url_key(cfg, sec, where, "dashboard_url", &nc->dashboard_url, err, errlen) != 0)
        goto fail;
    /* A webhook URL written literally (not as ${NAME}) is still a credential. */
    if (nc->slack_url)
        dq_log_redact(nc->slack_url);
    if (nc->webhook_url)
        dq_log_redact(nc->webhook_url);
    if ((v = dq_json_get(sec, "webhook_secret")) != NULL) {
        const char *t = dq_config_text(cfg, v, num, sizeof num);

        /* registered before any check, so that no message about it could carry it */
        if (t && t[0])
            dq_log_redact(t);
        if (!t || strlen(t) < MIN_SECRET_LEN) {
            dq_config_fail(cfg, v, err, errlen,
                           "%s.webhook_secret: expected at least %d characters (e.g. openssl rand -hex 32)",
                           where, MIN_SECRET_LEN);
            goto fail;
        }
        if (!nc->webhook_url) {
            dq_config_fail(cfg, v, err, errlen, "%s.webhook_secret: set without %s.webhook (it signs that "
                           "webhook's bodies; Slack's incoming webhooks verify no signature)", where, where);
            goto fail;
        }
        if (!(nc->webhook_secret = strdup(t))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }

    if ((v = dq_json_get(sec, "on")) != NULL) {
        const cJSON *item;

        if (!cJSON_IsArray(v)) {
            dq_config_fail(cfg, v, err, errlen, "%s.on: expected a list of event types", where);
            goto fail;
        }
        nc->on_mask = 0;
        cJSON_ArrayForEach(item, v) {
            const char *t = dq_config_text(cfg, item, num, sizeof num);
            int bit = type_bit(t);

            if (bit < 0) {
                dq_config_fail(cfg, item, err, errlen,
                               "%s.on: '%.64s' is not one of rollback.requested, rollback.succeeded, "
                               "rollback.failed, deploy.failed, failover, deploy.awaiting_approval, "
                               "deploy.rejected, deploy.succeeded, deploy.verified, drift.detected, "
                               "approval.refused",
                               where, t ? t : "?");
                goto fail;
            }
            nc->on_mask |= 1u << bit;
        }
    }
    if (dq_config_duration_key(cfg, sec, where, "timeout", 1, "5s", &nc->timeout_ms, err, errlen) != 0 ||
        dq_config_duration_key(cfg, sec, where, "retry_budget", 1, "5s", &nc->retry_budget_ms, err, errlen) != 0)
        goto fail;
    if ((v = dq_json_get(sec, "retries")) != NULL) {
        long long n;

        if (dq_parse_int(dq_config_text(cfg, v, num, sizeof num), 0, 10, &n) != 0) {
            dq_config_fail(cfg, v, err, errlen, "%s.retries: expected an integer from 0 to 10", where);
            goto fail;
        }
        nc->retries = (int)n;
    }
    return 0;
fail:
    dq_notify_config_clear(nc);
    return -1;
}

int dq_notify_wants(const dq_notify_config *nc, const char *kind)
{
    int bit = type_bit(kind);

    if (!nc || bit < 0 || (!nc->slack_url && !nc->webhook_url))
        return 0;
    return (nc->on_mask >> bit) & 1u;
}

/* ---- the message ---- */

typedef struct buf {
    char *s;
    size_t len, cap;
    int oom;
} buf;

/* Append text, escaping what Slack's mrkdwn treats as control characters. */
static void put_esc(buf *b, const char *text)
{
    for (const char *p = text ? text : ""; *p && !b->oom; p++) {
        const char *rep = *p == '&' ? "&amp;" : *p == '<' ? "&lt;" : *p == '>' ? "&gt;" : NULL;
        size_t n = rep ? strlen(rep) : 1;

        if (b->len + n + 1 > b->cap) {
            size_t cap = b->cap ? b->cap * 2 : 512;
            char *s;

            while (cap < b->len + n + 1)
                cap *= 2;
            if (!(s = realloc(b->s, cap))) {
                b->oom = 1;
                return;
            }
            b->s = s;
            b->cap = cap;
        }
        memcpy(b->s + b->len, rep ? rep : p, n);
        b->len += n;
        b->s[b->len] = '\0';
    }
}

static void putf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(buf *b, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    put_esc(b, tmp);
}

/* "4.2 s", "3 min 12 s" */
static void fmt_duration(int64_t ms, char *out, size_t outlen)
{
    if (ms < 0)
        ms = 0;
    if (ms < 60000)
        snprintf(out, outlen, "%.1f s", (double)ms / 1000.0);
    else
        snprintf(out, outlen, "%lld min %lld s", (long long)(ms / 60000), (long long)((ms % 60000) / 1000));
}

/* dashboard_url with {service} and {environment} filled in. */
static void put_dashboard(buf *b, const char *tmpl, const char *service, const char *environment)
{
    char out[2048];
    size_t o = 0;

    for (const char *p = tmpl; *p && o + 1 < sizeof out;) {
        const char *val = NULL;
        size_t skip = 0;

        if (strncmp(p, "{service}", 9) == 0) {
            val = service;
            skip = 9;
        } else if (strncmp(p, "{environment}", 13) == 0) {
            val = environment;
            skip = 13;
        }
        if (skip) {
            for (const char *v = val ? val : ""; *v && o + 1 < sizeof out; v++)
                out[o++] = *v;
            p += skip;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    putf(b, "\nDashboard: %s", out);
}

char *dq_notify_text(const dq_notify_config *nc, const dq_event *ev, const dq_notify_links *links,
                     const char *note)
{
    buf b = {0};
    const cJSON *d = ev->data;
    const char *svc = ev->service ? ev->service : "?", *env = ev->environment ? ev->environment : "?";
    const char *ver = ev->version ? ev->version : "?";
    const char *from = dq_json_str(d, "from_version"), *to = dq_json_str(d, "to_version");
    const char *reason = dq_json_str(d, "reason"), *detail = dq_json_str(d, "detail");
    char dur[64];

    if (!from)
        from = ev->version;
    if (strcmp(ev->type, DQ_EV_ROLLBACK_REQUESTED) == 0) {
        const cJSON *evi = cJSON_GetObjectItemCaseSensitive(d, "evidence");

        putf(&b, "Rollback requested for %s/%s: version %s", svc, env, from ? from : "?");
        if (to)
            putf(&b, ", to return to %s", to);
        putf(&b, ".\nWhy: %s (requested by %s)", reason ? reason : "no reason given",
             dq_json_str(d, "requested_by") ? dq_json_str(d, "requested_by") : "?");
        if (cJSON_IsObject(evi)) {
            const cJSON *obs = cJSON_GetObjectItemCaseSensitive(evi, "observed");
            const cJSON *thr = cJSON_GetObjectItemCaseSensitive(evi, "threshold");
            char o[64] = "?", t[64] = "?";

            if (cJSON_IsNumber(obs))
                snprintf(o, sizeof o, "%g", obs->valuedouble);
            else if (cJSON_IsString(obs))
                snprintf(o, sizeof o, "%s", obs->valuestring);
            if (cJSON_IsNumber(thr))
                snprintf(t, sizeof t, "%g", thr->valuedouble);
            else if (cJSON_IsString(thr))
                snprintf(t, sizeof t, "%s", thr->valuestring);
            putf(&b, "\nEvidence: probe %s (%s) observed %s, threshold %s",
                 dq_json_str(evi, "probe") ? dq_json_str(evi, "probe") : "?",
                 dq_json_str(evi, "kind") ? dq_json_str(evi, "kind") : "?", o, t);
            if (dq_json_str(evi, "first_failure_at"))
                putf(&b, ", first failure at %s", dq_json_str(evi, "first_failure_at"));
        }
    } else if (strcmp(ev->type, DQ_EV_ROLLBACK_SUCCEEDED) == 0) {
        int64_t mttr = (int64_t)dq_json_num(d, "mttr_ms", -1);

        putf(&b, "Rolled back %s/%s from %s to %s (%s", svc, env, from ? from : "?", to ? to : "?",
             dq_json_str(d, "method") ? dq_json_str(d, "method") : "?");
        if (dq_json_str(d, "provider"))
            putf(&b, " via %s", dq_json_str(d, "provider"));
        put_esc(&b, ").");
        if (mttr >= 0) {
            fmt_duration(mttr, dur, sizeof dur);
            putf(&b, "\nMTTR %s: detected %s, decided %s, restored %s.", dur,
                 dq_json_str(d, "detected_at") ? dq_json_str(d, "detected_at") : "?",
                 dq_json_str(d, "decided_at") ? dq_json_str(d, "decided_at") : "?",
                 dq_json_str(d, "restored_at") ? dq_json_str(d, "restored_at") : "?");
        }
        if (reason)
            putf(&b, "\nWhy: %s", reason);
    } else if (strcmp(ev->type, DQ_EV_ROLLBACK_FAILED) == 0) {
        putf(&b, "Rollback of %s/%s FAILED: %s", svc, env, reason ? reason : "no reason given");
        if (from)
            putf(&b, "\nVersion %s may still be serving", from);
        if (to)
            putf(&b, " (tried to return to %s)", to);
        if (from)
            put_esc(&b, ".");
        if (detail)
            putf(&b, "\nDetail: %s", detail);
        put_esc(&b, "\nA person must act.");
    } else if (strcmp(ev->type, DQ_EV_FAILED) == 0) {
        putf(&b, "Deploy of %s/%s version %s failed: %s", svc, env, ver, reason ? reason : "?");
        if (dq_json_str(d, "provider"))
            putf(&b, " (provider %s)", dq_json_str(d, "provider"));
        if (detail && detail[0])
            putf(&b, "\nDetail: %s", detail);
    } else if (strcmp(ev->type, DQ_EV_SUCCEEDED) == 0) {
        putf(&b, "Deployed %s/%s version %s", svc, env, ver);
        if (dq_json_str(d, "provider"))
            putf(&b, " via %s", dq_json_str(d, "provider"));
        put_esc(&b, ".");
    } else if (strcmp(ev->type, DQ_EV_VERIFIED) == 0) {
        fmt_duration((int64_t)dq_json_num(d, "window_ms", 0), dur, sizeof dur);
        putf(&b, "Verified %s/%s version %s: healthy for its %s window (%d samples).", svc, env, ver, dur,
             (int)dq_json_num(d, "samples", 0));
    } else if (strcmp(ev->type, DQ_EV_STARTED) == 0 && dq_notify_kind(ev)) {
        const cJSON *f;

        putf(&b, "Failover on %s/%s, version %s: %s took over (provider %d of the chain).", svc, env, ver,
             dq_json_str(d, "provider") ? dq_json_str(d, "provider") : "?", (int)dq_json_num(d, "attempt", 0));
        cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(d, "failed_over_from")) {
            const char *fd = dq_json_str(f, "detail");
            int st = (int)dq_json_num(f, "http_status", 0);

            putf(&b, "\n%s failed: %s", dq_json_str(f, "provider") ? dq_json_str(f, "provider") : "?",
                 dq_json_str(f, "error_class") ? dq_json_str(f, "error_class") : "?");
            if (st > 0)
                putf(&b, " (HTTP %d)", st);
            if (fd && fd[0])
                putf(&b, ": %s", fd);
        }
        put_esc(&b, "\nThe deploy goes on; the failed provider needs a look.");
    } else if (strcmp(ev->type, DQ_EV_AWAITING_APPROVAL) == 0) {
        const char *by = dq_json_str(d, "requested_by"), *until = dq_json_str(d, "expires_at");
        const char *id = ev->deployment_id ? ev->deployment_id : "DEPLOYMENT_ID";

        putf(&b, "Approval needed: %s/%s version %s", svc, env, ver);
        if (by)
            putf(&b, ", requested by %s", by);
        put_esc(&b, ".");
        putf(&b, "\nWho: a holder of a key of role %s",
             dq_json_str(d, "approval_role") ? dq_json_str(d, "approval_role") : "approver");
        if (links && links->approvers && links->approvers[0])
            putf(&b, " (%s)", links->approvers);
        put_esc(&b, ".");
        if (until)
            putf(&b, "\nUntil: %s; without a decision by then nothing is deployed.", until);
        putf(&b, "\nApprove: deployq approve %s --reason TEXT", id);
        putf(&b, "\nDeny: deployq deny %s --reason TEXT", id);
    } else if (strcmp(ev->type, DQ_EV_REJECTED) == 0) {
        const cJSON *r;

        putf(&b, "Deploy of %s/%s version %s rejected", svc, env, ver);
        if (dq_json_str(d, "key_id"))
            putf(&b, " (signed by key %s)", dq_json_str(d, "key_id"));
        put_esc(&b, ":");
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(d, "reasons")) {
            putf(&b, "\n- %s: %s", dq_json_str(r, "code") ? dq_json_str(r, "code") : "?",
                 dq_json_str(r, "message") ? dq_json_str(r, "message") : "");
        }
    } else if (strcmp(ev->type, DQ_EV_APPROVAL_REFUSED) == 0) {
        const cJSON *r;
        const char *decision = dq_json_str(d, "decision");

        putf(&b, "Approval refused on %s/%s version %s: the %s", svc, env, ver,
             decision && strcmp(decision, "deny") == 0 ? "denial" : "approval");
        if (dq_json_str(d, "key_id"))
            putf(&b, " signed by key %s", dq_json_str(d, "key_id"));
        put_esc(&b, " does not count:");
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(d, "reasons")) {
            putf(&b, "\n- %s: %s", dq_json_str(r, "code") ? dq_json_str(r, "code") : "?",
                 dq_json_str(r, "message") ? dq_json_str(r, "message") : "");
        }
        put_esc(&b, "\nThe deployment still waits for an approver who may decide it (deployq approvals).");
    } else if (strcmp(ev->type, DQ_EV_DRIFT_DETECTED) == 0) {
        const cJSON *since = cJSON_GetObjectItemCaseSensitive(d, "since_deploy");
        static const char *const lists[][2] = {{"missing", "Missing here"}, {"differs", "Values differ"}};

        putf(&b, "Configuration drift on %s/%s", svc, env);
        if (dq_json_str(d, "against"))
            putf(&b, " (compared with %s)", dq_json_str(d, "against"));
        put_esc(&b, ":");
        for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(d, lists[i][0]), *n;
            int first = 1;

            if (cJSON_GetArraySize(a) == 0)
                continue;
            putf(&b, "\n%s: ", lists[i][1]);
            cJSON_ArrayForEach(n, a) {
                putf(&b, "%s%s", first ? "" : ", ", cJSON_GetStringValue(n) ? cJSON_GetStringValue(n) : "?");
                first = 0;
            }
        }
        if (cJSON_IsObject(since)) {
            const cJSON *n;
            int first = 1;

            putf(&b, "\nChanged since the deploy of %s: ",
                 dq_json_str(since, "version") ? dq_json_str(since, "version") : "?");
            cJSON_ArrayForEach(n, cJSON_GetObjectItemCaseSensitive(since, "changed")) {
                putf(&b, "%s%s", first ? "" : ", ", cJSON_GetStringValue(n) ? cJSON_GetStringValue(n) : "?");
                first = 0;
            }
        }
        putf(&b, "\nSee: deployq drift --service %s --env %s", svc, env);
    } else {
        putf(&b, "%s for %s/%s version %s.", ev->type, svc, env, ver);
    }
    if (note && note[0])
        putf(&b, "\n%s", note);
    if (links && links->ci_run_url && links->ci_run_url[0])
        putf(&b, "\nCI run: %s", links->ci_run_url);
    if (links && links->provider_url && links->provider_url[0])
        putf(&b, "\nDeploy: %s", links->provider_url);
    if (links && links->log_url && links->log_url[0])
        putf(&b, "\nProvider log: %s", links->log_url);
    if (nc && nc->dashboard_url)
        put_dashboard(&b, nc->dashboard_url, ev->service, ev->environment);
    if (ev->deployment_id)
        putf(&b, "\nDeployment %s", ev->deployment_id);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s ? b.s : strdup("");
}

/* ---- delivery ---- */

int dq_notify_sign(const char *secret, int64_t t, const char *body, size_t body_len,
                   char out[DQ_NOTIFY_SIG_LEN])
{
    char ts[24];
    unsigned char mac[EVP_MAX_MD_SIZE];
    int ts_len = snprintf(ts, sizeof ts, "%lld.", (long long)t);
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *c = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t n = 0;
    int rc = -1;

    out[0] = '\0';
    /* "<t>." then the body, fed in two parts: the same MAC as over their concatenation */
    if (c && EVP_MAC_init(c, (const unsigned char *)secret, strlen(secret), params) == 1 &&
        EVP_MAC_update(c, (const unsigned char *)ts, (size_t)ts_len) == 1 &&
        EVP_MAC_update(c, (const unsigned char *)body, body_len) == 1 &&
        EVP_MAC_final(c, mac, &n, sizeof mac) == 1 && n == 32) {
        int o = snprintf(out, DQ_NOTIFY_SIG_LEN, "t=%lld,v1=", (long long)t);

        for (size_t i = 0; i < n; i++)
            o += snprintf(out + o, DQ_NOTIFY_SIG_LEN - (size_t)o, "%02x", mac[i]);
        rc = 0;
    }
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(m);
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

static void deliver(const dq_notify_config *nc, const char *channel, const char *url, const char *body,
                    const char *type, int slack, dq_notify_result *r)
{
    char type_header[96], sig_header[sizeof DQ_NOTIFY_SIG_HEADER + 2 + DQ_NOTIFY_SIG_LEN];
    const char *headers[] = {"Content-Type: application/json", type_header, NULL, NULL};
    dq_http_opts o = {0};
    dq_http_response resp = {0};
    int rc;

    memset(r, 0, sizeof *r);
    dq_strlcpy(r->channel, channel, sizeof r->channel);
    snprintf(type_header, sizeof type_header, "X-Deployq-Event: %s", type);
    if (!slack && nc->webhook_secret) {
        char sig[DQ_NOTIFY_SIG_LEN];

        /* Unsigned would be refused by a receiver that checks: better not sent at all. */
        if (dq_notify_sign(nc->webhook_secret, (int64_t)time(NULL), body, strlen(body), sig) != 0) {
            r->attempts = 1;
            snprintf(r->error, sizeof r->error, "the body could not be signed (OpenSSL)");
            return;
        }
        snprintf(sig_header, sizeof sig_header, "%s: %s", DQ_NOTIFY_SIG_HEADER, sig);
        headers[2] = sig_header;
    }
    o.method = "POST";
    o.url = url;
    o.headers = headers;
    o.body = body;
    o.timeout_ms = (long)nc->timeout_ms;
    o.max_retries = nc->retries;
    o.retry_budget_ms = nc->retry_budget_ms;
    o.backoff_base_ms = 200;
    /* A notification repeated after a timeout is a duplicate message, not a second
     * deploy: worth it, the message matters more. */
    o.idempotent = 1;
    rc = dq_http_request(&o, &resp);
    r->attempts = resp.attempts > 0 ? resp.attempts : 1;
    r->http_status = resp.status;
    if (rc != 0) {
        /* curl's text can name the host and path, which is the secret: say only what kind
         * of failure it was. */
        snprintf(r->error, sizeof r->error, "%s after %d attempt%s",
                 resp.error == DQ_HTTP_ERR_CONNECT   ? "connection failed"
                 : resp.error == DQ_HTTP_ERR_TIMEOUT ? "timed out"
                                                     : "request could not be made",
                 r->attempts, r->attempts == 1 ? "" : "s");
    } else if (resp.status < 200 || resp.status > 299 || (slack && resp.status != 200)) {
        char word[48] = "";

        /* Slack answers errors with a short word (invalid_payload, no_service): keep it
         * when it looks like one. */
        if (slack && resp.body && resp.body_len > 0 && resp.body_len < sizeof word) {
            int plain = 1;
            for (size_t i = 0; i < resp.body_len; i++)
                plain &= (resp.body[i] >= 'a' && resp.body[i] <= 'z') || resp.body[i] == '_';
            if (plain)
                snprintf(word, sizeof word, " (%s)", resp.body);
        }
        snprintf(r->error, sizeof r->error, "HTTP %ld%s after %d attempt%s", resp.status, word,
                 r->attempts, r->attempts == 1 ? "" : "s");
    } else {
        r->ok = 1;
    }
    dq_http_response_free(&resp);
}

size_t dq_notify_send(const dq_notify_config *nc, const dq_event *ev, const char *text,
                      dq_notify_result out[DQ_NOTIFY_MAX_CHANNELS])
{
    size_t n = 0;

    if (!nc || !ev)
        return 0;
    if (nc->slack_url) {
        cJSON *o = cJSON_CreateObject();
        char *body = NULL;

        if (o && cJSON_AddStringToObject(o, "text", text ? text : ""))
            body = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (body) {
            deliver(nc, "slack", nc->slack_url, body, ev->type, 1, &out[n]);
        } else {
            memset(&out[n], 0, sizeof out[n]);
            dq_strlcpy(out[n].channel, "slack", sizeof out[n].channel);
            out[n].attempts = 1;
            snprintf(out[n].error, sizeof out[n].error, "out of memory");
        }
        free(body);
        n++;
    }
    if (nc->webhook_url) {
        char *body = dq_event_encode(ev);

        if (body) {
            deliver(nc, "webhook", nc->webhook_url, body, ev->type, 0, &out[n]);
        } else {
            memset(&out[n], 0, sizeof out[n]);
            dq_strlcpy(out[n].channel, "webhook", sizeof out[n].channel);
            out[n].attempts = 1;
            snprintf(out[n].error, sizeof out[n].error, "out of memory");
        }
        free(body);
        n++;
    }
    return n;
}

dq_event *dq_notify_event(const dq_event *trigger, const dq_notify_result *r, const char *actor)
{
    dq_event *ev = dq_event_new(r->ok ? DQ_EV_NOTIFICATION_SENT : DQ_EV_NOTIFICATION_FAILED,
                                trigger->deployment_id, trigger->service, trigger->environment,
                                trigger->version, actor);
    char name[160], clean[DQ_NOTIFY_ERR_LEN];

    if (!ev)
        return NULL;
    snprintf(name, sizeof name, "notification:%s:%s", trigger->id, r->channel);
    dq_event_set_id_from(ev, name);
    ev->fence = trigger->fence;
    if (!cJSON_AddStringToObject(ev->data, "channel", r->channel) ||
        !cJSON_AddStringToObject(ev->data, "trigger_event_id", trigger->id) ||
        !cJSON_AddStringToObject(ev->data, "trigger_type", trigger->type) ||
        !cJSON_AddNumberToObject(ev->data, "attempts", r->attempts > 0 ? r->attempts : 1) ||
        (r->http_status > 0 && !cJSON_AddNumberToObject(ev->data, "http_status", (double)r->http_status)) ||
        (!r->ok && !cJSON_AddStringToObject(ev->data, "error",
                                            dq_redact(r->error[0] ? r->error : "failed", clean, sizeof clean)))) {
        dq_event_free(ev);
        return NULL;
    }
    return ev;
}
