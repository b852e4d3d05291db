/*
 * fuzz_httpapi.c - libFuzzer harness for the registry's HTTP API (common/domain/httpapi.c on
 * libmicrohttpd): every input becomes one HTTP request, sent over a loopback TCP socket to
 * a real dq_httpapi server, and the answer is read back and checked.
 *
 * Two servers run for the whole process, started once in LLVMFuzzerInitialize over one
 * state fold and one registry directory that hold a scripted history (deployments that
 * were verified, rolled back, rejected, failed, are awaiting approval, a stale fence, an
 * unreadable record), so every endpoint has content to serve: "open" (no token, the
 * dashboard page, a stream ring of 1024, wide connection limits) and "token" (a bearer
 * token, no dashboard, a stream ring of 4 that the published history has already overrun,
 * the default limits).
 *
 * Input layout: byte 0 is a set of flags, the rest is the request.
 *   TOKEN_SERVER  send to the token server (else the open one)
 *   WITH_TOKEN    add "Authorization: Bearer <the token>" (the fuzzer could never guess
 *                 it: the server compares SHA-256 hashes, which no comparison tracing sees)
 *   RAW           send the rest as it is: the bytes reach libmicrohttpd's parser unchanged
 *   HTTP10        "HTTP/1.0" instead of "HTTP/1.1" on the request line
 *   NO_HOST       no Host header of the harness's own
 *   ENDPOINT      the PATH field's first byte picks the path from a table of every
 *                 endpoint (the rest of the field is ignored): one byte moves a query to
 *                 another endpoint, which text mutations of a path would rarely do
 * Otherwise (structured) the rest is split at '\n' into METHOD, PATH, QUERY and header
 * lines, so that mutations land on one part and the fuzzer reaches every endpoint and
 * parameter with hostile values: an empty method is GET, an empty path is "/", the path
 * and query are percent-encoded where a raw byte would break the request line (controls,
 * space, '#', bytes >= 0x7f) and left alone elsewhere, so "%00" or "%zz" written by the
 * fuzzer arrive as written; header lines go as they are ("\r\n" appended; empty ones are
 * dropped, they would end the head). A request is "plain" when it is structured, its
 * method a token, its header lines well-formed and none announces a body (Content-Length,
 * Transfer-Encoding, Expect); any other request is followed by a shutdown of the socket
 * for writing, so that the server sees its end at once instead of waiting for more.
 *
 * Invariants beyond "no crash, leak or undefined behaviour" (ASan/UBSan abort in the
 * server's threads too, and libFuzzer saves the input being served):
 *  - whatever comes back starts with a valid status line ("HTTP/1.x DDD"), and its head
 *    ends within 64 KiB; a body is not shorter than its Content-Length, and the answer to
 *    a plain request is not longer either (one request, one answer);
 *  - a plain request is answered within ANSWER_TIMEOUT_MS;
 *  - a JSON answer (Content-Type application/json) is valid UTF-8 and one JSON object
 *    that cJSON parses whole; unless the status is 200 it carries an "error" string;
 *  - the API's own answer to a plain request whose method is not GET or HEAD is 405;
 *  - the token server gives nothing but /healthz's document to a request without the
 *    token (a 200 from it is {"status":"ok",...}, never metrics, a stream or data);
 *  - every CHECK_EVERY inputs, and at start: /healthz answers 200 on both servers with the
 *    number of folded events, and the fold's state hash has not changed (the API is
 *    read-only). A failure there is reported with the input being run; the culprit is one
 *    of the last CHECK_EVERY inputs.
 * Tolerated: libmicrohttpd 0.9.75 writes the head of some of its own 400 answers twice
 * (skip_repeated_head); DQ_FUZZ_STRICT=1 reports it instead.
 *
 * One connection per input, closed with a reset (SO_LINGER 0, so that no TIME_WAIT
 * entries pile up over millions of connections): libmicrohttpd closes a connection whose
 * answer was queued from the request's first callback, as every answer of httpapi.c is,
 * so keep-alive would not save the connect. /api/stream never ends: the harness reads
 * its head and resets the connection; the servers' 2 ms heartbeat makes the stream's
 * thread notice soon. DQ_FUZZ_VERBOSE=1 prints each request and answer (for replaying a
 * finding).
 */
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "event.h"
#include "fold.h"
#include "fuzz.h"
#include "httpapi.h"
#include "json.h"
#include "reglog.h"

