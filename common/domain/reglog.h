/*
 * reglog.h - the registry's storage engine: an append-only, tamper-evident log of every
 * event on deployq.events, one hash chain per Kafka partition.
 *
 * deployq-registry appends each consumed event here and commits the Kafka offset only after
 * dq_reglog_commit() has made the group durable; on start it reads the last offset back
 * from the log (dq_reglog_last_offset), so a restart resumes exactly where the file ends.
 * `deployq verify` and `replay` read the same files with dq_reglog_verify_dir() and the
 * iterator. The byte layout, recovery rules and error texts are specified in
 * docs/registry-format.md; the constants below are that layout.
 *
 * A record's hash (SHA-256 of the whole record, the next record's prev hash) is computed
 * here and nowhere else: the writer chains with it, verify and the iterator check with it,
 * the iterator hands it to readers in dq_reglog_entry.hash, and signed checkpoints (the
 * last section) are made from verify's head hashes and checked against the iterator's.
 *
 * Files: <dir>/p<partition>/<20-digit first sequence>.seg. One writer per partition (an
 * exclusive flock on the partition directory enforces it); readers take no lock.
 */
#ifndef DQ_REGLOG_H
#define DQ_REGLOG_H

#include <stddef.h>
#include <stdint.h>

#include "sign.h"

/* Record layout (little-endian), see docs/registry-format.md. */
#define DQ_REGLOG_MAGIC "DQR1"
#define DQ_REGLOG_HEADER_LEN 60 /* magic 4, length 4, seq 8, partition 4, offset 8, prev 32 */
#define DQ_REGLOG_OVERHEAD 64   /* header + the trailing crc32c */
#define DQ_REGLOG_MAX_PAYLOAD (16u * 1024 * 1024)
#define DQ_REGLOG_DEFAULT_SEGMENT_BYTES (64ull * 1024 * 1024)
#define DQ_REGLOG_HASH_LEN 32

/* Result codes of the writer calls; dq_reglog_errstr() holds the detail. */
typedef enum {
    DQ_REGLOG_OK = 0,
    DQ_REGLOG_EIO = -1,     /* write/fdatasync failed: the handle is now failed */
    DQ_REGLOG_EOFFSET = -2, /* kafka offset not above the last one: refused, handle usable */
    DQ_REGLOG_EINVAL = -3,  /* bad argument (payload too large, negative offset, NULL) */
    DQ_REGLOG_EFAILED = -4, /* an earlier I/O failure failed the handle: the caller must exit */
    DQ_REGLOG_ENOMEM = -5,  /* the append buffer could not grow: refused, handle usable */
} dq_reglog_result;

typedef struct dq_reglog dq_reglog;

typedef struct {
    /* A segment rolls before a record that would take it past this size (a record larger
     * than the limit gets a segment of its own). 0 means DQ_REGLOG_DEFAULT_SEGMENT_BYTES. */
    uint64_t segment_bytes;
    /* 0 (default): open checks every segment of the partition. 1: only the newest two
     * (enough to recover the tail and the chain link into it) for a faster start on a
     * large log; `deployq verify` still checks everything. */
    int tail_only;
} dq_reglog_opts;

/* Open (creating <dir> and <dir>/p<partition> when missing) the log of one partition for
 * appending. opts may be NULL for the defaults. Recovery: a torn tail of the newest segment
 * (a partly written record with no whole record after it) is truncated to the last whole
 * record, fsynced and logged as a warning. Any other bad record stops the open: NULL with
 * err set to "p0/00000000000000000000.seg: offset 1234: crc mismatch (record 17)" (path
 * relative to dir). Also NULL if another writer holds the partition. Close with
 * dq_reglog_close(). */
dq_reglog *dq_reglog_open(const char *dir, int32_t partition, const dq_reglog_opts *opts,
                          char *err, size_t errlen);

/* Buffer one record (nothing is written until dq_reglog_commit). kafka_offset must be >= 0
 * and strictly above the offset of every record already in the log or buffered: a
 * duplicate or out-of-order offset returns DQ_REGLOG_EOFFSET and changes nothing, so a
 * redelivered message can never enter the log twice. payload is copied; len may be 0 and
 * at most DQ_REGLOG_MAX_PAYLOAD. Returns DQ_REGLOG_OK or a negative dq_reglog_result. */
int dq_reglog_append(dq_reglog *log, int64_t kafka_offset, const void *payload, size_t len);

