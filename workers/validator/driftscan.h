/*
 * driftscan.h - the validator's periodic drift scan (drift.scan_interval; off when unset
 * or 0). Every interval one validator instance compares, for every environment whose
 * variables can be read (gates.h), its variables with its `requires` environment's (names
 * and value hashes; drift_ignore and drift_allow as the gate reads them) and with its own
 * hash set recorded at its last deploy (drift.key set), and emits drift.detected for a
 * drift it has not reported yet.
 *
 * Once per drift: the digest of the drift (the names that drift, never values,
 * dq_drift_diff_digest) is kept in deployq:drift:last:<service>:<env>; a scan that finds
 * the same digest emits nothing, a clean scan stores "clean@<ms>" so that a drift that
 * comes back is reported again. The event's id derives from the previous and the new
 * value of that key, so a scan repeated after a crash between the send and the SET sends
 * the same event again (a duplicate, deduplicated downstream by id).
 *
 * One scanner at a time: each pass is started by the instance that sets
 * deployq:drift:scan-due (SET NX PX interval) and runs under the lease of lock.h on the
 * pseudo-target "_drift/scan" (no service can be named so), so a scan that outlasts the
 * interval is never run twice at once. deployq-rollback notifies drift.detected like the
 * other events that need a person (notify.h).
 */
#ifndef DQ_DRIFTSCAN_H
#define DQ_DRIFTSCAN_H

#include <stdint.h>

#include "validate.h"

/* The Redis key of what the scan last reported for service/env. */
char *dq_driftscan_last_key(const char *service, const char *env, char *out, size_t outlen);

/* One pass, if it is this instance's turn (see above): val needs cfg, drift, redis,
 * producer and actor. Returns the number of drift.detected emitted (0 also when it was
 * not our turn), or -1 when Redis or the broker failed (logged; the next interval tries
 * again). Reading a target's variables failing is logged and skipped, never an event. */
int dq_driftscan_run(dq_validator *val, int64_t now_ms);

/* The same pass without the turn and the lock: for tests and the run above. */
int dq_driftscan_pass(dq_validator *val, int64_t now_ms);

#endif