/* libmicrohttpd starts a thread per connection, with the default attributes: a stack of
 * RLIMIT_STACK (8 MiB), whose shadow ASan clears at every thread exit. 1 MiB (still far
 * more than a request needs, redzones included) halves the cost of each input. */
static void small_thread_stacks(void)
{
    pthread_attr_t at;

    if (pthread_attr_init(&at) != 0)
        return;
    if (pthread_attr_setstacksize(&at, 1024 * 1024) == 0)
        pthread_setattr_default_np(&at);
    pthread_attr_destroy(&at);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TOKEN_SERVER 0x01
#define WITH_TOKEN 0x02
#define RAW 0x04
#define HTTP10 0x08
#define NO_HOST 0x10
#define ENDPOINT 0x20

/* Not in the dictionary, not in any seed: only WITH_TOKEN sends it. */
#define FUZZ_TOKEN "fz-7c1e52d09b4a-not-in-any-seed"
#define CHECK_EVERY 64
#define ANSWER_TIMEOUT_MS 2000
#define MAX_HEAD (64 * 1024)
#define MAX_ANSWER (8 * 1024 * 1024)

typedef struct {
    dq_httpapi *api;
    int port;
    const char *name;
} server;

static dq_fold *fold;
static pthread_mutex_t fold_lock = PTHREAD_MUTEX_INITIALIZER;
static server srv_open = {.name = "open"}, srv_token = {.name = "token"};
static char regdir[256];
static char state_hash[DQ_FOLD_HASH_HEX_LEN + 1];
static uint64_t n_events;
static unsigned long n_inputs;
static int verbose; /* DQ_FUZZ_VERBOSE=1: print each request and answer (for replaying) */

/* ---- the scripted history ------------------------------------------------------------ */

#define D1 "11111111-1111-4111-8111-111111111111"
#define D2 "22222222-2222-4222-8222-222222222222"
#define D3 "33333333-3333-4333-8333-333333333333"
#define D4 "44444444-4444-4444-8444-444444444444"
#define D5 "55555555-5555-4555-8555-555555555555"
#define D6 "66666666-6666-4666-8666-666666666666"

/* Per partition in log order, as the registry would have stored and folded it. A NULL
 * type is a record that is not an event (counted unreadable, skipped by /api/events). */
static const struct {
    int32_t part;
    const char *type, *dep, *svc, *env, *ver, *at;
    int64_t fence;
    const char *data;
} history[] = {
    {0, DQ_EV_VALIDATED, D1, "api", "staging", "v1", "2026-01-01T10:00:00Z", 0, NULL},
    {0, DQ_EV_STARTED, D1, "api", "staging", "v1", "2026-01-01T10:00:01Z", 3, NULL},
    {1, DQ_EV_VALIDATED, D2, "api", "production", "v2", "2026-01-01T10:00:02Z", 0, NULL},
    {0, DQ_EV_SUCCEEDED, D1, "api", "staging", "v1", "2026-01-01T10:00:03Z", 3, NULL},
    {1, DQ_EV_STARTED, D2, "api", "production", "v2", "2026-01-01T10:00:04Z", 5, NULL},
    {0, DQ_EV_MONITOR_STARTED, D1, "api", "staging", "v1", "2026-01-01T10:00:04Z", 3, NULL},
    {0, DQ_EV_VERIFIED, D1, "api", "staging", "v1", "2026-01-01T10:00:05Z", 3, NULL},
    {1, DQ_EV_SUCCEEDED, D2, "api", "production", "v2", "2026-01-01T10:00:06Z", 5, NULL},
    {1, DQ_EV_HEALTH_DEGRADED, D2, "api", "production", "v2", "2026-01-01T10:00:30Z", 5,
     "{\"probe\":\"http\",\"detail\":\"HTTP 500, expected 200\"}"},
    {1, DQ_EV_ROLLBACK_REQUESTED, D2, "api", "production", "v2", "2026-01-01T10:01:00Z", 5,
     "{\"reason\":\"error rate 9%\",\"to_version\":\"v1\",\"evidence\":{\"probe\":\"http\","
     "\"first_failure_at\":\"2026-01-01T10:00:30Z\"}}"},
    {1, DQ_EV_ROLLBACK_STARTED, D2, "api", "production", "v2", "2026-01-01T10:01:01Z", 5,
     "{\"to_version\":\"v1\"}"},
    {1, DQ_EV_ROLLBACK_SUCCEEDED, D2, "api", "production", "v1", "2026-01-01T10:02:30Z", 5,
     "{\"to_version\":\"v1\",\"restored_at\":\"2026-01-01T10:02:30Z\"}"},
    {1, DQ_EV_NOTIFICATION_SENT, D2, "api", "production", "v1", "2026-01-01T10:02:31Z", 5,
     "{\"channel\":\"slack\"}"},
    {1, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL},
    {2, DQ_EV_REJECTED, D3, "web", "preview", "w1", "2026-01-15T08:00:00Z", 0,
     "{\"reasons\":[{\"code\":\"signature\",\"message\":\"bad signature\"}]}"},
    {1, DQ_EV_AWAITING_APPROVAL, D4, "api", "production", "v3", "2026-02-01T09:00:00Z", 0,
     NULL},
    {2, DQ_EV_VALIDATED, D5, "web", "preview", "w2", "2026-02-10T12:00:00Z", 0, NULL},
    {2, DQ_EV_STARTED, D5, "web", "preview", "w2", "2026-02-10T12:00:01Z", 7, NULL},
    {2, DQ_EV_PROVIDER_FAILED, D5, "web", "preview", "w2", "2026-02-10T12:00:02Z", 7,
     "{\"provider\":\"primary\",\"error\":\"timeout\"}"},
    {2, DQ_EV_FAILED, D5, "web", "preview", "w2", "2026-02-10T12:00:09Z", 7,
     "{\"reason\":\"every provider failed\"}"},
    {2, DQ_EV_ROLLBACK_REQUESTED, D5, "web", "preview", "w2", "2026-02-10T12:00:10Z", 7,
     "{\"reason\":\"deploy failed\",\"to_version\":\"w1\"}"},
    {2, DQ_EV_ROLLBACK_FAILED, D5, "web", "preview", "w2", "2026-02-10T12:00:40Z", 7,
     "{\"reason\":\"provider unreachable\"}"},
    /* a worker that lost its lock: fence 2 after 3 on api/staging is stale */
    {0, DQ_EV_STARTED, D6, "api", "staging", "v9", "2026-03-01T00:00:00Z", 2, NULL},
    {0, DQ_EV_TRAFFIC_SWITCHED, D1, "api", "staging", "v1", "2026-03-01T00:00:01Z", 3,
     "{\"to\":\"green\"}"},
    /* workers with wrong clocks: event times are the producers', never bounded, and they
     * set the fold's first and last times (the default window of /api/series) */
    {2, DQ_EV_NOTIFICATION_FAILED, D5, "web", "preview", "w2", "1970-01-01T00:00:00.001Z", 7,
     "{\"channel\":\"webhook\",\"error\":\"clock not set\"}"},
    {1, DQ_EV_NOTIFICATION_SENT, D4, "api", "production", "v3", "9999-12-31T23:59:59.999Z", 0,
     "{\"channel\":\"slack\"}"},
};
#define N_HISTORY (sizeof history / sizeof history[0])
#define N_PARTS 3

static int str_is(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_httpapi: %s: %s\n", what, detail);
    exit(1);
}

/* One history entry's stored bytes (malloc'd). */
static char *history_text(size_t i)
{
    dq_event *ev;
    char name[32];
    char *txt;

    if (!history[i].type)
        return strdup("not an event {");
    ev = dq_event_new(history[i].type, history[i].dep, history[i].svc, history[i].env,
                      history[i].ver, "fuzz@host/1");
    if (!ev)
        die("history", "out of memory");
    snprintf(name, sizeof name, "fuzz-ev-%zu", i);
    dq_event_set_id_from(ev, name);
    if (dq_time_parse(history[i].at, &ev->at_ms) != 0)
        die("history", history[i].at);
    ev->fence = history[i].fence;
    if (history[i].data) {
        cJSON_Delete(ev->data);
        ev->data = cJSON_Parse(history[i].data);
        if (!ev->data)
            die("history data", history[i].data);
    }
    txt = dq_event_encode(ev);
    dq_event_free(ev);
    if (!txt)
        die("history", "cannot encode");
    return txt;
}

/* Store the history in regdir, fold it, and keep the texts for the stream rings. */
static char **make_history(void)
{
    dq_reglog *logs[N_PARTS];
    int64_t next[N_PARTS] = {0};
    char **texts = calloc(N_HISTORY, sizeof *texts);
    char err[256];

    fold = dq_fold_new();
    if (!texts || !fold)
        die("history", "out of memory");
    for (int p = 0; p < N_PARTS; p++)
        if (!(logs[p] = dq_reglog_open(regdir, p, NULL, err, sizeof err)))
            die("registry", err);
    for (size_t i = 0; i < N_HISTORY; i++) {
        int32_t p = history[i].part;
        size_t len;

        texts[i] = history_text(i);
        len = strlen(texts[i]);
        if (dq_reglog_append(logs[p], next[p], texts[i], len) != DQ_REGLOG_OK)
            die("registry append", dq_reglog_errstr(logs[p]));
        if (dq_fold_apply(fold, p, next[p], texts[i], len) < 0)
            die("fold", "out of memory");
        next[p] += 1 + (int64_t)i % 3; /* offsets with gaps, as compaction leaves them */
    }
    for (int p = 0; p < N_PARTS; p++) {
        if (dq_reglog_commit(logs[p]) != DQ_REGLOG_OK)
            die("registry commit", dq_reglog_errstr(logs[p]));
        dq_reglog_close(logs[p]);
    }
    return texts;
}

/* The history's texts go onto the server's stream ring, as the worker publishes them. */
static void start_server(server *s, dq_httpapi_opts *o, char **texts)
{
    char err[256];

    o->listen = "127.0.0.1:0";
    o->fold = fold;
    o->fold_lock = &fold_lock;
    o->registry_dir = regdir;
    /* a stream's thread waits one heartbeat at a time: short, so the reset of each stream
     * the harness reads is noticed within milliseconds */
    o->heartbeat_ms = 2;
    s->api = dq_httpapi_start(o, err, sizeof err);
    if (!s->api)
        die(s->name, err);
    s->port = dq_httpapi_port(s->api);
    for (size_t i = 0; i < N_HISTORY; i++)
        dq_httpapi_publish(s->api, texts[i], strlen(texts[i])); /* the non-event is dropped */
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void stop_all(void)
{
    /* Stopping joins the server's threads: LeakSanitizer, which runs after this, then sees
     * every allocation a request made either freed or leaked. */
    dq_httpapi_stop(srv_open.api);
    dq_httpapi_stop(srv_token.api);
    dq_fold_free(fold);
    if (regdir[0])
        nftw(regdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- talking to a server ------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
    int eof;                 /* the server closed (or reset) the connection */
    int timed_out;
    size_t head_len;         /* up to and including the blank line; 0: no whole head */
    size_t body_off;         /* where the body starts: head_len, or after a repeated head */
    int head_twice;          /* libmicrohttpd sent the same head twice (see skip_repeated_head) */
    int status;              /* 0: no valid status line */
    long long content_length; /* -1: none */
    int chunked;
    char content_type[128];
} answer;

static int connect_to(const server *s)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    struct timeval tv = {.tv_sec = ANSWER_TIMEOUT_MS / 1000,
                         .tv_usec = (ANSWER_TIMEOUT_MS % 1000) * 1000};
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    DQ_FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    /* close() resets: no TIME_WAIT left behind per input */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        /* libFuzzer's SIGALRM (its -timeout watch) can interrupt connect, which then goes
         * on in the background: wait for it to finish */
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int err = errno, r;
        socklen_t len = sizeof err;

        DQ_FUZZ_CHECK(err == EINTR, "connect to the %s server (port %d): %s", s->name, s->port,
                      strerror(err));
        do
            r = poll(&pfd, 1, ANSWER_TIMEOUT_MS);
        while (r < 0 && errno == EINTR);
        if (r == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
            return fd;
        DQ_FUZZ_CHECK(0, "connect to the %s server (port %d): %s", s->name, s->port,
                      r == 1 ? strerror(err) : "timeout");
    }
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* the server may close early (a head it refused): read what it said */
        p += w;
        n -= (size_t)w;
    }
}

/* Read more of the answer: 1 got bytes, 0 end (closed, reset, timeout or too much). */
static int read_more(int fd, answer *a)
{
    ssize_t n;

    if (a->eof || a->timed_out || a->len >= MAX_ANSWER)
        return 0;
    if (a->cap - a->len < 16384) {
        size_t cap = a->cap ? a->cap * 2 : 65536;
        char *nb = realloc(a->buf, cap + 1);

        DQ_FUZZ_CHECK(nb != NULL, "out of memory reading an answer of %zu bytes", a->len);
        a->buf = nb;
        a->cap = cap;
    }
    do
        n = recv(fd, a->buf + a->len, a->cap - a->len, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        a->len += (size_t)n;
        a->buf[a->len] = '\0';
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        a->timed_out = 1;
    else
        a->eof = 1;
    return 0;
}

/* The value of header name in the head, copied into out; 1 when present. */
static int head_value(const answer *a, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = memchr(a->buf, '\n', a->head_len), *end = a->buf + a->head_len;

    while (p && ++p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t vl;

        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;

            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            vl = (size_t)(eol - v);
            while (vl && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
                vl--;
            if (vl >= outlen)
                vl = outlen - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 1;
        }
        p = eol;
    }
    return 0;
}

/* The status line, "HTTP/1.x DDD" then a space or the line's end; 0 when not valid. */
static int status_of(const char *s, size_t len)
{
    if (len < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') ||
        s[8] != ' ')
        return 0;
    for (int i = 9; i < 12; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    if (s[9] < '1' || s[9] > '5' || (len > 12 && s[12] != ' ' && s[12] != '\r'))
        return 0;
    return (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
}

/* libmicrohttpd 0.9.75 answers a request whose Content-Length is not a number (the 400
 * "Request malformed") with its head written twice, then the body: a third-party bug in
 * answers to malformed requests, which carry no data. Told apart exactly (the same bytes
 * again) and stepped over, so that the fuzzer gets past it; DQ_FUZZ_STRICT=1 reports it. */
static void skip_repeated_head(answer *a)
{
    if (a->head_twice || a->len - a->head_len < a->head_len ||
        memcmp(a->buf + a->head_len, a->buf, a->head_len) != 0)
        return;
    DQ_FUZZ_CHECK(!getenv("DQ_FUZZ_STRICT"), "the head was sent twice: %.*s", (int)a->head_len,
                  a->buf);
    a->head_twice = 1;
    a->body_off = 2 * a->head_len;
}

/* Read one answer: the head, then a body framed by Content-Length (none for HEAD, 1xx,
 * 204, 304), nothing of a stream, or everything up to the close. */
static void read_answer(int fd, answer *a, int is_head)
{
    char v[64];
    char *end;

    for (;;) {
        char *blank = a->len ? strstr(a->buf, "\r\n\r\n") : NULL;

        if (blank && (size_t)(blank - a->buf) < (size_t)MAX_HEAD) {
            a->head_len = (size_t)(blank - a->buf) + 4;
            break;
        }
        /* strstr stops at a NUL: a head with one is no head either */
        if (a->len > MAX_HEAD || (a->len && memchr(a->buf, '\0', a->len)) || !read_more(fd, a))
            return;
    }
    a->status = status_of(a->buf, a->head_len);
    a->body_off = a->head_len;
    a->content_length = -1;
    if (head_value(a, "Content-Length", v, sizeof v)) {
        errno = 0;
        a->content_length = strtoll(v, &end, 10);
        DQ_FUZZ_CHECK(!errno && end != v && !*end && a->content_length >= 0,
                      "Content-Length '%s' is not a length", v);
    }
    if (head_value(a, "Transfer-Encoding", v, sizeof v) && strcasestr(v, "chunked"))
        a->chunked = 1;
    head_value(a, "Content-Type", a->content_type, sizeof a->content_type);
    if (a->status < 200 || a->status == 204 || a->status == 304 || is_head || a->chunked ||
        strncmp(a->content_type, "text/event-stream", 17) == 0)
        return;
    if (a->content_length >= 0) {
        skip_repeated_head(a);
        while (a->len - a->body_off < (unsigned long long)a->content_length) {
            if (!read_more(fd, a))
                return;
            skip_repeated_head(a);
        }
        return;
    }
    while (read_more(fd, a))
        ;
}

static void answer_free(answer *a)
{
    free(a->buf);
}

/* Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF); the offset of
 * the first bad byte, or -1 when all is well. */
static long utf8_bad_at(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned min, cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, min = 0x80, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, min = 0x800, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, min = 0x10000, cp = c & 0x07;
        else
            return (long)i;
        if (n - i <= k)
            return (long)i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return (long)i;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return (long)i;
        i += k + 1;
    }
    return -1;
}

/* A whole JSON body: valid UTF-8, one object that cJSON parses to the end; NULL when the
 * body is not all there (HEAD, a short read already reported). Caller deletes. */
static cJSON *json_body(const answer *a, const char *req)
{
    const char *body = a->buf + a->body_off;
    size_t n = a->len - a->body_off;
    const char *end = NULL;
    long bad;
    cJSON *doc;
    char *text;

    if (a->content_length < 0 || n < (unsigned long long)a->content_length)
        return NULL;
    n = (size_t)a->content_length; /* what follows would be the next answer */
    bad = utf8_bad_at((const unsigned char *)body, n);
    DQ_FUZZ_CHECK(bad < 0, "JSON answer (HTTP %d) is not UTF-8 at byte %ld: %.300s [request: %s]",
                  a->status, bad, body, req);
    DQ_FUZZ_CHECK(!memchr(body, '\0', n), "JSON answer (HTTP %d) holds a NUL byte [request: %s]",
                  a->status, req);
    text = strndup(body, n);
    DQ_FUZZ_CHECK(text != NULL, "out of memory");
    doc = cJSON_ParseWithOpts(text, &end, 1);
    DQ_FUZZ_CHECK(doc != NULL,
                  "JSON answer (HTTP %d) does not parse at byte %ld: %.300s [request: %s]",
                  a->status, end ? (long)(end - text) : -1L, text, req);
    free(text);
    DQ_FUZZ_CHECK(cJSON_IsObject(doc), "JSON answer (HTTP %d) is not an object: %.300s",
                  a->status, body);
    if (a->status != 200)
        DQ_FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItem(doc, "error")),
                      "HTTP %d answer without an \"error\" string: %.300s", a->status, body);
    return doc;
}

/* /healthz answers 200 with the folded event count, and the fold did not change. */
static void check_health(const server *s)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    answer a = {0};
    int fd = connect_to(s);
    cJSON *doc;
    char hash[DQ_FOLD_HASH_HEX_LEN + 1];

    send_all(fd, req, sizeof req - 1);
    read_answer(fd, &a, 0);
    close(fd);
    DQ_FUZZ_CHECK(a.status == 200,
                  "/healthz of the %s server: %s (one of the last %d inputs broke it)", s->name,
                  a.timed_out ? "no answer" : a.len ? a.buf : "connection closed", CHECK_EVERY);
    doc = json_body(&a, "GET /healthz");
    DQ_FUZZ_CHECK(doc && dq_json_num(doc, "events", -1) == (double)n_events &&
                      str_is(dq_json_str(doc, "status"), "ok"),
                  "/healthz of the %s server: %s", s->name, a.buf);
    cJSON_Delete(doc);
    answer_free(&a);
    pthread_mutex_lock(&fold_lock);
    dq_fold_state_hash(fold, hash);
    pthread_mutex_unlock(&fold_lock);
    DQ_FUZZ_CHECK(strcmp(hash, state_hash) == 0, "the fold changed under a read-only API");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *base = getenv("DQ_FUZZ_TMP");
    dq_fold_totals tot;
    char **texts;

    (void)argc;
    (void)argv;
    dq_fuzz_quiet();
    verbose = getenv("DQ_FUZZ_VERBOSE") && strcmp(getenv("DQ_FUZZ_VERBOSE"), "1") == 0;
    signal(SIGPIPE, SIG_IGN);
    snprintf(regdir, sizeof regdir, "%s/dq-fuzz-httpapi-%ld", base ? base : "/dev/shm",
             (long)getpid());
    texts = make_history();
    atexit(stop_all);
    small_thread_stacks();
    {
        /* every connection comes from 127.0.0.1: the open server's limits are wide; the
         * token server keeps the defaults (64 in all, 16 per address, half for streams) */
        dq_httpapi_opts open = {.dashboard_html = "<!doctype html><title>deployq</title>",
                                .max_clients = 256,
                                .max_clients_per_address = 256};
        dq_httpapi_opts tok = {.token = FUZZ_TOKEN, .ring_size = 4, .production_env = "staging"};

        start_server(&srv_open, &open, texts);
        start_server(&srv_token, &tok, texts);
    }
    for (size_t i = 0; i < N_HISTORY; i++)
        free(texts[i]);
    free(texts);
    dq_fold_get_totals(fold, &tot);
    n_events = tot.events;
    dq_fold_state_hash(fold, state_hash);
    check_health(&srv_open);
    check_health(&srv_token);
    return 0;
}

