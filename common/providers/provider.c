/*
 * provider.c - the provider registry, the helpers every adapter shares (HTTP with the
 * fence header, error classification, token scrubbing) and the failover chain runner.
 */
#include "provider.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_RETRIES 3
#define DEFAULT_RETRY_BUDGET_MS 30000
#define DEFAULT_DEADLINE_MS (20 * 60 * 1000)
#define DEFAULT_POLL_MS 5000
#define DEFAULT_QUEUE_TIMEOUT_MS (10 * 60 * 1000)
#define DEFAULT_CANCEL_WAIT_MS 60000
#define CREATE_BACKOFF_MS 200
#define CREATE_MAX_BACKOFF_MS 10000
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

/* ---- cost ---- */

const char *dq_cost_basis_name(dq_cost_basis b)
{
    switch (b) {
    case DQ_COST_PROVIDER:
        return "provider_jobs";
    case DQ_COST_WALL_TIME:
        return "wall_time";
    case DQ_COST_UNKNOWN:
        return "unknown";
    default:
        return NULL;
    }
}

/* A rate as configured: a number, or a string holding one (a ${NAME} value is text). 1
 * with *out when it is a finite number >= 0, else 0. */
static int rate_value(const cJSON *v, double *out)
{
    double x;

    if (cJSON_IsNumber(v)) {
        x = v->valuedouble;
    } else if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
        char *end;
        x = strtod(v->valuestring, &end);
        if (*end != '\0')
            return 0;
    } else {
        return 0;
    }
    if (!(x >= 0 && x < 1e9)) /* also refuses NaN */
        return 0;
    *out = x;
    return 1;
}

int dq_provider_cost_check(const dq_config *cfg, const cJSON *config, const char *where, char *err,
                           size_t errlen)
{
    static const char *const keys[] = {"per_minute", NULL};
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(config, "cost");
    const char *type = dq_provider_cfg_str(config, "type");
    const cJSON *rate, *r;
    char what[192];
    double x;

    if (cost == NULL)
        return 0;
    if (!cJSON_IsObject(cost))
        return dq_config_fail(cfg, cost, err, errlen, "%s: cost: expected a mapping such as {per_minute: 0.008}",
                              where);
    snprintf(what, sizeof what, "%s: cost", where);
    if (dq_config_check_keys(cfg, cost, keys, what, err, errlen) != 0)
        return -1;
    rate = cJSON_GetObjectItemCaseSensitive(cost, "per_minute");
    if (rate == NULL)
        return dq_config_fail(cfg, cost, err, errlen, "%s: cost.per_minute is required (a price per minute)",
                              where);
    if (!cJSON_IsObject(rate)) {
        if (!rate_value(rate, &x))
            return dq_config_fail(cfg, rate, err, errlen,
                                  "%s: cost.per_minute: expected a number >= 0 (the price of a minute)%s", where,
                                  type && strcmp(type, "github-actions") == 0 ? " or a mapping of runner label to that number"
                                  : type && strcmp(type, "circleci") == 0   ? " or a mapping of resource class to that number"
                                                                            : "");
        return 0;
    }
    /* Only GitHub (its jobs' runner labels) and CircleCI (its jobs' resource classes) say
     * what ran each job. */
    if (!type || (strcmp(type, "github-actions") != 0 && strcmp(type, "circleci") != 0))
        return dq_config_fail(cfg, rate, err, errlen,
                              "%s: cost.per_minute: a rate per runner label (github-actions) or resource class "
                              "(circleci) is for those types only; give one number",
                              where);
    if (rate->child == NULL)
        return dq_config_fail(cfg, rate, err, errlen, "%s: cost.per_minute: name at least one %s or default", where,
                              strcmp(type, "circleci") == 0 ? "resource class" : "runner label");
    cJSON_ArrayForEach(r, rate)
    {
        if (!rate_value(r, &x))
            return dq_config_fail(cfg, r, err, errlen, "%s: cost.per_minute.%.64s: expected a number >= 0", where,
                                  r->string);
    }
    return 0;
}

