/*
 * testredis.h - the fixture of the unit tests that talk to Redis (lock, runlease,
 * runrecord): a redis-server of the test's own on a free port and one connection to it.
 * Use dq_test_redis_setup/teardown as cmocka's group setup and teardown; the state is a
 * dq_test_redis_fixture.
 */
#ifndef DQ_TESTREDIS_H
#define DQ_TESTREDIS_H

#include "redis.h"
#include "testutil.h"

typedef struct dq_test_redis_fixture {
    int port;
    pid_t pid;
    char url[64]; /* redis://127.0.0.1:<port> */
    dq_redis *r;
} dq_test_redis_fixture;

static inline int dq_test_redis_setup(void **state)
{
    dq_test_redis_fixture *f = calloc(1, sizeof *f);
    char err[256];

    if (!f || dq_test_redis_start(&f->port, &f->pid) != 0)
        return -1;
    snprintf(f->url, sizeof f->url, "redis://127.0.0.1:%d", f->port);
    f->r = dq_redis_connect(f->url, 2000, err, sizeof err);
    if (!f->r)
        return -1;
    *state = f;
    return 0;
}

static inline int dq_test_redis_teardown(void **state)
{
    dq_test_redis_fixture *f = *state;

    dq_redis_free(f->r);
    dq_test_redis_stop(f->pid);
    free(f);
    return 0;
}

#endif