/* ---- one input ------------------------------------------------------------------------ */

typedef struct {
    char *s;
    size_t len, cap;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;

        while (cap < b->len + n + 1)
            cap *= 2;
        b->s = realloc(b->s, cap);
        DQ_FUZZ_CHECK(b->s != NULL, "out of memory building a request");
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void put_str(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Percent-encode what would break the request line; '%' stays, so escapes the fuzzer
 * writes (valid or not) reach the server's decoder as written. */
static void put_escaped(buf *b, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        if (p[i] <= 0x20 || p[i] >= 0x7f || p[i] == '#') {
            char e[3] = {'%', hex[p[i] >> 4], hex[p[i] & 15]};

            put(b, e, 3);
        } else {
            put(b, &p[i], 1);
        }
    }
}

static int is_tchar(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int all_tchars(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_tchar(p[i]))
            return 0;
    return n > 0;
}

/* A header line the server must take as a whole header that announces no body. */
static int plain_header(const uint8_t *p, size_t n)
{
    const uint8_t *colon = memchr(p, ':', n);
    size_t nl;

    if (!colon || !all_tchars(p, (size_t)(colon - p)))
        return 0;
    nl = (size_t)(colon - p);
    if ((nl == 14 && strncasecmp((const char *)p, "Content-Length", nl) == 0) ||
        (nl == 17 && strncasecmp((const char *)p, "Transfer-Encoding", nl) == 0) ||
        (nl == 6 && strncasecmp((const char *)p, "Expect", nl) == 0))
        return 0;
    for (size_t i = nl + 1; i < n; i++)
        if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f)
            return 0;
    return 1;
}

