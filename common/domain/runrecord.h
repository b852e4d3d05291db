/*
 * runrecord.h - the run record: what a deploy (execute.h) or a rollback (rollback.h)
 * keeps in Redis so that it is never done twice. The only code that reads or writes
 * deployq:exec:<deployment_id> and deployq:rb:req:<request id>.
 *
 * A run writes its record when a provider accepted (before the first status poll), again
 * when that changes (execute.h: {"resume_from"} after a provider that ran nothing), and
 * a terminal record once the outcome was delivered; a later run of the same id reads it
 * and resumes or replays instead of deploying again. What a record holds is the caller's
 * business (execute.h and rollback.h document theirs); this module keeps the rules that
 * make it safe:
 *
 *   - A write Redis does not take is not lost: it stays pending in the handle and
 *     dq_runrecord_poll(), which the run calls while it polls the provider, writes it as
 *     soon as Redis takes it. Between the provider's acceptance and that moment a crash of
 *     the process could deploy twice, so the gap is kept as short as the retry interval.
 *   - Redis ends with the newest record the run wrote, never an older one: every write,
 *     taken or not, drops or replaces the pending record. So a pending "started" record is
 *     never written over the {"resume_from"} or terminal record that followed it (a
 *     restart would poll a deployment that ran nothing, or forget the outcome).
 *   - A record that is there but not JSON within the caller's limits counts as no record
 *     (logged): the run then starts over, which the event ids make harmless downstream.
 *
 *   - A started record is also kept in this process's memory (shared by every thread)
 *     from dq_runrecord_start() until dq_runrecord_finish() has the outcome in Redis: when
 *     Redis is down as the provider accepts, the lease is lost too, and the next run of
 *     the same id in this process (after the lock is taken again) finds the record there
 *     through dq_runrecord_read(), writes it to Redis and resumes, never deploying twice.
 *
 * What it cannot do: a pending record and the process memory die with the process. A
 * crash before Redis took the started record can deploy twice.
 *
 * A handle belongs to one run and is used by one thread at a time; its Redis connection
 * is borrowed and used only from calls on the handle.
 */
#ifndef DQ_RUNRECORD_H
#define DQ_RUNRECORD_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "redis.h"

/* The key spaces: prefix + id. */
#define DQ_RUNRECORD_KEY_EXEC "deployq:exec:"       /* + deployment id: a deploy (execute.h) */
#define DQ_RUNRECORD_KEY_ROLLBACK "deployq:rb:req:" /* + rollback.requested event id (rollback.h) */

/* While a record is pending, how often dq_runrecord_poll() tries it again. */
#define DQ_RUNRECORD_RETRY_MS 1000
/* Between the attempts of one dq_runrecord_write() (opts.tries > 1). */
#define DQ_RUNRECORD_TRY_PAUSE_MS 200

/* What differs between the callers; copied by dq_runrecord_new(). */
typedef struct dq_runrecord_opts {
    const char *prefix; /* one of DQ_RUNRECORD_KEY_*: the key is prefix + id */
    const char *noun;   /* "deploy" / "rollback": logs say "<noun> <id>: ..." */
    long ttl_s;         /* every write is SET key json EX ttl_s (> 0) */
    int tries;          /* attempts of dq_runrecord_write() (>= 1); a poll tries once */
    size_t max_bytes;   /* a stored record longer than this is unreadable */
    int max_depth;      /* and one nested deeper than this */
} dq_runrecord_opts;

typedef struct dq_runrecord dq_runrecord;

/* The record of run id. redis NULL: no records are kept (reads find none, writes succeed
 * without doing anything), but the key is still made (the process memory uses it).
 * NULL when out of memory or o is not valid (no prefix or noun, ttl_s <= 0, tries < 1).
 * Free with dq_runrecord_free(). */
dq_runrecord *dq_runrecord_new(dq_redis *redis, const dq_runrecord_opts *o, const char *id);

/* Free the handle and a record still pending in it (never written: see above). NULL is a
 * no-op. */
void dq_runrecord_free(dq_runrecord *rr);

