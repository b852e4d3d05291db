/*
 * testutil.h - helpers shared by the cmocka unit tests: a free TCP port, a throwaway
 * redis-server of the test's own, temporary directories, and a one-target configuration.
 *
 * Header-only (static inline) so that each test program stays one .c file in the build.
 * Every helper returns 0 / a value on success and -1 on failure; the test asserts on it.
 */
#ifndef DQ_TESTUTIL_H
#define DQ_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"

#define DQ_TEST_REDIS_SERVER "redis-server"

/* A configuration whose one service "api" has the environment "prod" with the keys in
 * env_yaml (indented for it, from line 5 of the file named name) and an empty "plain".
 * NULL with the reason in err. */
static inline dq_config *dq_test_config_env(const char *env_yaml, const char *name, char *err,
                                            size_t errlen)
{
    char yaml[8192];

    snprintf(yaml, sizeof yaml,
             "services:\n"
             "  api:\n"
             "    environments:\n"
             "      prod:\n"
             "%s"
             "      plain: {}\n",
             env_yaml);
    return dq_config_load_string(yaml, strlen(yaml), name, err, errlen);
}

/* A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it). */
static inline int dq_test_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof sa;
    int port = -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &salen) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static inline void dq_test_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Stop a server started below: SIGTERM, then SIGKILL if it has not exited in 5 s. */
static inline void dq_test_redis_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        dq_test_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Start redis-server on 127.0.0.1:port (no persistence, output to /dev/null) with extra
 * arguments (NULL-terminated, may be NULL), and wait until it answers PING: any reply,
 * NOAUTH included, means it is serving. 0 with *pid set, or -1. */
static inline int dq_test_redis_spawn(int port, const char *const *extra, pid_t *pid)
{
    char port_s[16];
    const char *argv[32] = {DQ_TEST_REDIS_SERVER, "--port", port_s, "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--daemonize", "no"};
    size_t argc = 11;
    snprintf(port_s, sizeof port_s, "%d", port);
    for (; extra != NULL && *extra != NULL && argc + 1 < sizeof argv / sizeof argv[0]; extra++)
        argv[argc++] = *extra;
    argv[argc] = NULL;

    pid_t child = fork();
    if (child < 0)
        return -1;
    if (child == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }

    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    for (int i = 0; i < 100; i++) { /* up to about 10 s */
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        redisReply *reply = c != NULL && !c->err ? redisCommand(c, "PING") : NULL;
        redisFree(c);
        if (reply != NULL) {
            freeReplyObject(reply);
            *pid = child;
            return 0;
        }
        if (waitpid(child, NULL, WNOHANG) == child) /* exited: port taken, or no binary */
            return -1;
        dq_test_sleep_ms(100);
    }
    dq_test_redis_stop(child);
    return -1;
}

/* The same with requirepass when password is not NULL. */
static inline int dq_test_redis_start_on(int port, const char *password, pid_t *pid)
{
    const char *extra[] = {"--requirepass", password, NULL};
    return dq_test_redis_spawn(port, password != NULL ? extra : NULL, pid);
}

/* Start a password-less redis-server on a free port. */
static inline int dq_test_redis_start(int *port, pid_t *pid)
{
    *port = dq_test_free_port();
    return *port > 0 ? dq_test_redis_start_on(*port, NULL, pid) : -1;
}

/* Make a fresh directory /tmp/dq-test-XXXXXX into buf (at least 32 bytes). */
static inline int dq_test_tmpdir(char *buf, size_t len)
{
    if (len < sizeof "/tmp/dq-test-XXXXXX")
        return -1;
    memcpy(buf, "/tmp/dq-test-XXXXXX", sizeof "/tmp/dq-test-XXXXXX");
    return mkdtemp(buf) != NULL ? 0 : -1;
}

static inline int dq_test_rm_entry(const char *path, const struct stat *st, int flag,
                                   struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Remove a directory tree made by dq_test_tmpdir. */
static inline int dq_test_rm_rf(const char *dir)
{
    return nftw(dir, dq_test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
