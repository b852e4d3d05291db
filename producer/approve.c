/*
 * approve.c - `deployq approve` / `deployq deny`: a person with an approver key decides a
 * deployment that waits in deploy.awaiting_approval. The decision is an approval document
 * (schemas/approval.json) signed exactly like a deploy request and sent to
 * deployq.requests, where the validator checks the key (role approver), the signature,
 * the issued_at window, the nonce and the key's authority (not the request's signer,
 * inside its scope) before it lets the deploy proceed, rejects it or refuses the decision.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "event.h"
#include "sign.h"
#include "stack.h"
#include "util.h"

static const char approve_usage[] =
    "Usage: deployq approve DEPLOYMENT_ID [--reason TEXT] [options]\n"
    "       deployq deny DEPLOYMENT_ID --reason TEXT [options]\n"
    "\n"
    "Decide a deployment that waits for approval (deploy.awaiting_approval; environments\n"
    "with `approval: required`). The decision is signed with an approver's key, a key of\n"
    "role approver in deployq.yaml (not a CI key), and sent to deployq.requests; the\n"
    "validator then emits deploy.validated (with approved_by) or deploy.rejected.\n"
    "An approver may not approve a request signed by its own key (or the same public key\n"
    "under another id), nor decide outside its key's `services:`/`environments:`: such a\n"
    "decision is refused (approval.refused) and the deployment keeps waiting for another\n"
    "approver. `deployq approvals` lists what waits.\n"
    "\n"
    "  -r, --reason TEXT       why (required for deny; recorded in deploy.rejected)\n"
    "  -k, --key FILE          the approver's private key (default: $DEPLOYQ_APPROVER_KEY,\n"
    "                          else the running `deployq up` stack's approver key)\n"
    "      --key-id ID         its id in deployq.yaml (default: $DEPLOYQ_APPROVER_KEY_ID,\n"
    "                          else the key file's base name)\n"
    "      --approver NAME     who you are, for the record (default: $USER)\n"
    "      --dry-run           print the signed message instead of sending it\n"
    "      --issued-at TIME    sign with this issued_at instead of now (tests)\n"
    "      --nonce NONCE       use this nonce instead of a random one (tests)\n"
    "\n" DQ_CLI_COMMON_USAGE
    "\n"
    "Exit status: 0 the decision was accepted by the broker, 1 not sent, 2 usage.\n"
    "Follow the outcome with `deployq submit --wait` (already running in CI) or by reading\n"
    "deployq.events.\n";

/* The approval document, members in a fixed order. malloc'd. */
static char *approval_text(const char *deployment_id, const char *decision, const char *reason,
                           const char *approver, const char *nonce, const char *issued_at)
{
    cJSON *doc = cJSON_CreateObject();
    char *text = NULL;

    if (!doc)
        return NULL;
    if (cJSON_AddStringToObject(doc, "schema", "deployq.approval/v1") &&
        cJSON_AddStringToObject(doc, "deployment_id", deployment_id) &&
        cJSON_AddStringToObject(doc, "decision", decision) &&
        (!reason || cJSON_AddStringToObject(doc, "reason", reason)) &&
        (!approver || cJSON_AddStringToObject(doc, "approver", approver)) &&
        cJSON_AddStringToObject(doc, "nonce", nonce) &&
        cJSON_AddStringToObject(doc, "issued_at", issued_at))
        text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return text;
}

static int decide(int argc, char **argv, const char *verb, const char *decision)
{
    dq_cli cli = {.verb = verb, .usage = approve_usage, .takes = DQ_CLI_COMMON, .n_args = 1,
                  .args_reason = "expected one DEPLOYMENT_ID"};
    const char *reason = NULL, *approver = getenv("USER"), *issued_at = NULL, *nonce = NULL;
    const char *key_path = getenv("DEPLOYQ_APPROVER_KEY"), *key_id = getenv("DEPLOYQ_APPROVER_KEY_ID");
    const char *deployment_id;
    int dry_run = 0, rc;
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('r', "reason", &reason),
        DQ_OPT_STRING('k', "key", &key_path),
        DQ_OPT_STRING(0, "key-id", &key_id),
        DQ_OPT_STRING(0, "approver", &approver),
        DQ_OPT_FLAG(0, "dry-run", &dry_run),
        DQ_OPT_STRING(0, "issued-at", &issued_at),
        DQ_OPT_STRING(0, "nonce", &nonce),
        DQ_OPT_END,
    };
    char err[512], keyidbuf[128], now[DQ_TIME_LEN + 1], nonce_buf[33];
    unsigned char raw[16];
    int64_t ms;
    dq_stack *stack = NULL;
    dq_config *cfg = NULL;
    dq_signer *signer = NULL;
    char *text = NULL, *signed_text = NULL;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    rc = 1;
    deployment_id = cli.args[0];
    if (!dq_uuid_valid(deployment_id))
        return dq_cli_usage(&cli, approve_usage, 2, "DEPLOYMENT_ID is not a deployment id (a UUID)");
    if (strcmp(decision, "deny") == 0 && (!reason || !reason[0]))
        return dq_cli_usage(&cli, approve_usage, 2, "deny needs --reason");
    if (reason && (!reason[0] || strlen(reason) > 512))
        return dq_cli_usage(&cli, approve_usage, 2, "--reason must be 1..512 characters");
    if (approver && (!approver[0] || strlen(approver) > 256))
        approver = NULL;
    if (issued_at && dq_time_parse(issued_at, &ms) != 0)
        return dq_cli_usage(&cli, approve_usage, 2, "--issued-at is not an RFC 3339 time");

    stack = dq_stack_find();
    if (!key_path && stack && stack->approver_key_path) {
        key_path = stack->approver_key_path;
        if (!key_id)
            key_id = "approver-local"; /* the id `deployq up` gives its approver key */
    }
    if (!key_path) {
        dq_cli_fail(&cli, "no approver key: pass --key FILE or set DEPLOYQ_APPROVER_KEY "
                          "(create one with `deployq keygen --role approver`)");
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
    text = approval_text(deployment_id, decision, reason, approver, nonce ? nonce : nonce_buf,
                         issued_at ? issued_at : dq_time_format(dq_now_ms(), now));
    signed_text = text ? dq_sign_envelope(signer, key_id, text) : NULL;
    if (!signed_text) {
        dq_cli_fail(&cli, "could not build the signed decision");
        goto out;
    }
    if (dry_run) {
        printf("%s\n", signed_text);
        rc = 0;
        goto out;
    }
    /* Keyed by the deployment: the decision needs no ordering with other targets. */
    if (dq_cli_send_signed(&cli, deployment_id, signed_text, &cfg, NULL, NULL) != 0)
        goto out;
    printf("%s %s (signed by %s)\n", strcmp(decision, "approve") == 0 ? "approval" : "denial",
           deployment_id, key_id);
    rc = 0;
out:
    free(signed_text);
    free(text);
    dq_signer_free(signer);
    dq_config_free(cfg);
    dq_stack_free(stack);
    return rc;
}

int dq_cmd_approve(int argc, char **argv)
{
    return decide(argc, argv, "approve", "approve");
}

int dq_cmd_deny(int argc, char **argv)
{
    return decide(argc, argv, "deny", "deny");
}
