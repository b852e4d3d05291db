/*
 * test_redis.c - redis.h against a real redis-server that the test starts on a free port:
 * SET NX semantics, GET of an absent key, error replies returned as replies, binary-safe
 * argv commands, database selection, the reconnect after a server restart, AUTH with a
 * password and with an ACL user, and errors that name host:port but never the password.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis.h"
#include "testutil.h"

#define PASSWORD "pw-Sup3rSecret"
#define TIMEOUT_MS 2000

typedef struct {
    int port;
    pid_t pid;
    char url[128];
    char where[64];
} server;

static int start(void **state)
{
    server *s = calloc(1, sizeof *s);
    assert_non_null(s);
    assert_int_equal(dq_test_redis_start(&s->port, &s->pid), 0);
    snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d", s->port);
    snprintf(s->where, sizeof s->where, "127.0.0.1:%d", s->port);
    *state = s;
    return 0;
}

static int stop(void **state)
{
    server *s = *state;
    dq_test_redis_stop(s->pid);
    free(s);
    return 0;
}

static dq_redis *connect_ok(const char *url)
{
    char err[256] = "";
    dq_redis *r = dq_redis_connect(url, TIMEOUT_MS, err, sizeof err);
    if (r == NULL)
        fail_msg("connect failed: %s", err);
    return r;
}

static void test_set_nx_and_get(void **state)
{
    server *s = *state;
    dq_redis *r = connect_ok(s->url);
    assert_string_equal(dq_redis_where(r), s->where);

    char *value = (char *)"stale";
    assert_int_equal(dq_redis_get(r, "deployq:test:nonce", &value), 0);
    assert_null(value);

    assert_int_equal(dq_redis_set_nx(r, "deployq:test:nonce", "first", 60), 1);
    assert_int_equal(dq_redis_set_nx(r, "deployq:test:nonce", "second", 60), 0);
    assert_int_equal(dq_redis_get(r, "deployq:test:nonce", &value), 0);
    assert_string_equal(value, "first");
    free(value);

    redisReply *ttl = dq_redis_command(r, "TTL %s", "deployq:test:nonce");
    assert_non_null(ttl);
    assert_int_equal(ttl->type, REDIS_REPLY_INTEGER);
    assert_true(ttl->integer > 0 && ttl->integer <= 60);
    freeReplyObject(ttl);

    /* Without a TTL the key does not expire. */
    assert_int_equal(dq_redis_set_nx(r, "deployq:test:forever", "v", 0), 1);
    ttl = dq_redis_command(r, "TTL %s", "deployq:test:forever");
    assert_int_equal(ttl->integer, -1);
    freeReplyObject(ttl);
    dq_redis_free(r);
}

static void test_error_reply_is_a_reply(void **state)
{
    server *s = *state;
    dq_redis *r = connect_ok(s->url);
    redisReply *reply = dq_redis_command(r, "SET %s %s", "deployq:test:str", "x");
    freeReplyObject(reply);
    reply = dq_redis_command(r, "INCR %s", "deployq:test:str");
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(reply->str, "not an integer"));
    freeReplyObject(reply);

    char *value = NULL;
    reply = dq_redis_command(r, "LPUSH %s %s", "deployq:test:list", "x");
    freeReplyObject(reply);
    assert_int_equal(dq_redis_get(r, "deployq:test:list", &value), -1);
    assert_null(value);
    assert_non_null(strstr(dq_redis_errstr(r), "WRONGTYPE"));
    dq_redis_free(r);
}

static void test_commandv_binary_safe(void **state)
{
    server *s = *state;
    dq_redis *r = connect_ok(s->url);
    const char *argv[] = {"SET", "deployq:test:bin", "a\0b c"};
    const size_t lens[] = {3, 16, 5};
    redisReply *reply = dq_redis_commandv(r, 3, argv, lens);
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STATUS);
    freeReplyObject(reply);

    reply = dq_redis_command(r, "GET %s", "deployq:test:bin");
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_int_equal(reply->len, 5);
    assert_memory_equal(reply->str, "a\0b c", 5);
    freeReplyObject(reply);
    dq_redis_free(r);
}

