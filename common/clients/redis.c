/*
 * redis.c - a hiredis synchronous context that reconnects once and retries once
 * (see redis.h).
 *
 * A command is formatted once into the wire protocol, so the retry after a reconnect
 * sends exactly the same bytes. Every error string passes through set_error(), which
 * masks the password, because Redis error replies and URLs are the places a password
 * would slip out.
 */
#include "redis.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "util.h"

#define REDIS_DEFAULT_PORT 6379

struct dq_redis {
    redisContext *c; /* NULL between a lost connection and the next command */
    int is_unix;
    char host[256]; /* the socket path when is_unix */
    int port;
    char *user; /* NULL: the default user */
    char *pass; /* NULL: no AUTH */
    int db;
    struct timeval tv;
    char where[300];
    char errstr[512];
};

static void set_error(dq_redis *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(dq_redis *r, const char *fmt, ...)
{
    char raw[sizeof r->errstr];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);

    size_t plen = r->pass != NULL ? strlen(r->pass) : 0, o = 0;
    for (const char *p = raw; *p != '\0' && o + 1 < sizeof r->errstr;) {
        if (plen > 0 && strncmp(p, r->pass, plen) == 0) {
            for (const char *m = "***"; *m != '\0' && o + 1 < sizeof r->errstr; m++)
                r->errstr[o++] = *m;
            p += plen;
        } else {
            r->errstr[o++] = *p++;
        }
    }
    r->errstr[o] = '\0';
}

/* Decode %XX escapes of s[0..len) into a new string (user names and passwords in URLs). */
static char *percent_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], '\0'};
            out[o++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* Fill r from url. Messages never quote the URL: it may hold the password. */
static int parse_url(dq_redis *r, const char *url, char *err, size_t errlen)
{
    long long v;

    if (strncmp(url, "unix://", 7) == 0) {
        if (url[7] != '/' || dq_strlcpy(r->host, url + 7, sizeof r->host) >= sizeof r->host) {
            snprintf(err, errlen, "redis URL unix:// needs an absolute socket path");
            return -1;
        }
        r->is_unix = 1;
        dq_strlcpy(r->where, r->host, sizeof r->where);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "redis URL must start with redis:// or unix://");
        return -1;
    }

    const char *rest = url + 8;
    /* The last '@' ends the credentials, so a raw '@' in a password still works. */
    const char *at = strrchr(rest, '@');
    if (at != NULL) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (colon == NULL) {
            snprintf(err, errlen, "redis URL credentials must be [user]:password@");
            return -1;
        }
        if (colon > rest && (r->user = percent_decode(rest, (size_t)(colon - rest))) == NULL)
            goto oom;
        if ((r->pass = percent_decode(colon + 1, (size_t)(at - colon - 1))) == NULL)
            goto oom;
        rest = at + 1;
    }

    const char *slash = strchr(rest, '/');
    size_t hplen = slash != NULL ? (size_t)(slash - rest) : strlen(rest);
    const char *port_at = NULL;
    const char *host = rest;
    size_t hostlen;
    if (rest[0] == '[') { /* [::1]:6379 */
        const char *close = memchr(rest, ']', hplen);
        if (close == NULL) {
            snprintf(err, errlen, "redis URL has an unclosed [ in its host");
            return -1;
        }
        host = rest + 1;
        hostlen = (size_t)(close - host);
        if (close + 1 < rest + hplen) {
            if (close[1] != ':')
                goto bad_port;
            port_at = close + 2;
        }
    } else {
        const char *colon = memchr(rest, ':', hplen);
        hostlen = colon != NULL ? (size_t)(colon - rest) : hplen;
        port_at = colon != NULL ? colon + 1 : NULL;
    }
    if (hostlen == 0)
        dq_strlcpy(r->host, "127.0.0.1", sizeof r->host);
    else if (hostlen >= sizeof r->host) {
        snprintf(err, errlen, "redis URL host is too long");
        return -1;
    } else {
        memcpy(r->host, host, hostlen);
        r->host[hostlen] = '\0';
    }

    r->port = REDIS_DEFAULT_PORT;
    if (port_at != NULL) {
        char port[8];
        size_t plen = (size_t)(rest + hplen - port_at);
        if (plen == 0 || plen >= sizeof port)
            goto bad_port;
        memcpy(port, port_at, plen);
        port[plen] = '\0';
        if (dq_parse_int(port, 1, 65535, &v) != 0)
            goto bad_port;
        r->port = (int)v;
    }

    r->db = 0;
    if (slash != NULL && slash[1] != '\0') {
        if (dq_parse_int(slash + 1, 0, 1 << 20, &v) != 0) {
            snprintf(err, errlen, "redis URL database is not a number");
            return -1;
        }
        r->db = (int)v;
    }
    snprintf(r->where, sizeof r->where, strchr(r->host, ':') ? "[%s]:%d" : "%s:%d", r->host,
             r->port);
    return 0;

