/*
 * probe.c - HTTP, Prometheus and Sentry health probes (see probe.h): configuration, one
 * bounded attempt through http.h, and the judging of what came back into a sample.
 */
#include "probe.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "util.h"

#define MAX_HEADERS 16
#define MAX_TIMEOUT_MS 60000
#define MAX_PROJECTS 32
#define SENTRY_DEFAULT_URL "https://sentry.io"
#define SENTRY_RETRY_AFTER_DEFAULT_MS 1000 /* a 429 without Retry-After still pauses us */
#define SENTRY_RETRY_AFTER_MAX_MS 3600000  /* a nonsense Retry-After cannot silence a watch */

struct dq_probe_limit {
    pthread_mutex_t mu;
    int64_t not_before_ms; /* wall clock: no request to Sentry before it */
};

void dq_probe_free(dq_probe *p)
{
    if (!p)
        return;
    free(p->name);
    free(p->url);
    if (p->headers) {
        for (char **h = p->headers; *h; h++)
            free(*h);
        free(p->headers);
    }
    free(p->body_match);
    if (p->body_regex)
        regfree(&p->re);
    free(p->body_regex);
    free(p->query);
    free(p->org);
    if (p->token) {
        memset(p->token, 0, strlen(p->token));
        free(p->token);
    }
    free(p->project_ids);
    if (p->limit) {
        pthread_mutex_destroy(&p->limit->mu);
        free(p->limit);
    }
    free(p);
}

