/*
 * test_reglog_props.c - property test of the registry log's tamper evidence: thousands of
 * seeded random mutations of a ~200-record, 3-segment log (a flipped byte anywhere, a
 * payload edited with its crc recomputed so only the chain can catch it, a deleted record,
 * two swapped records, a segment cut in the middle). For every one, verify must report the
 * damage at the exact segment and offset where the log stops being valid, and opening the
 * log for writing must refuse with the same message unless verify called it a torn tail
 * (then open drops exactly the torn record).
 *
 * The seed is printed; DQ_TEST_SEED=<n> replays a run, DQ_TEST_MUTATIONS=<n> changes the
 * count (default 3000).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "reglog.h"
#include "testutil.h"
#include "util.h"

#define N_RECORDS 200
#define N_SEGS 3
#define DEFAULT_SEED 20261126u
#define DEFAULT_MUTATIONS 3000

static uint64_t rng_state;

/* xorshift64*: the same sequence on every libc, so a printed seed replays anywhere */
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static size_t rnd_below(size_t n)
{
    return (size_t)(rnd() % n);
}

typedef struct {
    int seg;
    size_t off, len;
} rec_pos;

typedef struct {
    char dir[64];
    char path[N_SEGS][256];
    unsigned char *orig[N_SEGS];
    size_t orig_len[N_SEGS];
    unsigned char *work[N_SEGS]; /* a mutated copy, large enough for any mutation */
    size_t work_len[N_SEGS];
    rec_pos rec[N_RECORDS];
    uint64_t first_seq[N_SEGS];
} world;

static void write_file(const char *path, const unsigned char *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The base log is always the same (its own fixed seed); only the mutations vary. */
static void build_world(world *w)
{
    assert_int_equal(dq_test_tmpdir(w->dir, sizeof w->dir), 0);
    dq_reglog_opts opts = {.segment_bytes = 13000};
    char err[256];
    dq_reglog *log = dq_reglog_open(w->dir, 0, &opts, err, sizeof err);
    assert_non_null(log);
    uint64_t saved = rng_state;
    rng_state = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < N_RECORDS; i++) {
        unsigned char payload[200];
        size_t len = 20 + rnd_below(170);
        for (size_t j = 0; j < len; j++)
            payload[j] = (unsigned char)(' ' + rnd_below(95));
        int64_t offset = 1000 + 3 * i + (int64_t)rnd_below(3); /* rising, with gaps */
        assert_int_equal(dq_reglog_append(log, offset, payload, len), DQ_REGLOG_OK);
        if (i % 10 == 9)
            assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
    }
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
    dq_reglog_close(log);
    rng_state = saved;

    /* index the records from the files: 3 segments named after their first sequence */
    int r = 0;
    for (int s = 0; s < N_SEGS; s++) {
        w->first_seq[s] = (uint64_t)r;
        snprintf(w->path[s], sizeof w->path[s], "%s/p0/%020d.seg", w->dir, r);
        char *buf = dq_read_file(w->path[s], 1 << 20, &w->orig_len[s]);
        assert_non_null(buf);
        w->orig[s] = (unsigned char *)buf;
        w->work[s] = malloc(w->orig_len[s] + 4096);
        assert_non_null(w->work[s]);
        for (size_t off = 0; off < w->orig_len[s]; r++) {
            assert_true(r < N_RECORDS);
            w->rec[r].seg = s;
            w->rec[r].off = off;
            w->rec[r].len = DQ_REGLOG_OVERHEAD + le32(w->orig[s] + off + 4);
            off += w->rec[r].len;
        }
    }
    assert_int_equal(r, N_RECORDS);
    char extra[300];
    snprintf(extra, sizeof extra, "%s/p0/%020d.seg", w->dir, r);
    assert_int_equal(access(extra, F_OK), -1); /* exactly three segments */
}

static void restore(world *w)
{
    for (int s = 0; s < N_SEGS; s++) {
        memcpy(w->work[s], w->orig[s], w->orig_len[s]);
        w->work_len[s] = w->orig_len[s];
    }
}

static void put_files(const world *w)
{
    for (int s = 0; s < N_SEGS; s++)
        write_file(w->path[s], w->work[s], w->work_len[s]);
}

/* Remove bytes [off, off+n) of segment s in the work copy. */
static void cut_bytes(world *w, int s, size_t off, size_t n)
{
    memmove(w->work[s] + off, w->work[s] + off + n, w->work_len[s] - off - n);
    w->work_len[s] -= n;
}