/* Make every buffered record durable: one write per touched segment and one fdatasync for
 * the whole group (a group that crosses a segment boundary syncs the full segment first,
 * creates the next one and fsyncs the directory). Only after DQ_REGLOG_OK may the caller
 * commit the Kafka offset. A failed write or fdatasync is never retried: the handle becomes
 * failed (DQ_REGLOG_EIO now, DQ_REGLOG_EFAILED from every later call) and the caller must
 * exit; the next open recovers the tail. Nothing buffered: DQ_REGLOG_OK, no syscall. */
int dq_reglog_commit(dq_reglog *log);

/* Kafka offset of the last durable record, -1 when the log is empty. Resume from +1. */
int64_t dq_reglog_last_offset(const dq_reglog *log);
/* Number of durable records (= the sequence number the next record gets). */
uint64_t dq_reglog_count(const dq_reglog *log);
/* Number of records appended but not yet committed. */
size_t dq_reglog_pending(const dq_reglog *log);
/* SHA-256 of the last durable record (all zeros when empty) into out. */
void dq_reglog_head_hash(const dq_reglog *log, unsigned char out[DQ_REGLOG_HASH_LEN]);
/* The reason of the last failed call on this handle ("" if none). On a failed handle it
 * stays the I/O error that failed it. */
const char *dq_reglog_errstr(const dq_reglog *log);
/* Close the files and free the handle. Uncommitted appends are discarded (they were never
 * durable, so their Kafka offsets were never committed). NULL is a no-op. */
void dq_reglog_close(dq_reglog *log);

/* CRC32C (Castagnoli, as in iSCSI/ext4: crc of "123456789" is 0xe3069283) of buf. */
uint32_t dq_reglog_crc32c(const void *buf, size_t len);

/* ---- reading: replay ---------------------------------------------------------------- */

typedef struct dq_reglog_iter dq_reglog_iter;

typedef struct {
    int32_t partition;
    int64_t kafka_offset;
    uint64_t seq;
    const unsigned char *payload; /* owned by the iterator, valid until the next call */
    size_t len;
    /* SHA-256 of this whole record, as the chain computed it: the prev hash of the record
     * after it, and the partition's head hash when it is the last. Readers never rebuild
     * a record to hash it. */
    unsigned char hash[DQ_REGLOG_HASH_LEN];
} dq_reglog_entry;

/* Iterate over every record of a registry dir: partitions in ascending order, each in
 * sequence order. Every record is checked as verify checks it (crc, sequence, chain,
 * offsets). Returns NULL with a reason in err if dir cannot be read. */
dq_reglog_iter *dq_reglog_iter_open(const char *dir, char *err, size_t errlen);
/* 1 with the next record in *out; 0 at the end; -1 with "p0/<seg>: offset N: reason" in err
 * on a bad record (the iteration is over). A torn tail of a partition's newest segment (for
 * example a commit in progress) ends that partition quietly: it was never durable. */
int dq_reglog_iter_next(dq_reglog_iter *it, dq_reglog_entry *out, char *err, size_t errlen);
void dq_reglog_iter_close(dq_reglog_iter *it);

/* ---- reading: verify ---------------------------------------------------------------- */

typedef struct {
    int32_t partition;
    uint64_t records;                             /* whole, valid records before any error */
    unsigned char head_hash[DQ_REGLOG_HASH_LEN];  /* SHA-256 of the last valid record */
    int ok;                                       /* 1 intact, 0 see error */
    char error[256]; /* "p0/<segment>.seg: offset N: reason" for the first broken link */
} dq_reglog_partition_report;

typedef struct {
    size_t n_partitions;
    dq_reglog_partition_report *partitions; /* malloc'd, ascending partition order */
    uint64_t records;                       /* sum over partitions */
    size_t errors;                          /* partitions that are not intact */
    char first_error[256];                  /* the first partition's error, "" if intact */
} dq_reglog_report;

/* Read-only check of every partition under dir: magic, length bounds, crc, consecutive
 * sequence, the prev-hash chain (across segments), the partition field, strictly rising
 * Kafka offsets and that each segment's name is the sequence of its first record. A torn
 * tail is a failure here too, reported as "...: torn tail: <reason>". Within a partition
 * the check stops at the first error; other partitions are still checked.
 * Returns 0 when the log is intact, 1 when rep lists errors, -1 (reason in err) when dir
 * cannot be read. Free rep's contents with dq_reglog_report_free(). A log cut exactly at a
 * record boundary of its newest segment is a valid shorter log: catching that needs the
 * head hash recorded elsewhere. */
int dq_reglog_verify_dir(const char *dir, dq_reglog_report *rep, char *err, size_t errlen);
/* Free what verify allocated in rep (not rep itself). NULL is a no-op. */
void dq_reglog_report_free(dq_reglog_report *rep);

/* ---- signed checkpoints ------------------------------------------------------------- */

