/*
 * test_reglog.c - reglog.h, the registry's hash-chained log: the byte layout, group commit
 * and resuming from the log's last Kafka offset, refusal of duplicate and out-of-order
 * offsets, segment rolls that keep the chain, torn-tail recovery at every byte of the last
 * record, refusal to open on corruption before the tail (with its exact position), verify,
 * replay, one writer per partition, the failed handle after an I/O error, the record hash
 * the iterator hands out, and signed checkpoints (made, matched, and broken by a rewrite
 * or a cut).
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

#include "json.h"
#include "log.h"
#include "reglog.h"
#include "testutil.h"
#include "util.h"

#define SEG0 "00000000000000000000.seg"

typedef struct {
    char dir[64];
    char err[512];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL || dq_test_tmpdir(f->dir, sizeof f->dir) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    dq_test_rm_rf(f->dir);
    free(f);
    return 0;
}

static void seg_path(const fixture *f, int32_t partition, uint64_t seq, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/p%" PRId32 "/%020" PRIu64 ".seg", f->dir, partition, seq);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    char *buf = dq_read_file(path, 1 << 26, len);
    assert_non_null(buf);
    return (unsigned char *)buf;
}

static void write_all(const char *path, const unsigned char *buf, size_t len)
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

static uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Append records with offsets first..first+n-1 and payload "event-<offset>", one commit. */
static void append_range(dq_reglog *log, int64_t first, int n)
{
    for (int i = 0; i < n; i++) {
        char payload[32];
        int len = snprintf(payload, sizeof payload, "event-%" PRId64, first + i);
        assert_int_equal(dq_reglog_append(log, first + i, payload, (size_t)len), DQ_REGLOG_OK);
    }
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
}

static void test_crc32c_standard(void **state)
{
    (void)state;
    assert_int_equal(dq_reglog_crc32c("123456789", 9), 0xe3069283u);
    assert_int_equal(dq_reglog_crc32c("", 0), 0);
    unsigned char zeros[32] = {0};
    assert_int_equal(dq_reglog_crc32c(zeros, sizeof zeros), 0x8a9136aau); /* RFC 3720 B.4 */
}

static void test_layout_commit_reopen(void **state)
{
    fixture *f = *state;
    dq_reglog *log = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
    assert_non_null(log);
    unsigned char head[32], zeros[32] = {0};
    assert_int_equal(dq_reglog_last_offset(log), -1);
    assert_int_equal(dq_reglog_count(log), 0);
    dq_reglog_head_hash(log, head);
    assert_memory_equal(head, zeros, 32);

    assert_int_equal(dq_reglog_append(log, 10, "alpha", 5), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_append(log, 11, "", 0), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_append(log, 15, "gamma!", 6), DQ_REGLOG_OK);
    /* nothing is durable, or counted as such, before the commit */
    assert_int_equal(dq_reglog_pending(log), 3);
    assert_int_equal(dq_reglog_count(log), 0);
    assert_int_equal(dq_reglog_last_offset(log), -1);
    char path[256];
    seg_path(f, 0, 0, path, sizeof path);
    assert_int_equal(file_size(path), 0);

    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_pending(log), 0);
    assert_int_equal(dq_reglog_count(log), 3);
    assert_int_equal(dq_reglog_last_offset(log), 15);
    assert_int_equal(file_size(path), 3 * 64 + 5 + 0 + 6);

    /* the byte layout of docs/registry-format.md */
    size_t len;
    unsigned char *b = read_all(path, &len);
    assert_memory_equal(b, "DQR1", 4);
    assert_int_equal(le32(b + 4), 5);
    assert_int_equal(le64(b + 8), 0);
    assert_int_equal(le32(b + 16), 0);
    assert_int_equal(le64(b + 20), 10);
    assert_memory_equal(b + 28, zeros, 32);
    assert_memory_equal(b + 60, "alpha", 5);
    assert_int_equal(le32(b + 65), dq_reglog_crc32c(b, 65));
    unsigned char *r1 = b + 69;
    assert_memory_equal(r1, "DQR1", 4);
    assert_int_equal(le32(r1 + 4), 0);
    assert_int_equal(le64(r1 + 8), 1);
    assert_int_equal(le64(r1 + 20), 11);
    unsigned char h0[32], h1[32], h2[32];
    dq_sha256(b, 69, h0);
    assert_memory_equal(r1 + 28, h0, 32);
    unsigned char *r2 = r1 + 64;
    assert_int_equal(le64(r2 + 8), 2);
    assert_int_equal(le64(r2 + 20), 15);
    dq_sha256(r1, 64, h1);
    assert_memory_equal(r2 + 28, h1, 32);
    dq_sha256(r2, 70, h2);
    dq_reglog_head_hash(log, head);
    assert_memory_equal(head, h2, 32);
    free(b);
    dq_reglog_close(log);

    /* a restart resumes exactly where the file ends */
    log = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
    assert_non_null(log);
    assert_int_equal(dq_reglog_last_offset(log), 15);
    assert_int_equal(dq_reglog_count(log), 3);
    dq_reglog_head_hash(log, head);
    assert_memory_equal(head, h2, 32);
    assert_int_equal(dq_reglog_append(log, 15, "again", 5), DQ_REGLOG_EOFFSET);
    assert_int_equal(dq_reglog_append(log, 16, "delta", 5), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_count(log), 4);
    dq_reglog_close(log);

    /* replay returns every record with its partition, offset and sequence */
    dq_reglog_iter *it = dq_reglog_iter_open(f->dir, f->err, sizeof f->err);
    assert_non_null(it);
    const int64_t offsets[] = {10, 11, 15, 16};
    const char *payloads[] = {"alpha", "", "gamma!", "delta"};
    dq_reglog_entry e;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(dq_reglog_iter_next(it, &e, f->err, sizeof f->err), 1);
        assert_int_equal(e.partition, 0);
        assert_int_equal(e.seq, (uint64_t)i);
        assert_int_equal(e.kafka_offset, offsets[i]);
        assert_int_equal(e.len, strlen(payloads[i]));
        assert_memory_equal(e.payload, payloads[i], e.len);
    }
    assert_int_equal(dq_reglog_iter_next(it, &e, f->err, sizeof f->err), 0);
    dq_reglog_iter_close(it);

    dq_reglog_report rep;
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 0);
    assert_int_equal(rep.n_partitions, 1);
    assert_int_equal(rep.records, 4);
    assert_int_equal(rep.errors, 0);
    assert_string_equal(rep.first_error, "");
    assert_int_equal(rep.partitions[0].records, 4);
    assert_int_equal(rep.partitions[0].ok, 1);
    dq_reglog_report_free(&rep);
}