static void test_select_db(void **state)
{
    server *s = *state;
    char url[160];
    snprintf(url, sizeof url, "%s/3", s->url);
    dq_redis *db3 = connect_ok(url);
    dq_redis *db0 = connect_ok(s->url);
    assert_int_equal(dq_redis_set_nx(db3, "deployq:test:db", "three", 60), 1);

    char *value = NULL;
    assert_int_equal(dq_redis_get(db0, "deployq:test:db", &value), 0);
    assert_null(value);
    assert_int_equal(dq_redis_get(db3, "deployq:test:db", &value), 0);
    assert_string_equal(value, "three");
    free(value);
    dq_redis_free(db3);
    dq_redis_free(db0);
}

static void test_reconnect_after_restart(void **state)
{
    server *s = *state;
    char url[160];
    snprintf(url, sizeof url, "%s/2", s->url); /* the db must be selected again */
    dq_redis *r = connect_ok(url);
    assert_int_equal(dq_redis_set_nx(r, "deployq:test:before", "1", 60), 1);

    dq_test_redis_stop(s->pid);
    s->pid = 0;
    /* Server down: one reconnect is tried, then the error names the server. */
    assert_int_equal(dq_redis_set_nx(r, "deployq:test:down", "1", 60), -1);
    assert_non_null(strstr(dq_redis_errstr(r), s->where));

    assert_int_equal(dq_test_redis_start_on(s->port, NULL, &s->pid), 0);
    assert_int_equal(dq_redis_set_nx(r, "deployq:test:after", "1", 60), 1);

    /* The write landed in db 2 of the new server. */
    char *value = NULL;
    dq_redis *db0 = connect_ok(s->url);
    assert_int_equal(dq_redis_get(db0, "deployq:test:after", &value), 0);
    assert_null(value);
    assert_int_equal(dq_redis_get(r, "deployq:test:after", &value), 0);
    assert_string_equal(value, "1");
    free(value);

    /* A restart while the connection sits idle costs nothing but one reconnect. */
    dq_test_redis_stop(s->pid);
    assert_int_equal(dq_test_redis_start_on(s->port, NULL, &s->pid), 0);
    redisReply *pong = dq_redis_command(r, "PING");
    assert_non_null(pong);
    assert_string_equal(pong->str, "PONG");
    freeReplyObject(pong);
    dq_redis_free(db0);
    dq_redis_free(r);
}

static void test_password_and_acl_user(void **state)
{
    (void)state;
    int port = dq_test_free_port();
    pid_t pid;
    char url[160], where[64], err[256];
    assert_int_equal(dq_test_redis_start_on(port, PASSWORD, &pid), 0);
    snprintf(where, sizeof where, "127.0.0.1:%d", port);

    snprintf(url, sizeof url, "redis://:wrong-Secret99@127.0.0.1:%d", port);
    err[0] = '\0';
    assert_null(dq_redis_connect(url, TIMEOUT_MS, err, sizeof err));
    assert_non_null(strstr(err, where));
    assert_non_null(strstr(err, "AUTH failed"));
    assert_null(strstr(err, "wrong-Secret99"));

    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", PASSWORD, port);
    dq_redis *r = connect_ok(url);
    assert_string_equal(dq_redis_where(r), where);
    assert_null(strstr(dq_redis_where(r), PASSWORD));
    redisReply *reply = dq_redis_command(r, "ACL SETUSER deployer on >user%%pass@1 ~* +@all");
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STATUS);
    freeReplyObject(reply);
    dq_redis_free(r);

    /* A Redis 6 ACL user; '%' and '@' in the password arrive percent-encoded. */
    snprintf(url, sizeof url, "redis://deployer:user%%25pass%%401@127.0.0.1:%d", port);
    r = connect_ok(url);
    reply = dq_redis_command(r, "ACL WHOAMI");
    assert_non_null(reply);
    assert_string_equal(reply->str, "deployer");
    freeReplyObject(reply);
    dq_redis_free(r);

    snprintf(url, sizeof url, "redis://deployer:not-the-pass@127.0.0.1:%d", port);
    assert_null(dq_redis_connect(url, TIMEOUT_MS, err, sizeof err));
    assert_non_null(strstr(err, where));
    assert_null(strstr(err, "not-the-pass"));

    dq_test_redis_stop(pid);
}

