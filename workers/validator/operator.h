/*
 * operator.h - operator commands: `deployq cancel|retry|pause|resume|hold|release`.
 *
 * The CLI (producer/operate.c) sends, on deployq.requests, the same signed wrapper as a
 * deploy request whose inner text is an operator command (schemas/operator.json):
 *   {"schema":"deployq.operator/v1","verb":"pause","service":"api","environment":"prod",
 *    "reason":"...","operator":"...","nonce":"...","issued_at":"..."}
 * A command counts only when it matches the schema and is signed by a configured,
 * unretired key of role operator (dq_validator_check_signed, the check approvals use
 * too), inside the issued_at window, with a fresh nonce (the replay memory of validate.h),
 * on a target inside the key's scope (dq_key_in_scope; for cancel and retry, the target of
 * the deployment's record, DQ_DEPLOYMENT_KEY: a scoped key may not act on a deployment
 * whose target is not known). Then it is applied in Redis (opstate.h: the executor and
 * the rollback worker read it) and recorded on deployq.events, actor the key's id:
 * deploy.cancel_requested, target.paused, target.resumed, target.held, target.released.
 * Anything else is refused with operator.refused and every reason (codes in
 * schemas/events/operator.refused.json), including a cancel of a deployment that already
 * concluded ("nothing to cancel: deployment X already succeeded").
 *
 * retry is not a mark: it is judged as a new deploy request of the old deployment's
 * service, environment, version and strategy (from its DQ_DEPLOYMENT_KEY record), through
 * the same gates (dq_validate_gates) and, under approval: required, parked like one
 * (approval.h). Its verdict, deploy.validated / deploy.rejected / deploy.awaiting_approval
 * with data.retry_of, is the command's record; the new deployment id is derived from the
 * key id and the nonce. Only a deployment whose run record (execute.h) ended in
 * deploy.failed is retried: unknown_deployment, not_concluded (waiting or running) and
 * nothing_to_retry (it succeeded: a new request from CI deploys it again) are refused.
 *
 * Applying comes before
 * recording, and both are repeatable, so a command redelivered after a crash is applied
 * again (the same) and recorded with the same event id (from the message's position).
 */
#ifndef DQ_OPERATOR_H
#define DQ_OPERATOR_H

#include "kafka.h"
#include "validate.h"

#define DQ_OPERATOR_SCHEMA "deployq.operator/v1"

/* 1 when p is an operator command (a wrapper whose inner schema is deployq.operator/v1). */
int dq_operator_peek(const dq_parsed *p);

/* The checks that need no Redis: the schema (when val->operator_cmd is loaded), the key
 * (configured, not retired, role operator), the signature over the exact inner text, the
 * issued_at window and, for a target verb, that service/environment are configured.
 * Reasons go to v; *key_out is the verified key, NULL when the signature does not count. */
void dq_operator_check(const dq_validator *val, const dq_parsed *p, int64_t now_ms, dq_verdict *v,
                       const dq_key **key_out);

/* Verify, apply and record the command in m (dq_operator_peek said so). DQ_HANDLED once
 * its event is on deployq.events, DQ_RETRY when Redis or the broker could not be reached. */
dq_handle_result dq_operator_handle(dq_validator *val, const dq_message *m, const dq_parsed *p, char *err,
                                    size_t errlen);
#endif
