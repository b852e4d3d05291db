/*
 * redis.h - a Redis connection that reconnects.
 *
 * hiredis' synchronous context, wrapped: every command that fails on a broken connection
 * (I/O error, EOF, timeout) reconnects once and retries once, so a Redis restart costs
 * the caller one slow call, not a dead worker. The password from the URL is never put in
 * an error or log. hiredis 0.14 has no TLS; see docs/operations.md.
 */
#ifndef DQ_REDIS_H
#define DQ_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

typedef struct dq_redis dq_redis;

/* url: redis://[[user]:password@]host[:port][/db]  (unix sockets: unix:///path).
 * timeout_ms bounds connect and each command. Returns NULL with a reason in err (the
 * reason names host:port, never the password). */
dq_redis *dq_redis_connect(const char *url, int timeout_ms, char *err, size_t errlen);
void dq_redis_free(dq_redis *r);

/* Run a command (hiredis format). Returns the reply (free with freeReplyObject) or NULL
 * when the server could not be reached even after one reconnect; then dq_redis_errstr()
 * says why. A Redis error reply (REDIS_REPLY_ERROR) is returned as a reply, not NULL. */
redisReply *dq_redis_command(dq_redis *r, const char *fmt, ...);
/* The same with an argv vector (binary safe). */
redisReply *dq_redis_commandv(dq_redis *r, int argc, const char **argv, const size_t *argvlen);

/* Send n commands, each already in the wire protocol (redisFormatCommand), in one round
 * trip, and read their n replies into replies[] (free each with freeReplyObject; error
 * replies included). On a broken connection it reconnects once and sends them all again,
 * so the commands must be safe to run twice (SET NX, GET). 0 ok, -1 unreachable (then
 * every replies[i] is NULL and dq_redis_errstr() says why). */
int dq_redis_pipeline(dq_redis *r, size_t n, char *const *cmds, const size_t *lens,
                      redisReply **replies);

const char *dq_redis_errstr(const dq_redis *r);
/* "host:port" of the server (no credentials). */
const char *dq_redis_where(const dq_redis *r);

/* SET key value NX EX ttl_s. Returns 1 set, 0 already exists, -1 error. */
int dq_redis_set_nx(dq_redis *r, const char *key, const char *value, long ttl_s);
/* GET into a malloc'd string (*out = NULL when absent). 0 ok, -1 error. */
int dq_redis_get(dq_redis *r, const char *key, char **out);

#endif