/* Where verify must stop: segment s at offset off (record number recno there). */
typedef struct {
    int seg;
    size_t off;
    int torn_ok; /* a torn tail is what this mutation looks like */
    int torn_rec;
    char what[128];
} expect;

static void mutate(world *w, expect *e)
{
    const int last = N_RECORDS - 1;
    int kind = (int)rnd_below(5);
    e->torn_ok = 0;
    if (kind == 0) { /* flip one bit of one byte anywhere, the tail record included */
        int r = (int)rnd_below(N_RECORDS);
        size_t at = rnd_below(w->rec[r].len);
        unsigned char mask = (unsigned char)(1u << rnd_below(8));
        w->work[w->rec[r].seg][w->rec[r].off + at] ^= mask;
        e->seg = w->rec[r].seg;
        e->off = w->rec[r].off;
        e->torn_ok = r == last;
        e->torn_rec = r;
        snprintf(e->what, sizeof e->what, "flip byte %zu of record %d with 0x%02x", at, r, mask);
    } else if (kind == 1) { /* edit a payload and recompute its crc: only the chain sees it */
        int r = (int)rnd_below(last);
        unsigned char *p = w->work[w->rec[r].seg] + w->rec[r].off;
        size_t plen = w->rec[r].len - DQ_REGLOG_OVERHEAD;
        size_t at = rnd_below(plen);
        p[DQ_REGLOG_HEADER_LEN + at] ^= (unsigned char)(1 + rnd_below(255));
        uint32_t crc = dq_reglog_crc32c(p, w->rec[r].len - 4);
        for (int i = 0; i < 4; i++)
            p[w->rec[r].len - 4 + (size_t)i] = (unsigned char)(crc >> (8 * i));
        e->seg = w->rec[r + 1].seg;
        e->off = w->rec[r + 1].off;
        snprintf(e->what, sizeof e->what, "edit payload byte %zu of record %d, crc recomputed", at,
                 r);
    } else if (kind == 2) { /* delete a record (not the tail: a shorter valid log) */
        int r = (int)rnd_below(last);
        cut_bytes(w, w->rec[r].seg, w->rec[r].off, w->rec[r].len);
        /* the last record of a segment: the next segment's name no longer fits the chain */
        int at_end = w->rec[r + 1].seg != w->rec[r].seg;
        e->seg = at_end ? w->rec[r + 1].seg : w->rec[r].seg;
        e->off = at_end ? 0 : w->rec[r].off;
        snprintf(e->what, sizeof e->what, "delete record %d", r);
    } else if (kind == 3) { /* swap two records, possibly across segments */
        int a = (int)rnd_below(N_RECORDS), b;
        do
            b = (int)rnd_below(N_RECORDS);
        while (b == a);
        if (a > b) {
            int t = a;
            a = b;
            b = t;
        }
        const rec_pos ra = w->rec[a], rb = w->rec[b];
        unsigned char tmp_a[300], tmp_b[300];
        memcpy(tmp_a, w->orig[ra.seg] + ra.off, ra.len);
        memcpy(tmp_b, w->orig[rb.seg] + rb.off, rb.len);
        /* rebuild both segments from the original with b in a's slot and a in b's */
        for (int s = 0; s < N_SEGS; s++) {
            if (s != ra.seg && s != rb.seg)
                continue;
            size_t out = 0;
            for (int r = 0; r < N_RECORDS; r++) {
                if (w->rec[r].seg != s)
                    continue;
                const unsigned char *src = w->orig[s] + w->rec[r].off;
                size_t len = w->rec[r].len;
                if (r == a) {
                    src = tmp_b;
                    len = rb.len;
                } else if (r == b) {
                    src = tmp_a;
                    len = ra.len;
                }
                memcpy(w->work[s] + out, src, len);
                out += len;
            }
            w->work_len[s] = out;
        }
        e->seg = ra.seg;
        e->off = ra.off;
        snprintf(e->what, sizeof e->what, "swap records %d and %d", a, b);
    } else {
        /* cut a segment short: anywhere in an older one, off a record boundary in the newest */
        int s = (int)rnd_below(N_SEGS);
        size_t at;
        int r;
        for (;;) {
            at = rnd_below(w->orig_len[s]);
            for (r = 0; r < N_RECORDS; r++)
                if (w->rec[r].seg == s && at >= w->rec[r].off && at < w->rec[r].off + w->rec[r].len)
                    break;
            if (s < N_SEGS - 1 || at != w->rec[r].off)
                break;
        }
        w->work_len[s] = at;
        if (at == w->rec[r].off) { /* a clean end: the next segment's name gives it away */
            e->seg = s + 1;
            e->off = 0;
        } else {
            e->seg = s;
            e->off = w->rec[r].off;
            e->torn_ok = s == N_SEGS - 1;
            e->torn_rec = r;
        }
        snprintf(e->what, sizeof e->what, "truncate segment %d at %zu (inside record %d)", s, at,
                 r);
    }
}

