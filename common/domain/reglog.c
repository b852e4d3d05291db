/*
 * reglog.c - the registry's append-only, hash-chained segment log (see reglog.h and
 * docs/registry-format.md for the byte layout and the recovery rules).
 *
 * Writing is built for group commit: dq_reglog_append() only encodes a record into a
 * memory buffer (hashing it into the chain as it goes), dq_reglog_commit() writes the
 * buffer with one pwrite and makes it durable with one fdatasync. Reading (open's recovery,
 * verify and the replay iterator) loads one segment at a time and walks it with the same
 * checks, so the three can never disagree about what a valid record is. The record hash
 * is computed in one place (hash_record, as the chain advances): the iterator hands it to
 * readers and the signed checkpoints at the end of this file are made and checked with it.
 */
#include "reglog.h"

#include "json.h"
#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <isa-l/crc.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEG_NAME_DIGITS 20
#define SEG_SUFFIX ".seg"

/* ---- encoding ----------------------------------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

uint32_t dq_reglog_crc32c(const void *buf, size_t len)
{
    /* ISA-L's crc32_iscsi neither pre- nor post-inverts; doing both gives standard CRC32C. */
    unsigned int crc = 0xffffffffu;
    const unsigned char *p = buf;
    while (len > 0) {
        int chunk = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        crc = crc32_iscsi((unsigned char *)p, chunk, crc); /* ISA-L does not write through p */
        p += chunk;
        len -= (size_t)chunk;
    }
    return crc ^ 0xffffffffu;
}

/* SHA-256 with a context fetched once: every record is hashed, and a one-shot digest
 * re-fetches the algorithm each call (a locked lookup that costs as much as hashing a
 * small event). Without a context (allocation failed) it falls back to dq_sha256. */
typedef struct {
    EVP_MD *md;
    EVP_MD_CTX *ctx;
} hasher;

static void hasher_init(hasher *h)
{
    h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->ctx = h->md != NULL ? EVP_MD_CTX_new() : NULL;
}

static void hasher_free(hasher *h)
{
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    h->ctx = NULL;
    h->md = NULL;
}

static void hash_record(hasher *h, const unsigned char *p, size_t len,
                        unsigned char out[DQ_REGLOG_HASH_LEN])
{
    if (h->ctx == NULL || EVP_DigestInit_ex(h->ctx, h->md, NULL) != 1 ||
        EVP_DigestUpdate(h->ctx, p, len) != 1 || EVP_DigestFinal_ex(h->ctx, out, NULL) != 1)
        dq_sha256(p, len, out);
}

/* Offsets inside a record, as laid out in docs/registry-format.md. */
enum { OFF_MAGIC = 0, OFF_LEN = 4, OFF_SEQ = 8, OFF_PART = 16, OFF_KOFF = 20, OFF_PREV = 28 };

/* ---- small file helpers ------------------------------------------------------------- */

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* mkdir that makes a new directory durable: the entry lives in the parent, so the parent is
 * fsynced. An existing directory is fine. */
static int ensure_dir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0700) == 0) { /* deploy history and output tails: the owner only */
        char parent[PATH_MAX];
        dq_strlcpy(parent, path, sizeof parent);
        size_t plen = strlen(parent);
        while (plen > 1 && parent[plen - 1] == '/')
            parent[--plen] = '\0';
        char *slash = strrchr(parent, '/');
        if (slash == parent)
            slash[1] = '\0';
        else if (slash != NULL)
            *slash = '\0';
        else
            dq_strlcpy(parent, ".", sizeof parent);
        if (fsync_path(parent) < 0) {
            snprintf(err, errlen, "fsync %s: %s", parent, strerror(errno));
            return -1;
        }
        return 0;
    }
    struct stat st;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    snprintf(err, errlen, "mkdir %s: %s", path,
             errno == EEXIST ? "not a directory" : strerror(errno));
    return -1;
}

static int pwrite_all(int fd, const unsigned char *buf, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Read a whole segment into *mem, a malloc'd buffer of *cap bytes that is reused from one
 * segment to the next (NULL and 0 at first; grown when too small; the caller frees it):
 * fresh pages for every segment, faulted in and zeroed by the kernel, cost readers of a
 * big log more than the copy itself. *outlen 0 for an empty file. */
static int load_file(const char *path, unsigned char **mem, size_t *cap, size_t *outlen,
                     char *err, size_t errlen)
{
    *outlen = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "stat %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    if (size > *cap) {
        free(*mem);
        *cap = 0;
        *mem = malloc(size);
        if (*mem == NULL) {
            snprintf(err, errlen, "%s: out of memory for %zu bytes", path, size);
            close(fd);
            return -1;
        }
        *cap = size;
    }
    unsigned char *buf = *mem;
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "read %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (n == 0)
            break; /* shrank while we read: check what we have */
        got += (size_t)n;
    }
    close(fd);
    *outlen = got;
    return 0;
}

/* Map a segment that is not its partition's newest read-only (NULL when it cannot be, or
 * is empty: the caller reads it instead). Only the newest segment is ever cut (a torn tail
 * repaired when a writer opens the partition), so a mapped one keeps its bytes while it is
 * read, and the reader skips the copy of the whole file that read() makes. */
static unsigned char *map_sealed(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    void *m;

    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        close(fd);
        return NULL;
    }
    m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return NULL;
    (void)madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
    *len = (size_t)st.st_size;
    return m;
}

/* ---- directory listings ------------------------------------------------------------- */

typedef struct {
    uint64_t seq;
    char name[SEG_NAME_DIGITS + sizeof SEG_SUFFIX];
} seg_info;

static int cmp_seg(const void *a, const void *b)
{
    uint64_t x = ((const seg_info *)a)->seq, y = ((const seg_info *)b)->seq;
    return x < y ? -1 : x > y;
}

/* The segments of a partition directory, sorted by first sequence. Files whose names are
 * not exactly 20 digits + ".seg" are not part of the log and are ignored. */
