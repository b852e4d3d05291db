/*
 * validate.h - the validator's checks, apart from the consumer loop so they can be
 * tested and benchmarked alone.
 *
 * A message from deployq.requests is judged in this order, collecting *every* reason
 * found (CI sees all its mistakes at once): size, JSON and depth (of the signed wrapper,
 * then of the request inside it), the schemas, the key (known, not retired, role ci),
 * the Ed25519 signature over the exact request bytes, the issued_at window, the service
 * and environment in the configuration, and last the nonce in Redis (SET NX EX), claimed
 * only by a request whose signature and time are good, so a forger cannot burn nonces.
 *
 * Then, for a request whose signature and time are good and whose target is configured,
 * the gates of common/domain/gates.h: a freeze window (passed with override_freeze, whose reason
 * is recorded), promotion (the version must be verified, or succeeded, in the `requires`
 * environment: a key the state consumer (state.c) records from deployq.events), and
 * configuration drift (required variables at the provider, variables of the `requires`
 * environment missing here, and, code drift_values, variables whose values differ from
 * the `requires` environment's by keyed hash, gates.h; drift_allow excepted). When the
 * gates pass and drift.key is set, the target's hash set is recorded (dq_drift_record_key)
 * for `deployq drift` and the scan to say what changed since. For a target with `approval: required` the verdict only
 * says so (awaiting): parking the would-be deploy.validated and deciding it later are
 * approval.h's. approval.c builds on this file (verdicts, nonces, emitting), never the
 * other way round, and main.c's handler tells requests and approvals apart.
 */
#ifndef DQ_VALIDATE_H
#define DQ_VALIDATE_H

#include <stdint.h>

#include "config.h"
#include "event.h"
#include "gates.h"
#include "json.h"
#include "kafka.h"
#include "redis.h"
#include "schema.h"

#define DQ_MAX_REASONS 32

typedef struct dq_reason {
    const char *code; /* one of the codes of schemas/events/deploy.rejected.json */
    char message[512];
} dq_reason;

typedef struct dq_validator {
    const dq_config *cfg;     /* borrowed */
    dq_schema_set *schemas;   /* owned */
    dq_redis *redis;          /* owned */
    dq_producer *producer;    /* borrowed */
    dq_schema *approval;      /* owned: schemas/approval.json */
    dq_schema *operator_cmd;  /* owned: schemas/operator.json (operator.c) */
    char actor[256];
    uint64_t n_validated, n_rejected, n_awaiting;
    char epoch_seen[40];      /* the replay memory's beginning as last read, "" before */
    const dq_drift_settings *drift; /* borrowed; NULL: a random key per check, nothing recorded */
} dq_validator;

typedef struct dq_verdict {
    dq_reason reasons[DQ_MAX_REASONS];
    int n_reasons;
    dq_request *request;  /* parsed when the request text was readable, else NULL */
    char key_id[65];      /* when present in the wrapper */
    int transient;        /* Redis could not be asked: retry the message later */
    char override_freeze[513]; /* the request's override_freeze.reason, or "" */
    int awaiting;         /* valid, but the environment requires approval */
    int64_t approval_timeout_ms;
    /* dq_validate_start: the signature and issued_at are good; with claim the nonce
     * (v->request->nonce) of key claim_key_id, signed at issued_ms, is to be claimed */
    int signed_in_time;
    int claim;
    const char *claim_key_id; /* borrowed from the configuration */
    int64_t issued_ms;
} dq_verdict;

/* A message of deployq.requests parsed once, for every reader: the signed wrapper and the
 * request text inside it. */
typedef struct dq_parsed {
    cJSON *wrapper;           /* NULL when the message is empty or not JSON (wrapper_err) */
    cJSON *inner;             /* the request text parsed, or NULL (inner_err when there was one) */
    const char *request_text; /* inside wrapper, or NULL */
    dq_json_status wrapper_st, inner_st;
    char wrapper_err[512], inner_err[512];
} dq_parsed;

