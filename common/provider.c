/*
 * provider.c - the provider registry, the helpers every adapter shares (HTTP with the
 * fence header, error classification, token scrubbing) and the failover chain runner.
 */
#include "provider.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_RETRIES 3
#define DEFAULT_RETRY_BUDGET_MS 30000
#define DEFAULT_DEADLINE_MS (20 * 60 * 1000)
#define DEFAULT_POLL_MS 5000
#define WAIT_SLICE_MS 100

const char *const dq_provider_types[] = {"github-actions", "railway", "circleci", "command", "webhook",
                                         NULL};

static const dq_provider_ops *const registry[] = {
    &dq_provider_github_ops, &dq_provider_railway_ops, &dq_provider_circleci_ops,
    &dq_provider_command_ops, &dq_provider_webhook_ops,
};

const char *dq_provider_cfg_str(const cJSON *config, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(config, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int64_t dq_provider_cfg_duration(const cJSON *config, const char *key, int64_t fallback)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(config, key);
    if (v == NULL)
        return fallback;
    if (cJSON_IsNumber(v))
        return v->valuedouble >= 0 ? (int64_t)(v->valuedouble * 1000) : -1; /* bare seconds */
    if (cJSON_IsString(v))
        return dq_duration_parse(v->valuestring);
    return -1;
}

dq_provider *dq_provider_new(const cJSON *config, char *err, size_t errlen)
{
    const char *type = dq_provider_cfg_str(config, "type");
    const dq_provider_ops *ops = NULL;
    dq_provider *p = NULL;

    if (!cJSON_IsObject(config)) {
        snprintf(err, errlen, "provider config is not an object");
        return NULL;
    }
    for (size_t i = 0; type != NULL && i < sizeof registry / sizeof registry[0]; i++)
        if (strcmp(registry[i]->type, type) == 0)
            ops = registry[i];
    if (ops == NULL) {
        snprintf(err, errlen, "provider type %s%s%s is not one of github-actions, railway, circleci, command, webhook",
                 type ? "\"" : "", type ? type : "(missing)", type ? "\"" : "");
        return NULL;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL)
        goto oom;
    p->ops = ops;
    const char *name = dq_provider_cfg_str(config, "name");
    dq_strlcpy(p->name, name ? name : type, sizeof p->name);

    const char *base = dq_provider_cfg_str(config, "base_url");
    if (base != NULL) {
        p->base_url = strdup(base);
        if (p->base_url == NULL)
            goto oom;
        size_t l = strlen(p->base_url);
        while (l > 0 && p->base_url[l - 1] == '/')
            p->base_url[--l] = '\0';
    }
    const char *token = dq_provider_cfg_str(config, "token");
    const char *token_env = dq_provider_cfg_str(config, "token_env");
    if (token == NULL && token_env != NULL) {
        token = getenv(token_env);
        if (token == NULL || token[0] == '\0') {
            snprintf(err, errlen, "provider %s: environment variable %s (token_env) is not set", p->name,
                     token_env);
            goto fail;
        }
    }
    if (token != NULL && token[0] != '\0') {
        p->token = strdup(token);
        if (p->token == NULL)
            goto oom;
    }

    int64_t timeout = dq_provider_cfg_duration(config, "timeout", DEFAULT_TIMEOUT_MS);
    p->retry_budget_ms = dq_provider_cfg_duration(config, "retry_budget", DEFAULT_RETRY_BUDGET_MS);
    p->deadline_ms = dq_provider_cfg_duration(config, "deadline", DEFAULT_DEADLINE_MS);
    p->poll_interval_ms = dq_provider_cfg_duration(config, "poll_interval", DEFAULT_POLL_MS);
    if (timeout <= 0 || p->retry_budget_ms <= 0 || p->deadline_ms <= 0 || p->poll_interval_ms <= 0) {
        snprintf(err, errlen, "provider %s: timeout, retry_budget, deadline and poll_interval must be positive durations",
                 p->name);
        goto fail;
    }
    p->timeout_ms = (long)timeout;
    p->retries = DEFAULT_RETRIES;
    const cJSON *retries = cJSON_GetObjectItemCaseSensitive(config, "retries");
    if (retries != NULL) {
        if (!cJSON_IsNumber(retries) || retries->valuedouble < 0 || retries->valuedouble > 20) {
            snprintf(err, errlen, "provider %s: retries must be a number from 0 to 20", p->name);
            goto fail;
        }
        p->retries = retries->valueint;
    }
    if (ops->init(p, config, err, errlen) != 0)
        goto fail;
    return p;

oom:
    snprintf(err, errlen, "out of memory");
fail:
    dq_provider_free(p);
    return NULL;
}

void dq_provider_free(dq_provider *p)
{
    if (p == NULL)
        return;
    if (p->ops->destroy != NULL)
        p->ops->destroy(p);
    free(p->base_url);
    if (p->token != NULL) {
        /* Do not leave the secret lying in freed heap memory. */
        volatile char *t = p->token;
        while (*t != '\0')
            *t++ = '\0';
    }
    free(p->token);
    free(p);
}

const char *dq_provider_name(const dq_provider *p) { return p ? p->name : NULL; }
const char *dq_provider_type(const dq_provider *p) { return p ? p->ops->type : NULL; }
int64_t dq_provider_deadline_ms(const dq_provider *p) { return p ? p->deadline_ms : 0; }
int64_t dq_provider_poll_interval_ms(const dq_provider *p) { return p ? p->poll_interval_ms : 0; }

void dq_provider_status_clear(dq_deploy_status *st)
{
    if (st == NULL)
        return;
    free(st->output);
    memset(st, 0, sizeof *st);
}

static void error_reset(dq_provider_error *e)
{
    memset(e, 0, sizeof *e);
}

int dq_provider_deploy(dq_provider *p, const dq_provider_request *req, char *id, size_t idlen,
                       dq_provider_error *e)
{
    error_reset(e);
    id[0] = '\0';
    return p->ops->deploy(p, req, id, idlen, e);
}

int dq_provider_status(dq_provider *p, const dq_provider_request *req, const char *id,
                       dq_deploy_status *st, dq_provider_error *e)
{
    error_reset(e);
    memset(st, 0, sizeof *st);
    return p->ops->status(p, req, id, st, e);
}

int dq_provider_rollback(dq_provider *p, const dq_provider_request *req, const char *id,
                         char *new_id, size_t new_idlen, dq_provider_error *e)
{
    error_reset(e);
    new_id[0] = '\0';
    return p->ops->rollback(p, req, id, new_id, new_idlen, e);
}

int dq_provider_cancel(dq_provider *p, const dq_provider_request *req, const char *id,
                       dq_provider_error *e)
{
    error_reset(e);
    if (p->ops->cancel == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "%s cannot cancel", p->ops->type);
    return p->ops->cancel(p, req, id, e);
}

/* Replace every occurrence of the provider's token in s with "***", in place. */
static void scrub_token(const dq_provider *p, char *s)
{
    if (p == NULL || p->token == NULL || p->token[0] == '\0')
        return;
    size_t tl = strlen(p->token);
    char *hit;
    while ((hit = strstr(s, p->token)) != NULL) {
        size_t rest = strlen(hit + tl);
        memcpy(hit, "***", 3);
        memmove(hit + 3, hit + tl, rest + 1);
    }
}

int dq_provider_fail(const dq_provider *p, dq_provider_error *e, dq_provider_error_kind kind,
                     const char *error_class, long http_status, const char *fmt, ...)
{
    char raw[DQ_PROVIDER_DETAIL_LEN];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    /* Provider messages can hold newlines; an error detail is one line. */
    for (char *c = raw; *c != '\0'; c++)
        if (*c == '\n' || *c == '\r' || *c == '\t')
            *c = ' ';
    scrub_token(p, raw);
    e->kind = kind;
    dq_strlcpy(e->error_class, error_class, sizeof e->error_class);
    e->http_status = http_status;
    dq_redact(raw, e->detail, sizeof e->detail);
    return -1;
}

/* The first bytes of a response body as printable text for an error detail. */
static void body_excerpt(const dq_http_response *r, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; r->body != NULL && i < r->body_len && o + 1 < outlen && i < 200; i++) {
        unsigned char c = (unsigned char)r->body[i];
        out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : ' ';
    }
    out[o] = '\0';
}