const char *dq_probe_type_name(dq_probe_type t)
{
    static const char *const names[] = {"http", "prometheus", "sentry"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

const char *dq_probe_op_name(dq_probe_op op)
{
    static const char *const names[] = {"gt", "ge", "lt", "le", "eq", "ne"};
    return (unsigned)op < sizeof names / sizeof names[0] ? names[op] : "?";
}

const char *dq_missing_policy_name(dq_missing_policy m)
{
    static const char *const names[] = {"fail", "ignore", "hold"};
    return (unsigned)m < sizeof names / sizeof names[0] ? names[m] : "?";
}

const char *dq_sample_outcome_name(dq_sample_outcome o)
{
    static const char *const names[] = {"pass", "fail", "missing"};
    return (unsigned)o < sizeof names / sizeof names[0] ? names[o] : "?";
}

int dq_probe_compare(dq_probe_op op, double v, double t)
{
    switch (op) {
    case DQ_OP_GT: return v > t;
    case DQ_OP_GE: return v >= t;
    case DQ_OP_LT: return v < t;
    case DQ_OP_LE: return v <= t;
    case DQ_OP_EQ: return v == t;
    case DQ_OP_NE: return v != t;
    }
    return 0;
}

/* A duration member: a string ("500ms") or a number of seconds. -2 when absent. */
static int64_t duration_member(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    char buf[32];

    if (!v || cJSON_IsNull(v))
        return -2;
    if (cJSON_IsString(v))
        return dq_duration_parse(v->valuestring);
    if (cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble) {
        snprintf(buf, sizeof buf, "%lld", (long long)v->valuedouble);
        return dq_duration_parse(buf);
    }
    return -1;
}

static const char *const probe_keys[] = {
    "name", "type", "url", "headers", "timeout", "missing", "expect_status", "max_latency",
    "body_match", "body_regex", "query", "op", "threshold", "org", "project_ids", "token",
    "metric", NULL,
};

/* The keys only one type takes, so a key given to another type is named as misplaced. */
static const struct {
    const char *key;
    dq_probe_type type;
} typed_keys[] = {
    {"expect_status", DQ_PROBE_HTTP},  {"max_latency", DQ_PROBE_HTTP}, {"body_match", DQ_PROBE_HTTP},
    {"body_regex", DQ_PROBE_HTTP},     {"query", DQ_PROBE_PROMETHEUS}, {"org", DQ_PROBE_SENTRY},
    {"project_ids", DQ_PROBE_SENTRY},  {"token", DQ_PROBE_SENTRY},     {"metric", DQ_PROBE_SENTRY},
};

/* An organization slug as Sentry makes them: lower-case letters, digits, '-' and '_'. */
static int valid_slug(const char *s)
{
    if (!s || !s[0] || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
            return 0;
    return 1;
}

/* op and threshold, shared by the Prometheus and Sentry probes; def_op when op is absent
 * (-1: op required). */
static int op_threshold(const cJSON *obj, const char *where, dq_probe *p, int def_op, char *err,
                        size_t errlen)
{
    static const char *const ops[] = {"gt", "ge", "lt", "le", "eq", "ne"};
    const char *s = dq_json_str(obj, "op");
    const cJSON *it;
    int found = 0;

    if (!s && def_op >= 0) {
        p->op = (dq_probe_op)def_op;
        found = 1;
    }
    for (size_t i = 0; s && i < sizeof ops / sizeof ops[0]; i++) {
        if (strcmp(s, ops[i]) == 0) {
            p->op = (dq_probe_op)i;
            found = 1;
        }
    }
    if (!found) {
        snprintf(err, errlen, "%s.op: %sone of gt, ge, lt, le, eq, ne", where,
                 def_op >= 0 ? "expected " : "required, ");
        return -1;
    }
    it = cJSON_GetObjectItemCaseSensitive(obj, "threshold");
    if (!cJSON_IsNumber(it)) {
        snprintf(err, errlen, "%s.threshold: required, a number", where);
        return -1;
    }
    p->threshold = it->valuedouble;
    return 0;
}

/* The Sentry keys: org, token, project_ids, metric, op (default gt), threshold. */
static int sentry_keys(const cJSON *obj, const char *where, dq_probe *p, char *err, size_t errlen)
{
    const cJSON *it;
    const char *s = dq_json_str(obj, "org");

    if (!valid_slug(s)) {
        snprintf(err, errlen, "%s.org: required, the organization slug (lower-case letters, digits, - and _)",
                 where);
        return -1;
    }
    if (!(p->org = strdup(s)))
        goto oom;
    s = dq_json_str(obj, "token");
    if (!s || !s[0] || strpbrk(s, "\r\n")) {
        snprintf(err, errlen, "%s.token: required, a Sentry auth token (e.g. token: ${SENTRY_TOKEN})", where);
        return -1;
    }
    if (!(p->token = strdup(s)))
        goto oom;
    dq_log_redact(p->token); /* written literally, it is still a credential */
    it = cJSON_GetObjectItemCaseSensitive(obj, "project_ids");
    if (it) {
        const cJSON *id;
        int n = cJSON_GetArraySize(it);

        if (!cJSON_IsArray(it) || n < 1 || n > MAX_PROJECTS) {
            snprintf(err, errlen, "%s.project_ids: expected a list of 1 to %d numeric project ids", where,
                     MAX_PROJECTS);
            return -1;
        }
        if (!(p->project_ids = calloc((size_t)n, sizeof *p->project_ids)))
            goto oom;
        cJSON_ArrayForEach(id, it) {
            if (!cJSON_IsNumber(id) || id->valuedouble < 1 || id->valuedouble > 9007199254740992.0 ||
                id->valuedouble != (double)(long long)id->valuedouble) {
                snprintf(err, errlen, "%s.project_ids[%zu]: expected a numeric project id", where,
                         p->n_projects);
                return -1;
            }
            p->project_ids[p->n_projects++] = (long long)id->valuedouble;
        }
    }
    s = dq_json_str(obj, "metric");
    if (!s || strcmp(s, "errors") == 0) {
        p->metric = DQ_SENTRY_ERRORS;
    } else if (strcmp(s, "errors_per_minute") == 0) {
        p->metric = DQ_SENTRY_ERRORS_PER_MINUTE;
    } else {
        snprintf(err, errlen, "%s.metric: expected errors or errors_per_minute", where);
        return -1;
    }
    if (op_threshold(obj, where, p, DQ_OP_GT, err, errlen) != 0)
        return -1;
    if (!(p->limit = calloc(1, sizeof *p->limit)))
        goto oom;
    if (pthread_mutex_init(&p->limit->mu, NULL) != 0) {
        free(p->limit);
        p->limit = NULL;
        goto oom;
    }
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", where);
    return -1;
}

dq_probe *dq_probe_from_json(const cJSON *obj, const char *where, int64_t default_timeout_ms,
                             char *err, size_t errlen)
{
    dq_probe *p = NULL;
    const cJSON *it;
    const char *s;
    int64_t d;

    if (!cJSON_IsObject(obj)) {
        snprintf(err, errlen, "%s: expected a mapping", where);
        return NULL;
    }
    if (dq_config_check_keys(NULL, obj, probe_keys, where, err, errlen) != 0)
        return NULL;
    p = calloc(1, sizeof *p);
    if (!p)
        goto oom;
    s = dq_json_str(obj, "name");
    if (!s || !s[0] || strlen(s) > 64) {
        snprintf(err, errlen, "%s.name: required, 1 to 64 characters", where);
        goto fail;
    }
    if (!(p->name = strdup(s)))
        goto oom;
    s = dq_json_str(obj, "type");
    if (!s || strcmp(s, "http") == 0) {
        p->type = DQ_PROBE_HTTP;
    } else if (strcmp(s, "prometheus") == 0) {
        p->type = DQ_PROBE_PROMETHEUS;
    } else if (strcmp(s, "sentry") == 0) {
        p->type = DQ_PROBE_SENTRY;
    } else {
        snprintf(err, errlen, "%s.type: expected http, prometheus or sentry", where);
        goto fail;
    }
    for (size_t i = 0; i < sizeof typed_keys / sizeof typed_keys[0]; i++) {
        if (typed_keys[i].type != p->type && cJSON_GetObjectItemCaseSensitive(obj, typed_keys[i].key)) {
            snprintf(err, errlen, "%s.%s: only for type: %s", where, typed_keys[i].key,
                     dq_probe_type_name(typed_keys[i].type));
            goto fail;
        }
    }
    if (p->type == DQ_PROBE_HTTP &&
        (cJSON_GetObjectItemCaseSensitive(obj, "op") || cJSON_GetObjectItemCaseSensitive(obj, "threshold"))) {
        snprintf(err, errlen, "%s.%s: only for type: prometheus or sentry", where,
                 cJSON_GetObjectItemCaseSensitive(obj, "op") ? "op" : "threshold");
        goto fail;
    }
    s = dq_json_str(obj, "url");
    if (!s && p->type == DQ_PROBE_SENTRY && !cJSON_GetObjectItemCaseSensitive(obj, "url"))
        s = SENTRY_DEFAULT_URL;
    if (!s || (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)) {
        snprintf(err, errlen, "%s.url: %san http:// or https:// URL", where,
                 p->type == DQ_PROBE_SENTRY ? "expected " : "required, ");
        goto fail;
    }
    if (!(p->url = strdup(s)))
        goto oom;
    if (p->type == DQ_PROBE_SENTRY)
        for (size_t n = strlen(p->url); n > 8 && p->url[n - 1] == '/'; n--)
            p->url[n - 1] = '\0';

    it = cJSON_GetObjectItemCaseSensitive(obj, "headers");
    if (it) {
        int n = cJSON_GetArraySize(it), i = 0;
        const cJSON *h;
        if (!cJSON_IsArray(it) || n > MAX_HEADERS) {
            snprintf(err, errlen, "%s.headers: expected a list of at most %d \"Name: value\" lines",
                     where, MAX_HEADERS);
            goto fail;
        }
        if (!(p->headers = calloc((size_t)n + 1, sizeof *p->headers)))
            goto oom;
        cJSON_ArrayForEach(h, it) {
            if (!cJSON_IsString(h) || !strchr(h->valuestring, ':') ||
                strpbrk(h->valuestring, "\r\n")) {
                snprintf(err, errlen, "%s.headers[%d]: expected \"Name: value\"", where, i);
                goto fail;
            }
            if (!(p->headers[i++] = strdup(h->valuestring)))
                goto oom;
        }
    }

    d = duration_member(obj, "timeout");
    if (d == -2) {
        p->timeout_ms = default_timeout_ms > 0 ? default_timeout_ms : 5000;
    } else if (d <= 0 || d > MAX_TIMEOUT_MS) {
        snprintf(err, errlen, "%s.timeout: expected a duration up to 60s", where);
        goto fail;
    } else {
        p->timeout_ms = d;
    }

    s = dq_json_str(obj, "missing");
    if (!s || strcmp(s, "fail") == 0) {
        p->missing = DQ_MISSING_FAIL;
    } else if (strcmp(s, "ignore") == 0) {
        p->missing = DQ_MISSING_IGNORE;
    } else if (strcmp(s, "hold") == 0) {
        p->missing = DQ_MISSING_HOLD;
    } else {
        snprintf(err, errlen, "%s.missing: expected fail, ignore or hold", where);
        goto fail;
    }

    if (p->type == DQ_PROBE_HTTP) {
        it = cJSON_GetObjectItemCaseSensitive(obj, "expect_status");
        if (it) {
            if (!cJSON_IsNumber(it) || it->valuedouble < 100 || it->valuedouble > 599 ||
                it->valuedouble != (double)(long)it->valuedouble) {
                snprintf(err, errlen, "%s.expect_status: expected an HTTP status 100..599", where);
                goto fail;
            }
            p->expect_status = (long)it->valuedouble;
        }
        d = duration_member(obj, "max_latency");
        if (d == -1 || d == 0) {
            snprintf(err, errlen, "%s.max_latency: expected a duration (e.g. 500ms)", where);
            goto fail;
        }
        p->max_latency_ms = d > 0 ? d : 0;
        /* an attempt is cut at max_latency (dq_probe_run); the timeout still bounds the
         * attempts of a probe that leaves max_latency out, and must not be the shorter of
         * the two, or a slow answer would look like no answer at all */
        if (p->max_latency_ms > 0 && p->timeout_ms <= p->max_latency_ms &&
            cJSON_GetObjectItemCaseSensitive(obj, "timeout")) {
            snprintf(err, errlen, "%s.timeout: must be longer than max_latency", where);
            goto fail;
        }
        if (p->max_latency_ms > 0 && !cJSON_GetObjectItemCaseSensitive(obj, "timeout") &&
            p->timeout_ms < p->max_latency_ms * 2)
            p->timeout_ms = p->max_latency_ms * 2 > MAX_TIMEOUT_MS ? MAX_TIMEOUT_MS
                                                                   : p->max_latency_ms * 2;
        s = dq_json_str(obj, "body_match");
        if (cJSON_GetObjectItemCaseSensitive(obj, "body_match") && (!s || !s[0])) {
            snprintf(err, errlen, "%s.body_match: expected a non-empty string", where);
            goto fail;
        }
        if (s && !(p->body_match = strdup(s)))
            goto oom;
        s = dq_json_str(obj, "body_regex");
        if (cJSON_GetObjectItemCaseSensitive(obj, "body_regex") && (!s || !s[0])) {
            snprintf(err, errlen, "%s.body_regex: expected a non-empty string", where);
            goto fail;
        }
        if (s) {
            int rc = regcomp(&p->re, s, REG_EXTENDED | REG_NOSUB);
            if (rc != 0) {
                char why[128];
                regerror(rc, &p->re, why, sizeof why);
                snprintf(err, errlen, "%s.body_regex: %s", where, why);
                goto fail;
            }
            if (!(p->body_regex = strdup(s))) {
                regfree(&p->re);
                goto oom;
            }
        }
    } else if (p->type == DQ_PROBE_PROMETHEUS) {
        s = dq_json_str(obj, "query");
        if (!s || !s[0]) {
            snprintf(err, errlen, "%s.query: required for type: prometheus", where);
            goto fail;
        }
        if (!(p->query = strdup(s)))
            goto oom;
        if (op_threshold(obj, where, p, -1, err, errlen) != 0)
            goto fail;
    } else if (sentry_keys(obj, where, p, err, errlen) != 0) {
        goto fail;
    }
    return p;
oom:
    snprintf(err, errlen, "%s: out of memory", where);
fail:
    dq_probe_free(p);
    return NULL;
}

/* A body excerpt fit for an event: printable ASCII only, cut, secrets masked. */
static void excerpt(const char *body, size_t len, char *out, size_t outlen)
{
    char raw[80];
    size_t n = 0;

    for (size_t i = 0; body && i < len && n + 1 < sizeof raw && n < 64; i++)
        raw[n++] = (body[i] >= 0x20 && body[i] < 0x7f) ? body[i] : '.';
    raw[n] = '\0';
    dq_redact(raw, out, outlen);
}

static void set_check(dq_sample *out, dq_sample_outcome o, const char *check)
{
    out->outcome = o;
    dq_strlcpy(out->check, check, sizeof out->check);
}

void dq_probe_judge_http(const dq_probe *p, int got_response, long status, const char *body,
                         size_t body_len, int64_t latency_ms, const char *curl_error,
                         dq_sample *out)
{
    char why[160];

    out->status = got_response ? status : 0;
    out->latency_ms = got_response ? latency_ms : -1;
    out->has_value = 0;
    out->observed[0] = '\0';
    if (!got_response) {
        dq_redact(curl_error && curl_error[0] ? curl_error : "no response", why, sizeof why);
        set_check(out, DQ_SAMPLE_MISSING, DQ_CHECK_NO_RESPONSE);
        snprintf(out->observed, sizeof out->observed, "no response");
        snprintf(out->detail, sizeof out->detail, "no response: %s", why);
        return;
    }
    if (p->expect_status ? status != p->expect_status : (status < 200 || status > 299)) {
        set_check(out, DQ_SAMPLE_FAIL, DQ_CHECK_STATUS);
        if (p->expect_status)
            snprintf(out->detail, sizeof out->detail, "status %ld, expected %ld", status,
                     p->expect_status);
        else
            snprintf(out->detail, sizeof out->detail, "status %ld, expected 2xx", status);
        return;
    }
    if (p->max_latency_ms > 0 && latency_ms > p->max_latency_ms) {
        set_check(out, DQ_SAMPLE_FAIL, DQ_CHECK_LATENCY);
        snprintf(out->detail, sizeof out->detail, "latency %lld ms, limit %lld ms",
                 (long long)latency_ms, (long long)p->max_latency_ms);
        return;
    }
    if (p->body_match || p->body_regex) {
        /* the body is bounded by http.h and NUL-terminated; a NUL inside ends the match */
        const char *b = body ? body : "";
        int ok = 1;
        if (p->body_match && !strstr(b, p->body_match))
            ok = 0;
        if (ok && p->body_regex && regexec(&p->re, b, 0, NULL, 0) != 0)
            ok = 0;
        if (!ok) {
            set_check(out, DQ_SAMPLE_FAIL, DQ_CHECK_BODY);
            excerpt(body, body_len, out->observed, sizeof out->observed);
            snprintf(out->detail, sizeof out->detail, "body \"%.60s\" does not %s", out->observed,
                     p->body_match ? "contain the expected text" : "match the expected pattern");
            return;
        }
    }
    set_check(out, DQ_SAMPLE_PASS, DQ_CHECK_OK);
    snprintf(out->detail, sizeof out->detail, "status %ld in %lld ms", status, (long long)latency_ms);
}

void dq_probe_judge_http_cut(const dq_probe *p, int64_t latency_ms, dq_sample *out)
{
    /* curl's clock and ours differ by a little: never report a cut below the limit */
    if (latency_ms <= p->max_latency_ms)
        latency_ms = p->max_latency_ms + 1;
    out->status = 0;
    out->latency_ms = latency_ms;
    out->has_value = 0;
    snprintf(out->observed, sizeof out->observed, "no answer within %lld ms",
             (long long)p->max_latency_ms);
    set_check(out, DQ_SAMPLE_FAIL, DQ_CHECK_LATENCY);
    snprintf(out->detail, sizeof out->detail,
             "latency over %lld ms: no complete answer within the limit (gave up after %lld ms)",
             (long long)p->max_latency_ms, (long long)latency_ms);
}

/* Prometheus sample values are strings: "0.07", "NaN", "+Inf". 0 ok, -1 unusable. */
static int prom_value(const cJSON *pair, double *v)
{
    const cJSON *s = cJSON_GetArrayItem(pair, 1);
    char *end;

    if (!cJSON_IsArray(pair) || !cJSON_IsString(s) || !s->valuestring[0])
        return -1;
    *v = strtod(s->valuestring, &end);
    if (*end != '\0' || isnan(*v))
        return -1;
    return 0;
}

static void missing_data(dq_sample *out, const char *what)
{
    set_check(out, DQ_SAMPLE_MISSING, DQ_CHECK_NO_DATA);
    dq_strlcpy(out->observed, what, sizeof out->observed);
    snprintf(out->detail, sizeof out->detail, "no data: %s", what);
}

void dq_probe_judge_prometheus(const dq_probe *p, int got_response, long status,
                               const char *body, size_t body_len, const char *why,
                               dq_sample *out)
{
    cJSON *doc = NULL;
    const cJSON *data, *result;
    const char *rtype;
    char err[128], text[128];
    int have = 0, breach = 0;
    double worst = 0;

    out->status = got_response ? status : 0;
    out->has_value = 0;
    out->observed[0] = '\0';
    if (!got_response) {
        dq_redact(why && why[0] ? why : "no response", text, sizeof text);
        char msg[160];
        snprintf(msg, sizeof msg, "prometheus unreachable: %s", text);
        missing_data(out, msg);
        return;
    }
    if (status != 200) {
        snprintf(text, sizeof text, "prometheus answered %ld", status);
        missing_data(out, text);
        return;
    }
    doc = dq_json_parse(body ? body : "", body_len, DQ_HTTP_MAX_BODY, 64, NULL, err, sizeof err);
    data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    result = cJSON_GetObjectItemCaseSensitive(data, "result");
    rtype = dq_json_str(data, "resultType");
    if (!doc || !rtype || !result || !dq_json_str(doc, "status") ||
        strcmp(dq_json_str(doc, "status"), "success") != 0) {
        missing_data(out, "unreadable prometheus answer");
        goto out;
    }
    if (strcmp(rtype, "scalar") == 0) {
        double v;
        if (prom_value(result, &v) == 0) {
            have = 1;
            worst = v;
            breach = dq_probe_compare(p->op, v, p->threshold);
        }
    } else if (strcmp(rtype, "vector") == 0 && cJSON_IsArray(result)) {
        const cJSON *series;
        /* several series: the probe fails when any one breaches, and reports that one */
        cJSON_ArrayForEach(series, result) {
            double v;
            if (prom_value(cJSON_GetObjectItemCaseSensitive(series, "value"), &v) != 0)
                continue;
            if (!have || (!breach && dq_probe_compare(p->op, v, p->threshold))) {
                worst = v;
                breach = dq_probe_compare(p->op, v, p->threshold);
            }
            have = 1;
        }
    } else {
        missing_data(out, "query result is not a scalar or vector");
        goto out;
    }
    if (!have) {
        missing_data(out, cJSON_GetArraySize(result) == 0 ? "empty result" : "NaN");
        goto out;
    }
    out->value = worst;
    out->has_value = 1;
    snprintf(out->observed, sizeof out->observed, "%g", worst);
    if (breach) {
        set_check(out, DQ_SAMPLE_FAIL, DQ_CHECK_VALUE);
        snprintf(out->detail, sizeof out->detail, "value %g %s %g", worst, dq_probe_op_name(p->op),
                 p->threshold);
    } else {
        set_check(out, DQ_SAMPLE_PASS, DQ_CHECK_OK);
        snprintf(out->detail, sizeof out->detail, "value %g", worst);
    }
out:
    cJSON_Delete(doc);
}

/* Sentry's own words about an error ("detail" of its JSON body), one short clean line. */
static void sentry_detail(const char *body, size_t len, char *out, size_t outlen)
{
    cJSON *doc = body ? cJSON_ParseWithLength(body, len) : NULL;
    const char *d = dq_json_str(doc, "detail");

    out[0] = '\0';
    if (d)
        excerpt(d, strlen(d), out, outlen);
    cJSON_Delete(doc);
}

void dq_probe_judge_sentry(const dq_probe *p, int got_response, long status, const char *body,
                           size_t body_len, const char *why, int64_t window_ms, dq_sample *out)
{
    cJSON *doc = NULL;
    const cJSON *data, *count;
    char err[128], text[160], detail[80];
    const char *metric = p->metric == DQ_SENTRY_ERRORS ? "errors" : "errors_per_minute";
    double v;

    out->status = got_response ? status : 0;
    out->has_value = 0;
    out->observed[0] = '\0';
    if (!got_response) {
        char clean[128];
        dq_redact(why && why[0] ? why : "no response", clean, sizeof clean);
        snprintf(text, sizeof text, "sentry unreachable: %s", clean);
        missing_data(out, text);
        return;
    }
    if (status != 200) {
        sentry_detail(body, body_len, detail, sizeof detail);
        snprintf(text, sizeof text, "sentry answered %ld%s%s", status, detail[0] ? ": " : "", detail);
        missing_data(out, text);
        return;
    }
    doc = dq_json_parse(body ? body : "", body_len, DQ_HTTP_MAX_BODY, 64, NULL, err, sizeof err);
    data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    if (!doc || !cJSON_IsArray(data)) {
        missing_data(out, "unreadable sentry answer");
        goto out;
    }
    /* an aggregate without a group-by is one row; no row at all means no event matched */
    count = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(data, 0), "count()");
    if (cJSON_GetArraySize(data) > 0 && (!cJSON_IsNumber(count) || count->valuedouble < 0)) {
        missing_data(out, "sentry answer without count()");
        goto out;
    }
    v = cJSON_GetArraySize(data) > 0 ? count->valuedouble : 0;
    if (p->metric == DQ_SENTRY_ERRORS_PER_MINUTE)
        v = v * 60000.0 / (double)(window_ms > 60000 ? window_ms : 60000);
    out->value = v;
    out->has_value = 1;
    snprintf(out->observed, sizeof out->observed, "%g", v);
    if (dq_probe_compare(p->op, v, p->threshold)) {
        set_check(out, DQ_SAMPLE_FAIL, DQ_CHECK_VALUE);
        snprintf(out->detail, sizeof out->detail, "%s %g %s %g", metric, v, dq_probe_op_name(p->op),
                 p->threshold);
    } else {
        set_check(out, DQ_SAMPLE_PASS, DQ_CHECK_OK);
        snprintf(out->detail, sizeof out->detail, "%s %g", metric, v);
    }
out:
    cJSON_Delete(doc);
}

/* s with '"' and '\\' escaped for a quoted Sentry search value; malloc'd. */
static char *search_quote(const char *s)
{
    char *out = malloc(strlen(s) * 2 + 3), *o = out;

    if (!out)
        return NULL;
    *o++ = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *o++ = '\\';
        *o++ = *s;
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

char *dq_probe_sentry_url(const dq_probe *p, const dq_probe_target *t, int64_t now_ms)
{
    char start[DQ_TIME_LEN + 1], end[DQ_TIME_LEN + 1];
    char *quoted = search_quote(t->version ? t->version : ""), *query = NULL, *release = NULL;
    char *org = dq_http_escape(p->org), *env = t->environment ? dq_http_escape(t->environment) : NULL;
    char *url = NULL;
    size_t n, o;

    if (quoted && (release = malloc(strlen(quoted) + 9)) != NULL)
        snprintf(release, strlen(quoted) + 9, "release:%s", quoted);
    query = release ? dq_http_escape(release) : NULL;
    if (!query || !org || (t->environment && !env))
        goto done;
    dq_time_format(t->since_ms, start);
    /* Sentry refuses an empty range: the window is at least a second old by the first round,
     * but a clock step must not make end come before start */
    dq_time_format(now_ms > t->since_ms ? now_ms : t->since_ms + 1000, end);
    n = strlen(p->url) + strlen(org) + strlen(query) + (env ? strlen(env) : 0) + 2 * DQ_TIME_LEN +
        p->n_projects * 32 + 160;
    if (!(url = malloc(n)))
        goto done;
    o = (size_t)snprintf(url, n,
                         "%s/api/0/organizations/%s/events/?field=count%%28%%29&query=%s%s%s"
                         "&start=%s&end=%s&referrer=deployq",
                         p->url, org, query, env ? "&environment=" : "", env ? env : "", start, end);
    for (size_t i = 0; i < p->n_projects && o < n; i++)
        o += (size_t)snprintf(url + o, n - o, "&project=%lld", p->project_ids[i]);
done:
    free(quoted);
    free(release);
    free(query);
    free(org);
    free(env);
    return url;
}

/* One Sentry round: nothing asked while a Retry-After runs; a 429 starts one. */
static void run_sentry(const dq_probe *p, const dq_probe_target *t, dq_sample *out)
{
    dq_http_opts o = {0};
    dq_http_response resp = {0};
    const char *headers[MAX_HEADERS + 3];
    char *url = NULL, *auth = NULL;
    int64_t now = out->at_ms, until;
    size_t nh = 0, n;
    int rc;

    pthread_mutex_lock(&p->limit->mu);
    until = p->limit->not_before_ms;
    pthread_mutex_unlock(&p->limit->mu);
    if (until > now) {
        char text[96];
        snprintf(text, sizeof text, "rate limited by sentry for %lld s more",
                 (long long)((until - now + 999) / 1000));
        missing_data(out, text);
        return;
    }
    if (!t || !t->version || !t->version[0]) {
        dq_probe_judge_sentry(p, 0, 0, NULL, 0, "no release to ask about", 0, out);
        return;
    }
    n = strlen(p->token) + 32;
    if (!(url = dq_probe_sentry_url(p, t, now)) || !(auth = malloc(n))) {
        free(url);
        dq_probe_judge_sentry(p, 0, 0, NULL, 0, "out of memory", 0, out);
        return;
    }
    snprintf(auth, n, "Authorization: Bearer %s", p->token);
    for (char **h = p->headers; h && *h && nh < MAX_HEADERS; h++)
        headers[nh++] = *h;
    headers[nh++] = "Accept: application/json";
    headers[nh++] = auth;
    headers[nh] = NULL;
    o.url = url;
    o.headers = headers;
    o.timeout_ms = (long)p->timeout_ms;
    o.max_retries = 0;
    o.retry_budget_ms = p->timeout_ms + 1000;
    rc = dq_http_request(&o, &resp);
    memset(auth, 0, strlen(auth)); /* the token: wiped before the memory goes back */
    free(auth);
    if (rc == 0 && resp.status == 429) {
        int64_t wait = resp.retry_after_ms >= 0 ? resp.retry_after_ms : SENTRY_RETRY_AFTER_DEFAULT_MS;

        if (wait > SENTRY_RETRY_AFTER_MAX_MS)
            wait = SENTRY_RETRY_AFTER_MAX_MS;
        pthread_mutex_lock(&p->limit->mu);
        if (now + wait > p->limit->not_before_ms)
            p->limit->not_before_ms = now + wait;
        pthread_mutex_unlock(&p->limit->mu);
    }
    dq_probe_judge_sentry(p, rc == 0, resp.status, resp.body, resp.body_len, resp.errstr,
                          now - t->since_ms, out);
    dq_http_response_free(&resp);
    free(url);
}

void dq_probe_run_for(const dq_probe *p, const dq_probe_target *target, dq_sample *out)
{
    dq_http_opts o = {0};
    dq_http_response resp = {0};
    char *url = NULL;
    int64_t t0, elapsed, limit = p->timeout_ms;
    int rc, cut_at_latency = 0;

    memset(out, 0, sizeof *out);
    out->at_ms = dq_now_ms();
    out->latency_ms = -1;
    if (p->type == DQ_PROBE_SENTRY) {
        run_sentry(p, target, out);
        return;
    }
    /* past max_latency the sample is a failure whatever comes next: waiting for the rest
     * of a slow answer would only stretch the round, and so the time to a verdict */
    if (p->type == DQ_PROBE_HTTP && p->max_latency_ms > 0 && p->max_latency_ms < limit) {
        limit = p->max_latency_ms;
        cut_at_latency = 1;
    }
    o.url = p->url;
    o.headers = (const char *const *)p->headers;
    o.timeout_ms = (long)limit;
    o.max_retries = 0;
    o.retry_budget_ms = limit + 1000;
    if (p->type == DQ_PROBE_PROMETHEUS) {
        char *q = dq_http_escape(p->query);
        size_t n = strlen(p->url) + (q ? strlen(q) : 0) + 16;
        url = q ? malloc(n) : NULL;
        if (!url) {
            free(q);
            dq_probe_judge_prometheus(p, 0, 0, NULL, 0, "out of memory", out);
            return;
        }
        snprintf(url, n, "%s%cquery=%s", p->url, strchr(p->url, '?') ? '&' : '?', q);
        free(q);
        o.url = url;
    }
    t0 = dq_mono_ms();
    rc = dq_http_request(&o, &resp);
    elapsed = dq_mono_ms() - t0;
    if (p->type == DQ_PROBE_HTTP && rc != 0 && cut_at_latency && resp.error == DQ_HTTP_ERR_TIMEOUT)
        dq_probe_judge_http_cut(p, elapsed, out);
    else if (p->type == DQ_PROBE_HTTP)
        dq_probe_judge_http(p, rc == 0, resp.status, resp.body, resp.body_len, elapsed,
                            resp.errstr, out);
    else
        dq_probe_judge_prometheus(p, rc == 0, resp.status, resp.body, resp.body_len, resp.errstr,
                                  out);
    dq_http_response_free(&resp);
    free(url);
}

void dq_probe_run(const dq_probe *p, dq_sample *out)
{
    dq_probe_run_for(p, NULL, out);
}

typedef struct run_arg {
    const dq_probe *p;
    const dq_probe_target *target;
    dq_sample *out;
    pthread_t th;
    int started;
} run_arg;

static void *run_one(void *arg)
{
    run_arg *a = arg;
    dq_probe_run_for(a->p, a->target, a->out);
    return NULL;
}

void dq_probe_run_all(dq_probe *const *probes, size_t n, const dq_probe_target *target,
                      dq_sample *out)
{
    run_arg *args = n > 1 ? calloc(n, sizeof *args) : NULL;

    for (size_t i = 1; args && i < n; i++) {
        args[i].p = probes[i];
        args[i].target = target;
        args[i].out = &out[i];
        args[i].started = pthread_create(&args[i].th, NULL, run_one, &args[i]) == 0;
    }
    if (n > 0)
        dq_probe_run_for(probes[0], target, &out[0]);
    for (size_t i = 1; i < n; i++) {
        if (args && args[i].started)
            pthread_join(args[i].th, NULL);
        else
            dq_probe_run_for(probes[i], target, &out[i]); /* no thread for it: late, but not lost */
    }
    free(args);
}

cJSON *dq_sample_observed_json(const dq_sample *s)
{
    if (strcmp(s->check, DQ_CHECK_STATUS) == 0)
        return cJSON_CreateNumber((double)s->status);
    if (strcmp(s->check, DQ_CHECK_LATENCY) == 0)
        return cJSON_CreateNumber((double)s->latency_ms);
    if (s->has_value) {
        if (isinf(s->value))
            return cJSON_CreateString(s->value > 0 ? "+Inf" : "-Inf");
        return cJSON_CreateNumber(s->value);
    }
    if (strcmp(s->check, DQ_CHECK_OK) == 0 && s->latency_ms >= 0)
        return cJSON_CreateNumber((double)s->latency_ms);
    return cJSON_CreateString(s->observed[0] ? s->observed : s->check);
}

cJSON *dq_probe_threshold_json(const dq_probe *p, const char *check)
{
    if (strcmp(check, DQ_CHECK_STATUS) == 0)
        return p->expect_status ? cJSON_CreateNumber((double)p->expect_status)
                                : cJSON_CreateString("2xx");
    if (strcmp(check, DQ_CHECK_LATENCY) == 0)
        return cJSON_CreateNumber((double)p->max_latency_ms);
    if (strcmp(check, DQ_CHECK_BODY) == 0) {
        char buf[200];
        dq_redact(p->body_match ? p->body_match : p->body_regex, buf, sizeof buf);
        return cJSON_CreateString(buf);
    }
    if (strcmp(check, DQ_CHECK_NO_RESPONSE) == 0 || strcmp(check, DQ_CHECK_NO_DATA) == 0)
        return cJSON_CreateString("data");
    if (p->type == DQ_PROBE_PROMETHEUS || p->type == DQ_PROBE_SENTRY)
        return isinf(p->threshold) ? cJSON_CreateString(p->threshold > 0 ? "+Inf" : "-Inf")
                                   : cJSON_CreateNumber(p->threshold);
    if (p->max_latency_ms > 0)
        return cJSON_CreateNumber((double)p->max_latency_ms);
    return p->expect_status ? cJSON_CreateNumber((double)p->expect_status)
                            : cJSON_CreateString("2xx");
}
