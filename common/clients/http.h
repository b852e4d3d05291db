/*
 * http.h - one blocking HTTP request (libcurl) with the retry policy every provider needs.
 *
 * Providers are remote APIs that throttle (429 + Retry-After) and stumble (5xx, refused
 * connections). This module retries those with exponential backoff and jitter, honours
 * Retry-After (delta seconds or an HTTP date) and never waits past a retry budget, so a
 * caller can tell "the provider is down" from "the provider said no". Response bodies are
 * bounded (DQ_HTTP_MAX_BODY), redirects are never followed (a token must not travel to
 * another host), and no header value is ever logged or copied into an error string.
 *
 * libcurl is not linked: the first request (or Retry-After date) loads it with dlopen and
 * runs curl_global_init there, so callers do no set-up and a process that never makes a
 * request never loads it. When it cannot be loaded, every request fails with
 * DQ_HTTP_ERR_OTHER and an errstr naming the library and the reason.
 */
#ifndef DQ_HTTP_H
#define DQ_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define DQ_HTTP_MAX_BODY (1024 * 1024)

typedef enum {
    DQ_HTTP_ERR_NONE = 0, /* a response arrived (look at status) */
    DQ_HTTP_ERR_CONNECT,  /* refused, unresolvable, reset: the request may never have arrived */
    DQ_HTTP_ERR_TIMEOUT,  /* no complete response within timeout_ms */
    DQ_HTTP_ERR_OTHER,    /* a local problem: bad URL, out of memory, TLS setup */
} dq_http_error;

typedef struct dq_http_opts {
    const char *method;         /* "GET", "POST", ...; NULL means GET */
    const char *url;            /* required */
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    const char *body;           /* request body or NULL; sent as given */
    size_t body_len;            /* 0 with a non-NULL body means strlen(body) */
    long timeout_ms;            /* per attempt, whole transfer; <= 0 means 10 s */
    int max_retries;            /* extra attempts after the first; < 0 means 0 */
    int64_t retry_budget_ms;    /* total time for all attempts and waits; <= 0 means 30 s */
    int64_t backoff_base_ms;    /* first backoff; doubled each retry; <= 0 means 200 ms */
    int idempotent;             /* also retry after a timeout (GET/HEAD always are) */
    int create;                 /* a create: a 5xx may have been accepted, so only connection
                                 * errors and 429 are retried (never with idempotent) */
} dq_http_opts;

typedef struct dq_http_response {
    long status;            /* last HTTP status, 0 when no response arrived */
    char *body;             /* malloc'd, NUL-terminated (empty string at least) after a response */
    size_t body_len;
    int truncated;          /* the body was longer than DQ_HTTP_MAX_BODY and was cut */
    int64_t retry_after_ms; /* the last Retry-After as a delay, -1 when absent */
    dq_http_error error;    /* transport outcome of the last attempt */
    char errstr[256];       /* one line for a transport error; never holds header values */
    int attempts;           /* attempts made (>= 1 once the request was tried) */
    int budget_exhausted;   /* stopped retrying because the next wait did not fit the budget */
} dq_http_response;

/* Perform the request, retrying 429, 5xx and connection errors (and timeouts when
 * idempotent; not 5xx for a create) up to max_retries times within retry_budget_ms. Between attempts it waits
 * Retry-After when the server sent one, otherwise base * 2^n with jitter in [50%, 100%],
 * capped at 10 s. Fills *resp with the last attempt's outcome (free with
 * dq_http_response_free). Returns 0 when an HTTP response arrived (any status) and -1 when
 * the last attempt got none (resp->error says why). Never logs header values. */
int dq_http_request(const dq_http_opts *opts, dq_http_response *resp);

/* Free the body and reset the response to empty. Accepts NULL. */
void dq_http_response_free(dq_http_response *resp);

/* A Retry-After value ("120" or "Wed, 21 Oct 2026 07:28:00 GMT") as a delay in ms from
 * now_ms (wall clock). A date in the past gives 0. Returns -1 when unparseable. */
int64_t dq_http_retry_after_parse(const char *value, int64_t now_ms);

/* Percent-encode s for a URL query or path segment into a malloc'd string (NULL on
 * allocation failure). Unreserved characters (RFC 3986) pass unchanged. */
char *dq_http_escape(const char *s);

/* Tests only: dlopen soname instead of the library the build names, to see the error when
 * libcurl is missing. Has an effect only before the process's first request. */
void dq_http_test_set_library(const char *soname);

#endif