/* prefix + id, the key in Redis; valid until dq_runrecord_free(). */
const char *dq_runrecord_key(const dq_runrecord *rr);

/* Why the last read, parse or write failed (a one-line text, never a password); "" when
 * nothing failed yet. */
const char *dq_runrecord_errstr(const dq_runrecord *rr);

/* GET the record into *rec (the caller frees it with cJSON_Delete). When Redis has none
 * (or one that is unreadable: a warning is logged), the record this process remembers
 * (dq_runrecord_start) is the answer, and it is written to Redis now (logged; pending if
 * Redis refuses). 0 with *rec, or with *rec NULL when there is no record anywhere; -1
 * with *rec NULL when Redis could not be asked (dq_runrecord_errstr says why): the caller
 * must not go on as if there were no record. */
int dq_runrecord_read(dq_runrecord *rr, cJSON **rec);

/* Parse json (a record from elsewhere) with the same limits as dq_runrecord_read(). The
 * object (free with cJSON_Delete), or NULL with the reason in dq_runrecord_errstr.
 * Nothing is logged. */
cJSON *dq_runrecord_parse(dq_runrecord *rr, const char *json);

/* Write json (borrowed) as the record: opts.tries attempts, DQ_RUNRECORD_TRY_PAUSE_MS
 * apart, each SET key json EX ttl_s answered +OK. Whatever the outcome, the record that
 * was pending is dropped: json is newer.
 *   0   Redis took it; nothing is pending.
 *   -1  Redis refused it or could not be asked (logged as an error, reason in
 *       dq_runrecord_errstr): a copy of json is now pending and dq_runrecord_poll() writes
 *       it from DQ_RUNRECORD_RETRY_MS on. json NULL (the caller ran out of memory making
 *       it): nothing is written and nothing is pending, so no older record can follow.
 * redis NULL: 0, nothing written or kept. */
int dq_runrecord_write(dq_runrecord *rr, const char *json);

/* A record of a provider deployment under way (started, {"resume_from"}): remembered in
 * this process first (an error is logged when memory runs out), then written as
 * dq_runrecord_write() does, with its return value. */
int dq_runrecord_start(dq_runrecord *rr, const char *json);

/* The outcome's record: written as dq_runrecord_write() does; once Redis took it, the
 * process memory of the run is forgotten. */
int dq_runrecord_finish(dq_runrecord *rr, const char *json);

/* Forget the process memory of the run: the record in Redis already has the outcome. */
void dq_runrecord_forget(dq_runrecord *rr);

/* Call while the run waits (the provider chain's should_continue). When a record is
 * pending and its retry time has come: one attempt.
 *   1   the pending record was written now (logged); nothing is pending.
 *   0   nothing to do: nothing pending, or not its time yet (no Redis call).
 *   -1  refused again (logged as an error): still pending, next try DQ_RUNRECORD_RETRY_MS
 *       from now. */
int dq_runrecord_poll(dq_runrecord *rr);

/* 1 when rec is an intent record ({"intent": true, ...}): written before a provider is
 * asked to deploy, replaced by the started record once one accepted. Finding one (and no
 * memory of the run in this process) means an earlier run may have had a deployment
 * accepted that it could not record yet (Redis was down): execute.c waits for it. */
int dq_runrecord_is_intent(const cJSON *rec);

/* Write every record this process remembers (dq_runrecord_start) that Redis never took,
 * wherever Redis holds no record of that run or only its intent (one Lua script per
 * record: a newer record of another run is never written over). For a thread that talks
 * to Redis regularly whatever runs (the orphan scanner, runlease.c), so that a run that
 * ended or lost its lease while Redis was down is recorded as soon as Redis is back, before
 * another process's wait for it (execute.h, intent_wait_ms) ends. The number written, or
 * -1 when Redis could not be asked (the rest is tried at the next call). */
int dq_runrecord_flush(dq_redis *redis);

/* The pending record (borrowed, valid until the next write, poll or free), or NULL. */
const char *dq_runrecord_pending(const dq_runrecord *rr);

#endif
