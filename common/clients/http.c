/*
 * http.c - a blocking libcurl request with bounded bodies and the retry policy of http.h.
 *
 * One easy handle per attempt keeps the code simple and leaves no connection state behind
 * between a provider's calls; provider calls are seconds apart, so reuse buys nothing.
 */
#include "http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

#define HTTP_DEFAULT_TIMEOUT_MS 10000
#define HTTP_DEFAULT_BUDGET_MS 30000
#define HTTP_DEFAULT_BACKOFF_MS 200
#define HTTP_MAX_BACKOFF_MS 10000

typedef struct {
    char *buf;
    size_t len;
    size_t cap;
    int truncated;
} body_buf;

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    body_buf *b = userp;
    size_t n = size * nmemb;
    size_t room = DQ_HTTP_MAX_BODY - b->len;
    size_t take = n < room ? n : room;

    if (take < n)
        b->truncated = 1;
    if (take > 0) {
        if (b->len + take + 1 > b->cap) {
            size_t cap = b->cap ? b->cap : 4096;
            while (cap < b->len + take + 1)
                cap *= 2;
            char *nb = realloc(b->buf, cap);
            if (nb == NULL)
                return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
            b->buf = nb;
            b->cap = cap;
        }
        memcpy(b->buf + b->len, data, take);
        b->len += take;
        b->buf[b->len] = '\0';
    }
    /* Claiming the whole chunk keeps curl reading, so an oversized body is drained and
     * dropped instead of failing the request. */
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
    int64_t *retry_after = userp;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";

    if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
        char value[128];
        size_t vlen = n - (sizeof name - 1);
        if (vlen >= sizeof value)
            vlen = sizeof value - 1;
        memcpy(value, data + sizeof name - 1, vlen);
        value[vlen] = '\0';
        char *v = value;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t l = strlen(v);
        while (l > 0 && (v[l - 1] == '\r' || v[l - 1] == '\n' || v[l - 1] == ' '))
            v[--l] = '\0';
        *retry_after = dq_http_retry_after_parse(v, dq_now_ms());
    }
    return n;
}

int64_t dq_http_retry_after_parse(const char *value, int64_t now_ms)
{
    if (value == NULL || value[0] == '\0')
        return -1;
    if (isdigit((unsigned char)value[0])) {
        long long secs;
        if (dq_parse_int(value, 0, 86400LL * 365, &secs) != 0)
            return -1;
        return (int64_t)secs * 1000;
    }
    time_t t = curl_getdate(value, NULL);
    if (t == (time_t)-1)
        return -1;
    int64_t delay = (int64_t)t * 1000 - now_ms;
    return delay > 0 ? delay : 0;
}

char *dq_http_escape(const char *s)
{
    static const char hexdig[] = "0123456789ABCDEF";
    size_t n = s ? strlen(s) : 0;
    char *out = malloc(n * 3 + 1);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hexdig[c >> 4];
            out[o++] = hexdig[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

void dq_http_response_free(dq_http_response *resp)
{
    if (resp == NULL)
        return;
    free(resp->body);
    memset(resp, 0, sizeof *resp);
    resp->retry_after_ms = -1;
}

static dq_http_error classify_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return DQ_HTTP_ERR_NONE;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return DQ_HTTP_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return DQ_HTTP_ERR_TIMEOUT;
    default:
        return DQ_HTTP_ERR_OTHER;
    }
}

/* One attempt. Fills status/body/retry_after/error of resp (the body of a previous
 * attempt must already be freed). */
