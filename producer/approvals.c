/*
 * approvals.c - `deployq approvals`: the deployments that wait for an approver now, since
 * when, until when, signed by which key, which version.
 *
 * It reads where the validator keeps them, Redis (common/domain/pending.h), not the
 * deploy.awaiting_approval events: the pending records are what an approval is checked
 * against, they survive a validator restart, and a deployment leaves them the moment it is
 * approved, denied or expired, so the list is true without reading deployq.events from
 * the beginning.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "pending.h"
#include "redis.h"
#include "util.h"

static const char approvals_usage[] =
    "Usage: deployq approvals [--service NAME] [--env NAME] [--json] [options]\n"
    "\n"
    "List the deployments that wait for approval (environments with `approval: required`):\n"
    "the target and version, the key that signed the request and who asked, since when it\n"
    "waits and until when (the environment's approval_timeout; without a decision by then it\n"
    "is rejected with approval_expired). Soonest expiry first. Read from the validator's\n"
    "pending records in Redis (--redis-url), which a validator restart keeps. Decide one\n"
    "with `deployq approve ID` or `deployq deny ID --reason TEXT`: an approver key may\n"
    "not approve a request it signed, and a key with `services:`/`environments:` in\n"
    "deployq.yaml decides only those.\n"
    "\n"
    "  -s, --service NAME      only this service\n"
    "  -e, --env NAME          only this environment\n"
    "      --json              one JSON array: deployment_id, service, environment,\n"
    "                          version, key_id, requested_by, since, expires_at\n"
    "\n" DQ_CLI_COMMON_USAGE
    "\n"
    "Exit status: 0 listed (also when nothing is waiting: \"nothing is waiting\"),\n"
    "1 Redis could not be read, 2 usage.\n";

/* "3h 05m", "12m 30s", "40s": a span for people. */
static const char *span(int64_t ms, char *buf, size_t buflen)
{
    long long s = (long long)(ms < 0 ? -ms : ms) / 1000;

    if (s >= 86400)
        snprintf(buf, buflen, "%lldd %02lldh", s / 86400, s % 86400 / 3600);
    else if (s >= 3600)
        snprintf(buf, buflen, "%lldh %02lldm", s / 3600, s % 3600 / 60);
    else if (s >= 60)
        snprintf(buf, buflen, "%lldm %02llds", s / 60, s % 60);
    else
        snprintf(buf, buflen, "%llds", s);
    return buf;
}

static int wanted(const dq_pending *p, const char *service, const char *env)
{
    return (!service || (p->service && strcmp(p->service, service) == 0)) &&
           (!env || (p->environment && strcmp(p->environment, env) == 0));
}

static int print_json(const dq_pending *list, size_t n, const char *service, const char *env)
{
    cJSON *arr = cJSON_CreateArray();
    char t[DQ_TIME_LEN + 1], *text;

    for (size_t i = 0; arr && i < n; i++) {
        const dq_pending *p = &list[i];
        cJSON *o;

        if (!wanted(p, service, env))
            continue;
        o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "deployment_id", p->deployment_id);
        cJSON_AddStringToObject(o, "service", p->service ? p->service : "");
        cJSON_AddStringToObject(o, "environment", p->environment ? p->environment : "");
        cJSON_AddStringToObject(o, "version", p->version ? p->version : "");
        cJSON_AddStringToObject(o, "key_id", p->key_id ? p->key_id : "");
        if (p->requested_by)
            cJSON_AddStringToObject(o, "requested_by", p->requested_by);
        else
            cJSON_AddNullToObject(o, "requested_by");
        cJSON_AddStringToObject(o, "since", dq_time_format(p->since_ms, t));
        cJSON_AddStringToObject(o, "expires_at", dq_time_format(p->expires_ms, t));
    }
    text = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    if (!text)
        return -1;
    printf("%s\n", text);
    free(text);
    return 0;
}

static void print_table(const dq_pending *list, size_t n, const char *service, const char *env)
{
    int64_t now = dq_now_ms();
    size_t shown = 0;

    for (size_t i = 0; i < n; i++) {
        const dq_pending *p = &list[i];
        char since[DQ_TIME_LEN + 1], until[DQ_TIME_LEN + 1], ago[32], left[32], target[140], when[80];

        if (!wanted(p, service, env))
            continue;
        if (shown++ == 0)
            printf("%-36s  %-24s %-12s %-14s %-12s %-40s %s\n", "DEPLOYMENT", "TARGET", "VERSION", "SIGNED BY",
                   "REQUESTED BY", "WAITING SINCE", "UNTIL");
        snprintf(target, sizeof target, "%s/%s", p->service ? p->service : "?",
                 p->environment ? p->environment : "?");
        snprintf(when, sizeof when, "%s (%s ago)", dq_time_format(p->since_ms, since),
                 span(now - p->since_ms, ago, sizeof ago));
        dq_time_format(p->expires_ms, until);
        /* "due": past its expiry, not yet rejected (no validator has run since) */
        printf("%-36s  %-24s %-12s %-14s %-12s %-40s %s (%s %s)\n", p->deployment_id, target,
               p->version ? p->version : "?", p->key_id ? p->key_id : "?", p->requested_by ? p->requested_by : "-",
               when, until, p->expires_ms >= now ? "in" : "due", span(p->expires_ms - now, left, sizeof left));
    }
    if (shown == 0)
        printf("nothing is waiting\n");
    else
        printf("\nDecide: deployq approve DEPLOYMENT [--reason TEXT] | deployq deny DEPLOYMENT --reason TEXT\n");
}

int dq_cmd_approvals(int argc, char **argv)
{
    dq_cli cli = {.verb = "approvals", .usage = approvals_usage, .takes = DQ_CLI_COMMON | DQ_CLI_JSON};
    const char *service = NULL, *env = NULL;
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_END,
    };
    char err[512];
    dq_config *cfg = NULL;
    dq_redis *redis = NULL;
    dq_pending *list = NULL;
    size_t n = 0;
    int rc;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    rc = 1;
    cfg = dq_cli_load_config_sections(&cli, (const char *const[]){"redis", NULL});
    if (!cfg)
        goto out;
    redis = dq_redis_connect(cfg->redis_url, cfg->redis_timeout_ms, err, sizeof err);
    if (!redis) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    if (dq_pending_list(redis, &list, &n, err, sizeof err) != 0) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    if (cli.json) {
        if (print_json(list, n, service, env) != 0) {
            dq_cli_fail(&cli, "out of memory");
            goto out;
        }
    } else {
        print_table(list, n, service, env);
    }
    rc = 0;
out:
    dq_pending_list_free(list, n);
    dq_redis_free(redis);
    dq_config_free(cfg);
    return rc;
}
