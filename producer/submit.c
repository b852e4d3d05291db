/*
 * submit.c - `deployq submit`: what a CI job runs. Builds a deploy request, signs its
 * exact bytes with the CI key, produces it to deployq.requests (acks=all, idempotent)
 * keyed service/environment, and prints the deployment id once the broker acknowledged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "event.h"
#include "kafka.h"
#include "log.h"
#include "sign.h"
#include "signals.h"
#include "stack.h"
#include "util.h"
#include "wait.h"

static const char submit_usage[] =
    "Usage: deployq submit --service NAME --env NAME --version VERSION [options]\n"
    "\n"
    "Submit a signed deploy request to deployq.requests and print its deployment id.\n"
    "The request is accepted when the broker acknowledged it (acks=all); validators then\n"
    "emit deploy.validated or deploy.rejected (with every reason) on deployq.events.\n"
    "\n"
    "  -s, --service NAME      the service, as named in deployq.yaml\n"
    "  -e, --env NAME          the environment (e.g. staging, production)\n"
    "  -v, --version VERSION   what to deploy: a git sha or an image tag\n"
    "      --strategy S        rolling (default), blue-green or canary\n"
    "      --commit-at TIME    commit time, RFC 3339 (for lead-time reports),\n"
    "                          e.g. $(git show -s --format=%cI HEAD)\n"
    "      --ci-run-url URL    link to the CI run (default: from GITHUB_* variables)\n"
    "      --requested-by WHO  default: $GITHUB_ACTOR, else $USER\n"
    "  -k, --key FILE          private key (PEM) to sign with (default: $DEPLOYQ_SIGNING_KEY,\n"
    "                          else the running `deployq up` stack's CI key)\n"
    "      --key-id ID         the key's id in deployq.yaml (default: $DEPLOYQ_KEY_ID, the\n"
    "                          stack's, else the key file's base name)\n"
    "  -t, --timeout SECONDS   give up when the broker has not acknowledged (default 10);\n"
    "                          with --wait: give up waiting for the outcome (default 1800,\n"
    "                          at most 86400)\n"
    "      --json              print {\"deployment_id\",\"partition\",\"offset\"} as JSON;\n"
    "                          with --wait, then each event as one JSON line and last\n"
    "                          {\"deployment_id\",\"outcome\",\"exit_code\"}\n"
    "  -w, --wait              follow the deployment on deployq.events, print each step as\n"
    "                          it happens, and exit with its outcome (below)\n"
    "      --override-freeze REASON\n"
    "                          deploy through a change freeze; the reason is recorded in\n"
    "                          deploy.validated\n"
    "      --dry-run           print the signed message instead of sending it\n"
    "      --issued-at TIME    sign with this issued_at instead of now (reproducing\n"
    "                          requests, clock-skew tests)\n"
    "      --nonce NONCE       use this nonce instead of a random one (the same)\n"
    "\n" DQ_CLI_COMMON_USAGE
    "\n"
    "Exit status: 0 accepted by the broker, 1 not accepted (reason on stderr), 2 usage.\n"
    "With --wait (the verdict comes from the events, not the local configuration):\n"
    "  0 deployed: deploy.succeeded, or deploy.verified when a health watch follows\n"
    "  1 rejected: deploy.rejected (validation, a gate, a denial)\n"
    "  2 usage error\n"
    "  3 failed: deploy.failed, or rollback.failed\n"
    "  4 rolled back: rollback.succeeded\n"
    "  5 timed out: no outcome within --timeout; the deploy may still go on\n"
    "  6 not sent, or deployq.events could not be read\n"
    "  7 degraded, not rolled back: the watch failed under `rollback: notify`\n"
    "  8 approval expired: nobody approved within the environment's approval_timeout\n"
    "\n"
    "Example (GitHub Actions step):\n"
    "  deployq submit --service api --env staging --version \"$GITHUB_SHA\" \\\n"
    "    --commit-at \"$(git show -s --format=%cI HEAD)\"\n";

/* The CI run's URL from the variables GitHub Actions sets, when they are there. */
static char *github_run_url(void)
{
    const char *server = getenv("GITHUB_SERVER_URL");
    const char *repo = getenv("GITHUB_REPOSITORY");
    const char *run = getenv("GITHUB_RUN_ID");
    char buf[2048];

    if (!server || !repo || !run)
        return NULL;
    snprintf(buf, sizeof buf, "%s/%s/actions/runs/%s", server, repo, run);
    return strdup(buf);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int dq_cmd_submit(int argc, char **argv)
{
    dq_cli cli = {.verb = "submit", .usage = submit_usage, .takes = DQ_CLI_COMMON | DQ_CLI_JSON};
    const char *service = NULL, *env = NULL, *version = NULL, *strategy = "rolling";
    const char *commit_at = NULL, *ci_run_url = NULL, *requested_by = NULL;
    const char *key_path = getenv("DEPLOYQ_SIGNING_KEY"), *key_id = getenv("DEPLOYQ_KEY_ID");
    const char *issued_at = NULL, *nonce = NULL, *override_freeze = NULL;
    long long timeout_s = -1;
    int dry_run = 0, wait = 0, rc;
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_STRING('v', "version", &version),
        DQ_OPT_STRING(0, "strategy", &strategy),
        DQ_OPT_STRING(0, "commit-at", &commit_at),
        DQ_OPT_STRING(0, "ci-run-url", &ci_run_url),
        DQ_OPT_STRING(0, "requested-by", &requested_by),
        DQ_OPT_STRING('k', "key", &key_path),
        DQ_OPT_STRING(0, "key-id", &key_id),
        DQ_OPT_INT('t', "timeout", &timeout_s, 1, 86400, "--timeout must be 1..86400 seconds"),
        DQ_OPT_FLAG(0, "dry-run", &dry_run),
        DQ_OPT_STRING(0, "issued-at", &issued_at),
        DQ_OPT_STRING(0, "nonce", &nonce),
        DQ_OPT_FLAG('w', "wait", &wait),
        DQ_OPT_STRING(0, "override-freeze", &override_freeze),
        DQ_OPT_END,
    };
    char err[512], keyidbuf[128];
    int64_t ms;
    dq_request req = {0};
    dq_stack *stack = NULL;
    dq_config *cfg = NULL;
    dq_signer *signer = NULL;
    dq_producer *producer = NULL;
    dq_follow *follow = NULL;
    char *request_text = NULL, *signed_text = NULL;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    if (!service || !env || !version)
        return dq_cli_usage(&cli, submit_usage, 2, "--service, --env and --version are required");
    if (strcmp(strategy, "rolling") != 0 && strcmp(strategy, "blue-green") != 0 && strcmp(strategy, "canary") != 0)
        return dq_cli_usage(&cli, submit_usage, 2, "--strategy must be rolling, blue-green or canary");
    if (commit_at && dq_time_parse(commit_at, &ms) != 0)
        return dq_cli_usage(&cli, submit_usage, 2, "--commit-at is not an RFC 3339 time");
    if (issued_at && dq_time_parse(issued_at, &ms) != 0)
        return dq_cli_usage(&cli, submit_usage, 2, "--issued-at is not an RFC 3339 time");
    if (override_freeze && (!override_freeze[0] || strlen(override_freeze) > 512))
        return dq_cli_usage(&cli, submit_usage, 2, "--override-freeze needs a reason (1..512 characters)");
    if (!wait && timeout_s > 3600)
        return dq_cli_usage(&cli, submit_usage, 2, "--timeout must be 1..3600 seconds without --wait");
    if (wait && dry_run)
        return dq_cli_usage(&cli, submit_usage, 2, "--wait and --dry-run do not go together");
    rc = wait ? DQ_WAIT_ERROR : 1; /* until the request is sent (and, with --wait, followed) */

    stack = dq_stack_find();
    if (!key_path && stack) {
        key_path = stack->ci_key_path;
        if (!key_id)
            key_id = stack->ci_key_id;
    }
    if (!key_path) {
        dq_cli_fail(&cli, "no signing key: pass --key FILE or set DEPLOYQ_SIGNING_KEY "
                          "(create one with `deployq keygen`)");
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

    {
        char id[DQ_UUID_LEN + 1], now[DQ_TIME_LEN + 1], nonce_buf[33];
        unsigned char raw[16];

        if (dq_uuid_v4(id) != 0 || dq_random_bytes(raw, sizeof raw) != 0) {
            dq_cli_fail(&cli, "no randomness available");
            goto out;
        }
        dq_hex(raw, sizeof raw, nonce_buf);
        req.deployment_id = strdup(id);
        req.service = strdup(service);
        req.environment = strdup(env);
        req.version = strdup(version);
        req.strategy = strdup(strategy);
        req.commit_at = dup_or_null(commit_at);
        req.ci_run_url = ci_run_url ? strdup(ci_run_url) : github_run_url();
        if (!requested_by)
            requested_by = getenv("GITHUB_ACTOR") ? getenv("GITHUB_ACTOR") : getenv("USER");
        req.requested_by = dup_or_null(requested_by);
        req.nonce = strdup(nonce ? nonce : nonce_buf);
        req.issued_at = strdup(issued_at ? issued_at : dq_time_format(dq_now_ms(), now));
    }
    request_text = dq_request_encode(&req);
    if (request_text && override_freeze) {
        /* The request schema has override_freeze; dq_request does not carry it, so it is
         * added to the encoded text before signing (the signature covers these bytes). */
        cJSON *doc = cJSON_Parse(request_text);
        cJSON *o = doc ? cJSON_AddObjectToObject(doc, "override_freeze") : NULL;

        free(request_text);
        request_text = NULL;
        if (o && cJSON_AddStringToObject(o, "reason", override_freeze))
            request_text = cJSON_PrintUnformatted(doc);
        cJSON_Delete(doc);
    }
    signed_text = request_text ? dq_sign_envelope(signer, key_id, request_text) : NULL;
    if (!signed_text) {
        dq_cli_fail(&cli, "could not build the signed request");
        goto out;
    }
    if (dry_run) {
        printf("%s\n", signed_text);
        rc = 0;
        goto out;
    }

    cfg = dq_cli_load_config(&cli);
    if (!cfg)
        goto out;
    if (!dq_config_kafka_get(cfg, "bootstrap.servers")) {
        dq_cli_fail(&cli, "no broker configured: pass --brokers, set DEPLOYQ_BROKERS, "
                          "or start a stack with `deployq up`");
        goto out;
    }
    if (wait) {
        /* Note where deployq.events ends *before* sending, so the verdict cannot be missed. */
        follow = dq_follow_new(cfg, 10000, err, sizeof err);
        if (!follow) {
            dq_cli_fail(&cli, "%s", err);
            goto out;
        }
    }
    /* One message, sent and awaited: any batching delay is pure latency. */
    if (!dq_config_kafka_get(cfg, "linger.ms"))
        dq_config_set_kafka(cfg, "linger.ms", "0");
    producer = dq_producer_new(cfg, err, sizeof err);
    if (!producer) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    {
        char key[256];
        int32_t partition = -1;
        int64_t offset = -1;

        dq_target_key(service, env, key, sizeof key);
        if (dq_producer_send(producer, cfg->topic_requests, key, signed_text, strlen(signed_text),
                             (wait || timeout_s < 0 ? 10 : (int)timeout_s) * 1000, &partition, &offset,
                             err, sizeof err) != 0) {
            dq_cli_fail(&cli, "%s", err);
            goto out;
        }
        if (cli.json)
            printf("{\"deployment_id\":\"%s\",\"partition\":%d,\"offset\":%lld}\n",
                   req.deployment_id, (int)partition, (long long)offset);
        else
            printf("%s\n", req.deployment_id);
    }
    rc = 0;
    if (wait) {
        fflush(stdout);
        rc = dq_follow_run(follow, req.deployment_id, (timeout_s < 0 ? 1800 : timeout_s) * 1000LL,
                           cli.json, stdout, dq_stop_flag_install());
    }
out:
    dq_follow_free(follow);
    dq_producer_free(producer);
    free(signed_text);
    free(request_text);
    free(req.deployment_id);
    free(req.service);
    free(req.environment);
    free(req.version);
    free(req.strategy);
    free(req.commit_at);
    free(req.ci_run_url);
    free(req.requested_by);
    free(req.nonce);
    free(req.issued_at);
    dq_signer_free(signer);
    dq_config_free(cfg);
    dq_stack_free(stack);
    return rc;
}