int dq_provider_http_error(const dq_provider *p, const dq_http_response *r, const char *what,
                           dq_provider_error *e)
{
    char excerpt[256];

    switch (r->error) {
    case DQ_HTTP_ERR_NONE:
        break;
    case DQ_HTTP_ERR_CONNECT:
        return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "connect", 0, "%s: %s (after %d attempts)", what,
                                r->errstr, r->attempts);
    case DQ_HTTP_ERR_TIMEOUT:
        return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "timeout", 0, "%s: %s (after %d attempts)", what,
                                r->errstr, r->attempts);
    default:
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "%s: %s", what, r->errstr);
    }
    long s = r->status;
    if (s >= 200 && s <= 299)
        return 0;
    body_excerpt(r, excerpt, sizeof excerpt);
    if (s == 429)
        return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "rate_limited", s,
                                "%s: HTTP 429 after %d attempts%s: %s", what, r->attempts,
                                r->budget_exhausted ? " (Retry-After beyond the retry budget)" : "", excerpt);
    if (s >= 500)
        return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "http_5xx", s, "%s: HTTP %ld after %d attempts: %s",
                                what, s, r->attempts, excerpt);
    if (s == 401)
        return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "unauthorized", s, "%s: HTTP 401: %s", what, excerpt);
    if (s == 402)
        return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "payment_required", s, "%s: HTTP 402: %s", what,
                                excerpt);
    if (s == 403)
        return dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "forbidden", s, "%s: HTTP 403: %s", what, excerpt);
    if (s >= 400)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", s, "%s: HTTP %ld: %s", what, s, excerpt);
    return dq_provider_fail(p, e, DQ_PROV_FAILED, "bad_response", s, "%s: unexpected HTTP %ld", what, s);
}