static int list_segments(const char *pdir, seg_info **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(pdir);
    if (d == NULL) {
        snprintf(err, errlen, "opendir %s: %s", pdir, strerror(errno));
        return -1;
    }
    seg_info *segs = NULL;
    size_t cap = 0, count = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (strlen(name) != SEG_NAME_DIGITS + strlen(SEG_SUFFIX) ||
            strcmp(name + SEG_NAME_DIGITS, SEG_SUFFIX) != 0)
            continue;
        uint64_t seq = 0;
        int digits = 1;
        for (int i = 0; i < SEG_NAME_DIGITS; i++) {
            if (name[i] < '0' || name[i] > '9') {
                digits = 0;
                break;
            }
            uint64_t next = seq * 10 + (uint64_t)(name[i] - '0');
            if (next / 10 != seq) {
                digits = 0; /* over 2^64: not a name this code writes */
                break;
            }
            seq = next;
        }
        if (!digits)
            continue;
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            seg_info *grown = realloc(segs, ncap * sizeof *grown);
            if (grown == NULL) {
                snprintf(err, errlen, "%s: out of memory", pdir);
                free(segs);
                closedir(d);
                return -1;
            }
            segs = grown;
            cap = ncap;
        }
        segs[count].seq = seq;
        dq_strlcpy(segs[count].name, name, sizeof segs[count].name);
        count++;
    }
    closedir(d);
    if (count > 1)
        qsort(segs, count, sizeof *segs, cmp_seg);
    *out = segs;
    *n = count;
    return 0;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* The partitions of a registry dir ("p<number>" subdirectories), ascending. */
static int list_partitions(const char *dir, int32_t **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "opendir %s: %s", dir, strerror(errno));
        return -1;
    }
    int32_t *parts = NULL;
    size_t cap = 0, count = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        long long p;
        if (de->d_name[0] != 'p' || dq_parse_int(de->d_name + 1, 0, INT32_MAX, &p) != 0)
            continue;
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        char canon[16];
        snprintf(canon, sizeof canon, "p%lld", p);
        if (strcmp(canon, de->d_name) != 0)
            continue; /* "p007" is not a name this code writes */
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            int32_t *grown = realloc(parts, ncap * sizeof *grown);
            if (grown == NULL) {
                snprintf(err, errlen, "%s: out of memory", dir);
                free(parts);
                closedir(d);
                return -1;
            }
            parts = grown;
            cap = ncap;
        }
        parts[count++] = (int32_t)p;
    }
    closedir(d);
    if (count > 1)
        qsort(parts, count, sizeof *parts, cmp_i32);
    *out = parts;
    *n = count;
    return 0;
}

/* ---- the record walker shared by open, verify and the iterator ---------------------- */

/* What the chain expects next. link_known is 0 only at the start of a tail-only open,
 * where the previous record's hash and offset have not been read. */
typedef struct {
    int32_t partition;
    uint64_t next_seq;
    int64_t last_offset;
    unsigned char prev[DQ_REGLOG_HASH_LEN];
    int link_known;
    hasher *h; /* borrowed from the caller */
} chain_state;

static void chain_init(chain_state *c, int32_t partition, hasher *h)
{
    memset(c, 0, sizeof *c);
    c->partition = partition;
    c->last_offset = -1;
    c->link_known = 1;
    c->h = h;
}

typedef struct {
    uint64_t seq;
    int64_t kafka_offset;
    const unsigned char *payload;
    uint32_t len;
    size_t total;
} rec_view;

/* Check the framing of the record at buf[pos] (magic, length bound, completeness, crc).
 * 0 with r filled, -1 with the reason in why. */
static int frame_at(const unsigned char *buf, size_t len, size_t pos, uint64_t recno, rec_view *r,
                    char *why, size_t whylen)
{
    const unsigned char *p = buf + pos;
    size_t avail = len - pos;
    if (avail >= 4 && memcmp(p + OFF_MAGIC, DQ_REGLOG_MAGIC, 4) != 0) {
        snprintf(why, whylen, "bad magic (record %" PRIu64 ")", recno);
        return -1;
    }
    if (avail < OFF_LEN + 4) {
        snprintf(why, whylen, "record %" PRIu64 " cut short: %zu bytes of a header", recno, avail);
        return -1;
    }
    uint32_t plen = get_u32(p + OFF_LEN);
    if (plen > DQ_REGLOG_MAX_PAYLOAD) {
        snprintf(why, whylen, "payload length %" PRIu32 " over the %u limit (record %" PRIu64 ")",
                 plen, DQ_REGLOG_MAX_PAYLOAD, recno);
        return -1;
    }
    size_t total = DQ_REGLOG_OVERHEAD + (size_t)plen;
    if (avail < total) {
        snprintf(why, whylen, "record %" PRIu64 " cut short: %zu of %zu bytes", recno, avail,
                 total);
        return -1;
    }
    uint32_t stored = get_u32(p + total - 4);
    if (dq_reglog_crc32c(p, total - 4) != stored) {
        snprintf(why, whylen, "crc mismatch (record %" PRIu64 ")", recno);
        return -1;
    }
    r->seq = get_u64(p + OFF_SEQ);
    r->kafka_offset = (int64_t)get_u64(p + OFF_KOFF);
    r->payload = p + DQ_REGLOG_HEADER_LEN;
    r->len = plen;
    r->total = total;
    return 0;
}

