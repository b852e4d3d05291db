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
 */
#ifndef DQ_VALIDATE_H
#define DQ_VALIDATE_H

#include <stdint.h>

#include "config.h"
#include "event.h"
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
    char actor[256];
    uint64_t n_validated, n_rejected;
} dq_validator;

typedef struct dq_verdict {
    dq_reason reasons[DQ_MAX_REASONS];
    int n_reasons;
    dq_request *request;  /* parsed when the request text was readable, else NULL */
    char key_id[65];      /* when present in the wrapper */
    int transient;        /* Redis could not be asked: retry the message later */
} dq_verdict;

/* Judge one message. now_ms is the validator's clock. Fills *v (free with
 * dq_verdict_clear). Returns 0, or -1 when a transient failure (Redis) prevents a verdict:
 * then v->transient is set and nothing was decided. */
int dq_validate(dq_validator *val, const dq_message *m, int64_t now_ms, dq_verdict *v);
void dq_verdict_clear(dq_verdict *v);

/* Build the verdict event (deploy.validated or deploy.rejected) of a judged message.
 * Its id is derived from the message's topic/partition/offset, so a redelivered message
 * produces the same event id. Caller frees with dq_event_free. */
dq_event *dq_verdict_event(const dq_validator *val, const dq_message *m, const dq_verdict *v);

/* The consumer handler: judge, emit on deployq.events keyed service/environment, and
 * only then let the offset be stored. */
dq_handle_result dq_validator_handle(void *ctx, const dq_message *m, char *err, size_t errlen);

#endif
