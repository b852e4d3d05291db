/*
 * approval.h - deployments that wait for approval: parked, then approved, denied or
 * expired.
 *
 * A valid request for a target with `approval: required` (dq_verdict.awaiting) does not
 * get deploy.validated. dq_approval_park() keeps the would-be event in Redis
 * (deployq:pending:<id>) and gives the deploy.awaiting_approval to emit instead; later a
 * signed approve/deny message (dq_approval_handle) or the approval timeout
 * (dq_approval_expire_due) decides it, whichever claims deployq:decided:<id> first.
 *
 * This sits on top of validate.h (its verdicts, nonce claims and dq_validator_emit);
 * validate.c knows nothing of approvals, so the dependency goes one way.
 */
#ifndef DQ_APPROVAL_H
#define DQ_APPROVAL_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "kafka.h"
#include "pending.h"
#include "validate.h"

#define DQ_APPROVAL_SCHEMA "deployq.approval/v1"

/* 1 when the parsed message (dq_parse_message) is a signed wrapper whose request text is
 * an approval document. */
int dq_approval_peek(const dq_parsed *p);

/* Park validated, the deploy.validated that the verdict v of message m would have
 * produced: stored as deployq:pending:<id> for v->approval_timeout_ms (1 s at least) with
 * SET NX, so a redelivered request never resurrects a deployment already decided, and its
 * expiry scheduled (see below). Returns the deploy.awaiting_approval event to emit in its
 * place (its id derived from m's position, so a redelivery yields the same id); the caller
 * frees it with dq_event_free. NULL with *transient set when Redis cannot be asked (retry
 * the message), NULL without on allocation failure. */
dq_event *dq_approval_park(dq_validator *val, const dq_message *m, const dq_verdict *v,
                           const dq_event *validated, int *transient);

/* Decide a pending deployment from an approve/deny message: deploy.validated with
 * approved_by on a valid approver's approval, deploy.rejected (denied, approval_unsigned,
 * stale, ...) otherwise. A valid approver who may not make this decision decides nothing:
 * approval.refused is emitted (approver_is_signer: approving a request signed by the same
 * key id or public key; out_of_scope: the target is outside the key's services or
 * environments) and the deployment keeps waiting. A message for a deployment with nothing
 * pending is logged and skipped. p is m parsed (dq_parse_message), for which
 * dq_approval_peek said 1. */
dq_handle_result dq_approval_handle(dq_validator *val, const dq_message *m, const dq_parsed *p,
                                    char *err, size_t errlen);

/* Approval expiry. A parked deployment is also a member of the sorted set
 * DQ_APPROVAL_EXPIRIES (score: its expiry in wall ms; member: compact JSON with its
 * deployment_id, service, environment and version). The validator's expiry thread calls
 * dq_approval_expire_due() about once a second: each member due is claimed with ZREM (only
 * the validator whose ZREM removed it goes on, so two validators never both reject), then
 * the decision itself with deployq:decided:<id> like an approval (an approval that got
 * there first wins), and deploy.rejected with reason approval_expired is emitted. A member
 * whose rejection could not be emitted is put back for the next pass. */
#define DQ_APPROVAL_EXPIRIES DQ_PENDING_EXPIRIES /* pending.h: the layout, shared with `deployq approvals` */

/* Reject every parked deployment due at now_ms (at most 64 per call). Returns how many
 * were rejected, -1 when Redis or the broker failed (the rest waits for the next call). */
int dq_approval_expire_due(dq_validator *val, int64_t now_ms);

#endif
