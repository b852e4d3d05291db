/*
 * fuzz_reglog.c - libFuzzer harness for the registry log's readers: the record decoder
 * behind dq_reglog_verify_dir, the replay iterator, and dq_reglog_open's recovery (torn
 * tail truncation, corruption refusal), over segment files made from the fuzz input.
 *
 * Input layout: byte 0 is a set of flags, the rest is up to MAX_SEGMENTS segment files
 * separated by the 4 bytes "SEG|". Records are guarded by a crc32c and a SHA-256 chain
 * that mutation alone would almost never satisfy, so the flags let the harness repair
 * them after mutation and the fuzzer reach the checks behind them (sequence, partition,
 * offset order, segment names, torn tail versus corruption):
 *   FIX_CRC    recompute each whole record's crc32c
 *   FIX_CHAIN  rewrite each record's prev hash to the SHA-256 of the record before it
 *   FIX_SEQ    renumber the records 0, 1, 2, ... across the segments
 *   NAME_SEQ   name each segment after its first record's sequence (else 0, 1, 2, ...)
 *   PART_1     put the segments in p1 instead of p0
 *   TAIL_ONLY  open with tail_only (only the newest two segments are checked)
 *
 * The files live in a directory under /dev/shm (tmpfs: the fsyncs cost nothing), emptied
 * after every input.
 *
 * Invariants beyond "no crash, no leak, no undefined behaviour":
 *  - verify never fails to read the directory (-1);
 *  - a log verify calls intact replays without error, record for record, and opens,
 *    holding the same count;
 *  - after a full-check open succeeds (recovery done), the log verifies intact, and a
 *    record appended and committed leaves it intact with one record more.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "reglog.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FIX_CRC 0x01
#define FIX_CHAIN 0x02
#define FIX_SEQ 0x04
#define NAME_SEQ 0x08
#define PART_1 0x10
#define TAIL_ONLY 0x20

#define MAX_SEGMENTS 4
#define SEG_MARK "SEG|"
#define SEG_MARK_LEN 4

static char root[256];

static void remove_root(void)
{
    rmdir(root); /* empty between inputs; a crash leaves it for the report */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *base = getenv("DQ_FUZZ_TMP");

    (void)argc;
    (void)argv;
    dq_fuzz_quiet();
    snprintf(root, sizeof root, "%s/dq-fuzz-reglog-%ld", base ? base : "/dev/shm", (long)getpid());
    if (mkdir(root, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz_reglog: mkdir %s: %s\n", root, strerror(errno));
        exit(1);
    }
    atexit(remove_root);
    return 0;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Repair the whole records at the front of seg as flags ask; a record that does not fit
 * ends the repair of this segment (what follows is a tail for recovery to judge). */
static void fix_segment(unsigned char *seg, size_t len, unsigned flags, uint64_t *seq,
                        unsigned char prev[DQ_REGLOG_HASH_LEN])
{
    size_t pos = 0;

    while (len - pos >= DQ_REGLOG_OVERHEAD) {
        uint32_t plen = get_u32(seg + pos + 4);
        uint32_t crc;

        if (plen > len - pos - DQ_REGLOG_OVERHEAD)
            return;
        if (flags & FIX_SEQ)
            put_u64(seg + pos + 8, *seq);
        if (flags & FIX_CHAIN)
            memcpy(seg + pos + 28, prev, DQ_REGLOG_HASH_LEN);
        if (flags & FIX_CRC) {
            crc = dq_reglog_crc32c(seg + pos, DQ_REGLOG_HEADER_LEN + plen);
            for (int i = 0; i < 4; i++)
                seg[pos + DQ_REGLOG_HEADER_LEN + plen + i] = (unsigned char)(crc >> (8 * i));
        }
        dq_sha256(seg + pos, DQ_REGLOG_OVERHEAD + plen, prev);
        (*seq)++;
        pos += DQ_REGLOG_OVERHEAD + plen;
    }
}

static void write_file(const char *path, const unsigned char *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);

    if (fd < 0)
        return; /* two segments with one name: the first one stays */
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n <= 0) {
            fprintf(stderr, "fuzz_reglog: write %s: %s\n", path, strerror(errno));
            exit(1);
        }
        buf += n;
        len -= (size_t)n;
    }
    close(fd);
}

static void empty_dir(const char *pdir)
{
    DIR *d = opendir(pdir);
    struct dirent *e;
    char path[512];

    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", pdir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(pdir);
}