int dq_provider_http(const dq_provider *p, const char *method, const char *url,
                     const char *const *headers, const char *body, int idempotent, int64_t fence,
                     dq_http_response *r)
{
    const char *all[24];
    char fence_hdr[64];
    size_t n = 0;

    snprintf(fence_hdr, sizeof fence_hdr, DQ_FENCE_HEADER ": %lld", (long long)fence);
    all[n++] = fence_hdr;
    if (body != NULL)
        all[n++] = "Content-Type: application/json";
    for (const char *const *h = headers; h != NULL && *h != NULL && n + 1 < sizeof all / sizeof all[0]; h++)
        all[n++] = *h;
    all[n] = NULL;

    dq_http_opts o = {
        .method = method,
        .url = url,
        .headers = all,
        .body = body,
        .timeout_ms = p->timeout_ms,
        .max_retries = p->retries,
        .retry_budget_ms = p->retry_budget_ms,
        .idempotent = idempotent,
    };
    return dq_http_request(&o, r);
}

cJSON *dq_provider_parse_body(const dq_http_response *r)
{
    const char *end = NULL;
    if (r->body == NULL || r->body_len == 0 || r->truncated)
        return NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(r->body, r->body_len, &end, 0);
    return j;
}

/* ---- the chain ---- */

void dq_chain_result_clear(dq_chain_result *r)
{
    if (r == NULL)
        return;
    free(r->output);
    memset(r, 0, sizeof *r);
}

static int keep_going(const dq_chain_callbacks *cb)
{
    return cb == NULL || cb->should_continue == NULL || cb->should_continue(cb->ctx);
}

/* Sleep ms in short slices so a stop request is seen quickly. Returns 0 if stopped. */
static int wait_ms(const dq_chain_callbacks *cb, int64_t ms)
{
    int64_t until = dq_mono_ms() + ms;
    for (;;) {
        if (!keep_going(cb))
            return 0;
        int64_t left = until - dq_mono_ms();
        if (left <= 0)
            return 1;
        dq_sleep_ms(left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS);
    }
}