/* Deploy history and command-output tails are the owner's: directories 0700 and segments
 * 0600 whatever the umask (a umask of 022 gave 0755 and 0644). */
static void test_private_modes(void **state)
{
    fixture *f = *state;
    char root[128], path[256];
    struct stat st;
    mode_t old = umask(022);

    snprintf(root, sizeof root, "%s/reg", f->dir);
    dq_reglog *log = dq_reglog_open(root, 3, NULL, f->err, sizeof f->err);
    assert_non_null(log);
    assert_int_equal(dq_reglog_append(log, 0, "x", 1), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
    dq_reglog_close(log);
    umask(old);
    assert_int_equal(stat(root, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    snprintf(path, sizeof path, "%s/p3", root);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    snprintf(path, sizeof path, "%s/p3/" SEG0, root);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
}

static void test_offsets_refused(void **state)
{
    fixture *f = *state;
    dq_reglog *log = dq_reglog_open(f->dir, 2, NULL, f->err, sizeof f->err);
    assert_non_null(log);
    assert_int_equal(dq_reglog_append(log, 5, "a", 1), DQ_REGLOG_OK);
    /* refused against the buffered group as well as against the durable log */
    assert_int_equal(dq_reglog_append(log, 5, "a", 1), DQ_REGLOG_EOFFSET);
    assert_string_equal(dq_reglog_errstr(log),
                        "kafka offset 5 is not above 5, the last in the log: "
                        "duplicate or out of order, refused");
    assert_int_equal(dq_reglog_append(log, 4, "b", 1), DQ_REGLOG_EOFFSET);
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_append(log, 5, "a", 1), DQ_REGLOG_EOFFSET);
    assert_int_equal(dq_reglog_append(log, 0, "a", 1), DQ_REGLOG_EOFFSET);
    assert_int_equal(dq_reglog_append(log, -1, "a", 1), DQ_REGLOG_EINVAL);
    assert_int_equal(dq_reglog_append(log, 9, NULL, 3), DQ_REGLOG_EINVAL);
    assert_int_equal(dq_reglog_append(log, 9, "x", DQ_REGLOG_MAX_PAYLOAD + 1), DQ_REGLOG_EINVAL);
    /* the refusals changed nothing and the handle is still usable; gaps are fine */
    assert_int_equal(dq_reglog_pending(log), 0);
    assert_int_equal(dq_reglog_append(log, 9, "c", 1), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_count(log), 2);
    assert_int_equal(dq_reglog_last_offset(log), 9);
    dq_reglog_close(log);

    dq_reglog_report rep;
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 0);
    assert_int_equal(rep.n_partitions, 1);
    assert_int_equal(rep.partitions[0].partition, 2);
    assert_int_equal(rep.records, 2);
    dq_reglog_report_free(&rep);
}

static void test_segment_roll(void **state)
{
    fixture *f = *state;
    /* payload "event-1NN" is 9 bytes: a record is 73 bytes, two fit in 150, three do not */
    dq_reglog_opts opts = {.segment_bytes = 150};
    dq_reglog *log = dq_reglog_open(f->dir, 0, &opts, f->err, sizeof f->err);
    assert_non_null(log);
    append_range(log, 100, 4);
    append_range(log, 104, 3);
    unsigned char head[32];
    dq_reglog_head_hash(log, head);
    dq_reglog_close(log);

    char path[256];
    const uint64_t firsts[] = {0, 2, 4, 6};
    const long sizes[] = {146, 146, 146, 73};
    for (int i = 0; i < 4; i++) {
        seg_path(f, 0, firsts[i], path, sizeof path);
        assert_int_equal(file_size(path), sizes[i]);
    }
    seg_path(f, 0, 8, path, sizeof path);
    assert_int_equal(file_size(path), -1);

    /* the chain crosses segments: record 2's prev hash is record 1's hash */
    size_t len;
    seg_path(f, 0, 0, path, sizeof path);
    unsigned char *s0 = read_all(path, &len);
    seg_path(f, 0, 2, path, sizeof path);
    unsigned char *s1 = read_all(path, &len);
    unsigned char h1[32];
    dq_sha256(s0 + 73, 73, h1);
    assert_memory_equal(s1 + 28, h1, 32);
    free(s0);
    free(s1);

    /* a tail-only open finds the same head; new records continue the newest segment */
    opts.tail_only = 1;
    log = dq_reglog_open(f->dir, 0, &opts, f->err, sizeof f->err);
    assert_non_null(log);
    unsigned char head2[32];
    dq_reglog_head_hash(log, head2);
    assert_memory_equal(head, head2, 32);
    assert_int_equal(dq_reglog_count(log), 7);
    assert_int_equal(dq_reglog_last_offset(log), 106);
    append_range(log, 107, 2);
    dq_reglog_close(log);
    seg_path(f, 0, 6, path, sizeof path);
    assert_int_equal(file_size(path), 146);
    seg_path(f, 0, 8, path, sizeof path);
    assert_int_equal(file_size(path), 73);

    dq_reglog_report rep;
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 0);
    assert_int_equal(rep.records, 9);
    dq_reglog_report_free(&rep);

    dq_reglog_iter *it = dq_reglog_iter_open(f->dir, f->err, sizeof f->err);
    assert_non_null(it);
    dq_reglog_entry e;
    for (uint64_t i = 0; i < 9; i++) {
        assert_int_equal(dq_reglog_iter_next(it, &e, f->err, sizeof f->err), 1);
        assert_int_equal(e.seq, i);
        assert_int_equal(e.kafka_offset, 100 + (int64_t)i);
    }
    assert_int_equal(dq_reglog_iter_next(it, &e, f->err, sizeof f->err), 0);
    dq_reglog_iter_close(it);

    /* a record larger than the limit gets a segment of its own */
    opts.tail_only = 0;
    log = dq_reglog_open(f->dir, 0, &opts, f->err, sizeof f->err);
    assert_non_null(log);
    char big[400];
    memset(big, 'x', sizeof big);
    assert_int_equal(dq_reglog_append(log, 200, big, sizeof big), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_append(log, 201, "y", 1), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
    dq_reglog_close(log);
    seg_path(f, 0, 9, path, sizeof path);
    assert_int_equal(file_size(path), 464);
    seg_path(f, 0, 10, path, sizeof path);
    assert_int_equal(file_size(path), 65);
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 0);
    assert_int_equal(rep.records, 11);
    dq_reglog_report_free(&rep);
}

