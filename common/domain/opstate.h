/*
 * opstate.h - what an operator set on a target or a deployment, in Redis: the one place
 * that knows these keys. The validator writes them once it verified a signed operator
 * command (workers/validator/operator.c); the executor and the rollback worker read them.
 *
 *   deployq:paused:<service>/<environment>  {"by","reason","at"}  `deployq pause`: the
 *       executor starts no deploy of the target (they wait, in order) until `resume`
 *   deployq:held:<service>/<environment>    {"by","reason","at"}  `deployq hold`: the
 *       rollback worker does not act on the monitor's rollback.requested until `release`
 *   deployq:cancel:<deployment_id>          {"by","reason","at"}  `deployq cancel`: the
 *       executor drops the deployment before it starts, or cancels it at the provider
 *       (kept 7 days, as the idempotency records)
 *
 * "by" is the id of the operator key that signed the command, "at" RFC 3339. A mark is
 * never a secret. Every call is one Redis command; -1 means Redis could not be asked (the
 * caller retries or keeps what it knew).
 */
#ifndef DQ_OPSTATE_H
#define DQ_OPSTATE_H

#include <stdint.h>

#include "redis.h"

typedef enum {
    DQ_OPSTATE_PAUSED,
    DQ_OPSTATE_HELD,
} dq_opstate_kind;

#define DQ_CANCEL_TTL_S (7 * 24 * 3600)

/* One mark, as read. */
typedef struct dq_opmark {
    char by[128];
    char reason[520];
    char at[40];
} dq_opmark;

/* Set the mark of kind on service/environment (replacing one there). 0, -1. */
int dq_opstate_set(dq_redis *r, dq_opstate_kind kind, const char *service, const char *environment,
                   const dq_opmark *mark);
/* Remove it. 1 removed, 0 there was none, -1 Redis unreachable. */
int dq_opstate_clear(dq_redis *r, dq_opstate_kind kind, const char *service, const char *environment);
/* Read it: 1 set (*mark filled when mark is not NULL), 0 not set, -1 Redis unreachable.
 * An unreadable value counts as set, with by "?" (fail safe: paused or held). */
int dq_opstate_get(dq_redis *r, dq_opstate_kind kind, const char *service, const char *environment,
                   dq_opmark *mark);

/* Ask for deployment_id to be cancelled. 0, -1. */
int dq_cancel_set(dq_redis *r, const char *deployment_id, const dq_opmark *mark);
/* 1 a cancel was asked (*mark filled when not NULL), 0 not, -1 Redis unreachable. */
int dq_cancel_get(dq_redis *r, const char *deployment_id, dq_opmark *mark);
#endif