static void set_reason(dq_chain_result *res, const char *error_class, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_reason(dq_chain_result *res, const char *error_class, const char *fmt, ...)
{
    char raw[DQ_PROVIDER_DETAIL_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    dq_redact(raw, res->reason, sizeof res->reason);
    dq_strlcpy(res->error_class, error_class, sizeof res->error_class);
}

/* Poll provider p for id until terminal, deadline or stop. started is the monotonic time
 * the deploy started; the deadline counts from there. */
static dq_chain_outcome poll_until_done(dq_provider *p, const char *id, int64_t started,
                                        const dq_provider_request *req, const dq_chain_callbacks *cb,
                                        const dq_chain_options *opts, dq_chain_result *res)
{
    int64_t deadline = opts && opts->deadline_ms > 0 ? opts->deadline_ms : p->deadline_ms;
    int64_t interval = opts && opts->poll_interval_ms > 0 ? opts->poll_interval_ms : p->poll_interval_ms;
    char last_error[DQ_PROVIDER_DETAIL_LEN] = "";

    dq_strlcpy(res->provider, p->name, sizeof res->provider);
    dq_strlcpy(res->provider_type, p->ops->type, sizeof res->provider_type);
    dq_strlcpy(res->provider_id, id, sizeof res->provider_id);

    for (;;) {
        if (!keep_going(cb)) {
            res->outcome = DQ_CHAIN_STOPPED;
            set_reason(res, "", "stopped while polling %s %s", p->name, id);
            return res->outcome;
        }
        dq_deploy_status st;
        dq_provider_error e;
        if (dq_provider_status(p, req, id, &st, &e) == 0) {
            dq_strlcpy(res->provider_status, st.raw, sizeof res->provider_status);
            if (st.url[0] != '\0')
                dq_strlcpy(res->url, st.url, sizeof res->url);
            if (st.log_url[0] != '\0')
                dq_strlcpy(res->log_url, st.log_url, sizeof res->log_url);
            if (st.output != NULL) {
                free(res->output);
                res->output = st.output;
                st.output = NULL; /* now owned by the result */
            }
            int done = st.state != DQ_DEPLOY_IN_FLIGHT;
            if (st.state == DQ_DEPLOY_SUCCEEDED) {
                res->outcome = DQ_CHAIN_SUCCEEDED;
                res->reason[0] = '\0';
                res->failure[0] = '\0';
                res->error_class[0] = '\0';
            } else if (st.state == DQ_DEPLOY_FAILED && st.timed_out) {
                res->outcome = DQ_CHAIN_TIMEOUT;
                dq_strlcpy(res->failure, "timeout", sizeof res->failure);
                set_reason(res, "timeout", "timeout: %s %s hit its own time limit (%s)", p->name, id, st.raw);
            } else if (st.state == DQ_DEPLOY_FAILED) {
                res->outcome = DQ_CHAIN_FAILED;
                int cancelled = strcmp(st.raw, "cancelled") == 0 || strcmp(st.raw, "canceled") == 0;
                dq_strlcpy(res->failure, cancelled ? "cancelled" : "build_failed", sizeof res->failure);
                set_reason(res, "", "%s %s ended with status %s", p->name, id, st.raw);
            }
            dq_provider_status_clear(&st);
            if (done)
                return res->outcome;
        } else if (e.kind == DQ_PROV_FAILED) {
            res->outcome = DQ_CHAIN_FAILED;
            dq_strlcpy(res->failure, "internal", sizeof res->failure);
            set_reason(res, e.error_class, "%s: status of %s: %s", p->name, id, e.detail);
            return res->outcome;
        } else {
            /* The deploy is running somewhere: failing over now could run a second one
             * concurrently, so keep asking until the deadline. */
            dq_strlcpy(last_error, e.detail, sizeof last_error);
            dq_warn("provider %s: status of %s: %s", p->name, id, e.detail);
        }

        int64_t left = started + deadline - dq_mono_ms();
        if (left <= 0) {
            res->outcome = DQ_CHAIN_TIMEOUT;
            dq_strlcpy(res->failure, "timeout", sizeof res->failure);
            set_reason(res, "timeout", "timeout: %s %s not terminal after %lld ms (last status %s)%s%s", p->name,
                       id, (long long)deadline, res->provider_status[0] ? res->provider_status : "unknown",
                       last_error[0] ? "; last error: " : "", last_error);
            if (opts && opts->cancel_on_timeout) {
                dq_provider_error ce;
                if (dq_provider_cancel(p, req, id, &ce) != 0)
                    dq_warn("provider %s: cancel of %s: %s", p->name, id, ce.detail);
            }
            return res->outcome;
        }
        if (!wait_ms(cb, interval < left ? interval : left)) {
            res->outcome = DQ_CHAIN_STOPPED;
            set_reason(res, "", "stopped while polling %s %s", p->name, id);
            return res->outcome;
        }
    }
}

dq_chain_outcome dq_chain_run(dq_provider *const *providers, size_t n, const dq_provider_request *req,
                              const dq_chain_callbacks *cb, const dq_chain_options *opts,
                              dq_chain_result *result)
{
    int64_t t0 = dq_mono_ms();
    char tried[DQ_PROVIDER_DETAIL_LEN] = "";
    size_t tlen = 0;

    memset(result, 0, sizeof *result);
    result->outcome = DQ_CHAIN_FAILED;
    for (size_t i = 0; i < n; i++) {
        dq_provider *p = providers[i];
        char id[DQ_PROVIDER_ID_LEN];
        dq_provider_error e;

        if (!keep_going(cb)) {
            result->outcome = DQ_CHAIN_STOPPED;
            set_reason(result, "", "stopped before deploying");
            goto out;
        }
        result->providers_tried++;
        int64_t started = dq_mono_ms();
        if (dq_provider_deploy(p, req, id, sizeof id, &e) == 0) {
            dq_info("deploy %s started on %s as %s", req->deployment_id ? req->deployment_id : "?", p->name, id);
            if (cb != NULL && cb->on_started != NULL)
                cb->on_started(cb->ctx, p, id);
            poll_until_done(p, id, started, req, cb, opts, result);
            goto out;
        }
        dq_strlcpy(result->provider, p->name, sizeof result->provider);
        dq_strlcpy(result->provider_type, p->ops->type, sizeof result->provider_type);
        if (e.kind == DQ_PROV_FAILED) {
            result->outcome = DQ_CHAIN_FAILED;
            dq_strlcpy(result->failure, "internal", sizeof result->failure);
            set_reason(result, e.error_class, "%s: %s", p->name, e.detail);
            goto out;
        }
        dq_warn("provider %s unavailable (%s): %s", p->name, e.error_class, e.detail);
        if (cb != NULL && cb->on_provider_failed != NULL)
            cb->on_provider_failed(cb->ctx, p, &e);
        int w = snprintf(tried + tlen, sizeof tried - tlen, "%s%s: %s", tlen ? "; " : "", p->name, e.error_class);
        if (w > 0 && (size_t)w < sizeof tried - tlen)
            tlen += (size_t)w;
        dq_strlcpy(result->error_class, e.error_class, sizeof result->error_class);
    }
    result->outcome = DQ_CHAIN_FAILED;
    result->provider_id[0] = '\0';
    dq_strlcpy(result->failure, "all_providers_unavailable", sizeof result->failure);
    {
        char last_class[32];
        dq_strlcpy(last_class, result->error_class, sizeof last_class);
        set_reason(result, last_class, "no provider available (%s)", n ? tried : "empty chain");
    }
out:
    result->duration_ms = dq_mono_ms() - t0;
    return result->outcome;
}

dq_chain_outcome dq_chain_resume(dq_provider *p, const char *provider_id, int64_t elapsed_ms,
                                 const dq_provider_request *req, const dq_chain_callbacks *cb,
                                 const dq_chain_options *opts, dq_chain_result *result)
{
    int64_t t0 = dq_mono_ms();
    memset(result, 0, sizeof *result);
    result->providers_tried = 1;
    poll_until_done(p, provider_id, t0 - (elapsed_ms > 0 ? elapsed_ms : 0), req, cb, opts, result);
    result->duration_ms = dq_mono_ms() - t0 + (elapsed_ms > 0 ? elapsed_ms : 0);
    return result->outcome;
}
