/*
 * lockbench.c - N fenced lock acquire+release pairs (common/clients/lock.h) against one
 * Redis, timed; tests/bench/lock.sh runs it next to `redis-benchmark -c 1 -t set`.
 *
 * Each pair is what an executor does per deploy: dq_lock_pool_try() from the process's
 * pool (the lease and its fence, held by the pool's renewal thread) then dq_lock_release()
 * (compare-and-delete). One client, one pair at a time, like redis-benchmark -c 1.
 * With "fresh" as a third argument each pair uses dq_lock_try() instead (a pool of its
 * own: a new connection and renewal thread per lock, as before pools existed). Prints one line: "pairs N seconds S ops/s R"
 * where ops/s counts pairs. Built by meson, never run as a test.
 *
 * Usage: deployq-lockbench REDIS_URL N [fresh]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lock.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    char *end;
    long n;
    char err[512];
    double t0, t1;
    dq_lock_pool *pool;
    int fresh;

    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "fresh") != 0)) {
        fprintf(stderr, "usage: %s REDIS_URL N [fresh]\n", argv[0]);
        return 2;
    }
    n = strtol(argv[2], &end, 10);
    if (*end || n <= 0) {
        fprintf(stderr, "%s: N must be a positive number\n", argv[0]);
        return 2;
    }
    fresh = argc == 4;
    pool = dq_lock_pool_new(argv[1], 2000, err, sizeof err);
    if (!pool) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 1;
    }
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        dq_lock *l = NULL;
        dq_lock_status st =
            fresh ? dq_lock_try(argv[1], 2000, "bench", "production", 30000, &l, err, sizeof err)
                  : dq_lock_pool_try(pool, "bench", "production", 30000, &l, err, sizeof err);

        if (st != DQ_LOCK_TAKEN) {
            fprintf(stderr, "%s: pair %ld: lock not taken: %s\n", argv[0], i, err);
            return 1;
        }
        if (dq_lock_release(l) != 1) {
            fprintf(stderr, "%s: pair %ld: release did not delete our lease\n", argv[0], i);
            return 1;
        }
    }
    t1 = now_s();
    dq_lock_pool_free(pool);
    printf("pairs %ld seconds %.3f ops/s %.0f\n", n, (t1 - t0), n / ((t1 - t0)));
    return 0;
}