/* Check a well-framed record against the chain and advance the chain past it. */
static int link_record(chain_state *c, const unsigned char *p, const rec_view *r, char *why,
                       size_t whylen)
{
    int32_t part = (int32_t)get_u32(p + OFF_PART);
    if (part != c->partition) {
        snprintf(why, whylen,
                 "partition field %" PRId32 ", expected %" PRId32 " (record %" PRIu64 ")", part,
                 c->partition, c->next_seq);
        return -1;
    }
    if (r->seq != c->next_seq) {
        snprintf(why, whylen, "sequence %" PRIu64 ", expected %" PRIu64, r->seq, c->next_seq);
        return -1;
    }
    if (c->link_known && memcmp(p + OFF_PREV, c->prev, DQ_REGLOG_HASH_LEN) != 0) {
        snprintf(why, whylen,
                 "prev hash does not match the previous record: chain broken (record %" PRIu64 ")",
                 r->seq);
        return -1;
    }
    if (r->kafka_offset < 0 || (c->link_known && r->kafka_offset <= c->last_offset)) {
        snprintf(why, whylen,
                 "kafka offset %" PRId64 " not above the previous %" PRId64 " (record %" PRIu64 ")",
                 r->kafka_offset, c->last_offset, r->seq);
        return -1;
    }
    hash_record(c->h, p, r->total, c->prev);
    c->next_seq++;
    c->last_offset = r->kafka_offset;
    c->link_known = 1;
    return 0;
}

/* Whether a whole, crc-valid record of this partition starts anywhere in buf[from..len).
 * Damage followed by such a record is not a torn tail: the record after it was written, so
 * the damage is in the middle of the log. */
static int valid_record_after(const unsigned char *buf, size_t len, size_t from, int32_t partition)
{
    while (from + DQ_REGLOG_OVERHEAD <= len) {
        const unsigned char *hit = memmem(buf + from, len - from, DQ_REGLOG_MAGIC, 4);
        if (hit == NULL)
            return 0;
        size_t pos = (size_t)(hit - buf);
        rec_view r;
        char why[192];
        if (pos + DQ_REGLOG_OVERHEAD <= len &&
            frame_at(buf, len, pos, 0, &r, why, sizeof why) == 0 &&
            (int32_t)get_u32(buf + pos + OFF_PART) == partition)
            return 1;
        from = pos + 1;
    }
    return 0;
}

enum { WALK_END = 0, WALK_REC = 1, WALK_BAD = -1 };

/* One step over a loaded segment: WALK_REC with the record at *pos (then *pos moves past
 * it), WALK_END at the clean end, WALK_BAD with "rel: offset N: reason" in err. *torn says
 * whether the bad record is a torn tail: only possible in the newest segment, only for a
 * framing error, and only when no valid record follows it. */
static int walk_next(chain_state *c, const char *rel, const unsigned char *buf, size_t len,
                     size_t *pos, int newest, rec_view *r, int *torn, char *err, size_t errlen)
{
    char why[192];
    *torn = 0;
    if (*pos >= len)
        return WALK_END;
    if (frame_at(buf, len, *pos, c->next_seq, r, why, sizeof why) != 0) {
        *torn = newest && !valid_record_after(buf, len, *pos + 1, c->partition);
        snprintf(err, errlen, "%s: offset %zu: %s%s", rel, *pos, *torn ? "torn tail: " : "", why);
        return WALK_BAD;
    }
    if (link_record(c, buf + *pos, r, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: offset %zu: %s", rel, *pos, why);
        return WALK_BAD;
    }
    *pos += r->total;
    return WALK_REC;
}

/* A segment must be named after the sequence its first record carries. */
static int check_seg_name(chain_state *c, const char *rel, const seg_info *s, char *err,
                          size_t errlen)
{
    if (s->seq != c->next_seq) {
        snprintf(err, errlen,
                 "%s: offset 0: segment named for sequence %" PRIu64
                 " but the chain is at %" PRIu64,
                 rel, s->seq, c->next_seq);
        return -1;
    }
    return 0;
}

/* Walk the segments segs[first..n) of one partition. On return *c is the chain after the
 * last good record, *end_pos that record's end in the newest segment. Returns 0 intact,
 * 1 torn tail (the newest segment is good up to *end_pos), -1 other error (err set). */
static int walk_partition(const char *dir, chain_state *c, const seg_info *segs, size_t n,
                          size_t first, size_t *end_pos, char *err, size_t errlen)
{
    unsigned char *buf = NULL;
    size_t cap = 0;
    int ret = 0;

    *end_pos = 0;
    for (size_t i = first; i < n && ret == 0; i++) {
        char rel[64], path[PATH_MAX];
        snprintf(rel, sizeof rel, "p%" PRId32 "/%s", c->partition, segs[i].name);
        snprintf(path, sizeof path, "%s/%s", dir, rel);
        size_t len, pos = 0;
        if (check_seg_name(c, rel, &segs[i], err, errlen) != 0 ||
            load_file(path, &buf, &cap, &len, err, errlen) != 0) {
            ret = -1;
            break;
        }
        int rc, torn = 0, newest = i + 1 == n;
        rec_view r;
        do
            rc = walk_next(c, rel, buf, len, &pos, newest, &r, &torn, err, errlen);
        while (rc == WALK_REC);
        *end_pos = pos;
        if (rc == WALK_BAD)
            ret = torn ? 1 : -1;
    }
    free(buf);
    return ret;
}

/* ---- the writer --------------------------------------------------------------------- */

struct dq_reglog {
    char *dir;  /* registry dir */
    char *pdir; /* <dir>/p<partition> */
    int32_t partition;
    uint64_t segment_bytes;
    int dirfd; /* the partition dir: flock for one writer, fsync after a new segment */
    int fd;    /* the newest segment, written at seg_size */
    uint64_t seg_first;
    uint64_t seg_size;

    /* durable state: what the last successful commit (or recovery) left on disk */
    uint64_t count;
    int64_t last_offset;
    unsigned char head[DQ_REGLOG_HASH_LEN];

    /* the group being built: encoded records, chained onto the durable head */
    unsigned char *buf;
    size_t buf_len, buf_cap;
    size_t n_pending;
    int64_t pend_offset;
    unsigned char pend_head[DQ_REGLOG_HASH_LEN];
    uint64_t pend_seg_size;
    /* buffer offsets where a new segment starts, with that segment's first sequence */
    size_t *roll_at;
    uint64_t *roll_seq;
    size_t n_rolls, rolls_cap;

    hasher h;
    int failed;
    char errstr[256];
};

static void seg_rel(const dq_reglog *log, uint64_t seq, char *out, size_t outlen)
{
    snprintf(out, outlen, "p%" PRId32 "/%0*" PRIu64 SEG_SUFFIX, log->partition, SEG_NAME_DIGITS,
             seq);
}

/* Create the segment that starts at seq and make its directory entry durable. */
static int create_segment(dq_reglog *log, uint64_t seq, char *err, size_t errlen)
{
    char name[SEG_NAME_DIGITS + sizeof SEG_SUFFIX];
    snprintf(name, sizeof name, "%0*" PRIu64 SEG_SUFFIX, SEG_NAME_DIGITS, seq);
    int fd = openat(log->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "create p%" PRId32 "/%s: %s", log->partition, name, strerror(errno));
        return -1;
    }
    if (fsync(log->dirfd) != 0) {
        snprintf(err, errlen, "fsync p%" PRId32 "/: %s", log->partition, strerror(errno));
        close(fd);
        return -1;
    }
    if (log->fd >= 0)
        close(log->fd);
    log->fd = fd;
    log->seg_first = seq;
    log->seg_size = 0;
    return 0;
}