/* Replay everything; returns the record count, *rc the iterator's last result. */
static uint64_t replay(int *rc)
{
    char err[512];
    dq_reglog_iter *it = dq_reglog_iter_open(root, err, sizeof err);
    dq_reglog_entry e;
    uint64_t n = 0;

    DQ_FUZZ_CHECK(it != NULL, "iter_open: %s", err);
    while ((*rc = dq_reglog_iter_next(it, &e, err, sizeof err)) == 1)
        n++;
    dq_reglog_iter_close(it);
    return n;
}

static int verify(uint64_t *records)
{
    dq_reglog_report rep;
    char err[512];
    int rc = dq_reglog_verify_dir(root, &rep, err, sizeof err);

    DQ_FUZZ_CHECK(rc == 0 || rc == 1, "verify returned %d: %s", rc, err);
    *records = rep.records;
    dq_reglog_report_free(&rep);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned flags, part;
    unsigned char *buf, *segs[MAX_SEGMENTS], prev[DQ_REGLOG_HASH_LEN] = {0};
    size_t lens[MAX_SEGMENTS], n = 0, rest;
    uint64_t seq = 0, records, records2, replayed;
    char pdir[300], path[400], err[512];
    dq_reglog_opts opts = {0};
    dq_reglog *log;
    int vrc, irc;

    if (size < 1)
        return 0;
    flags = data[0];
    part = (flags & PART_1) ? 1 : 0;
    opts.tail_only = (flags & TAIL_ONLY) != 0;
    buf = malloc(size);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, size - 1);
    rest = size - 1;

    /* Split on the marker. */
    segs[0] = buf;
    for (size_t i = 0; n + 1 < MAX_SEGMENTS && i + SEG_MARK_LEN <= rest;) {
        if (memcmp(buf + i, SEG_MARK, SEG_MARK_LEN) == 0) {
            lens[n] = (size_t)(buf + i - segs[n]);
            segs[++n] = buf + i + SEG_MARK_LEN;
            i += SEG_MARK_LEN;
        } else {
            i++;
        }
    }
    lens[n] = (size_t)(buf + rest - segs[n]);
    n++;

    snprintf(pdir, sizeof pdir, "%s/p%u", root, part);
    if (mkdir(pdir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz_reglog: mkdir %s: %s\n", pdir, strerror(errno));
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t name = i;

        fix_segment(segs[i], lens[i], flags, &seq, prev);
        if ((flags & NAME_SEQ) && lens[i] >= 16)
            name = get_u64(segs[i] + 8);
        snprintf(path, sizeof path, "%s/%020llu.seg", pdir, (unsigned long long)name);
        write_file(path, segs[i], lens[i]);
    }

    vrc = verify(&records);
    replayed = replay(&irc);
    if (vrc == 0)
        DQ_FUZZ_CHECK(irc == 0 && replayed == records,
                      "intact log (%llu records) replays %llu, ending %d",
                      (unsigned long long)records, (unsigned long long)replayed, irc);

    log = dq_reglog_open(root, (int32_t)part, &opts, err, sizeof err);
    if (vrc == 0)
        DQ_FUZZ_CHECK(log != NULL && dq_reglog_count(log) == records,
                      "an intact log of %llu records does not open alike: %s",
                      (unsigned long long)records, log ? "count differs" : err);
    if (log) {
        uint64_t count = dq_reglog_count(log);
        int64_t last = dq_reglog_last_offset(log);
        int rc = DQ_REGLOG_OK;

        if (!opts.tail_only) {
            DQ_FUZZ_CHECK(verify(&records2) == 0 && records2 == count,
                          "the log opened with %llu records but verifies %llu or broken",
                          (unsigned long long)count, (unsigned long long)records2);
        }
        if (last < INT64_MAX) {
            rc = dq_reglog_append(log, last + 1, "fuzz", 4);
            DQ_FUZZ_CHECK(rc == DQ_REGLOG_OK, "append after open: %d %s", rc,
                          dq_reglog_errstr(log));
            rc = dq_reglog_commit(log);
            DQ_FUZZ_CHECK(rc == DQ_REGLOG_OK, "commit after open: %d %s", rc,
                          dq_reglog_errstr(log));
        }
        dq_reglog_close(log);
        if (!opts.tail_only && last < INT64_MAX)
            DQ_FUZZ_CHECK(verify(&records2) == 0 && records2 == count + 1,
                          "after one append to %llu records: %llu or broken",
                          (unsigned long long)count, (unsigned long long)records2);
    }

    empty_dir(pdir);
    free(buf);
    return 0;
}