int dq_provider_rate(const dq_provider *p, const char *label, double *rate)
{
    const cJSON *v;

    if (p == NULL || p->rates == NULL)
        return 0;
    if (!cJSON_IsObject(p->rates))
        return rate_value(p->rates, rate);
    v = label ? cJSON_GetObjectItemCaseSensitive(p->rates, label) : NULL;
    if (v == NULL)
        v = cJSON_GetObjectItemCaseSensitive(p->rates, "default");
    return v != NULL && rate_value(v, rate);
}

void dq_run_cost_add(dq_run_cost *out, const char *label, double minutes, double rate)
{
    int i;

    for (i = 0; i < out->n_runners; i++)
        if (strcmp(out->runners[i].label, label) == 0)
            break;
    if (i == out->n_runners) {
        if (out->n_runners < DQ_COST_MAX_RUNNERS)
            dq_strlcpy(out->runners[out->n_runners++].label, label, sizeof out->runners[0].label);
        else
            i = DQ_COST_MAX_RUNNERS - 1;
    }
    out->runners[i].jobs++;
    out->runners[i].minutes += minutes;
    out->runners[i].amount += minutes * rate;
    out->minutes += minutes;
    out->amount += minutes * rate;
}

void dq_provider_cost(dq_provider *p, const dq_provider_request *req, const char *id, int64_t wall_ms,
                      dq_run_cost *out)
{
    double rate;

    memset(out, 0, sizeof *out);
    if (p == NULL || p->rates == NULL)
        return; /* not priced: no figure, never 0 */
    if (p->ops->cost != NULL) {
        if (p->ops->cost(p, req, id, out) == 0) {
            out->basis = DQ_COST_PROVIDER;
            return;
        }
        char why[DQ_PROVIDER_DETAIL_LEN];
        dq_strlcpy(why, out->detail, sizeof why);
        memset(out, 0, sizeof *out);
        out->basis = DQ_COST_UNKNOWN;
        dq_strlcpy(out->detail, why, sizeof out->detail);
        dq_warn("provider %s: the cost of %s is unknown: %s", p->name, id, out->detail);
        return;
    }
    if (!dq_provider_rate(p, NULL, &rate)) {
        out->basis = DQ_COST_UNKNOWN;
        snprintf(out->detail, sizeof out->detail, "no rate");
        return;
    }
    /* No figures from the provider: the deploy's own wall time, unrounded. */
    out->basis = DQ_COST_WALL_TIME;
    out->minutes = (double)(wall_ms > 0 ? wall_ms : 0) / 60000.0;
    out->amount = out->minutes * rate;
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
    {
        static const char *const common[] = {"type", "name", "base_url", "token", "token_env", "timeout",
                                             "retries", "retry_budget", "deadline", "poll_interval",
                                             "queue_timeout", "cost"};
        const char *known[48];
        size_t n = 0;
        char what[96], why[400];

        for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
            known[n++] = common[i];
        for (size_t i = 0; ops->keys && ops->keys[i] && n < 47; i++)
            known[n++] = ops->keys[i];
        known[n] = NULL;
        snprintf(what, sizeof what, "provider %s", dq_provider_cfg_str(config, "name") ? dq_provider_cfg_str(config, "name") : type);
        /* no cfg: the caller (dq_exec_chain_load) puts the file:line in front */
        if (dq_config_check_keys(NULL, config, known, what, why, sizeof why) != 0) {
            snprintf(err, errlen, "%s", why);
            return NULL;
        }
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
    p->queue_timeout_ms = dq_provider_cfg_duration(config, "queue_timeout", DEFAULT_QUEUE_TIMEOUT_MS);
    if (p->queue_timeout_ms < 0) {
        snprintf(err, errlen, "provider %s: queue_timeout must be a duration (0: never)", p->name);
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
    {
        char where[96];
        snprintf(where, sizeof where, "provider %s", p->name);
        if (dq_provider_cost_check(NULL, config, where, err, errlen) != 0)
            goto fail;
    }
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(config, "cost");
    if (cost != NULL &&
        (p->rates = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(cost, "per_minute"), 1)) == NULL)
        goto oom;
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
    cJSON_Delete(p->rates);
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

/* A deploy error after which the provider may have created the deploy anyway. */
static int ambiguous(const dq_provider_error *e)
{
    return e->kind == DQ_PROV_UNAVAILABLE &&
           (strcmp(e->error_class, "timeout") == 0 || strcmp(e->error_class, "http_5xx") == 0);
}

int dq_provider_deploy(dq_provider *p, const dq_provider_request *req, char *id, size_t idlen,
                       dq_provider_error *e)
{
    int64_t t0 = dq_mono_ms();

    for (int attempt = 0;; attempt++) {
        int64_t since = dq_now_ms();
        dq_provider_error fe;

        error_reset(e);
        id[0] = '\0';
        if (p->ops->deploy(p, req, id, idlen, e) == 0)
            return 0;
        if (!ambiguous(e) || p->ops->find == NULL)
            return -1;
        /* The call may have been accepted: look before sending anything again. */
        error_reset(&fe);
        int found = p->ops->find(p, req, since, id, idlen, &fe);
        if (found > 0) {
            dq_warn("provider %s: deploy call failed (%s: %s) but the provider had created %s: adopting it",
                    p->name, e->error_class, e->detail, id);
            error_reset(e);
            return 0;
        }
        id[0] = '\0';
        if (found < 0)
            return dq_provider_fail(p, e, DQ_PROV_FAILED, e->error_class, e->http_status,
                                    "%s; whether it created a deployment cannot be told (%s), so it is "
                                    "neither repeated nor failed over",
                                    e->detail, fe.detail);
        dq_info("provider %s: deploy call failed (%s) and created nothing", p->name, e->error_class);
        /* A create that timed out may still be on its way in: never sent again. A 5xx that
         * created nothing is retried like any refusal worth retrying. */
        int64_t wait = CREATE_BACKOFF_MS << (attempt < 6 ? attempt : 6);
        if (wait > CREATE_MAX_BACKOFF_MS)
            wait = CREATE_MAX_BACKOFF_MS;
        if (strcmp(e->error_class, "http_5xx") != 0 || attempt >= p->retries ||
            dq_mono_ms() - t0 + wait > p->retry_budget_ms)
            return -1;
        dq_sleep_ms(wait);
    }
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

int dq_provider_cancel_confirmed(dq_provider *p, const dq_provider_request *req, const char *id,
                                 int64_t wait_ms, int64_t poll_ms, dq_deploy_status *st,
                                 char *detail, size_t detaillen)
{
    dq_provider_error e;
    int64_t until = dq_mono_ms() + (wait_ms > 0 ? wait_ms : DEFAULT_CANCEL_WAIT_MS);
    char last_error[DQ_PROVIDER_DETAIL_LEN] = "";

    memset(st, 0, sizeof *st);
    detail[0] = '\0';
    if (dq_provider_cancel(p, req, id, &e) != 0) {
        /* Refused, perhaps because it already ended (GitHub answers 409): what it says
         * now decides. */
        dq_strlcpy(last_error, e.detail, sizeof last_error);
        dq_warn("provider %s: cancel of %s: %s", p->name, id, e.detail);
    }
    for (;;) {
        dq_deploy_status now;
        if (dq_provider_status(p, req, id, &now, &e) == 0) {
            dq_provider_status_clear(st);
            *st = now; /* output now owned by *st */
            if (now.state != DQ_DEPLOY_IN_FLIGHT)
                return 1;
        } else {
            dq_strlcpy(last_error, e.detail, sizeof last_error);
        }
        if (dq_mono_ms() + poll_ms > until)
            break;
        dq_sleep_ms(poll_ms > 0 ? poll_ms : WAIT_SLICE_MS);
        /* Asked again while it runs: a cancel is harmless to repeat, and what was not
         * there to cancel a moment ago (a CircleCI workflow still being set up) may be. */
        if (dq_provider_cancel(p, req, id, &e) != 0)
            dq_strlcpy(last_error, e.detail, sizeof last_error);
    }
    snprintf(detail, detaillen, "cancel of %s not confirmed within %lld ms (last status %s)%s%s", id,
             (long long)(wait_ms > 0 ? wait_ms : DEFAULT_CANCEL_WAIT_MS), st->raw[0] ? st->raw : "unknown",
             last_error[0] ? "; " : "", last_error);
    return 0;
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
    };
    /* DEDUPED: a 5xx is retried, a timeout is not. CREATE: a 5xx may have created the
     * deploy, so it comes back at once (dq_provider_deploy looks before a retry). */
    o.idempotent = idempotent == DQ_HTTP_SAFE;
    o.create = idempotent == DQ_HTTP_CREATE;
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

/* poll_until_done's answer when the deploy turned out never to have started. */
#define CHAIN_NOT_STARTED ((dq_chain_outcome)100)

/* Copy what a status says about where to look into the result. */
static void take_status(dq_chain_result *res, dq_deploy_status *st, int with_raw)
{
    if (with_raw)
        dq_strlcpy(res->provider_status, st->raw, sizeof res->provider_status);
    if (st->url[0] != '\0')
        dq_strlcpy(res->url, st->url, sizeof res->url);
    if (st->log_url[0] != '\0')
        dq_strlcpy(res->log_url, st->log_url, sizeof res->log_url);
    if (st->output != NULL) {
        free(res->output);
        res->output = st->output;
        st->output = NULL; /* now owned by the result */
    }
}

static void set_succeeded(dq_chain_result *res)
{
    res->outcome = DQ_CHAIN_SUCCEEDED;
    res->reason[0] = '\0';
    res->failure[0] = '\0';
    res->error_class[0] = '\0';
    res->cancel[0] = '\0';
    res->outcome_unknown = 0;
}

static void set_failed(const dq_provider *p, const char *id, dq_chain_result *res, const char *raw)
{
    int cancelled = strcmp(raw, "cancelled") == 0 || strcmp(raw, "canceled") == 0;
    res->outcome = DQ_CHAIN_FAILED;
    dq_strlcpy(res->failure, cancelled ? "cancelled" : "build_failed", sizeof res->failure);
    set_reason(res, "", "%s %s ended with status %s", p->name, id, raw);
}

static int64_t cancel_wait(const dq_chain_options *opts)
{
    return opts && opts->cancel_wait_ms > 0 ? opts->cancel_wait_ms : DEFAULT_CANCEL_WAIT_MS;
}

/* The deadline passed (res already says TIMEOUT with its reason): cancel when told to and
 * say whether the deploy is known to be stopped. A deploy that finished before the cancel
 * reached it is reported as it finished: the registry records what happened. */
static void timeout_cancel(dq_provider *p, const char *id, const dq_provider_request *req,
                           const dq_chain_options *opts, int64_t interval, dq_chain_result *res)
{
    dq_deploy_status st;
    char why[DQ_PROVIDER_DETAIL_LEN];
    char reason[DQ_PROVIDER_DETAIL_LEN];

    if (!opts || !opts->cancel_on_timeout) {
        dq_strlcpy(res->cancel, "off", sizeof res->cancel);
        res->outcome_unknown = 1;
        dq_strlcpy(reason, res->reason, sizeof reason);
        set_reason(res, "timeout", "%s; not cancelled (cancel_on_timeout is off): it may still go live", reason);
        return;
    }
    int confirmed = dq_provider_cancel_confirmed(p, req, id, cancel_wait(opts), interval, &st, why, sizeof why);
    dq_strlcpy(reason, res->reason, sizeof reason);
    if (confirmed && st.state == DQ_DEPLOY_SUCCEEDED) {
        dq_warn("provider %s: %s succeeded as its deadline passed: reporting the success", p->name, id);
        take_status(res, &st, 1);
        set_succeeded(res);
    } else if (confirmed) {
        take_status(res, &st, 0);
        dq_strlcpy(res->cancel, "confirmed", sizeof res->cancel);
        set_reason(res, "timeout", "%s; cancelled (now %s)", reason, st.raw);
    } else {
        dq_strlcpy(res->cancel, "unconfirmed", sizeof res->cancel);
        res->outcome_unknown = 1;
        set_reason(res, "timeout", "%s; outcome unknown: %s", reason, why);
        dq_error("provider %s: %s timed out and its %s: the deploy may still go live", p->name, id, why);
    }
    dq_provider_status_clear(&st);
}

/* An operator asked to cancel this deployment (`deployq cancel`, cb->cancel_requested):
 * cancel it at the provider and confirm, as a timeout does. 1 with res concluded (FAILED,
 * "cancelled"; or SUCCEEDED when it finished before the cancel reached it), 0 no cancel
 * asked. */
static int operator_cancel(dq_provider *p, const char *id, const dq_provider_request *req,
                           const dq_chain_callbacks *cb, const dq_chain_options *opts, int64_t interval,
                           dq_chain_result *res)
{
    char by[128] = "", why[DQ_PROVIDER_DETAIL_LEN];
    dq_deploy_status cs;
    int confirmed;

    if (!cb || !cb->cancel_requested || !cb->cancel_requested(cb->ctx, by, sizeof by))
        return 0;
    dq_warn("provider %s: %s: cancel asked by %s: cancelling at the provider", p->name, id, by);
    confirmed = dq_provider_cancel_confirmed(p, req, id, cancel_wait(opts), interval, &cs, why, sizeof why);
    if (confirmed && cs.state == DQ_DEPLOY_SUCCEEDED) {
        dq_warn("provider %s: %s succeeded before the cancel reached it: reporting the success", p->name, id);
        take_status(res, &cs, 1);
        set_succeeded(res);
        dq_provider_status_clear(&cs);
        return 1;
    }
    res->outcome = DQ_CHAIN_FAILED;
    dq_strlcpy(res->failure, "cancelled", sizeof res->failure);
    dq_strlcpy(res->cancelled_by, by, sizeof res->cancelled_by);
    if (confirmed) {
        take_status(res, &cs, 0);
        dq_strlcpy(res->cancel, "confirmed", sizeof res->cancel);
        set_reason(res, "", "cancelled by %s: %s %s stopped at the provider (now %s)", by, p->name, id, cs.raw);
    } else {
        dq_strlcpy(res->cancel, "unconfirmed", sizeof res->cancel);
        res->outcome_unknown = 1;
        set_reason(res, "", "cancelled by %s, but the cancel of %s %s was not confirmed: %s; it may still go live",
                   by, p->name, id, why);
    }
    dq_provider_status_clear(&cs);
    return 1;
}

/* Poll provider p for id until terminal, deadline or stop. started is the monotonic time
 * the deploy started; the deadline counts from there. CHAIN_NOT_STARTED (with *fe) when
 * the provider turned out to have run nothing: the caller fails over. */
static dq_chain_outcome poll_until_done(dq_provider *p, const char *id, int64_t started,
                                        const dq_provider_request *req, const dq_chain_callbacks *cb,
                                        const dq_chain_options *opts, dq_chain_result *res,
                                        dq_provider_error *fe)
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
            take_status(res, &st, 1);
            switch (st.state) {
            case DQ_DEPLOY_SUCCEEDED:
                set_succeeded(res);
                break;
            case DQ_DEPLOY_NOT_STARTED:
                dq_provider_fail(p, fe, DQ_PROV_UNAVAILABLE, "not_started", 0, "%s",
                                 st.detail[0] ? st.detail : "the provider accepted the deploy but ran nothing");
                dq_provider_status_clear(&st);
                return CHAIN_NOT_STARTED;
            case DQ_DEPLOY_FAILED:
                if (st.timed_out) {
                    /* the provider's own limit stopped it (command: process group killed) */
                    res->outcome = DQ_CHAIN_TIMEOUT;
                    dq_strlcpy(res->failure, "timeout", sizeof res->failure);
                    dq_strlcpy(res->cancel, "confirmed", sizeof res->cancel);
                    set_reason(res, "timeout", "timeout: %s %s hit its own time limit (%s)", p->name, id, st.raw);
                } else {
                    set_failed(p, id, res, st.raw);
                }
                break;
            case DQ_DEPLOY_IN_FLIGHT:
                if (st.queued && p->queue_timeout_ms > 0 && dq_mono_ms() - started >= p->queue_timeout_ms) {
                    /* Nothing runs and nothing has: the provider is not serving us (GitHub
                     * billing lapse, no runner). Cancel, make sure, then fail over. */
                    dq_deploy_status cs;
                    char why[DQ_PROVIDER_DETAIL_LEN];
                    dq_provider_status_clear(&st);
                    dq_warn("provider %s: %s still queued after %lld ms (queue_timeout): cancelling", p->name, id,
                            (long long)p->queue_timeout_ms);
                    int confirmed =
                        dq_provider_cancel_confirmed(p, req, id, cancel_wait(opts), interval, &cs, why, sizeof why);
                    if (confirmed && (cs.state == DQ_DEPLOY_NOT_STARTED ||
                                      (cs.state == DQ_DEPLOY_FAILED && cs.never_ran))) {
                        dq_provider_fail(p, fe, DQ_PROV_UNAVAILABLE, "not_started", 0,
                                         "%s %s stayed queued for %lld ms (queue_timeout) and was cancelled; "
                                         "nothing of it ran",
                                         p->name, id, (long long)p->queue_timeout_ms);
                        dq_provider_status_clear(&cs);
                        return CHAIN_NOT_STARTED;
                    }
                    if (confirmed) {
                        /* It got going after all: its own end is the outcome. */
                        take_status(res, &cs, 1);
                        if (cs.state == DQ_DEPLOY_SUCCEEDED)
                            set_succeeded(res);
                        else
                            set_failed(p, id, res, cs.raw);
                    } else {
                        res->outcome = DQ_CHAIN_TIMEOUT;
                        dq_strlcpy(res->failure, "timeout", sizeof res->failure);
                        dq_strlcpy(res->cancel, "unconfirmed", sizeof res->cancel);
                        res->outcome_unknown = 1;
                        set_reason(res, "timeout", "timeout: %s %s queued past queue_timeout (%lld ms); outcome unknown: %s",
                                   p->name, id, (long long)p->queue_timeout_ms, why);
                    }
                    dq_provider_status_clear(&cs);
                    return res->outcome;
                }
                break;
            }
            dq_deploy_state state = st.state;
            dq_provider_status_clear(&st);
            if (state != DQ_DEPLOY_IN_FLIGHT)
                return res->outcome;
            if (operator_cancel(p, id, req, cb, opts, interval, res))
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
            timeout_cancel(p, id, req, opts, interval, res);
            return res->outcome;
        }
        if (!wait_ms(cb, interval < left ? interval : left)) {
            res->outcome = DQ_CHAIN_STOPPED;
            set_reason(res, "", "stopped while polling %s %s", p->name, id);
            return res->outcome;
        }
    }
}

