/*
 * fake_server.h - start, script, query and stop the Python provider doubles from a cmocka
 * test. Header-only (static inline) because each unit test is built from one .c file.
 *
 * The doubles live in $DEPLOYQ_FAKES (set by tests/unit/meson.build) and run under
 * /usr/bin/python3 on a free port they choose and write to a port file.
 */
#ifndef DQ_FAKE_SERVER_H
#define DQ_FAKE_SERVER_H

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http.h"
#include "provider.h"
#include "util.h"

typedef struct dq_fake {
    pid_t pid;
    int port;
    char base[64]; /* "http://127.0.0.1:PORT" */
    char port_file[128];
} dq_fake;

/* Start tests/fakes/<name>.py. Returns 0 once it listens, -1 on failure. */
static inline int dq_fake_start(dq_fake *f, const char *name)
{
    const char *dir = getenv("DEPLOYQ_FAKES");
    char script[512];
    memset(f, 0, sizeof *f);
    if (dir == NULL)
        dir = "tests/fakes";
    snprintf(script, sizeof script, "%s/%s.py", dir, name);
    snprintf(f->port_file, sizeof f->port_file, "/tmp/dq-fake-%s-%d-%lld.port", name, (int)getpid(),
             (long long)dq_mono_ms());
    unlink(f->port_file);
    f->pid = fork();
    if (f->pid < 0)
        return -1;
    if (f->pid == 0) {
        FILE *null = freopen("/dev/null", "w", stdout);
        (void)null;
        execl("/usr/bin/python3", "python3", script, "--port", "0", "--port-file", f->port_file, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        char *txt = dq_read_file(f->port_file, 64, NULL);
        if (txt != NULL) {
            long long port = 0;
            txt[strcspn(txt, "\n")] = '\0';
            int ok = dq_parse_int(txt, 1, 65535, &port) == 0;
            free(txt);
            if (ok) {
                f->port = (int)port;
                snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", f->port);
                return 0;
            }
        }
        dq_sleep_ms(50);
    }
    return -1;
}

static inline void dq_fake_stop(dq_fake *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGTERM);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
    unlink(f->port_file);
}

static inline int dq_fake_post(const dq_fake *f, const char *path, const char *json)
{
    char url[256];
    dq_http_response r;
    const char *hdrs[] = {"Content-Type: application/json", NULL};
    snprintf(url, sizeof url, "%s%s", f->base, path);
    dq_http_opts o = {.method = "POST", .url = url, .headers = hdrs, .body = json ? json : "{}", .timeout_ms = 5000};
    int rc = dq_http_request(&o, &r);
    int ok = rc == 0 && r.status == 200;
    dq_http_response_free(&r);
    return ok ? 0 : -1;
}

/* Replace the double's script (a JSON object text). */
static inline int dq_fake_script(const dq_fake *f, const char *json) { return dq_fake_post(f, "/_fake/script", json); }
/* Forget calls, runs and script. */
static inline int dq_fake_reset(const dq_fake *f) { return dq_fake_post(f, "/_fake/reset", "{}"); }

/* The parsed /_fake/calls document (caller deletes), or NULL. */
static inline cJSON *dq_fake_calls(const dq_fake *f)
{
    char url[256];
    dq_http_response r;
    snprintf(url, sizeof url, "%s/_fake/calls", f->base);
    dq_http_opts o = {.method = "GET", .url = url, .timeout_ms = 5000};
    cJSON *j = NULL;
    if (dq_http_request(&o, &r) == 0 && r.status == 200)
        j = cJSON_ParseWithLengthOpts(r.body, r.body_len, NULL, 0);
    dq_http_response_free(&r);
    return j;
}

/* How many recorded calls have this method and a path containing path_part. */
static inline int dq_fake_count(const cJSON *calls_doc, const char *method, const char *path_part)
{
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(calls_doc, "calls"))
    {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "method");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(c, "path");
        if (cJSON_IsString(m) && cJSON_IsString(p) && strcmp(m->valuestring, method) == 0 &&
            strstr(p->valuestring, path_part) != NULL)
            n++;
    }
    return n;
}