/* Cut the last record at every byte: open keeps every whole record, drops the torn one, and
 * the reopened log takes new appends with an intact chain. */
static void test_torn_tail_every_offset(void **state)
{
    fixture *f = *state;
    dq_reglog *log = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
    assert_non_null(log);
    append_range(log, 0, 4);
    assert_int_equal(dq_reglog_append(log, 4, "the last event, torn", 20), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
    dq_reglog_close(log);

    char path[256];
    seg_path(f, 0, 0, path, sizeof path);
    size_t full_len;
    unsigned char *full = read_all(path, &full_len);
    const size_t last = 4 * (64 + 7); /* "event-N" is 7 bytes */
    assert_int_equal(full_len, last + 64 + 20);
    unsigned char head3[32];
    dq_sha256(full + 3 * 71, 71, head3);

    for (size_t cut = last; cut < full_len; cut++) {
        write_all(path, full, cut);
        dq_reglog_report rep;
        if (cut > last) {
            /* verify is read-only and calls it a torn tail */
            assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 1);
            char want[200];
            size_t have = cut - last;
            if (have < 8)
                snprintf(want, sizeof want,
                         "p0/" SEG0 ": offset %zu: torn tail: record 4 cut short: "
                         "%zu bytes of a header",
                         last, have);
            else
                snprintf(want, sizeof want,
                         "p0/" SEG0 ": offset %zu: torn tail: record 4 cut short: %zu of 84 bytes",
                         last, have);
            assert_string_equal(rep.first_error, want);
            assert_int_equal(rep.partitions[0].records, 4);
            dq_reglog_report_free(&rep);
            assert_int_equal(file_size(path), (long)cut);
        }

        log = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
        assert_non_null(log);
        assert_int_equal(file_size(path), (long)last);
        assert_int_equal(dq_reglog_count(log), 4);
        assert_int_equal(dq_reglog_last_offset(log), 3);
        unsigned char head[32];
        dq_reglog_head_hash(log, head);
        assert_memory_equal(head, head3, 32);
        assert_int_equal(dq_reglog_append(log, 4, "redelivered", 11), DQ_REGLOG_OK);
        assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
        dq_reglog_close(log);

        assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 0);
        assert_int_equal(rep.records, 5);
        dq_reglog_report_free(&rep);
        size_t len;
        unsigned char *now = read_all(path, &len);
        assert_int_equal(len, last + 64 + 11);
        assert_memory_equal(now, full, last);
        assert_memory_equal(now + last + 28, head3, 32);
        free(now);
    }

    /* a tail the file system extended with zeros (size updated, data lost) is torn too */
    unsigned char *zeroed = calloc(1, full_len);
    assert_non_null(zeroed);
    memcpy(zeroed, full, last);
    write_all(path, zeroed, full_len);
    log = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
    assert_non_null(log);
    assert_int_equal(dq_reglog_count(log), 4);
    assert_int_equal(file_size(path), (long)last);
    dq_reglog_close(log);
    free(zeroed);
    free(full);
}

