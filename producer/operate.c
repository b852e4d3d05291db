/*
 * operate.c - the operator's verbs in an incident: `deployq cancel|retry DEPLOYMENT`,
 * `deployq pause|resume|hold|release --service S --env E`. Each is an operator command
 * (schemas/operator.json) signed with a key of role operator, exactly as a deploy request
 * is signed, and sent to deployq.requests; the validator verifies it (key, role,
 * signature, issued_at window, nonce), applies it and records it on deployq.events, or
 * refuses it with operator.refused (workers/validator/operator.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "event.h"
#include "sign.h"
#include "util.h"

/* Each verb: how it names what it acts on, and the event that records it. */
#define OP_USAGE_TAIL                                                                         \
    "\n"                                                                                      \
    "  -r, --reason TEXT       why (recorded in the event; 1..512 characters)\n"             \
    "  -k, --key FILE          the operator's private key (default: $DEPLOYQ_OPERATOR_KEY);\n" \
    "                          a key of role operator in deployq.yaml (`deployq keygen\n"    \
    "                          --role operator`), never a CI key\n"                          \
    "      --key-id ID         its id in deployq.yaml (default: $DEPLOYQ_OPERATOR_KEY_ID,\n" \
    "                          else the key file's base name)\n"                             \
    "      --operator NAME     who you are, for the record (default: $USER)\n"               \
    "      --dry-run           print the signed command instead of sending it\n"             \
    "      --issued-at TIME    sign with this issued_at instead of now (tests)\n"            \
    "      --nonce NONCE       use this nonce instead of a random one (tests)\n"             \
    "\n" DQ_CLI_COMMON_USAGE                                                                  \
    "\n"                                                                                      \
    "Exit status: 0 the command was accepted by the broker, 1 not sent, 2 usage.\n"         \
    "The validator then records what happened on deployq.events: the verb's event, or\n"    \
    "operator.refused with the reason (wrong role, unknown key, bad signature, replayed\n"   \
    "nonce, unknown target, out of the key's scope, nothing to cancel or retry). See them\n" \
    "with\n"                                                                                  \
    "`deployq history --type operator.refused --type target.paused ...`; docs/operations.md\n" \
    "(\"In an incident\") says how to see what is paused or held now.\n"

static const char cancel_usage[] =
    "Usage: deployq cancel DEPLOYMENT_ID [--reason TEXT] [options]\n"
    "\n"
    "Cancel a deployment. One that waits (queued, or its target paused) is dropped before\n"
    "it starts; one running at a provider is cancelled AT THE PROVIDER, and its\n"
    "deploy.failed (reason cancelled) says whether the provider confirmed it stopped\n"
    "(data.cancel confirmed, or unconfirmed: it may still go live). A deployment that\n"
    "already concluded is refused: \"nothing to cancel: deployment X already succeeded\".\n"
    "Signed with an operator key; recorded as deploy.cancel_requested.\n" OP_USAGE_TAIL;
static const char retry_usage[] =
    "Usage: deployq retry DEPLOYMENT_ID [--reason TEXT] [options]\n"
    "\n"
    "Deploy a failed deployment's service, environment and version again, as a NEW\n"
    "deployment (its own deployment id, derived from this command) linked to the old one.\n"
    "The new deployment goes through every gate a request goes through (freeze,\n"
    "promotion, drift, approval: required); its verdict, deploy.validated, deploy.rejected\n"
    "with the reasons, or deploy.awaiting_approval, carries data.retry_of = DEPLOYMENT_ID.\n"
    "Refused (operator.refused) when the deployment is unknown (never validated, or over 7\n"
    "days ago), has no outcome yet (waiting or running: cancel it first), or SUCCEEDED:\n"
    "to deploy a version that succeeded again, submit a new request (`deployq submit`),\n"
    "signed by CI like any deploy. A retry cannot override a freeze.\n"
    "Sending the same signed command twice retries once (its nonce).\n"
    "Signed with an operator key; follow the new deployment with `deployq history\n"
    "--type deploy.validated` (data.retry_of) or `deployq status`.\n" OP_USAGE_TAIL;