/* The next '\n'-separated field of [*p, end). */
static void next_field(const uint8_t **p, const uint8_t *end, const uint8_t **f, size_t *n)
{
    const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));

    *f = *p;
    *n = (size_t)((nl ? nl : end) - *p);
    *p = nl ? nl + 1 : end;
}

/* ENDPOINT's table: every path the API serves, and one it does not. 14 entries: the byte
 * 'F' + i (70 is a multiple of 14) picks entry i, so seeds can stay text. */
static const char *const endpoints[] = {
    "/healthz",
    "/",
    "/index.html",
    "/api/targets",
    "/api/deployments/" D1,
    "/api/deployments/" D2,
    "/api/deployments/" D4,
    "/api/rollbacks",
    "/api/events",
    "/api/report",
    "/api/series",
    "/api/stream",
    "/metrics",
    "/api/none",
};
#define N_ENDPOINTS (sizeof endpoints / sizeof endpoints[0])

/* Build the structured request; *plain is 1 when it must be answered. */
static void build_request(buf *b, uint8_t flags, const uint8_t *p, const uint8_t *end,
                          int *plain, int *is_head, int *get_or_head)
{
    const uint8_t *method, *path, *query, *h;
    size_t ml, pl, ql, hl;

    next_field(&p, end, &method, &ml);
    next_field(&p, end, &path, &pl);
    next_field(&p, end, &query, &ql);
    if (ml == 0)
        method = (const uint8_t *)"GET", ml = 3;
    *plain = all_tchars(method, ml) && ml <= 32;
    /* the server reads the method up to the first space */
    *is_head = ml >= 4 && memcmp(method, "HEAD", 4) == 0 && (ml == 4 || method[4] == ' ');
    *get_or_head = *is_head || (ml == 3 && memcmp(method, "GET", 3) == 0);
    put(b, method, ml);
    put(b, " ", 1);
    if (flags & ENDPOINT)
        put_str(b, endpoints[pl ? path[0] % N_ENDPOINTS : 0]);
    else if (pl == 0)
        put(b, "/", 1);
    else
        put_escaped(b, path, pl);
    if (ql) {
        put(b, "?", 1);
        put_escaped(b, query, ql);
    }
    put_str(b, flags & HTTP10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
    if (!(flags & NO_HOST))
        put_str(b, "Host: 127.0.0.1\r\n");
    if (flags & WITH_TOKEN)
        put_str(b, "Authorization: Bearer " FUZZ_TOKEN "\r\n");
    while (p < end) {
        next_field(&p, end, &h, &hl);
        if (hl == 0)
            continue;
        if (!plain_header(h, hl))
            *plain = 0;
        put(b, h, hl);
        put(b, "\r\n", 2);
    }
    put(b, "\r\n", 2);
    if (b->len > 16384) /* near libmicrohttpd's per-connection memory: 413/431 or a close */
        *plain = 0;
}

/* A short, printable rendering of the request for invariant messages. */
static const char *describe(const buf *b, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; i < b->len && o + 5 < outlen; i++) {
        unsigned char c = (unsigned char)b->s[i];

        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
    }
    out[o] = '\0';
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t flags = size ? data[0] : 0;
    const server *s = flags & TOKEN_SERVER ? &srv_token : &srv_open;
    const uint8_t *p = size ? data + 1 : data, *end = data + size;
    int plain = 0, is_head = 0, get_or_head = 0;
    buf req = {0};
    answer a = {0};
    char what[600];
    cJSON *doc = NULL;
    int fd;

    if (flags & RAW) {
        put(&req, p, (size_t)(end - p));
        is_head = end - p >= 5 && memcmp(p, "HEAD ", 5) == 0; /* an answer without a body */
    } else
        build_request(&req, flags, p, end, &plain, &is_head, &get_or_head);
    describe(&req, what, sizeof what);
    fd = connect_to(s);
    send_all(fd, req.s ? req.s : "", req.len);
    /* A request that may be incomplete (raw bytes, a body announced) ends here: the server
     * sees the end of the stream and answers or closes at once instead of waiting. A plain
     * request keeps the stream open, so it must be answered on its own. */
    if (!plain)
        shutdown(fd, SHUT_WR);
    read_answer(fd, &a, is_head);
    close(fd);
    if (verbose)
        fprintf(stderr, "fuzz_httpapi: %s server <- %s\n-> %.*s\n", s->name, what,
                (int)(a.len < 2000 ? a.len : 2000), a.buf ? a.buf : "(nothing)");

    if (a.len > 0 || plain) {
        DQ_FUZZ_CHECK(a.len > 0, "no answer within %d ms (%s) [request: %s]", ANSWER_TIMEOUT_MS,
                      a.timed_out ? "timeout" : "closed", what);
        DQ_FUZZ_CHECK(a.head_len > 0, "no whole head in %zu bytes: %.200s [request: %s]", a.len,
                      a.buf, what);
        DQ_FUZZ_CHECK(a.status > 0, "not a status line: %.100s [request: %s]", a.buf, what);
    }
    if (plain && a.status >= 200 && a.content_length >= 0 && !is_head && a.status != 204 &&
        a.status != 304) {
        /* short: a truncated answer; longer: a second answer to one request (only of a
         * plain request does the harness know it is one request, and whether it is HEAD) */
        DQ_FUZZ_CHECK(a.len - a.body_off >= (unsigned long long)a.content_length,
                      "HTTP %d: %zu body bytes, Content-Length %lld [request: %s]", a.status,
                      a.len - a.body_off, a.content_length, what);
        DQ_FUZZ_CHECK(a.len - a.body_off == (unsigned long long)a.content_length,
                      "HTTP %d: %zu bytes after a body of %lld: %.200s [request: %s]", a.status,
                      a.len - a.body_off - (size_t)a.content_length, a.content_length,
                      a.buf + a.body_off + a.content_length, what);
    }
    if (strncmp(a.content_type, "application/json", 16) == 0) {
        /* the API answered, not libmicrohttpd */
        doc = json_body(&a, what);
        if (!(flags & RAW) && plain && !get_or_head)
            DQ_FUZZ_CHECK(a.status == 405, "HTTP %d to a %.*s request [request: %s]", a.status,
                          (int)strcspn(what, " "), what, what);
    }
    if (s == &srv_token && !(flags & WITH_TOKEN) && a.status == 200 &&
        !memmem(data, size, FUZZ_TOKEN, sizeof FUZZ_TOKEN - 1)) {
        DQ_FUZZ_CHECK(strncmp(a.content_type, "application/json", 16) == 0,
                      "the token server served %s without the token [request: %s]",
                      a.content_type, what);
        /* without a body (HEAD, or a request that is not plain and may have been one)
         * there is nothing to tell */
        DQ_FUZZ_CHECK(doc ? str_is(dq_json_str(doc, "status"), "ok") : is_head || !plain,
                      "the token server served data without the token: %.300s [request: %s]",
                      a.buf + a.body_off, what);
    }
    cJSON_Delete(doc);
    answer_free(&a);
    free(req.s);
    if (++n_inputs % CHECK_EVERY == 0) {
        check_health(&srv_open);
        check_health(&srv_token);
    }
    return 0;
}