static void test_corruption_refused(void **state)
{
    fixture *f = *state;
    dq_reglog *log = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
    assert_non_null(log);
    append_range(log, 0, 10);  /* "event-N": 71-byte records */
    append_range(log, 10, 15); /* "event-NN": 72-byte records */
    dq_reglog_close(log);

    char path[256];
    seg_path(f, 0, 0, path, sizeof path);
    size_t len;
    unsigned char *orig = read_all(path, &len);
    unsigned char *bad = malloc(len);
    assert_non_null(bad);
    const size_t off17 = 10 * 71 + 7 * 72;

    /* a flipped payload byte in record 17 of 25 */
    memcpy(bad, orig, len);
    bad[off17 + 62] ^= 0x01;
    write_all(path, bad, len);
    log = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
    assert_null(log);
    char want[200];
    snprintf(want, sizeof want, "p0/" SEG0 ": offset %zu: crc mismatch (record 17)", off17);
    assert_string_equal(f->err, want);
    assert_int_equal(file_size(path), (long)len); /* never truncated past corruption */
    dq_reglog_report rep;
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 1);
    assert_string_equal(rep.first_error, want);
    assert_int_equal(rep.partitions[0].records, 17);
    dq_reglog_report_free(&rep);

    /* a length field made larger than the rest of the file, before whole records */
    memcpy(bad, orig, len);
    bad[off17 + 5] = 0x10;
    write_all(path, bad, len);
    assert_null(dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err));
    snprintf(want, sizeof want, "p0/" SEG0 ": offset %zu: record 17 cut short: %zu of %d bytes",
             off17, len - off17, 64 + 0x1008);
    assert_string_equal(f->err, want);

    /* a payload rewritten with a matching crc: only the chain catches it */
    memcpy(bad, orig, len);
    memcpy(bad + off17 + 60, "EVENT-17", 8);
    uint32_t crc = dq_reglog_crc32c(bad + off17, 68);
    for (int i = 0; i < 4; i++)
        bad[off17 + 68 + i] = (unsigned char)(crc >> (8 * i));
    write_all(path, bad, len);
    assert_null(dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err));
    snprintf(want, sizeof want,
             "p0/" SEG0 ": offset %zu: prev hash does not match the previous record: "
             "chain broken (record 18)",
             off17 + 72);
    assert_string_equal(f->err, want);

    /* replay stops at the same place */
    dq_reglog_iter *it = dq_reglog_iter_open(f->dir, f->err, sizeof f->err);
    assert_non_null(it);
    dq_reglog_entry e;
    int n = 0, rc;
    while ((rc = dq_reglog_iter_next(it, &e, f->err, sizeof f->err)) == 1)
        n++;
    assert_int_equal(rc, -1);
    assert_int_equal(n, 18);
    assert_string_equal(f->err, want);
    dq_reglog_iter_close(it);

    write_all(path, orig, len);
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 0);
    dq_reglog_report_free(&rep);
    free(bad);
    free(orig);
}

