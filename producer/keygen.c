/*
 * keygen.c - `deployq keygen`: an Ed25519 key pair for signing deploy requests.
 * The private key goes to a 0600 PEM file; the public key is printed as the
 * configuration entry to paste under keys:.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sign.h"

static const char keygen_usage[] =
    "Usage: deployq keygen --out FILE [--id KEY_ID] [--role ci|approver|operator]\n"
    "\n"
    "Create an Ed25519 key pair. The private key is written to FILE (PEM, mode 0600; an\n"
    "existing file is never overwritten). The public key is printed as the entry to add\n"
    "under `keys:` in deployq.yaml, so validators accept requests signed with FILE.\n"
    "\n"
    "  -o, --out FILE      where to write the private key (required)\n"
    "  -i, --id KEY_ID     the key id requests will carry (default: the file's base name)\n"
    "  -r, --role ROLE     ci (submits deploys, default), approver (approves production\n"
    "                      deploys), operator (break-glass deploys)\n"
    "  -h, --help          this help\n"
    "\n"
    "Example:\n"
    "  deployq keygen --out ci.key --id ci-2026\n"
    "  # store ci.key as a CI secret; add the printed entry to deployq.yaml\n";

int dq_cmd_keygen(int argc, char **argv)
{
    dq_cli cli = {.verb = "keygen", .usage = keygen_usage};
    const char *out = NULL, *id = NULL, *role = "ci";
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('o', "out", &out),
        DQ_OPT_STRING('i', "id", &id),
        DQ_OPT_STRING('r', "role", &role),
        DQ_OPT_END,
    };
    char idbuf[128];
    char err[256];
    char *pub = NULL;
    int rc;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    if (!out)
        return dq_cli_usage(&cli, keygen_usage, 2, "--out FILE is required");
    if (strcmp(role, "ci") != 0 && strcmp(role, "approver") != 0 && strcmp(role, "operator") != 0)
        return dq_cli_usage(&cli, keygen_usage, 2, "--role must be ci, approver or operator");
    if (!id) {
        if (dq_cli_key_id_from_path(out, idbuf, sizeof idbuf) != 0)
            return dq_cli_usage(&cli, keygen_usage, 2, "cannot derive a key id: pass --id");
        id = idbuf;
    }
    if (dq_sign_keygen(out, &pub, err, sizeof err) != 0) {
        dq_cli_fail(&cli, "%s", err);
        return 1;
    }
    printf("# private key written to %s (keep it secret)\n", out);
    printf("# add this under keys: in deployq.yaml\n");
    printf("- id: %s\n  public_key: %s\n  role: %s\n", id, pub, role);
    free(pub);
    return 0;
}