#define TARGET_USAGE_BODY                                                                     \
    "\n"                                                                                      \
    "  pause    the executor starts none of the target's deploys until `resume`; they wait\n" \
    "           in order (each says deploy.queued) and then run in that order. A deploy\n"     \
    "           already at a provider goes on (cancel it instead); other targets go on.\n"   \
    "  resume   the waiting deploys run, in order.\n"                                        \
    "  hold     automatic rollback is held: the monitor still watches, its\n"                \
    "           rollback.requested is recorded and notified (rollback.held) but not acted\n"  \
    "           on. A manual `deployq rollback` still runs.\n"                               \
    "  release  automatic rollback acts again.\n"                                            \
    "Signed with an operator key; recorded as target.paused, target.resumed, target.held,\n" \
    "target.released.\n"                                                                     \
    "\n"                                                                                      \
    "  -s, --service NAME      the target's service\n"                                       \
    "  -e, --env NAME          the target's environment\n" OP_USAGE_TAIL
#define TARGET_USAGE(verb) "Usage: deployq " verb " --service S --env E [--reason TEXT] [options]\n" TARGET_USAGE_BODY

/* Each verb: how it names what it acts on, its usage, and the event that records it. */
typedef struct op_verb {
    const char *name;
    int by_target;     /* --service/--env (else one DEPLOYMENT_ID) */
    const char *usage;
    const char *event; /* what the validator records when it is accepted */
} op_verb;

static const op_verb op_verbs[] = {
    {"cancel", 0, cancel_usage, "deploy.cancel_requested"},
    {"retry", 0, retry_usage, "the new deployment's deploy.validated (or deploy.rejected)"},
    {"pause", 1, TARGET_USAGE("pause"), "target.paused"},
    {"resume", 1, TARGET_USAGE("resume"), "target.resumed"},
    {"hold", 1, TARGET_USAGE("hold"), "target.held"},
    {"release", 1, TARGET_USAGE("release"), "target.released"},
};

/* The command document, members in a fixed order. malloc'd. */
static char *command_text(const char *verb, const char *deployment_id, const char *service, const char *env,
                          const char *reason, const char *who, const char *nonce, const char *issued_at)
{
    cJSON *doc = cJSON_CreateObject();
    char *text = NULL;

    if (!doc)
        return NULL;
    if (cJSON_AddStringToObject(doc, "schema", "deployq.operator/v1") &&
        cJSON_AddStringToObject(doc, "verb", verb) &&
        (!deployment_id || cJSON_AddStringToObject(doc, "deployment_id", deployment_id)) &&
        (!service || cJSON_AddStringToObject(doc, "service", service)) &&
        (!env || cJSON_AddStringToObject(doc, "environment", env)) &&
        (!reason || cJSON_AddStringToObject(doc, "reason", reason)) &&
        (!who || cJSON_AddStringToObject(doc, "operator", who)) && cJSON_AddStringToObject(doc, "nonce", nonce) &&
        cJSON_AddStringToObject(doc, "issued_at", issued_at))
        text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return text;
}