static void test_corruption_in_old_segment(void **state)
{
    fixture *f = *state;
    dq_reglog_opts opts = {.segment_bytes = 150};
    dq_reglog *log = dq_reglog_open(f->dir, 1, &opts, f->err, sizeof f->err);
    assert_non_null(log);
    append_range(log, 100, 6); /* 73-byte records, two per segment */
    dq_reglog_close(log);

    char path[256];
    seg_path(f, 1, 2, path, sizeof path);
    size_t len;
    unsigned char *orig = read_all(path, &len);
    orig[0] = 'X';
    write_all(path, orig, len);
    assert_null(dq_reglog_open(f->dir, 1, &opts, f->err, sizeof f->err));
    assert_string_equal(f->err, "p1/00000000000000000002.seg: offset 0: bad magic (record 2)");
    orig[0] = 'D';
    write_all(path, orig, len);
    free(orig);

    /* a deleted middle segment breaks the sequence at the next one */
    assert_int_equal(unlink(path), 0);
    dq_reglog_report rep;
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 1);
    const char *want = "p1/00000000000000000004.seg: offset 0: "
                       "segment named for sequence 4 but the chain is at 2";
    assert_string_equal(rep.first_error, want);
    dq_reglog_report_free(&rep);
    assert_null(dq_reglog_open(f->dir, 1, &opts, f->err, sizeof f->err));
    assert_string_equal(f->err, want);
}

static void test_verify_partitions(void **state)
{
    fixture *f = *state;
    dq_reglog_report rep;
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 0);
    assert_int_equal(rep.n_partitions, 0);
    dq_reglog_report_free(&rep);

    dq_reglog *a = dq_reglog_open(f->dir, 3, NULL, f->err, sizeof f->err);
    dq_reglog *b = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
    assert_non_null(a);
    assert_non_null(b);
    append_range(a, 50, 3);
    append_range(b, 7, 2);
    unsigned char head_a[32];
    dq_reglog_head_hash(a, head_a);
    dq_reglog_close(a);
    dq_reglog_close(b);

    /* a record copied from another partition is caught by its partition field */
    char p0[256], p3[256];
    seg_path(f, 0, 0, p0, sizeof p0);
    seg_path(f, 3, 0, p3, sizeof p3);
    size_t len0, len3;
    unsigned char *s0 = read_all(p0, &len0);
    unsigned char *s3 = read_all(p3, &len3);
    write_all(p0, s3, len3);
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 1);
    assert_int_equal(rep.n_partitions, 2);
    assert_int_equal(rep.partitions[0].partition, 0);
    assert_int_equal(rep.partitions[0].ok, 0);
    assert_int_equal(rep.partitions[0].records, 0);
    assert_string_equal(rep.partitions[0].error,
                        "p0/" SEG0 ": offset 0: partition field 3, expected 0 (record 0)");
    assert_int_equal(rep.partitions[1].partition, 3);
    assert_int_equal(rep.partitions[1].ok, 1);
    assert_int_equal(rep.partitions[1].records, 3);
    assert_memory_equal(rep.partitions[1].head_hash, head_a, 32);
    assert_int_equal(rep.errors, 1);
    assert_string_equal(rep.first_error, rep.partitions[0].error);
    dq_reglog_report_free(&rep);

    write_all(p0, s0, len0);
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 0);
    assert_int_equal(rep.records, 5);
    dq_reglog_report_free(&rep);

    /* replay: partitions ascending */
    dq_reglog_iter *it = dq_reglog_iter_open(f->dir, f->err, sizeof f->err);
    assert_non_null(it);
    dq_reglog_entry e;
    const int32_t parts[] = {0, 0, 3, 3, 3};
    const int64_t offs[] = {7, 8, 50, 51, 52};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(dq_reglog_iter_next(it, &e, f->err, sizeof f->err), 1);
        assert_int_equal(e.partition, parts[i]);
        assert_int_equal(e.kafka_offset, offs[i]);
    }
    assert_int_equal(dq_reglog_iter_next(it, &e, f->err, sizeof f->err), 0);
    dq_reglog_iter_close(it);
    free(s0);
    free(s3);

    char missing[128];
    snprintf(missing, sizeof missing, "%s/nope", f->dir);
    assert_int_equal(dq_reglog_verify_dir(missing, &rep, f->err, sizeof f->err), -1);
    dq_reglog_report_free(&rep);
    assert_null(dq_reglog_iter_open(missing, f->err, sizeof f->err));
}

static void test_one_writer(void **state)
{
    fixture *f = *state;
    dq_reglog *a = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
    assert_non_null(a);
    assert_null(dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err));
    char want[128];
    snprintf(want, sizeof want, "%s/p0: another writer holds this partition", f->dir);
    assert_string_equal(f->err, want);
    dq_reglog_close(a);
    a = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
    assert_non_null(a);
    dq_reglog_close(a);
    dq_reglog_close(NULL);
    dq_reglog_iter_close(NULL);
    dq_reglog_report_free(NULL);
}

/* A write error fails the handle for good: no retry, every later call errors. /dev/full
 * stands in for a disk that refuses the group. */