static void reset_pending(dq_reglog *log)
{
    log->buf_len = 0;
    log->n_pending = 0;
    log->n_rolls = 0;
    log->pend_offset = log->last_offset;
    memcpy(log->pend_head, log->head, DQ_REGLOG_HASH_LEN);
    log->pend_seg_size = log->seg_size;
}

/* Recover the partition's state from its segments; truncate a torn tail. */
static int recover(dq_reglog *log, int tail_only, char *err, size_t errlen)
{
    seg_info *segs;
    size_t n;
    if (list_segments(log->pdir, &segs, &n, err, errlen) != 0)
        return -1;
    if (n == 0) {
        free(segs);
        return create_segment(log, 0, err, errlen);
    }
    chain_state c;
    size_t end_pos;
    int rc;
    char why[256]; /* the walk's verdict: an error for the caller, or the torn tail's log line */
    for (;;) {
        size_t first = tail_only && n > 2 ? n - 2 : 0;
        chain_init(&c, log->partition, &log->h);
        if (first > 0) {
            c.link_known = 0; /* a tail-only walk starts where the older segment's name says */
            c.next_seq = segs[first].seq;
        }
        rc = walk_partition(log->dir, &c, segs, n, first, &end_pos, why, sizeof why);
        if (rc < 0 || c.link_known || first == 0)
            break;
        tail_only = 0; /* the last two segments held no record: the head is further back */
    }
    char rel[64], path[PATH_MAX];
    snprintf(rel, sizeof rel, "p%" PRId32 "/%s", log->partition, segs[n - 1].name);
    snprintf(path, sizeof path, "%s/%s", log->dir, rel);
    uint64_t newest = segs[n - 1].seq;
    free(segs);
    if (rc < 0) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }

    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "open %s: %s", rel, strerror(errno));
        return -1;
    }
    if (rc == 1) {
        struct stat st;
        off_t before = fstat(fd, &st) == 0 ? st.st_size : -1;
        if (ftruncate(fd, (off_t)end_pos) != 0 || fsync(fd) != 0) {
            snprintf(err, errlen, "truncate %s to %zu: %s", rel, end_pos, strerror(errno));
            close(fd);
            return -1;
        }
        dq_warn("registry %s: %s; dropped %lld bytes after the last whole record", log->dir, why,
                (long long)before - (long long)end_pos);
    }
    log->fd = fd;
    log->seg_first = newest;
    log->seg_size = end_pos;
    log->count = c.next_seq;
    log->last_offset = c.last_offset;
    memcpy(log->head, c.prev, DQ_REGLOG_HASH_LEN);
    return 0;
}

