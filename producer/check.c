/*
 * check.c - `deployq check`: the offline part of the validation, run where the mistake is
 * made (a developer's machine, a pre-push hook, the first CI step) instead of discovered
 * on deployq.events. No broker, no Redis, no provider is contacted.
 *
 * It checks that the configuration parses, that every environment's gate keys are well
 * formed (freeze windows, required_vars with a way to read them, drift settings) and that
 * promotion rules make sense; with --service/--env/--version it also builds the request
 * that `submit` would sign and validates it against schemas/request.json, and reports
 * what the validator will ask of that target (a freeze now in force, the version that
 * must be verified first, approval).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "event.h"
#include "gates.h"
#include "schema.h"
#include "util.h"

static const char check_usage[] =
    "Usage: deployq check [--service NAME --env NAME [--version VERSION]] [options]\n"
    "\n"
    "Validate offline what can be validated before a deploy request is sent: the\n"
    "configuration parses; each environment's freeze windows, required_vars and drift\n"
    "settings are well formed; promotion rules (requires:) are sound: a promotion that\n"
    "needs a version verified in an environment without a monitor can never pass and is\n"
    "refused. With a target it also checks the request `deployq submit` would send against\n"
    "schemas/request.json and says what the validator will require of it (a freeze in\n"
    "force now, the version that must be verified first, approval). Nothing is contacted:\n"
    "no broker, Redis or provider.\n"
    "\n"
    "  -s, --service NAME      the service to check a request for\n"
    "  -e, --env NAME          its environment\n"
    "  -v, --version VERSION   the version (default: a placeholder, so only the target is\n"
    "                          checked)\n"
    "      --strategy S        rolling (default) or blue-green\n"
    "      --override-freeze REASON\n"
    "                          as submit would send it: a freeze in force is then a note\n"
    "  -q, --quiet             print only problems\n"
    "\n" DQ_CLI_COMMON_USAGE
    "\n"
    "Exit status: 0 no problem found, 1 problems (one line each on stderr), 2 usage.\n"
    "`deployq hook install` runs this before every git push.\n";

typedef struct checker {
    dq_cli *cli;
    int problems;
    int quiet;
} checker;

static void problem(checker *ck, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(checker *ck, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dq_cli_fail(ck->cli, "%s", msg);
    ck->problems++;
}

static void note(checker *ck, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(checker *ck, const char *fmt, ...)
{
    va_list ap;

    if (ck->quiet)
        return;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* The request submit would sign, against the schema. */
static void check_request(checker *ck, const dq_config *cfg, const char *service, const char *env,
                          const char *version, const char *strategy, const char *override)
{
    dq_request req = {0};
    char id[DQ_UUID_LEN + 1], now[DQ_TIME_LEN + 1], err[1024];
    char *text;
    cJSON *doc = NULL;
    dq_schema_set *set = dq_schema_set_load(cfg->schemas_dir, err, sizeof err);

    if (!set) {
        problem(ck, "schemas: %s", err);
        return;
    }
    if (dq_uuid_v4(id) != 0)
        dq_strlcpy(id, "00000000-0000-4000-8000-000000000000", sizeof id);
    req.deployment_id = id;
    req.service = (char *)service;
    req.environment = (char *)env;
    req.version = (char *)version;
    req.strategy = (char *)strategy;
    req.nonce = (char *)"0123456789abcdef0123456789abcdef";
    req.issued_at = dq_time_format(dq_now_ms(), now);
    text = dq_request_encode(&req);
    doc = text ? cJSON_Parse(text) : NULL;
    if (doc && override)
        cJSON_AddStringToObject(cJSON_AddObjectToObject(doc, "override_freeze"), "reason", override);
    if (!doc)
        problem(ck, "could not build the request");
    else if (dq_schema_validate(dq_schema_set_request(set), doc, err, sizeof err) != 0)
        problem(ck, "the request for %s/%s version %s would be rejected: %s", service, env, version, err);
    else
        note(ck, "ok: a request for %s/%s version %s passes schemas/request.json", service, env, version);
    cJSON_Delete(doc);
    free(text);
    dq_schema_set_free(set);
}