/* A checkpoint records each partition's record count and head hash at one moment, signed
 * with an Ed25519 key (sign.h), to be published elsewhere: a log later cut at a record
 * boundary (which verify alone accepts as a valid shorter log) or rewritten no longer
 * matches it. The document (docs/operations.md, "Tamper evidence"):
 *   {"schema":DQ_REGLOG_SIGNED_CHECKPOINT_SCHEMA,"key_id","alg":"ed25519","signature",
 *    "checkpoint":"<text>"}
 * where the signature covers exactly <text>, itself
 *   {"schema":DQ_REGLOG_CHECKPOINT_SCHEMA,"at","records",
 *    "partitions":[{"partition","records","head":"<64 hex digits>"}]}. */
#define DQ_REGLOG_CHECKPOINT_SCHEMA "deployq.checkpoint/v1"
#define DQ_REGLOG_SIGNED_CHECKPOINT_SCHEMA "deployq.signed-checkpoint/v1"

/* The signed checkpoint of an intact log, from the report dq_reglog_verify_dir() filled:
 * every partition's records and head hash, "at" = at_ms (ms since the epoch), signed by
 * signer under key_id. Returns the malloc'd document (one line, no newline; the caller
 * frees it), or NULL with a reason in err: rep not intact (a checkpoint never vouches for
 * a broken log), signing or out of memory. */
char *dq_reglog_checkpoint_sign(const dq_reglog_report *rep, const dq_signer *signer,
                                const char *key_id, int64_t at_ms, char *err, size_t errlen);

typedef struct dq_reglog_checkpoint dq_reglog_checkpoint;

/* Parse a signed checkpoint document (text[len], e.g. a file's contents). name is what
 * the errors call it (a path). Nothing is verified yet. NULL with err set to the JSON
 * error or "<name>: not a signed checkpoint". Free with dq_reglog_checkpoint_free(). */
dq_reglog_checkpoint *dq_reglog_checkpoint_parse(const char *text, size_t len, const char *name,
                                                 char *err, size_t errlen);
/* The id of the key it says signed it (to look its public key up); valid while cp lives. */
const char *dq_reglog_checkpoint_key_id(const dq_reglog_checkpoint *cp);
/* NULL is a no-op. */
void dq_reglog_checkpoint_free(dq_reglog_checkpoint *cp);

/* How the log differs from a checkpoint, for one partition the checkpoint names. */
typedef enum {
    DQ_REGLOG_CP_CUT = 1,       /* the partition now has fewer records: removed from the end */
    DQ_REGLOG_CP_REWRITTEN = 2, /* the record at the checkpointed count hashes differently */
} dq_reglog_cp_kind;

typedef struct {
    dq_reglog_cp_kind kind;
    int32_t partition;
    uint64_t log_records;        /* CUT: the records the partition has now */
    uint64_t checkpoint_records; /* the count the checkpoint recorded */
    /* REWRITTEN: the log's hash of record checkpoint_records - 1, and the head the
     * checkpoint says (its text as written, NULL when missing) */
    unsigned char hash[DQ_REGLOG_HASH_LEN];
    const char *want;
} dq_reglog_cp_mismatch;

/* The strings (at, want) point into the checkpoint: valid until it is freed or checked
 * again. */
typedef struct {
    int signature_ok;                  /* 0: the signature is invalid, nothing else checked */
    const char *at;                    /* the checkpoint's "at", NULL if none */
    size_t n_mismatches;
    dq_reglog_cp_mismatch *mismatches; /* malloc'd, in log order (partitions ascending) */
} dq_reglog_cp_result;

/* Check cp against the registry under dir: first its signature with pub_b64 (base64
 * Ed25519 public key), then, for every partition of the log that the checkpoint names,
 * that the log still has at least the checkpointed number of records and that the record
 * at that count has the checkpointed head hash (so a log that only grew still matches).
 * Records are read with the iterator, so call it on a log verify found intact. The check
 * walks the partitions the log has: one the checkpoint names that has no record left at
 * all (its directory removed or emptied) is not reported.
 * Returns 0 when the signature is valid and the log matches, 1 when it is invalid or the
 * log differs (see res), -1 with a reason in err (malformed key or signature, a
 * checkpoint text that is not JSON, an unreadable or broken log, out of memory).
 * Free res's contents with dq_reglog_cp_result_free() whatever the result. */
int dq_reglog_checkpoint_check(dq_reglog_checkpoint *cp, const char *dir, const char *pub_b64,
                               dq_reglog_cp_result *res, char *err, size_t errlen);
/* Free what the check allocated in res (not res itself). NULL is a no-op. */
void dq_reglog_cp_result_free(dq_reglog_cp_result *res);

#endif