static int teardown(void **state)
{
    world *w = *state;
    if (w == NULL)
        return 0;
    for (int s = 0; s < N_SEGS; s++) {
        free(w->orig[s]);
        free(w->work[s]);
    }
    if (w->dir[0] != '\0')
        dq_test_rm_rf(w->dir);
    free(w);
    return 0;
}

static void test_every_mutation_is_reported(void **state)
{
    uint64_t seed = DEFAULT_SEED;
    long long n_mut = DEFAULT_MUTATIONS, v;
    const char *env = getenv("DQ_TEST_SEED");
    if (env != NULL && dq_parse_int(env, 1, INT64_MAX, &v) == 0)
        seed = (uint64_t)v;
    env = getenv("DQ_TEST_MUTATIONS");
    if (env != NULL && dq_parse_int(env, 1, 10000000, &v) == 0)
        n_mut = v;
    printf("reglog_props: seed %" PRIu64 ", %lld mutations (DQ_TEST_SEED=<n> replays)\n", seed,
           n_mut);
    fflush(stdout);
    rng_state = seed;

    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    *state = w; /* teardown cleans up, also after a failed assertion */
    build_world(w);

    dq_reglog_report rep;
    char err[512];
    assert_int_equal(dq_reglog_verify_dir(w->dir, &rep, err, sizeof err), 0);
    assert_int_equal(rep.records, N_RECORDS);
    dq_reglog_report_free(&rep);

    int kinds_torn = 0;
    for (long long m = 0; m < n_mut; m++) {
        restore(w);
        expect e;
        mutate(w, &e);
        put_files(w);

        char want[128];
        snprintf(want, sizeof want, "p0/%020" PRIu64 ".seg: offset %zu: ", w->first_seq[e.seg],
                 e.off);
        int rc = dq_reglog_verify_dir(w->dir, &rep, err, sizeof err);
        if (rc != 1 || strncmp(rep.first_error, want, strlen(want)) != 0) {
            print_error("seed %" PRIu64 " mutation %lld (%s): verify returned %d, \"%s\"; "
                        "wanted \"%s...\"\n",
                        seed, m, e.what, rc, rep.first_error, want);
            fail();
        }
        int torn = strstr(rep.first_error, "torn tail") != NULL;
        if (torn && !e.torn_ok) {
            print_error("seed %" PRIu64 " mutation %lld (%s): called a torn tail: %s\n", seed, m,
                        e.what, rep.first_error);
            fail();
        }
        char first_error[256];
        dq_strlcpy(first_error, rep.first_error, sizeof first_error);
        dq_reglog_report_free(&rep);

        /* opening for writing never drops a whole record: it refuses with verify's words,
         * or (torn tail) truncates exactly the torn record. Checked on every 10th. */
        if (m % 10 != 0 && !torn)
            continue;
        dq_reglog *log = dq_reglog_open(w->dir, 0, NULL, err, sizeof err);
        if (torn) {
            kinds_torn++;
            assert_non_null(log);
            assert_int_equal(dq_reglog_count(log), (uint64_t)e.torn_rec);
        } else if (log != NULL || strcmp(err, first_error) != 0) {
            print_error("seed %" PRIu64 " mutation %lld (%s): open gave \"%s\", wanted \"%s\"\n",
                        seed, m, e.what, log != NULL ? "success" : err, first_error);
            fail();
        }
        dq_reglog_close(log);
    }
    assert_true(kinds_torn > 0);

    restore(w);
    put_files(w);
    assert_int_equal(dq_reglog_verify_dir(w->dir, &rep, err, sizeof err), 0);
    assert_int_equal(rep.records, N_RECORDS);
    dq_reglog_report_free(&rep);
}

int main(void)
{
    /* the torn tails this test makes are expected: keep their warnings out of the output */
    dq_log_init("test_reglog_props", DQ_LOG_ERROR, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_every_mutation_is_reported, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