bad_port:
    snprintf(err, errlen, "redis URL port is not a number in 1..65535");
    return -1;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* Connect, AUTH and SELECT. 0 with r->c set, or -1 with r->errstr set. */
static int redis_open(dq_redis *r)
{
    redisReply *reply = NULL;
    redisContext *c = r->is_unix ? redisConnectUnixWithTimeout(r->host, r->tv)
                                 : redisConnectWithTimeout(r->host, r->port, r->tv);
    if (c == NULL) {
        set_error(r, "redis %s: out of memory", r->where);
        return -1;
    }
    if (c->err) {
        set_error(r, "redis %s: %s", r->where, c->errstr);
        goto fail;
    }
    if (redisSetTimeout(c, r->tv) != REDIS_OK) {
        set_error(r, "redis %s: cannot set the timeout", r->where);
        goto fail;
    }
    if (r->pass != NULL) {
        reply = r->user != NULL ? redisCommand(c, "AUTH %s %s", r->user, r->pass)
                                : redisCommand(c, "AUTH %s", r->pass);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            set_error(r, "redis %s: AUTH failed: %s", r->where,
                      reply != NULL ? reply->str : c->errstr);
            goto fail;
        }
        freeReplyObject(reply);
        reply = NULL;
    }
    if (r->db != 0) {
        reply = redisCommand(c, "SELECT %d", r->db);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            set_error(r, "redis %s: SELECT %d failed: %s", r->where, r->db,
                      reply != NULL ? reply->str : c->errstr);
            goto fail;
        }
        freeReplyObject(reply);
    }
    r->c = c;
    return 0;

fail:
    freeReplyObject(reply);
    redisFree(c);
    return -1;
}

dq_redis *dq_redis_connect(const char *url, int timeout_ms, char *err, size_t errlen)
{
    char scratch[1];
    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    dq_redis *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (timeout_ms <= 0)
        timeout_ms = 1000;
    r->tv.tv_sec = timeout_ms / 1000;
    r->tv.tv_usec = (timeout_ms % 1000) * 1000;
    if (url == NULL || parse_url(r, url, err, errlen) != 0)
        goto fail;
    if (redis_open(r) != 0) {
        snprintf(err, errlen, "%s", r->errstr);
        goto fail;
    }
    return r;

fail:
    dq_redis_free(r);
    return NULL;
}

void dq_redis_free(dq_redis *r)
{
    if (r == NULL)
        return;
    redisFree(r->c);
    free(r->user);
    if (r->pass != NULL) {
        /* volatile so the wipe of a buffer about to be freed is not optimised away */
        for (volatile char *p = r->pass; *p != '\0'; p++)
            *p = '\0';
    }
    free(r->pass);
    free(r);
}