static int operate(int argc, char **argv, const op_verb *ov)
{
    const char *usage = ov->usage;
    dq_cli cli = {.verb = ov->name, .usage = usage, .takes = DQ_CLI_COMMON, .n_args = ov->by_target ? 0 : 1,
                  .args_reason = ov->by_target ? "unexpected argument (the target is --service/--env)"
                                               : "expected one DEPLOYMENT_ID"};
    const char *reason = NULL, *who = getenv("USER"), *issued_at = NULL, *nonce = NULL;
    const char *service = NULL, *env = NULL, *deployment_id = NULL;
    const char *key_path = getenv("DEPLOYQ_OPERATOR_KEY"), *key_id = getenv("DEPLOYQ_OPERATOR_KEY_ID");
    int dry_run = 0, rc;
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('r', "reason", &reason),
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_STRING('k', "key", &key_path),
        DQ_OPT_STRING(0, "key-id", &key_id),
        DQ_OPT_STRING(0, "operator", &who),
        DQ_OPT_FLAG(0, "dry-run", &dry_run),
        DQ_OPT_STRING(0, "issued-at", &issued_at),
        DQ_OPT_STRING(0, "nonce", &nonce),
        DQ_OPT_END,
    };
    char err[512], keyidbuf[128], now[DQ_TIME_LEN + 1], nonce_buf[33], target[300];
    unsigned char raw[16];
    int64_t ms;
    dq_config *cfg = NULL;
    dq_signer *signer = NULL;
    char *text = NULL, *signed_text = NULL;
    int32_t partition = -1;
    int64_t offset = -1;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    rc = 1;
    if (ov->by_target) {
        if (!service || !service[0] || !env || !env[0])
            return dq_cli_usage(&cli, usage, 2, "--service and --env are required");
        dq_target_key(service, env, target, sizeof target);
    } else {
        if (service || env)
            return dq_cli_usage(&cli, usage, 2, ov->name[0] == 'c' ? "cancel names a deployment, not --service/--env"
                                                                   : "retry names a deployment, not --service/--env");
        deployment_id = cli.args[0];
        if (!dq_uuid_valid(deployment_id))
            return dq_cli_usage(&cli, usage, 2, "DEPLOYMENT_ID is not a deployment id (a UUID)");
    }
    if (reason && (!reason[0] || strlen(reason) > 512))
        return dq_cli_usage(&cli, usage, 2, "--reason must be 1..512 characters");
    if (who && (!who[0] || strlen(who) > 256))
        who = NULL;
    if (issued_at && dq_time_parse(issued_at, &ms) != 0)
        return dq_cli_usage(&cli, usage, 2, "--issued-at is not an RFC 3339 time");
    if (!key_path) {
        dq_cli_fail(&cli, "no operator key: pass --key FILE or set DEPLOYQ_OPERATOR_KEY "
                          "(create one with `deployq keygen --role operator`)");
        goto out;
    }
    if (!key_id) {
        if (dq_cli_key_id_from_path(key_path, keyidbuf, sizeof keyidbuf) != 0) {
            dq_cli_fail(&cli, "cannot derive a key id from %s: pass --key-id", key_path);
            goto out;
        }
        key_id = keyidbuf;
    }
    signer = dq_signer_load(key_path, err, sizeof err);
    if (!signer) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    if (dq_random_bytes(raw, sizeof raw) != 0) {
        dq_cli_fail(&cli, "no randomness available");
        goto out;
    }
    dq_hex(raw, sizeof raw, nonce_buf);
    text = command_text(ov->name, deployment_id, service, env, reason, who, nonce ? nonce : nonce_buf,
                        issued_at ? issued_at : dq_time_format(dq_now_ms(), now));
    signed_text = text ? dq_sign_envelope(signer, key_id, text) : NULL;
    if (!signed_text) {
        dq_cli_fail(&cli, "could not build the signed command");
        goto out;
    }
    if (dry_run) {
        printf("%s\n", signed_text);
        rc = 0;
        goto out;
    }
    /* Keyed like the target's deploy requests, so that a pause and the requests after it
     * are read in the order they were sent; a cancel by its deployment. */
    if (dq_cli_send_signed(&cli, ov->by_target ? target : deployment_id, signed_text, &cfg, &partition, &offset) != 0)
        goto out;
    printf("%s %s: sent, signed by %s (%s [%d] offset %lld); the validator records %s, or\n"
           "operator.refused with the reason, on %s\n",
           ov->name, ov->by_target ? target : deployment_id, key_id, cfg->topic_requests, (int)partition,
           (long long)offset, ov->event, cfg->topic_events);
    rc = 0;
out:
    free(signed_text);
    free(text);
    dq_signer_free(signer);
    dq_config_free(cfg);
    return rc;
}

static int run_verb(int argc, char **argv, const char *name)
{
    for (size_t i = 0; i < sizeof op_verbs / sizeof op_verbs[0]; i++)
        if (strcmp(op_verbs[i].name, name) == 0)
            return operate(argc, argv, &op_verbs[i]);
    return 2; /* cannot happen: main.c's table names only these */
}

int dq_cmd_cancel(int argc, char **argv) { return run_verb(argc, argv, "cancel"); }
int dq_cmd_retry(int argc, char **argv) { return run_verb(argc, argv, "retry"); }
int dq_cmd_pause(int argc, char **argv) { return run_verb(argc, argv, "pause"); }
int dq_cmd_resume(int argc, char **argv) { return run_verb(argc, argv, "resume"); }
int dq_cmd_hold(int argc, char **argv) { return run_verb(argc, argv, "hold"); }
int dq_cmd_release(int argc, char **argv) { return run_verb(argc, argv, "release"); }