dq_reglog *dq_reglog_open(const char *dir, int32_t partition, const dq_reglog_opts *opts, char *err,
                          size_t errlen)
{
    if (dir == NULL || dir[0] == '\0' || partition < 0) {
        snprintf(err, errlen, "registry: a directory and a partition >= 0 are required");
        return NULL;
    }
    dq_reglog *log = calloc(1, sizeof *log);
    if (log == NULL) {
        snprintf(err, errlen, "registry: out of memory");
        return NULL;
    }
    log->dirfd = -1;
    log->fd = -1;
    log->partition = partition;
    hasher_init(&log->h);
    log->last_offset = -1;
    log->segment_bytes = DQ_REGLOG_DEFAULT_SEGMENT_BYTES;
    if (opts != NULL && opts->segment_bytes > 0)
        log->segment_bytes = opts->segment_bytes;
    size_t plen = strlen(dir) + 16;
    log->dir = strdup(dir);
    log->pdir = malloc(plen);
    if (log->dir == NULL || log->pdir == NULL) {
        snprintf(err, errlen, "registry: out of memory");
        goto fail;
    }
    snprintf(log->pdir, plen, "%s/p%" PRId32, dir, partition);
    if (ensure_dir(dir, err, errlen) != 0 || ensure_dir(log->pdir, err, errlen) != 0)
        goto fail;
    log->dirfd = open(log->pdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (log->dirfd < 0) {
        snprintf(err, errlen, "open %s: %s", log->pdir, strerror(errno));
        goto fail;
    }
    if (flock(log->dirfd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "%s: %s", log->pdir,
                 errno == EWOULDBLOCK ? "another writer holds this partition" : strerror(errno));
        goto fail;
    }
    if (recover(log, opts != NULL && opts->tail_only, err, errlen) != 0)
        goto fail;
    reset_pending(log);
    return log;

fail:
    dq_reglog_close(log);
    return NULL;
}

static int set_err(dq_reglog *log, int code, const char *fmt, ...) DQ_PRINTF(3, 4);
static int set_err(dq_reglog *log, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(log->errstr, sizeof log->errstr, fmt, ap);
    va_end(ap);
    return code;
}

static int grow_rolls(dq_reglog *log)
{
    if (log->n_rolls < log->rolls_cap)
        return 0;
    size_t ncap = log->rolls_cap ? log->rolls_cap * 2 : 4;
    size_t *at = realloc(log->roll_at, ncap * sizeof *at);
    if (at == NULL)
        return -1;
    log->roll_at = at;
    uint64_t *seq = realloc(log->roll_seq, ncap * sizeof *seq);
    if (seq == NULL)
        return -1;
    log->roll_seq = seq;
    log->rolls_cap = ncap;
    return 0;
}

int dq_reglog_append(dq_reglog *log, int64_t kafka_offset, const void *payload, size_t len)
{
    if (log == NULL)
        return DQ_REGLOG_EINVAL;
    if (log->failed)
        return DQ_REGLOG_EFAILED; /* errstr keeps the failure that caused it */
    if ((payload == NULL && len > 0) || len > DQ_REGLOG_MAX_PAYLOAD)
        return set_err(log, DQ_REGLOG_EINVAL, "payload of %zu bytes refused (limit %u)", len,
                       DQ_REGLOG_MAX_PAYLOAD);
    if (kafka_offset < 0)
        return set_err(log, DQ_REGLOG_EINVAL, "kafka offset %" PRId64 " is negative", kafka_offset);
    if (kafka_offset <= log->pend_offset)
        return set_err(log, DQ_REGLOG_EOFFSET,
                       "kafka offset %" PRId64 " is not above %" PRId64
                       ", the last in the log: duplicate or out of order, refused",
                       kafka_offset, log->pend_offset);

    size_t total = DQ_REGLOG_OVERHEAD + len;
    if (log->buf_cap - log->buf_len < total) {
        size_t ncap = log->buf_cap ? log->buf_cap : 64 * 1024;
        while (ncap - log->buf_len < total)
            ncap *= 2;
        unsigned char *grown = realloc(log->buf, ncap);
        if (grown == NULL)
            return set_err(log, DQ_REGLOG_ENOMEM, "out of memory for a %zu-byte group", ncap);
        log->buf = grown;
        log->buf_cap = ncap;
    }
    uint64_t seq = log->count + log->n_pending;
    if (log->pend_seg_size > 0 && log->pend_seg_size + total > log->segment_bytes) {
        if (grow_rolls(log) != 0)
            return set_err(log, DQ_REGLOG_ENOMEM, "out of memory");
        log->roll_at[log->n_rolls] = log->buf_len;
        log->roll_seq[log->n_rolls] = seq;
        log->n_rolls++;
        log->pend_seg_size = 0;
    }

    unsigned char *p = log->buf + log->buf_len;
    memcpy(p + OFF_MAGIC, DQ_REGLOG_MAGIC, 4);
    put_u32(p + OFF_LEN, (uint32_t)len);
    put_u64(p + OFF_SEQ, seq);
    put_u32(p + OFF_PART, (uint32_t)log->partition);
    put_u64(p + OFF_KOFF, (uint64_t)kafka_offset);
    memcpy(p + OFF_PREV, log->pend_head, DQ_REGLOG_HASH_LEN);
    if (len > 0)
        memcpy(p + DQ_REGLOG_HEADER_LEN, payload, len);
    put_u32(p + total - 4, dq_reglog_crc32c(p, total - 4));
    hash_record(&log->h, p, total, log->pend_head);

    log->buf_len += total;
    log->n_pending++;
    log->pend_offset = kafka_offset;
    log->pend_seg_size += total;
    return DQ_REGLOG_OK;
}

#define FAILED_ADVICE "the registry log is failed: exit and restart to recover"

/* An I/O failure: the file may hold part of the group, and after a failed fdatasync the
 * kernel may have dropped the dirty pages while clearing the error, so a retry could report
 * success for data that is gone. The handle is failed; the next open recovers the tail. */
static int fail_io(dq_reglog *log, const char *what)
{
    char rel[64];
    seg_rel(log, log->seg_first, rel, sizeof rel);
    log->failed = 1;
    set_err(log, DQ_REGLOG_EIO, "%s %s: %s; " FAILED_ADVICE, what, rel, strerror(errno));
    reset_pending(log);
    return DQ_REGLOG_EIO;
}

int dq_reglog_commit(dq_reglog *log)
{
    if (log == NULL)
        return DQ_REGLOG_EINVAL;
    if (log->failed)
        return DQ_REGLOG_EFAILED; /* errstr keeps the failure that caused it */
    if (log->n_pending == 0)
        return DQ_REGLOG_OK;

    size_t start = 0;
    for (size_t i = 0; i <= log->n_rolls; i++) {
        size_t end = i < log->n_rolls ? log->roll_at[i] : log->buf_len;
        if (end > start) {
            if (pwrite_all(log->fd, log->buf + start, end - start, log->seg_size) != 0)
                return fail_io(log, "write");
            log->seg_size += end - start;
        }
        if (i == log->n_rolls)
            break;
        /* The full segment must be durable before records exist in the next one, or a
         * crash could leave a hole in the middle of the log rather than a torn tail. */
        if (end > start && fdatasync(log->fd) != 0)
            return fail_io(log, "fdatasync");
        char err[200];
        if (create_segment(log, log->roll_seq[i], err, sizeof err) != 0) {
            log->failed = 1;
            set_err(log, DQ_REGLOG_EIO, "%s; " FAILED_ADVICE, err);
            reset_pending(log);
            return DQ_REGLOG_EIO;
        }
        start = end;
    }
    if (fdatasync(log->fd) != 0)
        return fail_io(log, "fdatasync");

    log->count += log->n_pending;
    log->last_offset = log->pend_offset;
    memcpy(log->head, log->pend_head, DQ_REGLOG_HASH_LEN);
    reset_pending(log);
    log->errstr[0] = '\0';
    return DQ_REGLOG_OK;
}

int64_t dq_reglog_last_offset(const dq_reglog *log)
{
    return log != NULL ? log->last_offset : -1;
}

uint64_t dq_reglog_count(const dq_reglog *log)
{
    return log != NULL ? log->count : 0;
}

size_t dq_reglog_pending(const dq_reglog *log)
{
    return log != NULL ? log->n_pending : 0;
}

void dq_reglog_head_hash(const dq_reglog *log, unsigned char out[DQ_REGLOG_HASH_LEN])
{
    if (log != NULL)
        memcpy(out, log->head, DQ_REGLOG_HASH_LEN);
    else
        memset(out, 0, DQ_REGLOG_HASH_LEN);
}

const char *dq_reglog_errstr(const dq_reglog *log)
{
    return log != NULL ? log->errstr : "no registry log";
}

void dq_reglog_close(dq_reglog *log)
{
    if (log == NULL)
        return;
    if (log->fd >= 0)
        close(log->fd);
    if (log->dirfd >= 0)
        close(log->dirfd); /* releases the flock */
    free(log->buf);
    free(log->roll_at);
    free(log->roll_seq);
    free(log->dir);
    free(log->pdir);
    hasher_free(&log->h);
    free(log);
}

/* ---- verify ------------------------------------------------------------------------- */

int dq_reglog_verify_dir(const char *dir, dq_reglog_report *rep, char *err, size_t errlen)
{
    memset(rep, 0, sizeof *rep);
    int32_t *parts;
    size_t n;
    if (dir == NULL) {
        snprintf(err, errlen, "registry: no directory");
        return -1;
    }
    if (list_partitions(dir, &parts, &n, err, errlen) != 0)
        return -1;
    if (n > 0) {
        rep->partitions = calloc(n, sizeof *rep->partitions);
        if (rep->partitions == NULL) {
            free(parts);
            snprintf(err, errlen, "registry: out of memory");
            return -1;
        }
    }
    rep->n_partitions = n;
    hasher h;
    hasher_init(&h);
    for (size_t i = 0; i < n; i++) {
        dq_reglog_partition_report *pr = &rep->partitions[i];
        pr->partition = parts[i];
        chain_state c;
        chain_init(&c, parts[i], &h);
        char pdir[PATH_MAX];
        snprintf(pdir, sizeof pdir, "%s/p%" PRId32, dir, parts[i]);
        seg_info *segs;
        size_t nsegs, end_pos;
        int rc = list_segments(pdir, &segs, &nsegs, pr->error, sizeof pr->error);
        if (rc == 0) {
            rc = walk_partition(dir, &c, segs, nsegs, 0, &end_pos, pr->error, sizeof pr->error);
            free(segs);
        }
        pr->records = c.next_seq;
        memcpy(pr->head_hash, c.prev, DQ_REGLOG_HASH_LEN);
        pr->ok = rc == 0;
        if (pr->ok)
            pr->error[0] = '\0';
        else if (rep->errors++ == 0)
            dq_strlcpy(rep->first_error, pr->error, sizeof rep->first_error);
        rep->records += pr->records;
    }
    hasher_free(&h);
    free(parts);
    return rep->errors > 0 ? 1 : 0;
}

void dq_reglog_report_free(dq_reglog_report *rep)
{
    if (rep == NULL)
        return;
    free(rep->partitions);
    rep->partitions = NULL;
    rep->n_partitions = 0;
}

/* ---- the replay iterator ------------------------------------------------------------ */

struct dq_reglog_iter {
    char *dir;
    int32_t *parts;
    size_t n_parts, part; /* part: index of the partition being read */
    seg_info *segs;
    size_t n_segs, seg; /* seg: index of the next segment to load */
    unsigned char *buf; /* the loaded segment (in mem), NULL between segments */
    size_t len, pos;
    unsigned char *mem; /* load_file's buffer, kept from segment to segment */
    size_t cap;
    int mapped; /* buf is a map_sealed() mapping of len bytes */
    char rel[64];
    chain_state chain;
    hasher h;
    int done;
};

dq_reglog_iter *dq_reglog_iter_open(const char *dir, char *err, size_t errlen)
{
    if (dir == NULL) {
        snprintf(err, errlen, "registry: no directory");
        return NULL;
    }
    dq_reglog_iter *it = calloc(1, sizeof *it);
    if (it == NULL) {
        snprintf(err, errlen, "registry: out of memory");
        return NULL;
    }
    hasher_init(&it->h);
    it->dir = strdup(dir);
    if (it->dir == NULL) {
        snprintf(err, errlen, "registry: out of memory");
        goto fail;
    }
    if (list_partitions(dir, &it->parts, &it->n_parts, err, errlen) != 0)
        goto fail;
    it->part = SIZE_MAX; /* the first next() moves to partition 0 */
    return it;

fail:
    dq_reglog_iter_close(it);
    return NULL;
}

/* Move to the next partition that exists: load its segment list, reset the chain. */
static int iter_next_partition(dq_reglog_iter *it, char *err, size_t errlen)
{
    free(it->segs);
    it->segs = NULL;
    it->n_segs = it->seg = 0;
    it->part = it->part == SIZE_MAX ? 0 : it->part + 1;
    if (it->part >= it->n_parts)
        return 0;
    char pdir[PATH_MAX];
    snprintf(pdir, sizeof pdir, "%s/p%" PRId32, it->dir, it->parts[it->part]);
    if (list_segments(pdir, &it->segs, &it->n_segs, err, errlen) != 0)
        return -1;
    chain_init(&it->chain, it->parts[it->part], &it->h);
    return 1;
}

int dq_reglog_iter_next(dq_reglog_iter *it, dq_reglog_entry *out, char *err, size_t errlen)
{
    if (it == NULL || it->done)
        return it == NULL ? -1 : 0;
    for (;;) {
        if (it->buf == NULL && (it->part == SIZE_MAX || it->seg >= it->n_segs)) {
            int rc = iter_next_partition(it, err, errlen);
            if (rc <= 0) {
                it->done = 1;
                return rc;
            }
            continue;
        }
        if (it->buf == NULL) {
            const seg_info *s = &it->segs[it->seg];
            char path[PATH_MAX];
            snprintf(it->rel, sizeof it->rel, "p%" PRId32 "/%s", it->chain.partition, s->name);
            snprintf(path, sizeof path, "%s/%s", it->dir, it->rel);
            if (check_seg_name(&it->chain, it->rel, s, err, errlen) != 0) {
                it->done = 1;
                return -1;
            }
            it->pos = 0;
            it->seg++;
            if (it->seg < it->n_segs && (it->buf = map_sealed(path, &it->len)) != NULL) {
                it->mapped = 1;
            } else {
                if (load_file(path, &it->mem, &it->cap, &it->len, err, errlen) != 0) {
                    it->done = 1;
                    return -1;
                }
                if (it->len == 0)
                    continue; /* an empty segment */
                it->buf = it->mem;
            }
        }
        rec_view r;
        int torn;
        int newest = it->seg == it->n_segs;
        int rc = walk_next(&it->chain, it->rel, it->buf, it->len, &it->pos, newest, &r, &torn, err,
                           errlen);
        if (rc == WALK_REC) {
            out->partition = it->chain.partition;
            out->kafka_offset = r.kafka_offset;
            out->seq = r.seq;
            out->payload = r.payload;
            out->len = r.len;
            memcpy(out->hash, it->chain.prev, DQ_REGLOG_HASH_LEN); /* linking hashed it */
            return 1;
        }
        if (it->mapped)
            munmap(it->buf, it->len);
        it->buf = NULL;
        it->mapped = 0;
        if (rc == WALK_BAD && !torn) {
            it->done = 1;
            return -1;
        }
        /* WALK_END: the next segment; a torn tail (only ever in the newest) ends the partition */
        if (rc == WALK_BAD)
            it->seg = it->n_segs;
    }
}

void dq_reglog_iter_close(dq_reglog_iter *it)
{
    if (it == NULL)
        return;
    if (it->mapped)
        munmap(it->buf, it->len);
    free(it->mem);
    free(it->segs);
    free(it->parts);
    free(it->dir);
    hasher_free(&it->h);
    free(it);
}

/* ---- signed checkpoints ------------------------------------------------------------- */

char *dq_reglog_checkpoint_sign(const dq_reglog_report *rep, const dq_signer *signer,
                                const char *key_id, int64_t at_ms, char *err, size_t errlen)
{
    if (rep == NULL || signer == NULL || key_id == NULL) {
        snprintf(err, errlen, "checkpoint: a report, a signer and a key id are required");
        return NULL;
    }
    if (rep->errors > 0) {
        snprintf(err, errlen, "the log is not intact: %s", rep->first_error);
        return NULL;
    }
    cJSON *cp = NULL, *doc = NULL, *arr;
    char *body = NULL, *sig = NULL, *out = NULL, at[DQ_TIME_LEN + 1];

    cp = cJSON_CreateObject();
    if (cp == NULL)
        goto out;
    cJSON_AddStringToObject(cp, "schema", DQ_REGLOG_CHECKPOINT_SCHEMA);
    cJSON_AddStringToObject(cp, "at", dq_time_format(at_ms, at));
    cJSON_AddNumberToObject(cp, "records", (double)rep->records);
    arr = cJSON_AddArrayToObject(cp, "partitions");
    if (arr == NULL)
        goto out;
    for (size_t i = 0; i < rep->n_partitions; i++) {
        cJSON *p = cJSON_CreateObject();
        char hex[2 * DQ_REGLOG_HASH_LEN + 1];
        if (p == NULL)
            goto out;
        cJSON_AddNumberToObject(p, "partition", rep->partitions[i].partition);
        cJSON_AddNumberToObject(p, "records", (double)rep->partitions[i].records);
        cJSON_AddStringToObject(p, "head",
                                dq_hex(rep->partitions[i].head_hash, DQ_REGLOG_HASH_LEN, hex));
        cJSON_AddItemToArray(arr, p);
    }
    body = cJSON_PrintUnformatted(cp);
    sig = body != NULL ? dq_sign(signer, body, strlen(body)) : NULL;
    if (sig == NULL)
        goto out;
    doc = cJSON_CreateObject();
    if (doc == NULL)
        goto out;
    /* the signature covers body exactly as printed: it is embedded as a string, never
     * re-serialised */
    cJSON_AddStringToObject(doc, "schema", DQ_REGLOG_SIGNED_CHECKPOINT_SCHEMA);
    cJSON_AddStringToObject(doc, "key_id", key_id);
    cJSON_AddStringToObject(doc, "alg", "ed25519");
    cJSON_AddStringToObject(doc, "signature", sig);
    cJSON_AddStringToObject(doc, "checkpoint", body);
    out = cJSON_PrintUnformatted(doc);
out:
    if (out == NULL)
        snprintf(err, errlen, "cannot build the checkpoint");
    cJSON_Delete(cp);
    cJSON_Delete(doc);
    free(body);
    free(sig);
    return out;
}

/* One partition as the checkpoint states it. */
typedef struct {
    int32_t partition;
    uint64_t records;
    const char *head; /* points into content; NULL when missing */
} cp_part;

struct dq_reglog_checkpoint {
    cJSON *doc;                            /* the signed document */
    const char *key_id, *signature, *body; /* point into doc */
    cJSON *content;                        /* body parsed, once its signature verified */
    cp_part *parts;                        /* from content, in the checkpoint's order */
    size_t n_parts;
};

#define CHECKPOINT_MAX_BYTES (1u << 20)
#define CHECKPOINT_MAX_DEPTH 8

dq_reglog_checkpoint *dq_reglog_checkpoint_parse(const char *text, size_t len, const char *name,
                                                 char *err, size_t errlen)
{
    dq_reglog_checkpoint *cp = calloc(1, sizeof *cp);
    if (cp == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cp->doc = dq_json_parse(text, len, CHECKPOINT_MAX_BYTES, CHECKPOINT_MAX_DEPTH, NULL, err,
                            errlen);
    if (cp->doc == NULL)
        goto fail;
    const char *schema = dq_json_str(cp->doc, "schema");
    cp->body = dq_json_str(cp->doc, "checkpoint");
    cp->signature = dq_json_str(cp->doc, "signature");
    cp->key_id = dq_json_str(cp->doc, "key_id");
    if (cp->body == NULL || cp->signature == NULL || cp->key_id == NULL || schema == NULL ||
        strcmp(schema, DQ_REGLOG_SIGNED_CHECKPOINT_SCHEMA) != 0) {
        snprintf(err, errlen, "%s: not a signed checkpoint", name);
        goto fail;
    }
    return cp;

fail:
    dq_reglog_checkpoint_free(cp);
    return NULL;
}

const char *dq_reglog_checkpoint_key_id(const dq_reglog_checkpoint *cp)
{
    return cp != NULL ? cp->key_id : NULL;
}

void dq_reglog_checkpoint_free(dq_reglog_checkpoint *cp)
{
    if (cp == NULL)
        return;
    cJSON_Delete(cp->doc);
    cJSON_Delete(cp->content);
    free(cp->parts);
    free(cp);
}

void dq_reglog_cp_result_free(dq_reglog_cp_result *res)
{
    if (res == NULL)
        return;
    free(res->mismatches);
    res->mismatches = NULL;
    res->n_mismatches = 0;
}

/* Parse the verified body into cp->parts (once per check: a previous check's are freed). */
static int checkpoint_load_content(dq_reglog_checkpoint *cp, char *err, size_t errlen)
{
    cJSON_Delete(cp->content);
    free(cp->parts);
    cp->parts = NULL;
    cp->n_parts = 0;
    cp->content = dq_json_parse(cp->body, strlen(cp->body), CHECKPOINT_MAX_BYTES,
                                CHECKPOINT_MAX_DEPTH, NULL, err, errlen);
    if (cp->content == NULL)
        return -1;
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(cp->content, "partitions");
    size_t n = 0;
    for (const cJSON *p = parts != NULL ? parts->child : NULL; p != NULL; p = p->next)
        n++;
    if (n == 0)
        return 0;
    cp->parts = calloc(n, sizeof *cp->parts);
    if (cp->parts == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (const cJSON *p = parts->child; p != NULL; p = p->next) {
        cp_part *cpp = &cp->parts[cp->n_parts++];
        cpp->partition = (int32_t)dq_json_num(p, "partition", -1);
        cpp->records = (uint64_t)dq_json_num(p, "records", 0);
        cpp->head = dq_json_str(p, "head");
    }
    return 0;
}

static int add_mismatch(dq_reglog_cp_result *res, const dq_reglog_cp_mismatch *m, char *err,
                        size_t errlen)
{
    dq_reglog_cp_mismatch *grown =
        realloc(res->mismatches, (res->n_mismatches + 1) * sizeof *grown);
    if (grown == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    res->mismatches = grown;
    res->mismatches[res->n_mismatches++] = *m;
    return 0;
}

/* Partition `partition` ended with `count` records: any count it was checkpointed at that
 * the log no longer reaches was cut off. */
static int check_partition_end(const dq_reglog_checkpoint *cp, int32_t partition, uint64_t count,
                               dq_reglog_cp_result *res, char *err, size_t errlen)
{
    for (size_t i = 0; i < cp->n_parts; i++) {
        const cp_part *p = &cp->parts[i];
        if (p->partition != partition || p->records <= count)
            continue;
        dq_reglog_cp_mismatch m = {.kind = DQ_REGLOG_CP_CUT, .partition = partition,
                                   .log_records = count, .checkpoint_records = p->records};
        if (add_mismatch(res, &m, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int dq_reglog_checkpoint_check(dq_reglog_checkpoint *cp, const char *dir, const char *pub_b64,
                               dq_reglog_cp_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    if (cp == NULL || dir == NULL || pub_b64 == NULL) {
        snprintf(err, errlen, "checkpoint: a checkpoint, a directory and a public key are "
                              "required");
        return -1;
    }
    int r = dq_verify(pub_b64, cp->body, strlen(cp->body), cp->signature, err, errlen);
    if (r < 0)
        return -1;
    if (r == 0)
        return 1;
    res->signature_ok = 1;
    if (checkpoint_load_content(cp, err, errlen) != 0)
        return -1;
    res->at = dq_json_str(cp->content, "at");

    dq_reglog_iter *it = dq_reglog_iter_open(dir, err, errlen);
    if (it == NULL)
        return -1;
    /* One pass over the log: each entry carries the hash the chain gave it, compared at
     * every partition's checkpointed count. */
    int32_t cur = -1;
    uint64_t count = 0;
    dq_reglog_entry e;
    int rc;
    while ((rc = dq_reglog_iter_next(it, &e, err, errlen)) == 1) {
        if (e.partition != cur) {
            if (cur >= 0 && check_partition_end(cp, cur, count, res, err, errlen) != 0) {
                rc = -1;
                break;
            }
            cur = e.partition;
            count = 0;
        }
        count++;
        for (size_t i = 0; i < cp->n_parts && rc == 1; i++) {
            const cp_part *p = &cp->parts[i];
            char hex[2 * DQ_REGLOG_HASH_LEN + 1];
            if (p->partition != cur || p->records != count ||
                (p->head != NULL && strcmp(p->head, dq_hex(e.hash, DQ_REGLOG_HASH_LEN, hex)) == 0))
                continue;
            dq_reglog_cp_mismatch m = {.kind = DQ_REGLOG_CP_REWRITTEN, .partition = cur,
                                       .checkpoint_records = p->records, .want = p->head};
            memcpy(m.hash, e.hash, DQ_REGLOG_HASH_LEN);
            if (add_mismatch(res, &m, err, errlen) != 0)
                rc = -1;
        }
        if (rc < 0)
            break;
    }
    if (rc == 0 && cur >= 0 && check_partition_end(cp, cur, count, res, err, errlen) != 0)
        rc = -1;
    dq_reglog_iter_close(it);
    if (rc < 0)
        return -1;
    return res->n_mismatches > 0 ? 1 : 0;
}
