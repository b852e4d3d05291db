/*
 * wait.h - following one deployment on deployq.events until it has an outcome: what
 * `deployq submit --wait` runs after the request was accepted.
 *
 * The follower notes the end of every partition of the events topic *before* the request
 * is sent, then reads from there, so no event of the deployment can slip by between the
 * send and the first read. It joins no consumer group and commits nothing.
 *
 * Outcomes and exit codes (README "submit --wait"):
 *   0 deployed: deploy.succeeded when its data.watch is false, else deploy.verified
 *   1 rejected: deploy.rejected (also a denied or unsigned approval)
 *   3 failed: deploy.failed, or rollback.failed
 *   4 rolled back: rollback.succeeded
 *   5 timed out: no outcome within the timeout (the deploy may still go on)
 *   6 could not follow (broker unreachable, topic missing)
 *   7 degraded, not rolled back: the watch failed and the target's policy is
 *     `rollback: notify` (rollback.failed with data.policy "notify"); a person decides
 *   8 approval expired: deploy.rejected with reason approval_expired
 * Whether a watch follows deploy.succeeded is the event's data.watch (set by the executor,
 * which knows the target's configuration); only an event without it (an older executor)
 * falls back to this client's configuration.
 */
#ifndef DQ_WAIT_H
#define DQ_WAIT_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

enum {
    DQ_WAIT_DEPLOYED = 0,
    DQ_WAIT_REJECTED = 1,
    DQ_WAIT_FAILED = 3,
    DQ_WAIT_ROLLED_BACK = 4,
    DQ_WAIT_TIMEOUT = 5,
    DQ_WAIT_ERROR = 6,
    DQ_WAIT_NOT_ROLLED_BACK = 7,
    DQ_WAIT_APPROVAL_EXPIRED = 8,
};

typedef struct dq_follow dq_follow;

/* Connect and note the end offsets of cfg->topic_events (within timeout_ms). Call it
 * before sending the request. NULL with a one-line reason in err. cfg is borrowed and must
 * outlive the follower. */
dq_follow *dq_follow_new(const dq_config *cfg, int timeout_ms, char *err, size_t errlen);
void dq_follow_free(dq_follow *f);

/* Read the deployment's events until an outcome, timeout_ms, or *stop (may be NULL).
 * Each event is printed to out as it arrives: one line per step on a terminal or in
 * text mode, the event's JSON (one line) in json mode, followed in json mode by
 * {"deployment_id","outcome","exit_code"}. Returns the exit code above. */
int dq_follow_run(dq_follow *f, const char *deployment_id, int64_t timeout_ms, int json, FILE *out,
                  volatile sig_atomic_t *stop);

/* "deployed", "rejected", "failed", "rolled_back", "timed_out", "not_rolled_back",
 * "approval_expired" or "error". */
const char *dq_wait_outcome_name(int code);

#endif