static void test_io_failure_is_fatal(void **state)
{
    fixture *f = *state;
    char pdir[128], path[256];
    snprintf(pdir, sizeof pdir, "%s/p0", f->dir);
    assert_int_equal(mkdir(pdir, 0755), 0);
    seg_path(f, 0, 0, path, sizeof path);
    assert_int_equal(symlink("/dev/full", path), 0);

    dq_reglog *log = dq_reglog_open(f->dir, 0, NULL, f->err, sizeof f->err);
    assert_non_null(log);
    assert_int_equal(dq_reglog_append(log, 1, "x", 1), DQ_REGLOG_OK);
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_EIO);
    const char *want = "write p0/" SEG0 ": No space left on device; "
                       "the registry log is failed: exit and restart to recover";
    assert_string_equal(dq_reglog_errstr(log), want);
    assert_int_equal(dq_reglog_count(log), 0);
    assert_int_equal(dq_reglog_last_offset(log), -1);
    assert_int_equal(dq_reglog_append(log, 2, "y", 1), DQ_REGLOG_EFAILED);
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_EFAILED);
    /* the reason stays the failure that caused it */
    assert_string_equal(dq_reglog_errstr(log), want);
    dq_reglog_close(log);
}

/* Every entry carries its record's hash: the SHA-256 of the record's bytes on disk, the
 * prev hash of the record after it (across segments), and the head after the last. */
static void test_entry_hash(void **state)
{
    fixture *f = *state;
    dq_reglog_opts opts = {.segment_bytes = 150}; /* two records a segment */
    dq_reglog *a = dq_reglog_open(f->dir, 0, &opts, f->err, sizeof f->err);
    dq_reglog *b = dq_reglog_open(f->dir, 2, &opts, f->err, sizeof f->err);
    assert_non_null(a);
    assert_non_null(b);
    append_range(a, 100, 5);
    append_range(b, 200, 2);
    unsigned char head_a[32], head_b[32];
    dq_reglog_head_hash(a, head_a);
    dq_reglog_head_hash(b, head_b);
    dq_reglog_close(a);
    dq_reglog_close(b);

    /* p0's five records as written: 73 bytes each, in segments 0, 2 and 4 */
    unsigned char disk[5 * 73];
    size_t have = 0;
    const uint64_t firsts[] = {0, 2, 4};
    for (int i = 0; i < 3; i++) {
        char path[256];
        size_t len;
        seg_path(f, 0, firsts[i], path, sizeof path);
        unsigned char *seg = read_all(path, &len);
        assert_true(have + len <= sizeof disk);
        memcpy(disk + have, seg, len);
        have += len;
        free(seg);
    }
    assert_int_equal(have, sizeof disk);

    dq_reglog_iter *it = dq_reglog_iter_open(f->dir, f->err, sizeof f->err);
    assert_non_null(it);
    dq_reglog_entry e;
    unsigned char hashes[5][32];
    for (int i = 0; i < 5; i++) {
        assert_int_equal(dq_reglog_iter_next(it, &e, f->err, sizeof f->err), 1);
        assert_int_equal(e.partition, 0);
        assert_int_equal(e.seq, (uint64_t)i);
        memcpy(hashes[i], e.hash, 32);
        unsigned char want[32];
        dq_sha256(disk + 73 * i, 73, want);
        assert_memory_equal(e.hash, want, 32);
    }
    for (int i = 0; i + 1 < 5; i++)
        assert_memory_equal(hashes[i], disk + 73 * (i + 1) + 28, 32); /* the next prev hash */
    assert_memory_equal(hashes[4], head_a, 32);
    assert_int_equal(dq_reglog_iter_next(it, &e, f->err, sizeof f->err), 1);
    assert_int_equal(e.partition, 2);
    assert_int_equal(dq_reglog_iter_next(it, &e, f->err, sizeof f->err), 1);
    assert_memory_equal(e.hash, head_b, 32);
    assert_int_equal(dq_reglog_iter_next(it, &e, f->err, sizeof f->err), 0);
    dq_reglog_iter_close(it);

    dq_reglog_report rep;
    assert_int_equal(dq_reglog_verify_dir(f->dir, &rep, f->err, sizeof f->err), 0);
    assert_memory_equal(rep.partitions[0].head_hash, hashes[4], 32);
    dq_reglog_report_free(&rep);
}

/* The checkpoint tests keep the registry in f->dir/reg and keys in f->dir/<name>.key. */
static dq_signer *cp_key(const fixture *f, const char *name, char **pub)
{
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/%s.key", f->dir, name);
    assert_int_equal(dq_sign_keygen(path, pub, err, sizeof err), 0);
    dq_signer *s = dq_signer_load(path, err, sizeof err);
    assert_non_null(s);
    return s;
}

/* Append offsets first.. with payloads "event-<offset>", record `changed` as "forged". */
static void append_forged(const char *reg, int32_t partition, int64_t first, int n, int changed)
{
    char err[512];
    dq_reglog *log = dq_reglog_open(reg, partition, NULL, err, sizeof err);
    assert_non_null(log);
    for (int i = 0; i < n; i++) {
        char payload[32];
        int len = i == changed ? snprintf(payload, sizeof payload, "forged")
                               : snprintf(payload, sizeof payload, "event-%" PRId64, first + i);
        assert_int_equal(dq_reglog_append(log, first + i, payload, (size_t)len), DQ_REGLOG_OK);
    }
    assert_int_equal(dq_reglog_commit(log), DQ_REGLOG_OK);
    dq_reglog_close(log);
}