/* What the validator will require of one target. */
static void check_target(checker *ck, const dq_config *cfg, const char *service, const char *env,
                         const char *override)
{
    const dq_environment *e = dq_config_environment(cfg, service, env);
    dq_gates *g;
    const dq_freeze_window *fw;
    char err[1024], t[DQ_TIME_LEN + 1];

    if (!dq_config_service(cfg, service)) {
        problem(ck, "service '%s' is not in the configuration", service);
        return;
    }
    if (!e) {
        problem(ck, "service '%s' has no environment '%s'", service, env);
        return;
    }
    g = dq_gates_load(cfg, service, env, err, sizeof err);
    if (!g)
        return; /* reported with every environment's keys */
    fw = dq_gates_frozen(g, dq_now_ms());
    if (fw && !override)
        problem(ck, "%s/%s is frozen until %s (%s): a deploy now is rejected unless it says "
                    "--override-freeze REASON", service, env, dq_time_format(fw->until_ms, t), fw->reason);
    else if (fw)
        note(ck, "note: %s/%s is frozen until %s (%s); the override reason will be recorded", service, env,
             dq_time_format(fw->until_ms, t), fw->reason);
    if (e->requires)
        note(ck, "note: %s/%s requires the version to be %s in %s first", service, env,
             g->needs_succeeded ? "deployed (succeeded)" : "verified", e->requires);
    if (g->n_required > 0)
        note(ck, "note: %s/%s: %zu required variable(s) are checked at the provider when deploying",
             service, env, g->n_required);
    if (e->approval)
        note(ck, "note: %s/%s needs a signed approval (deployq approve) before it deploys", service, env);
    dq_gates_free(g);
}

int dq_cmd_check(int argc, char **argv)
{
    dq_cli cli = {.verb = "check", .usage = check_usage, .takes = DQ_CLI_COMMON};
    checker ck = {.cli = &cli};
    const char *service = NULL, *env = NULL, *version = NULL, *strategy = "rolling", *override = NULL;
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_STRING('v', "version", &version),
        DQ_OPT_STRING(0, "strategy", &strategy),
        DQ_OPT_STRING(0, "override-freeze", &override),
        DQ_OPT_FLAG('q', "quiet", &ck.quiet),
        DQ_OPT_END,
    };
    dq_config *cfg;
    char err[1024];
    int rc, n_envs = 0;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    if (!service != !env)
        return dq_cli_usage(&cli, check_usage, 2, "--service and --env go together");
    if (version && !service)
        return dq_cli_usage(&cli, check_usage, 2, "--version needs --service and --env");

    cfg = dq_cli_load_config(&cli);
    if (!cfg)
        return 1; /* the reason ("path:line: message") is printed */
    note(&ck, "ok: %s parses", cfg->path ? cfg->path : "the built-in configuration");
    /* Every environment's gate keys, so a typo anywhere fails the push, not a deploy. */
    for (size_t i = 0; i < cfg->n_services; i++)
        for (size_t j = 0; j < cfg->services[i].n_envs; j++) {
            dq_gates *g = dq_gates_load(cfg, cfg->services[i].name, cfg->services[i].envs[j].name, err,
                                        sizeof err);

            n_envs++;
            if (!g)
                problem(&ck, "%s", err);
            else if (dq_gates_promotion_unverifiable(cfg, cfg->services[i].name,
                                                     cfg->services[i].envs[j].name, err,
                                                     sizeof err))
                problem(&ck, "%s", err);
            dq_gates_free(g);
        }
    note(&ck, "ok: %zu service(s), %d environment(s) checked", cfg->n_services, n_envs);
    if (service) {
        check_target(&ck, cfg, service, env, override);
        check_request(&ck, cfg, service, env, version ? version : "0000000", strategy, override);
    }
    dq_config_free(cfg);
    if (ck.problems) {
        fprintf(stderr, "deployq: check: %d problem(s)\n", ck.problems);
        return 1;
    }
    return 0;
}