static void test_unreachable(void **state)
{
    (void)state;
    int port = dq_test_free_port();
    char url[160], where[64], err[256] = "";
    snprintf(url, sizeof url, "redis://:hunter2-pw@127.0.0.1:%d", port);
    snprintf(where, sizeof where, "redis 127.0.0.1:%d: ", port);
    assert_null(dq_redis_connect(url, TIMEOUT_MS, err, sizeof err));
    assert_memory_equal(err, where, strlen(where));
    assert_non_null(strstr(err, "refused"));
    assert_null(strstr(err, "hunter2"));

    /* An IPv6 literal is named in brackets. */
    snprintf(url, sizeof url, "redis://[::1]:%d", port);
    snprintf(where, sizeof where, "redis [::1]:%d: ", port);
    assert_null(dq_redis_connect(url, TIMEOUT_MS, err, sizeof err));
    assert_memory_equal(err, where, strlen(where));
}

static void test_bad_urls(void **state)
{
    (void)state;
    static const struct {
        const char *url, *reason;
    } cases[] = {
        {"http://127.0.0.1:6379", "redis URL must start with redis:// or unix://"},
        {"redis://127.0.0.1:99999", "redis URL port is not a number in 1..65535"},
        {"redis://:s3cret-x@127.0.0.1:port", "redis URL port is not a number in 1..65535"},
        {"redis://s3cret-x@127.0.0.1", "redis URL credentials must be [user]:password@"},
        {"redis://127.0.0.1:6379/x", "redis URL database is not a number"},
        {"unix://relative.sock", "redis URL unix:// needs an absolute socket path"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        assert_null(dq_redis_connect(cases[i].url, TIMEOUT_MS, err, sizeof err));
        assert_string_equal(err, cases[i].reason);
    }
    dq_redis_free(NULL);
}

static void test_unix_socket(void **state)
{
    (void)state;
    char dir[64], sock[128], url[160], err[256] = "";
    assert_int_equal(dq_test_tmpdir(dir, sizeof dir), 0);
    snprintf(sock, sizeof sock, "%s/redis.sock", dir);
    const char *extra[] = {"--unixsocket", sock, "--unixsocketperm", "700", NULL};
    pid_t pid;
    assert_int_equal(dq_test_redis_spawn(dq_test_free_port(), extra, &pid), 0);

    snprintf(url, sizeof url, "unix://%s", sock);
    dq_redis *r = dq_redis_connect(url, TIMEOUT_MS, err, sizeof err);
    assert_non_null(r);
    assert_string_equal(dq_redis_where(r), sock);
    assert_int_equal(dq_redis_set_nx(r, "deployq:test:unix", "1", 10), 1);
    dq_redis_free(r);
    dq_test_redis_stop(pid);
    dq_test_rm_rf(dir);
}

int main(void)
{
    /* A write to a connection the server closed must be an error, not a dead process. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_nx_and_get, start, stop),
        cmocka_unit_test_setup_teardown(test_error_reply_is_a_reply, start, stop),
        cmocka_unit_test_setup_teardown(test_commandv_binary_safe, start, stop),
        cmocka_unit_test_setup_teardown(test_select_db, start, stop),
        cmocka_unit_test_setup_teardown(test_reconnect_after_restart, start, stop),
        cmocka_unit_test(test_password_and_acl_user),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_unix_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