/* Sign a checkpoint of the registry as it is now (at 0 ms), via verify's report. */
static char *cp_sign(fixture *f, const char *reg, const dq_signer *signer)
{
    dq_reglog_report rep;
    assert_int_equal(dq_reglog_verify_dir(reg, &rep, f->err, sizeof f->err), 0);
    char *doc = dq_reglog_checkpoint_sign(&rep, signer, "op-1", 0, f->err, sizeof f->err);
    assert_non_null(doc);
    dq_reglog_report_free(&rep);
    return doc;
}

static int cp_check(fixture *f, const char *reg, const char *doc, const char *pub,
                    dq_reglog_cp_result *res, dq_reglog_checkpoint **cp)
{
    *cp = dq_reglog_checkpoint_parse(doc, strlen(doc), "cp.json", f->err, sizeof f->err);
    assert_non_null(*cp);
    return dq_reglog_checkpoint_check(*cp, reg, pub, res, f->err, sizeof f->err);
}

static void test_checkpoint_sign_and_check(void **state)
{
    fixture *f = *state;
    char reg[96];
    snprintf(reg, sizeof reg, "%s/reg", f->dir);
    append_forged(reg, 0, 10, 3, -1);
    append_forged(reg, 2, 20, 2, -1);
    char *pub, *other_pub;
    dq_signer *signer = cp_key(f, "op", &pub);
    dq_signer *other = cp_key(f, "other", &other_pub);

    /* the document: the exact body, signed as it stands */
    dq_reglog_report rep;
    assert_int_equal(dq_reglog_verify_dir(reg, &rep, f->err, sizeof f->err), 0);
    char h0[65], h2[65], body_want[512];
    dq_hex(rep.partitions[0].head_hash, 32, h0);
    dq_hex(rep.partitions[1].head_hash, 32, h2);
    snprintf(body_want, sizeof body_want,
             "{\"schema\":\"deployq.checkpoint/v1\",\"at\":\"1970-01-01T00:00:00.000Z\","
             "\"records\":5,\"partitions\":[{\"partition\":0,\"records\":3,\"head\":\"%s\"},"
             "{\"partition\":2,\"records\":2,\"head\":\"%s\"}]}",
             h0, h2);
    dq_reglog_report_free(&rep);
    char *doc = cp_sign(f, reg, signer);
    cJSON *j = cJSON_Parse(doc);
    assert_non_null(j);
    assert_string_equal(dq_json_str(j, "schema"), "deployq.signed-checkpoint/v1");
    assert_string_equal(dq_json_str(j, "key_id"), "op-1");
    assert_string_equal(dq_json_str(j, "alg"), "ed25519");
    const char *body = dq_json_str(j, "checkpoint");
    assert_non_null(body);
    assert_string_equal(body, body_want);
    assert_non_null(dq_json_str(j, "signature"));
    assert_int_equal(
        dq_verify(pub, body, strlen(body), dq_json_str(j, "signature"), f->err, sizeof f->err),
        1);
    cJSON_Delete(j);

    /* matches now, and still once the log has grown */
    dq_reglog_cp_result res;
    dq_reglog_checkpoint *cp;
    assert_int_equal(cp_check(f, reg, doc, pub, &res, &cp), 0);
    assert_string_equal(dq_reglog_checkpoint_key_id(cp), "op-1");
    assert_int_equal(res.signature_ok, 1);
    assert_string_equal(res.at, "1970-01-01T00:00:00.000Z");
    assert_int_equal(res.n_mismatches, 0);
    dq_reglog_cp_result_free(&res);
    append_forged(reg, 0, 13, 2, -1);
    assert_int_equal(dq_reglog_checkpoint_check(cp, reg, pub, &res, f->err, sizeof f->err), 0);
    assert_int_equal(res.n_mismatches, 0);
    dq_reglog_cp_result_free(&res);

    /* another key's signature is invalid, and nothing else is looked at */
    assert_int_equal(dq_reglog_checkpoint_check(cp, reg, other_pub, &res, f->err, sizeof f->err),
                     1);
    assert_int_equal(res.signature_ok, 0);
    assert_int_equal(res.n_mismatches, 0);
    dq_reglog_cp_result_free(&res);
    dq_reglog_checkpoint_free(cp);

    /* a checkpoint never vouches for a broken log; not a checkpoint is said so */
    dq_reglog_report broken = {.errors = 1, .first_error = "p0/x.seg: offset 0: crc mismatch"};
    assert_null(dq_reglog_checkpoint_sign(&broken, signer, "op-1", 0, f->err, sizeof f->err));
    assert_string_equal(f->err, "the log is not intact: p0/x.seg: offset 0: crc mismatch");
    assert_null(dq_reglog_checkpoint_parse("{\"schema\":\"deployq.checkpoint/v1\"}", 34,
                                           "cp.json", f->err, sizeof f->err));
    assert_string_equal(f->err, "cp.json: not a signed checkpoint");
    assert_null(dq_reglog_checkpoint_parse("nope", 4, "cp.json", f->err, sizeof f->err));
    dq_reglog_checkpoint_free(NULL);
    dq_reglog_cp_result_free(NULL);

    free(doc);
    free(pub);
    free(other_pub);
    dq_signer_free(signer);
    dq_signer_free(other);
}

