/*
 * event.h - the event envelope of DESIGN.md and the deploy request.
 *
 * Every event on deployq.events has the same envelope:
 *   {"schema":"deployq.event/v1","id":"<uuid>","type":"deploy.succeeded",
 *    "deployment_id":"<uuid>","service":"api","environment":"production",
 *    "version":"<sha>","at":"<RFC 3339 ms>","actor":"<program@host/pid>","fence":42,
 *    "data":{...}}
 * deployment_id, service, environment and version are absent only when unknown (a request
 * too broken to read). A deploy request travels on deployq.requests signed, as
 *   {"schema":"deployq.signed/v1","key_id":"ci-1","alg":"ed25519",
 *    "signature":"<base64>","request":"<the exact JSON text of the request>"}
 * so the signature covers exactly the bytes of "request" (see sign.h).
 */
#ifndef DQ_EVENT_H
#define DQ_EVENT_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DQ_EVENT_SCHEMA "deployq.event/v1"
#define DQ_REQUEST_SCHEMA "deployq.request/v1"
#define DQ_SIGNED_SCHEMA "deployq.signed/v1"

#define DQ_TOPIC_REQUESTS "deployq.requests"
#define DQ_TOPIC_EVENTS "deployq.events"
#define DQ_TOPIC_DEAD "deployq.dead"

/* Event types (schemas/events/<type>.json describes each one's data). */
#define DQ_EV_VALIDATED "deploy.validated"
#define DQ_EV_REJECTED "deploy.rejected"
#define DQ_EV_AWAITING_APPROVAL "deploy.awaiting_approval"
#define DQ_EV_STARTED "deploy.started"
#define DQ_EV_PROVIDER_FAILED "provider.failed"
#define DQ_EV_SUCCEEDED "deploy.succeeded"
#define DQ_EV_FAILED "deploy.failed"
#define DQ_EV_MONITOR_STARTED "monitor.started"
#define DQ_EV_HEALTH_DEGRADED "health.degraded"
#define DQ_EV_VERIFIED "deploy.verified"
#define DQ_EV_ROLLBACK_REQUESTED "rollback.requested"
#define DQ_EV_ROLLBACK_STARTED "rollback.started"
#define DQ_EV_ROLLBACK_SUCCEEDED "rollback.succeeded"
#define DQ_EV_ROLLBACK_FAILED "rollback.failed"
#define DQ_EV_TRAFFIC_SWITCHED "traffic.switched"
#define DQ_EV_NOTIFICATION_SENT "notification.sent"
#define DQ_EV_NOTIFICATION_FAILED "notification.failed"
#define DQ_EV_APPROVAL_REFUSED "approval.refused"
/* Operator verbs (workers/validator/operator.c, opstate.h) and what they cause. */
#define DQ_EV_OPERATOR_REFUSED "operator.refused"
#define DQ_EV_CANCEL_REQUESTED "deploy.cancel_requested"
#define DQ_EV_QUEUED "deploy.queued"
#define DQ_EV_TARGET_PAUSED "target.paused"
#define DQ_EV_TARGET_RESUMED "target.resumed"
#define DQ_EV_TARGET_HELD "target.held"
#define DQ_EV_TARGET_RELEASED "target.released"
#define DQ_EV_ROLLBACK_HELD "rollback.held"
#define DQ_EV_DRIFT_DETECTED "drift.detected"
/* Canary rollouts (workers/executor, canary.h): each step, its analysis, the end. */
#define DQ_EV_CANARY_STEP "canary.step"
#define DQ_EV_CANARY_ANALYSIS "canary.analysis"
#define DQ_EV_CANARY_PROMOTED "canary.promoted"
#define DQ_EV_CANARY_ABORTED "canary.aborted"

/* NULL-terminated list of every type above. */
extern const char *const dq_event_types[];
int dq_event_type_known(const char *type);

typedef struct dq_event {
    char id[DQ_UUID_LEN + 1];
    char *type;
    char *deployment_id; /* NULL when unknown */
    char *service;       /* NULL when unknown */
    char *environment;   /* NULL when unknown */
    char *version;       /* NULL when unknown */
    int64_t at_ms;
    char *actor;
    int64_t fence; /* 0 before a lock was taken */
    cJSON *data;   /* owned; never NULL (an empty object at least) */
} dq_event;