/* 1 when every recorded call carried X-Deployq-Fence equal to fence. */
static inline int dq_fake_all_fenced(const cJSON *calls_doc, long long fence)
{
    char want[32];
    const cJSON *c;
    int n = 0;
    snprintf(want, sizeof want, "%lld", fence);
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(calls_doc, "calls"))
    {
        const cJSON *fv = cJSON_GetObjectItemCaseSensitive(c, "fence");
        if (!cJSON_IsString(fv) || strcmp(fv->valuestring, want) != 0)
            return 0;
        n++;
    }
    return n > 0;
}

/* The largest number of deploys ever in flight at once on one target. */
static inline int dq_fake_max_concurrent(const cJSON *calls_doc)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(calls_doc, "max_concurrent_any");
    return cJSON_IsNumber(m) ? m->valueint : -1;
}

/* The i-th recorded call (0-based) with method and path containing path_part, or NULL. */
static inline const cJSON *dq_fake_call(const cJSON *calls_doc, const char *method, const char *path_part, int i)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(calls_doc, "calls"))
    {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "method");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(c, "path");
        if (cJSON_IsString(m) && cJSON_IsString(p) && strcmp(m->valuestring, method) == 0 &&
            strstr(p->valuestring, path_part) != NULL && i-- == 0)
            return c;
    }
    return NULL;
}

/* A provider from a printf-built JSON config; NULL (and the reason on stderr) on error. */
static inline dq_provider *dq_fake_provider(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline dq_provider *dq_fake_provider(const char *fmt, ...)
{
    char json[4096];
    char err[256] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(json, sizeof json, fmt, ap);
    va_end(ap);
    cJSON *cfg = cJSON_ParseWithLengthOpts(json, strlen(json), NULL, 0);
    if (cfg == NULL) {
        fprintf(stderr, "bad test config: %s\n", json);
        return NULL;
    }
    dq_provider *p = dq_provider_new(cfg, err, sizeof err);
    if (p == NULL)
        fprintf(stderr, "provider config refused: %s\n", err);
    cJSON_Delete(cfg);
    return p;
}

/* What the chain callbacks saw. */
typedef struct dq_fake_events {
    int started;
    int failed;
    char started_provider[64];
    char started_id[DQ_PROVIDER_ID_LEN];
    char failed_provider[64];
    char failed_class[32];
    char failed_detail[DQ_PROVIDER_DETAIL_LEN];
    int polls_left; /* should_continue returns 0 once this reaches 0; < 0 means never */
} dq_fake_events;

static inline void dq_fake_on_started(void *ctx, const dq_provider *p, const char *id)
{
    dq_fake_events *ev = ctx;
    ev->started++;
    dq_strlcpy(ev->started_provider, dq_provider_name(p), sizeof ev->started_provider);
    dq_strlcpy(ev->started_id, id, sizeof ev->started_id);
}

static inline void dq_fake_on_failed(void *ctx, const dq_provider *p, const dq_provider_error *e)
{
    dq_fake_events *ev = ctx;
    ev->failed++;
    dq_strlcpy(ev->failed_provider, dq_provider_name(p), sizeof ev->failed_provider);
    dq_strlcpy(ev->failed_class, e->error_class, sizeof ev->failed_class);
    dq_strlcpy(ev->failed_detail, e->detail, sizeof ev->failed_detail);
}

static inline int dq_fake_should_continue(void *ctx)
{
    dq_fake_events *ev = ctx;
    if (ev->polls_left < 0)
        return 1;
    if (ev->polls_left == 0)
        return 0;
    ev->polls_left--;
    return 1;
}

static inline dq_chain_callbacks dq_fake_callbacks(dq_fake_events *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->polls_left = -1;
    dq_chain_callbacks cb = {.ctx = ev, .on_started = dq_fake_on_started, .on_provider_failed = dq_fake_on_failed,
                             .should_continue = dq_fake_should_continue};
    return cb;
}

#endif