static void attempt(const dq_http_opts *o, const char *method, dq_http_response *resp)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    body_buf body = {0};
    struct curl_slist *hdrs = NULL;
    CURL *h = curl_easy_init();
    CURLcode rc;

    resp->status = 0;
    resp->retry_after_ms = -1;
    resp->error = DQ_HTTP_ERR_OTHER;
    resp->errstr[0] = '\0';
    if (h == NULL) {
        dq_strlcpy(resp->errstr, "curl_easy_init failed", sizeof resp->errstr);
        return;
    }
    for (const char *const *hp = o->headers; hp != NULL && *hp != NULL; hp++) {
        struct curl_slist *n = curl_slist_append(hdrs, *hp);
        if (n == NULL) {
            dq_strlcpy(resp->errstr, "out of memory", sizeof resp->errstr);
            goto done;
        }
        hdrs = n;
    }
    if (o->body != NULL) {
        /* No "Expect: 100-continue": some servers never answer it and curl then stalls
         * for a second before sending the body anyway. */
        struct curl_slist *n = curl_slist_append(hdrs, "Expect:");
        if (n == NULL) {
            dq_strlcpy(resp->errstr, "out of memory", sizeof resp->errstr);
            goto done;
        }
        hdrs = n;
    }
    long timeout = o->timeout_ms > 0 ? o->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;

    curl_easy_setopt(h, CURLOPT_URL, o->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* we run in worker threads */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &resp->retry_after_ms);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "deployq/" DQ_VERSION);
    if (hdrs != NULL)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (o->body != NULL || strcmp(method, "POST") == 0) {
        const char *b = o->body ? o->body : "";
        size_t blen = o->body_len ? o->body_len : strlen(b);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, b);
    }
    if (strcmp(method, "GET") == 0)
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);

    rc = curl_easy_perform(h);
    resp->error = classify_curl(rc);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
        resp->body = body.buf ? body.buf : calloc(1, 1);
        resp->body_len = body.len;
        resp->truncated = body.truncated;
        body.buf = NULL;
        if (resp->body == NULL) {
            resp->error = DQ_HTTP_ERR_OTHER;
            dq_strlcpy(resp->errstr, "out of memory", sizeof resp->errstr);
        }
    } else {
        /* curl's error buffer names host and port at most; it never holds headers. */
        snprintf(resp->errstr, sizeof resp->errstr, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        resp->retry_after_ms = -1;
    }
done:
    free(body.buf);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
}

static int should_retry(const dq_http_response *r, int idempotent, int create)
{
    if (r->error == DQ_HTTP_ERR_CONNECT)
        return 1;
    if (r->error == DQ_HTTP_ERR_TIMEOUT)
        return idempotent;
    if (r->error != DQ_HTTP_ERR_NONE)
        return 0;
    return r->status == 429 || (!create && r->status >= 500 && r->status <= 599);
}

static int64_t backoff_ms(int64_t base, int retry)
{
    int64_t d = base;
    for (int i = 0; i < retry && d < HTTP_MAX_BACKOFF_MS; i++)
        d *= 2;
    if (d > HTTP_MAX_BACKOFF_MS)
        d = HTTP_MAX_BACKOFF_MS;
    unsigned char rnd[2] = {0, 0};
    dq_random_bytes(rnd, sizeof rnd);
    /* Jitter keeps many executors that failed together from retrying together. */
    return d / 2 + (int64_t)((rnd[0] << 8 | rnd[1]) % (d / 2 + 1));
}

int dq_http_request(const dq_http_opts *opts, dq_http_response *resp)
{
    if (resp == NULL)
        return -1;
    memset(resp, 0, sizeof *resp);
    resp->retry_after_ms = -1;
    if (opts == NULL || opts->url == NULL) {
        resp->error = DQ_HTTP_ERR_OTHER;
        dq_strlcpy(resp->errstr, "no URL", sizeof resp->errstr);
        return -1;
    }
    const char *method = opts->method ? opts->method : "GET";
    int idempotent = opts->idempotent || strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int max_retries = opts->max_retries > 0 ? opts->max_retries : 0;
    int64_t budget = opts->retry_budget_ms > 0 ? opts->retry_budget_ms : HTTP_DEFAULT_BUDGET_MS;
    int64_t base = opts->backoff_base_ms > 0 ? opts->backoff_base_ms : HTTP_DEFAULT_BACKOFF_MS;
    int64_t start = dq_mono_ms();

    for (int retry = 0;; retry++) {
        dq_http_response_free(resp);
        attempt(opts, method, resp);
        resp->attempts = retry + 1;
        if (retry >= max_retries || !should_retry(resp, idempotent, opts->create))
            break;
        int64_t wait = resp->retry_after_ms >= 0 ? resp->retry_after_ms : backoff_ms(base, retry);
        if (dq_mono_ms() - start + wait > budget) {
            resp->budget_exhausted = 1;
            break;
        }
        dq_sleep_ms(wait);
    }
    return resp->error == DQ_HTTP_ERR_NONE ? 0 : -1;
}