/* A new event with a random id, at = now, fence 0 and an empty data object. Strings are
 * copied; any may be NULL except type. Returns NULL only on allocation failure. */
dq_event *dq_event_new(const char *type, const char *deployment_id, const char *service,
                       const char *environment, const char *version, const char *actor);
void dq_event_free(dq_event *ev);

/* Give the event a deterministic id derived from name (dq_uuid_from_name), so that the
 * same logical event produced twice (after a redelivery) carries the same id. */
void dq_event_set_id_from(dq_event *ev, const char *name);

/* Encode to compact JSON; returns a malloc'd string the caller frees, or NULL. */
char *dq_event_encode(const dq_event *ev);

/* Decode (with the limits of json.h) into a new event. Checks the envelope's required
 * members and their types; it does not validate data against a schema (schema.h does).
 * Returns NULL and a one-line reason in err on failure. */
dq_event *dq_event_decode(const char *buf, size_t len, char *err, size_t errlen);

/* A fast look at a stored event, for readers of a million of them (history, replay):
 * dq_event_scan() checks the same things as dq_event_decode() in one pass over the bytes,
 * allocates nothing and builds no cJSON tree. It says yes only when it is sure: the bytes
 * are strict JSON (RFC 8259) without any backslash or control byte in a string, without a
 * duplicate member at any depth, with integers only for "fence", within json.h's size and
 * depth limits, and the envelope passes every check of dq_event_decode(). Then decoding the
 * same bytes would succeed with exactly the values of the view. Anything else, invalid or
 * merely unusual (an escape, a BOM, odd whitespace, "fence":1e3), gets "not sure", and
 * the caller decodes as before: the scan never rejects an event by itself. */

/* Bytes of the scanned buffer (no NUL after them); p NULL: the member is absent or null. */
typedef struct {
    const char *p;
    size_t n;
} dq_event_span;

typedef struct {
    dq_event_span id, type, deployment_id, service, environment, version, actor;
    dq_event_span data; /* the text of the data object, braces included */
    int64_t at_ms;
    int64_t fence;
} dq_event_view;

/* 1 with *out filled when sure (see above), 0 when not sure: call dq_event_decode(). A
 * string of the view is the bytes between its quotes, which with no escape are exactly
 * the decoded string. */
int dq_event_scan(const char *buf, size_t len, dq_event_view *out);

/* A quicker "no" for filters (history --service X): the first top-level member called name,
 * reading the record only up to it. 1 with *value when its value is a string without an
 * escape, 2 when its value is anything but a string (null too), 0 when not sure (not
 * reached before an escape, odd bytes or the end; a string with an escape). When it says 1
 * with another string than X, or 2, no decoding of the record gives an event whose name is
 * X: either that is its value, or the record has the member twice or is no JSON, and the
 * decode refuses it. Never allocates. */
int dq_event_peek(const char *buf, size_t len, const char *name, dq_event_span *value);

/* 1 when the span holds exactly the NUL-terminated string s. */
int dq_event_span_eq(dq_event_span sp, const char *s);

/* The Kafka message key of a target: "service/environment" into out. */
char *dq_target_key(const char *service, const char *environment, char *out, size_t outlen);

/* A deploy request (the inner, signed document). */
typedef struct dq_request {
    char *deployment_id;
    char *service;
    char *environment;
    char *version;
    char *strategy;     /* "rolling" | "blue-green" | "canary" | NULL */
    char *commit_at;    /* RFC 3339 or NULL */
    char *requested_by; /* or NULL */
    char *ci_run_url;   /* or NULL */
    char *nonce;
    char *issued_at;    /* RFC 3339 */
} dq_request;

void dq_request_free(dq_request *r);
/* Build the JSON text of a request (compact, members in a fixed order). malloc'd. */
char *dq_request_encode(const dq_request *r);
/* Read a request out of a parsed object (already schema-checked or not: missing members
 * stay NULL). Returns a new request; never fails except on allocation. */
dq_request *dq_request_from_json(const cJSON *obj);

#endif
