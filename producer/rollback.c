/*
 * rollback.c - `deployq rollback`: a person asks for a rollback of a target. The request
 * is a rollback.requested event on deployq.events, keyed by the target like every event
 * of it, exactly what deployq-monitor emits with its evidence; deployq-rollback then
 * applies the target's policy, takes its lock and restores the last verified version
 * (or --to VERSION). Authority comes from the right to write deployq.events (Kafka ACLs),
 * as for every worker's event.
 *
 * The failing version and its deployment are read from what deployq-rollback remembers
 * in Redis (the version now serving), so the request names what it rolls back; without
 * Redis the worker fills them in itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "event.h"
#include "json.h"
#include "kafka.h"
#include "redis.h"
#include "util.h"
#include "wait.h"

static const char rollback_usage[] =
    "Usage: deployq rollback --service NAME --env NAME --reason TEXT [--to VERSION] [options]\n"
    "\n"
    "Ask for a rollback of service/environment: a rollback.requested event that\n"
    "deployq-rollback acts on (policy `rollback: auto`): it takes the target's lock and\n"
    "restores VERSION, or by default the last verified version that is not the one now\n"
    "serving. With `rollback: notify` it only notifies. Without a verified version to\n"
    "return to it refuses (rollback.failed): never a blind rollback.\n"
    "\n"
    "  -s, --service NAME      the service (required)\n"
    "  -e, --env NAME          the environment (required)\n"
    "  -r, --reason TEXT       why (required; recorded in the events and notifications)\n"
    "  -t, --to VERSION        the version to return to (default: the last verified one)\n"
    "      --requested-by NAME who asks, for the record (default: $USER)\n"
    "  -w, --wait              follow the rollback until rollback.succeeded/failed\n"
    "      --timeout DURATION  how long --wait waits (default 10m)\n"
    "\n" DQ_CLI_COMMON_USAGE
    "\n"
    "Exit status: 0 the request was accepted by the broker (with --wait: the rollback\n"
    "succeeded), 1 not sent, 2 usage, 3 (--wait) the rollback failed, 5 (--wait) no outcome\n"
    "within the timeout, 6 (--wait) could not follow.\n";

/* --timeout DURATION ("10m"), into milliseconds. */
static int parse_timeout(void *dst, const char *arg)
{
    int64_t ms = dq_duration_parse(arg);

    if (ms <= 0)
        return -1;
    *(int64_t *)dst = ms;
    return 0;
}

/* What deployq-rollback records as serving now: version and deployment id (malloc'd, or
 * NULL when unknown or Redis is not reachable: the worker then fills them in). */
static void current_of(const dq_config *cfg, const char *service, const char *env, char **version,
                       char **deployment_id)
{
    char err[256], key[512], *s = NULL;
    dq_redis *r = dq_redis_connect(cfg->redis_url, cfg->redis_timeout_ms, err, sizeof err);
    cJSON *o;

    *version = *deployment_id = NULL;
    if (!r)
        return;
    snprintf(key, sizeof key, "deployq:rb:current:%s/%s", service, env);
    if (dq_redis_get(r, key, &s) == 0 && s) {
        o = dq_json_parse(s, strlen(s), 4096, 4, NULL, err, sizeof err);
        if (dq_json_str(o, "version"))
            *version = strdup(dq_json_str(o, "version"));
        if (dq_json_str(o, "deployment_id") && dq_uuid_valid(dq_json_str(o, "deployment_id")))
            *deployment_id = strdup(dq_json_str(o, "deployment_id"));
        cJSON_Delete(o);
    }
    free(s);
    dq_redis_free(r);
}

/* printable ASCII without spaces, as the schemas want of a version */
static int version_ok(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] < '!' || v[i] > '~')
            return 0;
    return 1;
}