/* What verify alone accepts, the checkpoint catches: a history rewritten with its chain
 * recomputed, and a log cut at a record boundary. A record changed in place breaks the
 * chain, and the check refuses to read past it. */
static void test_checkpoint_tamper(void **state)
{
    fixture *f = *state;
    char reg[96], p0[128];
    snprintf(reg, sizeof reg, "%s/reg", f->dir);
    snprintf(p0, sizeof p0, "%s/p0", reg);
    append_forged(reg, 0, 10, 4, -1);
    append_forged(reg, 1, 30, 1, -1);
    char *pub;
    dq_signer *signer = cp_key(f, "op", &pub);
    char *doc = cp_sign(f, reg, signer);
    dq_reglog_report rep;
    assert_int_equal(dq_reglog_verify_dir(reg, &rep, f->err, sizeof f->err), 0);
    char head_hex[65];
    dq_hex(rep.partitions[0].head_hash, 32, head_hex);
    dq_reglog_report_free(&rep);

    /* record 1 rewritten, the chain rebuilt after it: an intact log, another head */
    assert_int_equal(dq_test_rm_rf(p0), 0);
    append_forged(reg, 0, 10, 4, 1);
    assert_int_equal(dq_reglog_verify_dir(reg, &rep, f->err, sizeof f->err), 0);
    unsigned char forged_head[32];
    memcpy(forged_head, rep.partitions[0].head_hash, 32);
    dq_reglog_report_free(&rep);
    dq_reglog_cp_result res;
    dq_reglog_checkpoint *cp;
    assert_int_equal(cp_check(f, reg, doc, pub, &res, &cp), 1);
    assert_int_equal(res.signature_ok, 1);
    assert_int_equal(res.n_mismatches, 1);
    assert_int_equal(res.mismatches[0].kind, DQ_REGLOG_CP_REWRITTEN);
    assert_int_equal(res.mismatches[0].partition, 0);
    assert_int_equal(res.mismatches[0].checkpoint_records, 4);
    assert_memory_equal(res.mismatches[0].hash, forged_head, 32);
    assert_string_equal(res.mismatches[0].want, head_hex);
    dq_reglog_cp_result_free(&res);

    /* the same history written again hashes the same: it matches again */
    assert_int_equal(dq_test_rm_rf(p0), 0);
    append_forged(reg, 0, 10, 4, -1);
    assert_int_equal(dq_reglog_checkpoint_check(cp, reg, pub, &res, f->err, sizeof f->err), 0);
    dq_reglog_cp_result_free(&res);

    /* cut at a record boundary ("event-NN" records are 72 bytes): valid, one record short */
    char seg[256];
    snprintf(seg, sizeof seg, "%s/" SEG0, p0);
    assert_int_equal(file_size(seg), 4 * 72);
    assert_int_equal(truncate(seg, 3 * 72), 0);
    assert_int_equal(dq_reglog_verify_dir(reg, &rep, f->err, sizeof f->err), 0);
    dq_reglog_report_free(&rep);
    assert_int_equal(dq_reglog_checkpoint_check(cp, reg, pub, &res, f->err, sizeof f->err), 1);
    assert_int_equal(res.n_mismatches, 1);
    assert_int_equal(res.mismatches[0].kind, DQ_REGLOG_CP_CUT);
    assert_int_equal(res.mismatches[0].partition, 0);
    assert_int_equal(res.mismatches[0].log_records, 3);
    assert_int_equal(res.mismatches[0].checkpoint_records, 4);
    dq_reglog_cp_result_free(&res);

    /* a byte changed in place: the chain is broken and the check says where */
    size_t len;
    unsigned char *buf = read_all(seg, &len);
    buf[60] ^= 1; /* the first payload byte of record 0 */
    write_all(seg, buf, len);
    free(buf);
    assert_int_equal(dq_reglog_checkpoint_check(cp, reg, pub, &res, f->err, sizeof f->err), -1);
    assert_string_equal(f->err, "p0/" SEG0 ": offset 0: crc mismatch (record 0)");
    dq_reglog_cp_result_free(&res);

    dq_reglog_checkpoint_free(cp);
    free(doc);
    free(pub);
    dq_signer_free(signer);
}

int main(void)
{
    /* the torn tails made here are expected: keep their warnings out of the output */
    dq_log_init("test_reglog", DQ_LOG_ERROR, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_standard),
        cmocka_unit_test_setup_teardown(test_layout_commit_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offsets_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_private_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segment_roll, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_in_old_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_partitions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_failure_is_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entry_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_sign_and_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_tamper, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