/* The chain from providers[index] on; with resume_id, providers[index]'s deployment
 * resume_id (started elapsed_ms ago) is polled instead of deployed. */
static dq_chain_outcome chain_from(dq_provider *const *providers, size_t n, size_t index, const char *resume_id,
                                   int64_t elapsed_ms, const dq_provider_request *req, const dq_chain_callbacks *cb,
                                   const dq_chain_options *opts, dq_chain_result *result)
{
    int64_t t0 = dq_mono_ms() - (elapsed_ms > 0 ? elapsed_ms : 0);
    char tried[DQ_PROVIDER_DETAIL_LEN] = "";
    size_t tlen = 0;
    dq_provider *ran = NULL; /* the provider whose deploy is being polled, for its cost */
    int64_t ran_since = 0;

    memset(result, 0, sizeof *result);
    result->outcome = DQ_CHAIN_FAILED;
    for (size_t i = index; i < n; i++) {
        dq_provider *p = providers[i];
        char id[DQ_PROVIDER_ID_LEN];
        dq_provider_error e;
        int64_t started;

        if (!keep_going(cb)) {
            result->outcome = DQ_CHAIN_STOPPED;
            set_reason(result, "", "stopped before deploying");
            goto out;
        }
        result->providers_tried++;
        if (i == index && resume_id != NULL) {
            dq_strlcpy(id, resume_id, sizeof id);
            started = t0;
        } else {
            started = dq_mono_ms();
            if (dq_provider_deploy(p, req, id, sizeof id, &e) == 0) {
                dq_info("deploy %s started on %s as %s", req->deployment_id ? req->deployment_id : "?", p->name,
                        id);
                if (cb != NULL && cb->on_started != NULL)
                    cb->on_started(cb->ctx, p, id);
            } else if (e.kind == DQ_PROV_FAILED) {
                dq_strlcpy(result->provider, p->name, sizeof result->provider);
                dq_strlcpy(result->provider_type, p->ops->type, sizeof result->provider_type);
                result->outcome = DQ_CHAIN_FAILED;
                dq_strlcpy(result->failure, "internal", sizeof result->failure);
                set_reason(result, e.error_class, "%s: %s", p->name, e.detail);
                goto out;
            } else {
                goto unavailable;
            }
        }
        ran = p;
        ran_since = started;
        if (poll_until_done(p, id, started, req, cb, opts, result, &e) != CHAIN_NOT_STARTED)
            goto out;
        ran = NULL; /* it ran nothing: nothing to price */
        /* Accepted, then nothing ran: unavailable after all. What it said is not the
         * outcome of this run any more. */
        free(result->output);
        result->output = NULL;
        result->provider_id[0] = result->provider_status[0] = result->url[0] = result->log_url[0] = '\0';
    unavailable:
        dq_strlcpy(result->provider, p->name, sizeof result->provider);
        dq_strlcpy(result->provider_type, p->ops->type, sizeof result->provider_type);
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
        set_reason(result, last_class, "no provider available (%s)", n > index ? tried : "empty chain");
    }
out:
    result->duration_ms = dq_mono_ms() - t0;
    /* Asked once the outcome is known, so a slow or failing answer never changes it. */
    if (ran != NULL && result->provider_id[0] != '\0' && result->outcome != DQ_CHAIN_STOPPED)
        dq_provider_cost(ran, req, result->provider_id, dq_mono_ms() - ran_since, &result->cost);
    return result->outcome;
}

dq_chain_outcome dq_chain_run(dq_provider *const *providers, size_t n, const dq_provider_request *req,
                              const dq_chain_callbacks *cb, const dq_chain_options *opts,
                              dq_chain_result *result)
{
    return chain_from(providers, n, 0, NULL, 0, req, cb, opts, result);
}

dq_chain_outcome dq_chain_resume_at(dq_provider *const *providers, size_t n, size_t index,
                                    const char *provider_id, int64_t elapsed_ms,
                                    const dq_provider_request *req, const dq_chain_callbacks *cb,
                                    const dq_chain_options *opts, dq_chain_result *result)
{
    return chain_from(providers, n, index, provider_id, elapsed_ms, req, cb, opts, result);
}

dq_chain_outcome dq_chain_resume(dq_provider *p, const char *provider_id, int64_t elapsed_ms,
                                 const dq_provider_request *req, const dq_chain_callbacks *cb,
                                 const dq_chain_options *opts, dq_chain_result *result)
{
    return chain_from(&p, 1, 0, provider_id, elapsed_ms, req, cb, opts, result);
}