/* Send a formatted command; on a broken connection reconnect once and send it again. */
static redisReply *run(dq_redis *r, const char *cmd, size_t len)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (r->c == NULL && redis_open(r) != 0)
            continue;
        void *reply = NULL;
        if (redisAppendFormattedCommand(r->c, cmd, len) == REDIS_OK &&
            redisGetReply(r->c, &reply) == REDIS_OK)
            return reply;
        set_error(r, "redis %s: %s", r->where,
                  r->c->errstr[0] != '\0' ? r->c->errstr : "connection lost");
        redisFree(r->c);
        r->c = NULL;
    }
    return NULL;
}

redisReply *dq_redis_command(dq_redis *r, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;

    if (r == NULL || fmt == NULL)
        return NULL;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0) {
        set_error(r, "redis %s: cannot format the command", r->where);
        return NULL;
    }
    redisReply *reply = run(r, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return reply;
}

redisReply *dq_redis_commandv(dq_redis *r, int argc, const char **argv, const size_t *argvlen)
{
    char *cmd = NULL;

    if (r == NULL || argc <= 0 || argv == NULL)
        return NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        set_error(r, "redis %s: cannot format the command", r->where);
        return NULL;
    }
    redisReply *reply = run(r, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return reply;
}

int dq_redis_pipeline(dq_redis *r, size_t n, char *const *cmds, const size_t *lens,
                      redisReply **replies)
{
    if (r == NULL || (n > 0 && (cmds == NULL || lens == NULL || replies == NULL)))
        return -1;
    for (size_t i = 0; i < n; i++)
        replies[i] = NULL;
    if (n == 0)
        return 0;
    /* as run(): on a broken connection reconnect once and send the same bytes again */
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t got = 0;
        int ok = 1;

        if (r->c == NULL && redis_open(r) != 0)
            continue;
        for (size_t i = 0; ok && i < n; i++)
            ok = redisAppendFormattedCommand(r->c, cmds[i], lens[i]) == REDIS_OK;
        for (; ok && got < n; got++) {
            void *reply = NULL;

            ok = redisGetReply(r->c, &reply) == REDIS_OK;
            replies[got] = reply;
        }
        if (ok)
            return 0;
        for (size_t i = 0; i < got; i++) {
            freeReplyObject(replies[i]);
            replies[i] = NULL;
        }
        set_error(r, "redis %s: %s", r->where,
                  r->c->errstr[0] != '\0' ? r->c->errstr : "connection lost");
        redisFree(r->c);
        r->c = NULL;
    }
    return -1;
}

const char *dq_redis_errstr(const dq_redis *r)
{
    return r != NULL ? r->errstr : "redis: no connection";
}

const char *dq_redis_where(const dq_redis *r)
{
    return r != NULL ? r->where : "";
}

int dq_redis_set_nx(dq_redis *r, const char *key, const char *value, long ttl_s)
{
    redisReply *reply = ttl_s > 0 ? dq_redis_command(r, "SET %s %s NX EX %ld", key, value, ttl_s)
                                  : dq_redis_command(r, "SET %s %s NX", key, value);
    int rc = -1;

    if (reply == NULL)
        return -1;
    if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0)
        rc = 1;
    else if (reply->type == REDIS_REPLY_NIL)
        rc = 0;
    else
        set_error(r, "redis %s: SET: %s", r->where,
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    freeReplyObject(reply);
    return rc;
}

int dq_redis_get(dq_redis *r, const char *key, char **out)
{
    redisReply *reply = dq_redis_command(r, "GET %s", key);
    int rc = -1;

    *out = NULL;
    if (reply == NULL)
        return -1;
    if (reply->type == REDIS_REPLY_NIL) {
        rc = 0;
    } else if (reply->type == REDIS_REPLY_STRING) {
        *out = malloc(reply->len + 1);
        if (*out != NULL) {
            memcpy(*out, reply->str, reply->len);
            (*out)[reply->len] = '\0';
            rc = 0;
        } else {
            set_error(r, "redis %s: out of memory", r->where);
        }
    } else {
        set_error(r, "redis %s: GET: %s", r->where,
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    }
    freeReplyObject(reply);
    return rc;
}
