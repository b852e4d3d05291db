/*
 * http.c - a blocking libcurl request with bounded bodies and the retry policy of http.h.
 *
 * One easy handle per attempt keeps the code simple and leaves no connection state behind
 * between a provider's calls; provider calls are seconds apart, so reuse buys nothing.
 *
 * libcurl is loaded with dlopen on the first request, not linked: it brings about 24 shared
 * libraries (TLS, LDAP, SSH, Kerberos, ...) that cost every process milliseconds of start-up
 * and megabytes of memory, while many processes (`deployq submit`, the registry, a
 * validator without HTTP gates) never make a request. Only this file calls libcurl,
 * through one table of functions declared with libcurl's own prototypes.
 */
#include "http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

#define HTTP_DEFAULT_TIMEOUT_MS 10000
#define HTTP_DEFAULT_BUDGET_MS 30000
#define HTTP_DEFAULT_BACKOFF_MS 200
#define HTTP_MAX_BACKOFF_MS 10000

#ifndef DQ_LIBCURL_SONAME
#error "the build passes DQ_LIBCURL_SONAME, the library to dlopen (meson.build)"
#endif

/* The libcurl functions this file uses, resolved once. Each pointer has the type of the
 * function in <curl/curl.h>, so a call through it is checked as a direct call would be. */
typedef struct {
    __typeof__(curl_global_init) *global_init;
    __typeof__(curl_version_info) *version_info;
    __typeof__(curl_easy_init) *easy_init;
    __typeof__(curl_easy_setopt) *easy_setopt;
    __typeof__(curl_easy_perform) *easy_perform;
    __typeof__(curl_easy_getinfo) *easy_getinfo;
    __typeof__(curl_easy_cleanup) *easy_cleanup;
    __typeof__(curl_easy_strerror) *easy_strerror;
    __typeof__(curl_slist_append) *slist_append;
    __typeof__(curl_slist_free_all) *slist_free_all;
    __typeof__(curl_getdate) *getdate;
} curl_api;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static curl_api curl;      /* filled by load_curl; usable only when curl_ready() */
static int curl_loaded;    /* written once under curl_once, read after it */
static char curl_err[256]; /* why loading failed: one line naming the library */
static const char *curl_soname = DQ_LIBCURL_SONAME;

void dq_http_test_set_library(const char *soname) { curl_soname = soname; }

static void load_curl(void)
{
    void *lib = dlopen(curl_soname, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        /* dlerror() already names the file; the package is the hint a user needs. */
        snprintf(curl_err, sizeof curl_err, "cannot load libcurl: %s (install libcurl4)", dlerror());
        return;
    }
#define RESOLVE(field, name)                                                                   \
    if ((curl.field = (__typeof__(curl.field))dlsym(lib, name)) == NULL) {                     \
        snprintf(curl_err, sizeof curl_err, "%s has no %s: not libcurl?", curl_soname, name); \
        goto fail;                                                                             \
    }
    RESOLVE(global_init, "curl_global_init");
    RESOLVE(version_info, "curl_version_info");
    RESOLVE(easy_init, "curl_easy_init");
    RESOLVE(easy_setopt, "curl_easy_setopt");
    RESOLVE(easy_perform, "curl_easy_perform");
    RESOLVE(easy_getinfo, "curl_easy_getinfo");
    RESOLVE(easy_cleanup, "curl_easy_cleanup");
    RESOLVE(easy_strerror, "curl_easy_strerror");
    RESOLVE(slist_append, "curl_slist_append");
    RESOLVE(slist_free_all, "curl_slist_free_all");
    RESOLVE(getdate, "curl_getdate");
#undef RESOLVE
    /* Options this file sets (CURLOPT_PROTOCOLS_STR: 7.85) must exist in the library found
     * at run time, so it may not be older than the headers deployq was built with. */
    const curl_version_info_data *v = curl.version_info(CURLVERSION_NOW);
    if (v == NULL || v->version_num < LIBCURL_VERSION_NUM) {
        snprintf(curl_err, sizeof curl_err,
                 "%s is libcurl %s; deployq needs " LIBCURL_VERSION " or newer (install libcurl4)",
                 curl_soname, v ? v->version : "of unknown version");
        goto fail;
    }
    /* Global init may run here, in any thread, because libcurl >= 7.84 makes it thread-safe
     * (meson requires >= 7.88) and no other code in deployq calls libcurl. */
    CURLcode rc = curl.global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        snprintf(curl_err, sizeof curl_err, "%s: curl_global_init failed: %s", curl_soname,
                 curl.easy_strerror(rc));
        goto fail;
    }
    curl_loaded = 1; /* the library stays loaded for the life of the process */
    return;
fail:
    dlclose(lib);
}

/* 1 when the table is usable, loading libcurl on the first call; 0 (curl_err says why)
 * when it cannot be loaded. Any thread may call it. */
static int curl_ready(void)
{
    pthread_once(&curl_once, load_curl);
    return curl_loaded;
}

/* curl_easy_setopt and curl_easy_getinfo take exactly one argument after the option, of
 * the type the option's number encodes (CURLOPTTYPE_*, CURLINFO_*). Through a function
 * pointer curl's own checks (typecheck-gcc.h) are lost, so these wrappers give the value a
 * real type and check at compile time that the option takes that type. */
