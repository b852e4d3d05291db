/*
 * pending.h - the deployments that wait for approval, as the validator keeps them in Redis,
 * for the one who writes them (workers/validator/approval.c) and those who read them
 * (`deployq approvals`). The layout lives here so the two cannot drift apart:
 *
 *   deployq:pending:<id>        the parked deploy.validated (an encoded event), with a TTL of
 *                               the environment's approval_timeout
 *   deployq:approval-expiries   sorted set: score the expiry in wall ms, member compact JSON
 *                               {deployment_id, service, environment, version}
 *   deployq:decided:<id>        who decided first ("topic/partition/offset" of the decision,
 *                               or "expired"); 7 days
 *
 * A deployment waits while its pending record exists and nothing has decided it. Redis is
 * the truth here, not the process: a validator restart changes nothing in what waits, and
 * an expiry that fell due while every validator was down is rejected by the first one back.
 */
#ifndef DQ_PENDING_H
#define DQ_PENDING_H

#include <stddef.h>
#include <stdint.h>

#include "redis.h"

#define DQ_PENDING_PREFIX "deployq:pending:"
#define DQ_DECIDED_PREFIX "deployq:decided:"
#define DQ_PENDING_EXPIRIES "deployq:approval-expiries"

/* One deployment waiting, as dq_pending_list reads it. Strings are owned by the list. */
typedef struct dq_pending {
    char *deployment_id, *service, *environment, *version;
    char *key_id;       /* the key that signed the request */
    char *requested_by; /* the request's requested_by, or NULL */
    int64_t since_ms;   /* when the validator parked it (the parked event's time) */
    int64_t expires_ms; /* when it is rejected (approval_expired) without a decision */
} dq_pending;

/* Every deployment that waits now, soonest expiry first (at most 10000): a member of the
 * expiry set whose pending record exists and that nothing decided. 0 with *out (free with
 * dq_pending_list_free) and *n; -1 with the reason in err when Redis cannot be read. */
int dq_pending_list(dq_redis *r, dq_pending **out, size_t *n, char *err, size_t errlen);
void dq_pending_list_free(dq_pending *list, size_t n);

#endif