/* Parse m within the configured size and depth limits. Free with dq_parsed_clear. */
void dq_parse_message(const dq_validator *val, const dq_message *m, dq_parsed *p);
void dq_parsed_clear(dq_parsed *p);

/* Add a reason (at most DQ_MAX_REASONS are kept). */
void dq_verdict_add(dq_verdict *v, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* When the replay memory (the nonces in Redis) began, in ms since the epoch, from
 * deployq:nonce-epoch ("<ms> fresh" or "<ms> reset"):
 * - absent, and this validator never saw it: a new Redis, or one wiped while no validator
 *   ran (the two look the same). "fresh", now_ms minus the issued_at window: no floor
 *   beyond the window, so requests signed before the validators started still pass;
 * - absent, or changed to a "fresh" value, after this validator saw it: Redis lost its
 *   nonces under a running validator. "reset" at now_ms: what was signed before can no
 *   longer be told from its replay.
 * Remembers what it read in val->epoch_seen. 0 ok, -1 Redis unreachable or the value
 * unreadable (err says which). */
int dq_validator_nonce_epoch(dq_validator *val, int64_t now_ms, int64_t *epoch_ms, char *err,
                             size_t errlen);

/* Claim a nonce for the message m (key deployq:nonce:<key_id>:<nonce>), signed at
 * issued_ms. 0 fresh or our own (a redelivery of m), 1 replayed (owner gets the first
 * user's position), 2 issued before the replay memory began (owner gets that moment): a
 * Redis that lost its nonces cannot tell a replay of such a message from its first
 * sending, so it is refused, and the signer signs again (see dq_validator_nonce_epoch).
 * -1 Redis unreachable. */
int dq_validator_claim_nonce(dq_validator *val, const dq_message *m, const char *key_id,
                             const char *nonce, int64_t issued_ms, char *owner, size_t ownerlen);

/* One nonce to claim, for dq_validator_claim_nonces. */
typedef struct dq_nonce_claim {
    const dq_message *m;
    const char *key_id, *nonce;
    int64_t issued_ms;
    int rc;          /* out: as dq_validator_claim_nonce returns (0, 1 or 2) */
    char owner[256]; /* out: for 1 and 2, as there */
} dq_nonce_claim;

/* dq_validator_claim_nonce for n messages with one read of the replay memory's beginning
 * and the SETs pipelined in one round trip (a second one GETs the owners of the nonces
 * that were taken: redeliveries and replays). Claims of one batch run in order, so of two
 * messages with the same nonce the later is the replay. 0 with every rc set, -1 Redis
 * unreachable or refusing: nothing decided (some nonces may be claimed already, by their
 * own messages, which then pass as redeliveries). */
int dq_validator_claim_nonces(dq_validator *val, dq_nonce_claim *claims, size_t n);

/* Emit ev on deployq.events keyed service/environment ("unknown" without a target).
 * 0 acknowledged, -1 with a reason in err (retry later). */
int dq_validator_emit(dq_validator *val, const dq_event *ev, char *err, size_t errlen);
/* The same without waiting: fn(ctx, err) says later whether it was acknowledged
 * (kafka.h dq_producer_send_cb). 0 queued, -1 not queued (fn never called), reason in err. */
int dq_validator_emit_async(dq_validator *val, const dq_event *ev, dq_delivery_fn fn, void *ctx,
                            char *err, size_t errlen);

/* Copy attacker-controlled text for a message: printable ASCII only, bounded. */
const char *dq_validator_safe(const char *s, char *buf, size_t buflen);

/* data.reasons of a refusal: v's reasons as [{code, message}], in order. */
void dq_verdict_add_reasons(cJSON *data, const dq_verdict *v);
/* data.source: where the message judged was read, {topic, partition, offset}. */
void dq_validator_add_source(cJSON *data, const dq_message *m);

/* What a signed message other than a deploy request (an approval, an operator command)
 * needs of its key, and how its refusals read. */
typedef struct dq_signed_rules {
    const char *role;           /* the key's role: "approver", "operator" */
    const char *noun;           /* "approval": "the approval is not signed ..." */
    const char *needs;          /* "approvals need an approver key": after a wrong role */
    const char *code_unsigned;  /* no signature or key_id, a key unknown or retired */
    const char *code_role;      /* a key of another role */
    const char *code_signature; /* a signature that does not match the inner text */
} dq_signed_rules;

/* The one check of such a message's signature: the wrapper's key_id names a configured,
 * unretired key of rules->role whose Ed25519 signature matches the exact inner text, and
 * the inner issued_at is inside the issued_at window ("stale", "future"). Reasons go to v
 * (v->key_id gets the key id, made safe); *key_out is the verified key, NULL when the
 * signature does not count. A missing or unreadable issued_at adds nothing: the caller's
 * schema check reports it. Never asks Redis (the nonce is the caller's, claimed last). */
void dq_validator_check_signed(const dq_validator *val, const dq_parsed *p, const dq_signed_rules *rules,
                               int64_t now_ms, dq_verdict *v, const dq_key **key_out);

/* The gates of common/domain/gates.h (freeze, promotion, drift, approval: required) for
 * v->request, a request that is signed, on time and aimed at a configured target; inner is
 * its document (for override_freeze; NULL: none). Reasons go to v, and v->awaiting and
 * v->approval_timeout_ms are set. 0, or -1 when Redis cannot be asked (retry). Used by
 * dq_validate_finish and by an operator's retry (operator.h), which is judged as a request. */
int dq_validate_gates(dq_validator *val, dq_verdict *v, const cJSON *inner, int64_t now_ms);

/* Judge one message. now_ms is the validator's clock. Fills *v (free with
 * dq_verdict_clear). Returns 0, or -1 when a transient failure (Redis) prevents a verdict:
 * then v->transient is set and nothing was decided. */
int dq_validate(dq_validator *val, const dq_message *m, int64_t now_ms, dq_verdict *v);

/* dq_validate in two halves, so that a batch claims its nonces in one round trip between
 * them. dq_validate_start runs every check before the nonce (no Redis) and says in
 * v->claim whether a nonce is to be claimed; dq_validate_finish takes the claim's outcome
 * (claim_rc and owner as dq_validator_claim_nonce gives them; ignored without v->claim)
 * and runs the gates. p is m parsed, and must outlive both calls. finish returns as
 * dq_validate. */
void dq_validate_start(dq_validator *val, const dq_parsed *p, int64_t now_ms, dq_verdict *v);
int dq_validate_finish(dq_validator *val, const dq_parsed *p, int64_t now_ms, dq_verdict *v,
                       int claim_rc, const char *owner);
void dq_verdict_clear(dq_verdict *v);

/* Build the verdict event (deploy.validated or deploy.rejected) of a judged message.
 * Its id is derived from the message's topic/partition/offset, so a redelivered message
 * produces the same event id. Caller frees with dq_event_free. */
dq_event *dq_verdict_event(const dq_validator *val, const dq_message *m, const dq_verdict *v);

/* ---- state.c ---- */

/* What the validator learns from deployq.events (consumer group <group>-state): each
 * deploy.verified and deploy.succeeded is recorded as dq_gates_state_key() for the
 * promotion gate. ctx is a dq_state. */
typedef struct dq_state {
    const dq_config *cfg; /* borrowed */
    dq_redis *redis;      /* owned: its own connection (this runs on its own thread) */
    uint64_t n_recorded;
} dq_state;

/* And each deploy.validated as DQ_DEPLOYMENT_KEY<deployment_id> =
 * {"service","environment","version","strategy"} (kept 7 days, as the executor's run
 * record): what `deployq retry` and an operator key's scope know of a deployment. */
#define DQ_DEPLOYMENT_KEY "deployq:deployment:"
#define DQ_DEPLOYMENT_TTL_S (7L * 24 * 3600)

dq_handle_result dq_state_handle(void *ctx, const dq_message *m, char *err, size_t errlen);
#endif