#define OPT_TAKES(opt, type)                                                                   \
    ((void)sizeof(struct {                                                                     \
        _Static_assert((opt) / 10000 * 10000 == (type), #opt " takes another type");            \
        int ok;                                                                                \
    }))
#define set_long(h, opt, v) (OPT_TAKES(opt, CURLOPTTYPE_LONG), setopt_long(h, opt, v))
#define set_ptr(h, opt, v) (OPT_TAKES(opt, CURLOPTTYPE_OBJECTPOINT), setopt_ptr(h, opt, v))
#define set_off(h, opt, v) (OPT_TAKES(opt, CURLOPTTYPE_OFF_T), setopt_off(h, opt, v))
#define set_writefn(h, opt, v) (OPT_TAKES(opt, CURLOPTTYPE_FUNCTIONPOINT), setopt_writefn(h, opt, v))

static CURLcode setopt_long(CURL *h, CURLoption opt, long v)
{
    return curl.easy_setopt(h, opt, v);
}

static CURLcode setopt_ptr(CURL *h, CURLoption opt, const void *v)
{
    return curl.easy_setopt(h, opt, v);
}

static CURLcode setopt_off(CURL *h, CURLoption opt, curl_off_t v)
{
    return curl.easy_setopt(h, opt, v);
}

static CURLcode setopt_writefn(CURL *h, CURLoption opt, curl_write_callback v)
{
    return curl.easy_setopt(h, opt, v);
}

static CURLcode getinfo_long(CURL *h, CURLINFO info, long *v)
{
    return curl.easy_getinfo(h, info, v);
}
#define get_long(h, info, v)                                                                   \
    ((void)sizeof(struct {                                                                     \
        _Static_assert(((info) & CURLINFO_TYPEMASK) == CURLINFO_LONG, #info " is not a long"); \
        int ok;                                                                                \
    }),                                                                                        \
     getinfo_long(h, info, v))

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
    if (!curl_ready())
        return -1;
    time_t t = curl.getdate(value, NULL);
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
    CURL *h;
    CURLcode rc;

    resp->status = 0;
    resp->retry_after_ms = -1;
    resp->error = DQ_HTTP_ERR_OTHER;
    resp->errstr[0] = '\0';
    if (!curl_ready()) {
        dq_strlcpy(resp->errstr, curl_err, sizeof resp->errstr);
        return;
    }
    h = curl.easy_init();
    if (h == NULL) {
        dq_strlcpy(resp->errstr, "curl_easy_init failed", sizeof resp->errstr);
        return;
    }
    for (const char *const *hp = o->headers; hp != NULL && *hp != NULL; hp++) {
        struct curl_slist *n = curl.slist_append(hdrs, *hp);
        if (n == NULL) {
            dq_strlcpy(resp->errstr, "out of memory", sizeof resp->errstr);
            goto done;
        }
        hdrs = n;
    }
    if (o->body != NULL) {
        /* No "Expect: 100-continue": some servers never answer it and curl then stalls
         * for a second before sending the body anyway. */
        struct curl_slist *n = curl.slist_append(hdrs, "Expect:");
        if (n == NULL) {
            dq_strlcpy(resp->errstr, "out of memory", sizeof resp->errstr);
            goto done;
        }
        hdrs = n;
    }
    long timeout = o->timeout_ms > 0 ? o->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;

    set_ptr(h, CURLOPT_URL, o->url);
    set_ptr(h, CURLOPT_PROTOCOLS_STR, "http,https");
    set_long(h, CURLOPT_NOSIGNAL, 1L); /* we run in worker threads */
    set_long(h, CURLOPT_TIMEOUT_MS, timeout);
    set_long(h, CURLOPT_CONNECTTIMEOUT_MS, timeout);
    set_long(h, CURLOPT_FOLLOWLOCATION, 0L);
    set_ptr(h, CURLOPT_ERRORBUFFER, errbuf);
    set_writefn(h, CURLOPT_WRITEFUNCTION, on_body);
    set_ptr(h, CURLOPT_WRITEDATA, &body);
    set_writefn(h, CURLOPT_HEADERFUNCTION, on_header);
    set_ptr(h, CURLOPT_HEADERDATA, &resp->retry_after_ms);
    set_ptr(h, CURLOPT_USERAGENT, "deployq/" DQ_VERSION);
    if (hdrs != NULL)
        set_ptr(h, CURLOPT_HTTPHEADER, hdrs);
    if (o->body != NULL || strcmp(method, "POST") == 0) {
        const char *b = o->body ? o->body : "";
        size_t blen = o->body_len ? o->body_len : strlen(b);
        set_off(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        set_ptr(h, CURLOPT_POSTFIELDS, b);
    }
    if (strcmp(method, "GET") == 0)
        set_long(h, CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "POST") != 0)
        set_ptr(h, CURLOPT_CUSTOMREQUEST, method);

    rc = curl.easy_perform(h);
    resp->error = classify_curl(rc);
    if (rc == CURLE_OK) {
        get_long(h, CURLINFO_RESPONSE_CODE, &resp->status);
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
        snprintf(resp->errstr, sizeof resp->errstr, "%s", errbuf[0] ? errbuf : curl.easy_strerror(rc));
        resp->retry_after_ms = -1;
    }
done:
    free(body.buf);
    curl.slist_free_all(hdrs);
    curl.easy_cleanup(h);
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