int dq_cmd_rollback(int argc, char **argv)
{
    dq_cli cli = {.verb = "rollback", .usage = rollback_usage, .takes = DQ_CLI_COMMON};
    const char *service = NULL, *env = NULL, *reason = NULL, *to = NULL, *who = getenv("USER");
    int wait = 0, rc;
    int64_t timeout_ms = 600000;
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_STRING('r', "reason", &reason),
        DQ_OPT_STRING('t', "to", &to),
        DQ_OPT_STRING(0, "requested-by", &who),
        DQ_OPT_FLAG('w', "wait", &wait),
        DQ_OPT_PARSE(0, "timeout", &timeout_ms, parse_timeout,
                     "--timeout is not a duration such as 5m"),
        DQ_OPT_END,
    };
    char err[512], key[300], actor[256];
    dq_config *cfg = NULL;
    dq_producer *producer = NULL;
    dq_follow *follow = NULL;
    dq_event *ev = NULL;
    char *json = NULL, *version = NULL, *deployment_id = NULL;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    rc = 1;
    if (!service || !service[0] || !env || !env[0])
        return dq_cli_usage(&cli, rollback_usage, 2, "--service and --env are required");
    if (!reason || !reason[0] || strlen(reason) > 1024)
        return dq_cli_usage(&cli, rollback_usage, 2, "--reason is required (1..1024 characters)");
    if (to && !version_ok(to))
        return dq_cli_usage(&cli, rollback_usage, 2, "--to must be 1..128 printable characters, no spaces");
    if (!who || !who[0] || strlen(who) > 256)
        who = "deployq-cli";

    cfg = dq_cli_load_config(&cli);
    if (!cfg)
        goto out;
    if (!dq_config_environment(cfg, service, env)) {
        dq_cli_fail(&cli, "%s/%s is not a configured service/environment", service, env);
        goto out;
    }
    if (!dq_config_kafka_get(cfg, "bootstrap.servers")) {
        dq_cli_fail(&cli, "no broker configured: pass --brokers, set DEPLOYQ_BROKERS, "
                          "or start a stack with `deployq up`");
        goto out;
    }
    current_of(cfg, service, env, &version, &deployment_id);
    ev = dq_event_new(DQ_EV_ROLLBACK_REQUESTED, deployment_id, service, env, version,
                      dq_actor("deployq-cli", actor, sizeof actor));
    if (!ev || !cJSON_AddStringToObject(ev->data, "reason", reason) ||
        !cJSON_AddStringToObject(ev->data, "requested_by", who) ||
        (to && !cJSON_AddStringToObject(ev->data, "to_version", to)) ||
        (version && !cJSON_AddStringToObject(ev->data, "from_version", version)) ||
        !(json = dq_event_encode(ev))) {
        dq_cli_fail(&cli, "out of memory");
        goto out;
    }
    if (wait) {
        if (!deployment_id) {
            dq_cli_fail(&cli, "--wait: the deployment now serving %s/%s is not known; "
                              "send without --wait and read deployq.events", service, env);
            goto out;
        }
        /* before the send, so no event of the rollback can slip by */
        follow = dq_follow_new(cfg, 10000, err, sizeof err);
        if (!follow) {
            dq_cli_fail(&cli, "%s", err);
            rc = DQ_WAIT_ERROR;
            goto out;
        }
    }
    producer = dq_producer_new(cfg, err, sizeof err);
    if (!producer) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    if (dq_producer_send(producer, cfg->topic_events, dq_target_key(service, env, key, sizeof key), json,
                         strlen(json), 10000, NULL, NULL, err, sizeof err) != 0) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    printf("rollback requested: %s/%s%s%s%s%s (request %s)\n", service, env, version ? " from " : "",
           version ? version : "", to ? " to " : "", to ? to : "", ev->id);
    fflush(stdout);
    rc = 0;
    if (follow) {
        int code = dq_follow_run(follow, deployment_id, timeout_ms, 0, stdout, NULL);

        /* for this verb, "rolled back" is the success */
        rc = code == DQ_WAIT_ROLLED_BACK ? 0 : code == DQ_WAIT_DEPLOYED ? DQ_WAIT_TIMEOUT : code;
    }
out:
    dq_follow_free(follow);
    dq_producer_free(producer);
    free(json);
    free(version);
    free(deployment_id);
    dq_event_free(ev);
    dq_config_free(cfg);
    return rc;
}
