/*
 * check.c - `deployq check`: stage 1 of the pipeline, run where the mistake is made (a
 * developer's machine, the pre-push hook, the first CI step) instead of discovered on
 * deployq.events. No broker, no Redis, no provider is contacted.
 *
 * Three parts, in this order:
 *  1. lint: the whole configuration, one line per problem ("file:line: message"). Each
 *     section is read by the reader its worker uses at start (gates, provider chains and
 *     the definitions they name, executor, blue_green, canary, monitor and probes, notify and
 *     notifications, rollback policy, github_deployments, sentry): a key a worker refuses is refused here, and a key added
 *     to a reader is checked here without a second list. A reader stops at its first
 *     problem, so each section reports at most one at a time; every section is read.
 *  2. with a target (--service/--env, or the targets of the pushed --branch): the request
 *     `submit` would sign against schemas/request.json, what the validator will require,
 *     and the environment's required_vars, each set in the process environment or in
 *     --vars-from FILE (names only: a value is never read into a message).
 *  3. the service's `checks:` that apply to that environment, run through proc.h (the one
 *     runner), in parallel up to --jobs, a `parallel: false` check alone; live progress on
 *     a terminal, plain lines otherwise; a summary table; the tail of a failed check's
 *     output, redacted. Skipped when lint found a problem, or with --no-checks.
 *
 * Exit status: 0 ok, 1 configuration problems (lint, required variables), 2 usage, 3 a
 * check failed (the configuration is fine).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bluegreen.h"
#include "canary.h"
#include "cli.h"
#include "event.h"
#include "execute.h"
#include "gates.h"
#include "github_deploy.h"
#include "sentry_deploy.h"
#include "json.h"
#include "monitor.h"
#include "notify.h"
#include "proc.h"
#include "provider.h"
#include "schema.h"
#include "util.h"

#define CHECK_DEFAULT_TIMEOUT_MS (10LL * 60 * 1000)
#define CHECK_OUT_MAX (64 * 1024) /* the tail of a check's output kept for its report */
#define CHECK_TAIL_LINES 20
#define MAX_BRANCHES 256

static const char check_usage[] =
    "Usage: deployq check [--service NAME --env NAME [--version VERSION]] [options]\n"
    "       deployq check --branch BRANCH [--branch BRANCH ...] [options]\n"
    "\n"
    "Stage 1: what can be caught before a deploy request is sent, caught here.\n"
    "\n"
    "Lint: the whole configuration, one line per problem (file:line: message), each section\n"
    "read by the same code its worker reads it with at start: provider types and their\n"
    "required ids, probes and monitor settings, rollback policies, notification URLs,\n"
    "durations, freeze windows, promotion rules, unknown keys. A provider token variable\n"
    "(token_env) that is unset here is said (\"not checked: unset\") but is no problem.\n"
    "\n"
    "With a target (--service and --env, or every environment whose `branch:` is a pushed\n"
    "--branch): the request `deployq submit` would send is checked against\n"
    "schemas/request.json; what the validator will require is said (a freeze in force, the\n"
    "version that must be verified first, approval); each of the environment's\n"
    "required_vars must be set, in this process's environment or in --vars-from FILE\n"
    "(values are never printed); then the service's `checks:` that apply to the environment\n"
    "run (tests, lint, build: any command), in parallel up to --jobs, each in its timeout,\n"
    "with live progress on a terminal, a summary table, and the last lines of a failed\n"
    "check's output. Checks run only when lint found nothing. Without a target, lint only\n"
    "(and it says that no check ran). Nothing is contacted: no broker, Redis or provider.\n"
    "\n"
    "  -s, --service NAME      the service to check\n"
    "  -e, --env NAME          its environment\n"
    "  -v, --version VERSION   the version (default: a placeholder, so only the target is\n"
    "                          checked)\n"
    "  -b, --branch BRANCH     the targets are every environment with `branch: BRANCH`\n"
    "                          (repeatable; what the pre-push hook passes)\n"
    "      --strategy S        rolling (default), blue-green or canary\n"
    "      --override-freeze REASON\n"
    "                          as submit would send it: a freeze in force is then a note\n"
    "      --vars-from FILE    read required_vars from FILE (NAME=value lines, dotenv)\n"
    "                          instead of the environment\n"
    "      --no-checks         lint (and the target's gates) only: run no `checks:`\n"
    "  -j, --jobs N            checks run at once (default: the number of CPUs)\n"
    "  -q, --quiet             print only problems (and the checks' progress and table)\n"
    "\n" DQ_CLI_COMMON_USAGE
    "\n"
    "Exit status: 0 no problem found, 1 configuration problems (one line each on stderr:\n"
    "lint, a required variable not set), 2 usage, 3 a check failed.\n"
    "`deployq hook install` runs this before every git push (docs/configuration.md,\n"
    "\"deployq check\").\n";

typedef struct checker {
    dq_cli *cli;
    const dq_config *cfg;
    int problems;
    int quiet;
    /* the messages said, so one problem read by two readers (monitor: per target and
     * as a whole) is said once */
    char *said[256];
    size_t n_said;
} checker;

static void problem(checker *ck, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(checker *ck, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < ck->n_said; i++)
        if (strcmp(ck->said[i], msg) == 0)
            return;
    if (ck->n_said < sizeof ck->said / sizeof ck->said[0] && (ck->said[ck->n_said] = strdup(msg)))
        ck->n_said++;
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
        note(ck, "note: %s/%s: %zu required variable(s) are also checked at the provider when deploying",
             service, env, g->n_required);
    if (e->approval)
        note(ck, "note: %s/%s needs a signed approval (deployq approve) before it deploys", service, env);
    dq_gates_free(g);
}

/* ---- lint: every section through its worker's own reader ---- */

/* Provider token variables (token_env) that are not set here. Lint sets each to a
 * placeholder while the provider readers run (they refuse an unset one, as the executor
 * must at start) and removes it before any check runs: the placeholder is never sent
 * anywhere, since lint calls no provider. */
typedef struct unset_tokens {
    char *names[64];
    size_t n;
} unset_tokens;

static void token_env_of(checker *ck, unset_tokens *u, const cJSON *conf)
{
    char num[32];
    const char *name = dq_config_text(ck->cfg, dq_json_get(conf, "token_env"), num, sizeof num);
    char at[512];

    if (!name || !name[0] || getenv(name) || dq_json_get(conf, "token") || u->n >= 64)
        return;
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->names[i], name) == 0)
            return;
    if (!(u->names[u->n] = strdup(name)))
        return;
    setenv(name, "deployq-check-placeholder", 1);
    u->n++;
    note(ck, "%snot checked: unset: token_env %s (deployq-executor needs it at start)",
         dq_config_where(ck->cfg, dq_json_get(conf, "token_env"), at, sizeof at), name);
}

static void tokens_placeholder(checker *ck, unset_tokens *u)
{
    const cJSON *defs = dq_config_view(ck->cfg, "providers"), *it;

    for (size_t i = 0; i < ck->cfg->n_services; i++)
        for (size_t j = 0; j < ck->cfg->services[i].n_envs; j++) {
            const cJSON *arr = dq_json_get(ck->cfg->services[i].envs[j].view, "providers");

            cJSON_ArrayForEach(it, (cJSON_IsArray(arr) ? arr : NULL))
            {
                const cJSON *conf = cJSON_IsString(it) ? dq_json_get(defs, it->valuestring) : it;

                if (cJSON_IsObject(conf))
                    token_env_of(ck, u, conf);
            }
        }
}

static void tokens_restore(unset_tokens *u)
{
    for (size_t i = 0; i < u->n; i++) {
        unsetenv(u->names[i]);
        free(u->names[i]);
    }
    u->n = 0;
}

/* The top-level sections: executor, monitor, notifications, drift. (A top-level `providers:`
 * entry is read where a chain names it, as the executor reads it: an entry no chain uses
 * is read by nobody.) */
static void lint_top(checker *ck)
{
    const dq_config *cfg = ck->cfg;
    dq_exec_settings es;
    dq_monitor m;
    dq_notify_config nc;
    dq_drift_settings ds;
    char err[1024];

    if (dq_exec_settings_load(cfg, &es, err, sizeof err) != 0)
        problem(ck, "%s", err);
    memset(&m, 0, sizeof m);
    if (dq_monitor_load(&m, cfg, err, sizeof err) != 0)
        problem(ck, "%s", err);
    dq_monitor_unload(&m);
    if (dq_notify_config_read(cfg, dq_config_view(cfg, "notifications"), "notifications", &nc, err, sizeof err) != 0)
        problem(ck, "%s", err);
    dq_notify_config_clear(&nc);
    memset(&ds, 0, sizeof ds);
    if (dq_drift_settings_load(cfg, &ds, err, sizeof err) != 0)
        problem(ck, "%s", err);
    dq_drift_settings_clear(&ds);
}

/* One environment: gates, promotion, provider chain, blue_green, notify, rollback. */
static void lint_env(checker *ck, const char *svc, const dq_environment *e)
{
    const dq_config *cfg = ck->cfg;
    dq_gates *g;
    dq_provider **ps;
    size_t np;
    dq_notify_config nc;
    const cJSON *v;
    char err[1024], at[512], bg_err[1024] = "";

    g = dq_gates_load(cfg, svc, e->name, err, sizeof err);
    if (!g)
        problem(ck, "%s", err);
    else if (dq_gates_promotion_unverifiable(cfg, svc, e->name, err, sizeof err))
        problem(ck, "%s", err);
    dq_gates_free(g);
    /* An environment without providers: is only gates and checks (nothing deploys there,
     * and the executor says so when asked to): not a problem for lint. */
    if (dq_json_get(e->view, "providers")) {
        if (dq_exec_chain_load(cfg, svc, e->name, &ps, &np, err, sizeof err) != 0)
            problem(ck, "%s", err);
        else
            dq_exec_chain_free(ps, np);
    }
    /* The monitor's reader, per target, so each environment's probes are checked even when
     * another's are wrong (dq_monitor_load in lint_top stops at the first). The prefix is
     * the one dq_monitor_load gives, so the same problem is said once. */
    if ((v = dq_json_get(e->view, "monitor"))) {
        const cJSON *defaults = dq_config_view(cfg, "monitor");
        dq_watch_config *w;
        char where[768];

        snprintf(where, sizeof where, "%sservices.%s.environments.%s.monitor", dq_config_where(cfg, v, at, sizeof at),
                 svc, e->name);
        w = dq_watch_config_from_json(v, cJSON_IsObject(defaults) ? defaults : NULL, where, err, sizeof err);
        if (!w)
            problem(ck, "%s", err);
        dq_watch_config_free(w);
    }
    if (dq_bg_configured(cfg, svc, e->name)) {
        dq_bluegreen *bg = dq_bg_load(cfg, svc, e->name, bg_err, sizeof bg_err);

        if (!bg)
            problem(ck, "%s", bg_err);
        dq_bg_free(bg);
    }
    /* canary: its section, and that blue_green has a router that takes weights (a broken
     * blue_green is said once, above) */
    if (dq_canary_configured(cfg, svc, e->name) || dq_canary_applies(cfg, svc, e->name, NULL)) {
        dq_canary cn;

        if (dq_canary_load(cfg, svc, e->name, &cn, err, sizeof err) != 0 && strcmp(err, bg_err) != 0)
            problem(ck, "%s", err);
    }
    if ((v = dq_json_get(e->view, "notify"))) {
        if (dq_notify_config_read(cfg, v, "notify", &nc, err, sizeof err) != 0)
            problem(ck, "%s", err);
        dq_notify_config_clear(&nc);
    }
    if (dq_rollback_policy_load(cfg, svc, e->name, err, sizeof err) < 0)
        problem(ck, "%s", err);
    v = dq_json_get(e->view, "branch");
    if (v && !cJSON_IsString(v))
        problem(ck, "%sservices.%s.environments.%s.branch: expected a branch name",
                dq_config_where(cfg, v, at, sizeof at), svc, e->name);
}

/* ---- checks: ---- */

typedef struct check_def {
    char *name;
    char **argv;         /* NULL-terminated; a string command is sh -c STRING */
    int64_t timeout_ms;
    int parallel;
    const cJSON *envs;   /* env: as written (NULL: every environment) */
    int ran;             /* already run for another target of this command (a push to a
                            branch that two environments name runs a shared check once) */
} check_def;

typedef struct check_list {
    check_def *v;
    size_t n;
} check_list;

static void checks_free(check_list *l)
{
    for (size_t i = 0; l && i < l->n; i++) {
        free(l->v[i].name);
        for (size_t k = 0; l->v[i].argv && l->v[i].argv[k]; k++)
            free(l->v[i].argv[k]);
        free(l->v[i].argv);
    }
    if (l)
        free(l->v);
}

static int env_in(const cJSON *envs, const char *env)
{
    const cJSON *it;

    if (!envs)
        return 1;
    if (cJSON_IsString(envs))
        return strcmp(envs->valuestring, env) == 0;
    cJSON_ArrayForEach(it, envs) if (cJSON_IsString(it) && strcmp(it->valuestring, env) == 0) return 1;
    return 0;
}

/* Read services.<svc>.checks into out. Every problem is reported; returns how many. */
static int checks_load(checker *ck, const dq_service *svc, check_list *out)
{
    static const char *const known[] = {"name", "run", "timeout", "env", "parallel", NULL};
    const dq_config *cfg = ck->cfg;
    const cJSON *list = dq_json_get(svc->view, "checks"), *c;
    int before = ck->problems;
    size_t index = 0; /* 1-based, as the messages say */
    char at[512], err[1024], where[256];

    memset(out, 0, sizeof *out);
    if (!list)
        return 0;
    if (!cJSON_IsArray(list)) {
        problem(ck, "%sservices.%s.checks: expected a list of {name, run, timeout, env, parallel}",
                dq_config_where(cfg, list, at, sizeof at), svc->name);
        return 1;
    }
    out->v = calloc((size_t)cJSON_GetArraySize(list) + 1, sizeof *out->v);
    if (!out->v) {
        problem(ck, "out of memory");
        return 1;
    }
    cJSON_ArrayForEach(c, list)
    {
        check_def d = {.timeout_ms = CHECK_DEFAULT_TIMEOUT_MS, .parallel = 1};
        const cJSON *name = dq_json_get(c, "name"), *run = dq_json_get(c, "run"), *v, *it;
        size_t n = 0;
        int bad = 0;

        index++;
        snprintf(where, sizeof where, "services.%s.checks[%zu]", svc->name, index);
        dq_config_where(cfg, c, at, sizeof at);
        if (!cJSON_IsObject(c)) {
            problem(ck, "%s%s: expected a mapping {name, run, ...}", at, where);
            continue;
        }
        if (dq_config_check_keys(cfg, c, known, where, err, sizeof err) != 0) {
            problem(ck, "%s", err);
            bad = 1;
        }
        if (!cJSON_IsString(name) || !name->valuestring[0]) {
            problem(ck, "%s%s.name: required, a non-empty string", at, where);
            bad = 1;
        } else {
            for (size_t k = 0; k < out->n; k++)
                if (strcmp(out->v[k].name, name->valuestring) == 0) {
                    problem(ck, "%s%s.name: '%s' is used twice", dq_config_where(cfg, name, at, sizeof at), where,
                            name->valuestring);
                    bad = 1;
                }
        }
        if (cJSON_IsString(run) && run->valuestring[0]) {
            d.argv = calloc(4, sizeof *d.argv);
            if (d.argv && (d.argv[0] = strdup("/bin/sh")) && (d.argv[1] = strdup("-c")))
                d.argv[2] = strdup(run->valuestring);
        } else if (cJSON_IsArray(run) && cJSON_GetArraySize(run) > 0) {
            d.argv = calloc((size_t)cJSON_GetArraySize(run) + 1, sizeof *d.argv);
            cJSON_ArrayForEach(it, run) if (d.argv)
            {
                if (!cJSON_IsString(it) || (n == 0 && !it->valuestring[0])) {
                    problem(ck, "%s%s.run: every argument is a string, the first not empty",
                            dq_config_where(cfg, it, at, sizeof at), where);
                    bad = 1;
                    break;
                }
                d.argv[n++] = strdup(it->valuestring);
            }
        } else {
            problem(ck, "%s%s.run: required, a command: a list (argv, no shell) or a string (run by /bin/sh -c)",
                    dq_config_where(cfg, run ? run : c, at, sizeof at), where);
            bad = 1;
        }
        if (dq_config_duration_key(cfg, c, where, "timeout", 1, "10m", &d.timeout_ms, err, sizeof err) != 0) {
            problem(ck, "%s", err);
            bad = 1;
        }
        if ((v = dq_json_get(c, "parallel"))) {
            if (!cJSON_IsBool(v)) {
                problem(ck, "%s%s.parallel: expected true or false", dq_config_where(cfg, v, at, sizeof at), where);
                bad = 1;
            }
            d.parallel = cJSON_IsTrue(v);
        }
        if ((v = dq_json_get(c, "env"))) {
            int ok = cJSON_IsString(v) || cJSON_IsArray(v);

            cJSON_ArrayForEach(it, (cJSON_IsArray(v) ? v : NULL)) ok = ok && cJSON_IsString(it);
            if (!ok) {
                problem(ck, "%s%s.env: expected an environment name or a list of them",
                        dq_config_where(cfg, v, at, sizeof at), where);
                bad = 1;
            } else {
                const cJSON *one = cJSON_IsString(v) ? v : v->child;

                for (; one; one = cJSON_IsString(v) ? NULL : one->next)
                    if (!dq_config_environment(cfg, svc->name, one->valuestring)) {
                        problem(ck, "%s%s.env: service '%s' has no environment '%s'",
                                dq_config_where(cfg, one, at, sizeof at), where, svc->name, one->valuestring);
                        bad = 1;
                    }
            }
            d.envs = v;
        }
        d.name = cJSON_IsString(name) ? strdup(name->valuestring) : NULL;
        if (bad || !d.name) {
            free(d.name);
            for (size_t k = 0; d.argv && d.argv[k]; k++)
                free(d.argv[k]);
            free(d.argv);
            continue;
        }
        out->v[out->n++] = d;
    }
    return ck->problems - before;
}

/* One check's run, shared between the runner threads and the main thread (under mu). */
enum { RUN_WAITING, RUN_RUNNING, RUN_PASSED, RUN_FAILED };

typedef struct check_run {
    const check_def *def;
    int state;
    int64_t t0, t1;      /* dq_mono_ms at start and end */
    int exit_code;       /* -1: none (signal, timeout, not started) */
    char why[160];       /* a failure that is not an exit code: timed out, could not start */
    char *tail;          /* the redacted tail of its output (stdout and stderr) */
    int shown;           /* plain mode: its end was printed */
} check_run;

typedef struct runner {
    pthread_mutex_t mu;
    check_run *runs;
    size_t n;      /* runs in all */
    size_t next;   /* the next one a thread takes ... */
    size_t limit;  /* ... while below this (the group running now) */
    char **envp;
} runner;

static void run_one(runner *r, check_run *cr)
{
    dq_proc_opts o = {.argv = cr->def->argv, .envp = r->envp, .timeout_ms = cr->def->timeout_ms,
                      .out_max = CHECK_OUT_MAX, .out_keep = DQ_PROC_KEEP_TAIL};
    dq_proc_result res;
    char err[512];
    dq_proc_status st = dq_proc_run(&o, &res, err, sizeof err);
    char *tail = st == DQ_PROC_ESETUP || st == DQ_PROC_ESPAWN ? NULL : dq_proc_text(res.out, res.out_len, res.out_total);

    pthread_mutex_lock(&r->mu);
    cr->t1 = dq_mono_ms();
    cr->tail = tail;
    cr->exit_code = st == DQ_PROC_OK ? res.exit_code : -1;
    if (st == DQ_PROC_ESETUP || st == DQ_PROC_ESPAWN)
        dq_strlcpy(cr->why, err, sizeof cr->why);
    else if (res.stopped == DQ_PROC_STOP_TIMEOUT)
        snprintf(cr->why, sizeof cr->why, "timed out after %.0f s", (double)cr->def->timeout_ms / 1000);
    else if (res.term_signal)
        snprintf(cr->why, sizeof cr->why, "killed by signal %d", res.term_signal);
    cr->state = st == DQ_PROC_OK && res.exit_code == 0 && !res.stopped ? RUN_PASSED : RUN_FAILED;
    pthread_mutex_unlock(&r->mu);
    dq_proc_result_free(&res);
}

static void *runner_thread(void *arg)
{
    runner *r = arg;

    for (;;) {
        check_run *cr = NULL;

        pthread_mutex_lock(&r->mu);
        while (r->next < r->limit && !cr) {
            cr = &r->runs[r->next++];
            cr->state = RUN_RUNNING;
            cr->t0 = dq_mono_ms();
        }
        pthread_mutex_unlock(&r->mu);
        if (!cr)
            return NULL;
        run_one(r, cr);
    }
}

static const char *state_word(int s)
{
    return s == RUN_RUNNING ? "running" : s == RUN_PASSED ? "passed" : s == RUN_FAILED ? "failed" : "waiting";
}

static double secs(const check_run *cr, int64_t now)
{
    return cr->state == RUN_WAITING ? 0 : (double)((cr->state == RUN_RUNNING ? now : cr->t1) - cr->t0) / 1000;
}

/* The progress: on a terminal all lines redrawn in place; otherwise a line per check as
 * it ends. Called with mu held. */
static void draw(runner *r, const char *target, int tty, int redraw)
{
    int64_t now = dq_mono_ms();

    if (tty) {
        if (redraw)
            printf("\033[%zuA", r->n);
        for (size_t i = 0; i < r->n; i++)
            printf("\033[2K  %-24s %-8s %6.1f s\n", r->runs[i].def->name, state_word(r->runs[i].state),
                   secs(&r->runs[i], now));
    } else {
        for (size_t i = 0; i < r->n; i++)
            if (r->runs[i].state >= RUN_PASSED && !r->runs[i].shown) {
                printf("check %s %s: %s in %.1f s\n", target, r->runs[i].def->name, state_word(r->runs[i].state),
                       secs(&r->runs[i], now));
                r->runs[i].shown = 1;
            }
    }
    fflush(stdout);
}

/* Run the checks of list that apply to env and have not run yet: the parallel ones up to
 * jobs at once, then each `parallel: false` one alone. Returns how many failed. */
static int run_checks(checker *ck, const char *svc, const char *env, check_list *list, int jobs)
{
    runner r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pthread_t th[64];
    char target[256];
    int tty = isatty(STDOUT_FILENO), failed = 0, drawn = 0;

    snprintf(target, sizeof target, "%s/%s", svc, env);
    r.runs = calloc(list->n + 1, sizeof *r.runs);
    r.envp = dq_proc_env(NULL, 0); /* the user's own environment, nothing of deployq's */
    if (!r.runs || !r.envp) {
        problem(ck, "out of memory");
        free(r.runs);
        dq_proc_env_free(r.envp);
        return 1;
    }
    /* parallel ones first, then the ones that run alone, each group in file order */
    for (int pass = 1; pass >= 0; pass--)
        for (size_t i = 0; i < list->n; i++)
            if (list->v[i].parallel == pass && env_in(list->v[i].envs, env) && !list->v[i].ran) {
                list->v[i].ran = 1;
                r.runs[r.n++].def = &list->v[i];
            }
    if (r.n == 0) {
        note(ck, "note: %s: no check in checks: applies (or each ran already)", target);
        free(r.runs);
        dq_proc_env_free(r.envp);
        return 0;
    }
    printf("checks of %s: %zu to run (%d at once)\n", target, r.n, jobs);
    for (size_t done = 0; done < r.n;) {
        size_t start = done, end = done;
        int n_threads;

        while (end < r.n && r.runs[end].def->parallel == r.runs[start].def->parallel)
            end++;
        if (!r.runs[start].def->parallel)
            end = start + 1; /* alone */
        pthread_mutex_lock(&r.mu);
        r.next = start;
        r.limit = end;
        pthread_mutex_unlock(&r.mu);
        n_threads = (int)(end - start) < jobs ? (int)(end - start) : jobs;
        if (n_threads > 64)
            n_threads = 64;
        for (int t = 0; t < n_threads; t++)
            if (pthread_create(&th[t], NULL, runner_thread, &r) != 0)
                n_threads = t;
        if (n_threads == 0)
            runner_thread(&r); /* could not start a thread: run them here */
        for (;;) {
            int busy = 0;

            pthread_mutex_lock(&r.mu);
            for (size_t i = start; i < end; i++)
                busy |= r.runs[i].state < RUN_PASSED;
            draw(&r, target, tty, drawn);
            drawn = 1;
            pthread_mutex_unlock(&r.mu);
            if (!busy)
                break;
            usleep(tty ? 200000 : 100000); /* the progress' refresh; a check's end is seen this late */
        }
        for (int t = 0; t < n_threads; t++)
            pthread_join(th[t], NULL);
        done = end;
    }
    /* the summary, then what the failed ones printed */
    printf("\n  %-24s %-8s %8s  %s\n", "check", "result", "time", "exit");
    for (size_t i = 0; i < r.n; i++) {
        check_run *cr = &r.runs[i];
        char code[32];

        if (cr->exit_code >= 0)
            snprintf(code, sizeof code, "%d", cr->exit_code);
        else
            dq_strlcpy(code, "-", sizeof code);
        printf("  %-24s %-8s %6.1f s  %s%s%s\n", cr->def->name, state_word(cr->state), secs(cr, 0), code,
               cr->why[0] ? "  " : "", cr->why);
        failed += cr->state == RUN_FAILED;
    }
    for (size_t i = 0; i < r.n; i++) {
        check_run *cr = &r.runs[i];
        const char *p;
        int lines = 0;

        if (cr->state != RUN_FAILED)
            continue;
        fprintf(stderr, "deployq: check: %s: check '%s' failed%s%s; the last lines of its output:\n", target,
                cr->def->name, cr->why[0] ? ": " : "", cr->why);
        p = cr->tail ? cr->tail + strlen(cr->tail) : NULL;
        while (p && p > cr->tail && p[-1] == '\n')
            p--;
        while (p && p > cr->tail && lines < CHECK_TAIL_LINES)
            if (*--p == '\n')
                lines++;
        if (p && *p == '\n')
            p++;
        for (; p && *p; p++) {
            const char *nl = strchr(p, '\n');
            size_t len = nl ? (size_t)(nl - p) : strlen(p);

            fprintf(stderr, "  | %.*s\n", (int)len, p);
            p += len;
            if (!*p)
                break;
        }
    }
    for (size_t i = 0; i < r.n; i++)
        free(r.runs[i].tail);
    free(r.runs);
    dq_proc_env_free(r.envp);
    return failed;
}

/* ---- required variables ---- */

/* The names a dotenv file sets (NAME=value, optionally after `export `; # comments). Only
 * names are kept: the values are never read into memory we hold. NULL-terminated; NULL
 * with a reason in err when the file cannot be read. */
static char **dotenv_names(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char **names = NULL, line[4096];
    size_t n = 0;

    if (!f) {
        snprintf(err, errlen, "--vars-from %s: %s", path, strerror(errno));
        return NULL;
    }
    names = calloc(1, sizeof *names);
    while (names && fgets(line, sizeof line, f)) {
        char *p = line, *eq;
        char **grown;

        p += strspn(p, " \t");
        if (strncmp(p, "export ", 7) == 0)
            p += 7 + strspn(p + 7, " \t");
        eq = strchr(p, '=');
        if (*p == '#' || !eq || eq == p)
            continue;
        *eq = '\0';
        p[strcspn(p, " \t")] = '\0';
        grown = realloc(names, (n + 2) * sizeof *names);
        if (!grown)
            break;
        names = grown;
        names[n] = strdup(p);
        names[++n] = NULL;
    }
    fclose(f);
    if (!names)
        snprintf(err, errlen, "out of memory");
    return names;
}

static void names_free(char **names)
{
    for (size_t i = 0; names && names[i]; i++)
        free(names[i]);
    free(names);
}

/* Each of the target's required_vars must be set (non-empty) in the environment, or named
 * in the --vars-from file; a missing one is a problem at its entry's line. */
static void check_required(checker *ck, const char *svc, const char *env, char *const *from_file,
                           const char *file)
{
    const cJSON *list = dq_json_get(dq_config_env_view(ck->cfg, svc, env), "required_vars"), *it;
    size_t n = 0;
    char at[512];

    cJSON_ArrayForEach(it, (cJSON_IsArray(list) ? list : NULL))
    {
        int set = 0;

        if (!cJSON_IsString(it))
            continue; /* dq_gates_load reported it */
        if (from_file) {
            for (size_t i = 0; from_file[i] && !set; i++)
                set = strcmp(from_file[i], it->valuestring) == 0;
        } else {
            const char *v = getenv(it->valuestring);
            set = v && v[0];
        }
        n++;
        if (!set)
            problem(ck, "%sservices.%s.environments.%s.required_vars: %s is not set in %s", dq_config_where(ck->cfg, it, at, sizeof at),
                    svc, env, it->valuestring, file ? file : "the environment");
    }
    if (n)
        note(ck, "ok: %s/%s: %zu required variable(s) checked in %s (names only)", svc, env, n,
             file ? file : "the environment");
}

/* ---- the verb ---- */

typedef struct branches {
    const char *v[MAX_BRANCHES];
    size_t n;
} branches;

static int add_branch(void *dst, const char *arg)
{
    branches *b = dst;

    if (b->n >= MAX_BRANCHES || !arg[0])
        return -1;
    b->v[b->n++] = arg;
    return 0;
}

typedef struct target {
    const char *service, *env;
    size_t svc_index;
} target;

int dq_cmd_check(int argc, char **argv)
{
    dq_cli cli = {.verb = "check", .usage = check_usage, .takes = DQ_CLI_COMMON};
    checker ck = {.cli = &cli};
    const char *service = NULL, *env = NULL, *version = NULL, *strategy = "rolling", *override = NULL;
    const char *vars_from = NULL;
    long long jobs = 0;
    int no_checks = 0;
    branches br = {.n = 0};
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_STRING('v', "version", &version),
        DQ_OPT_PARSE('b', "branch", &br, add_branch, "--branch: a branch name (at most 256)"),
        DQ_OPT_STRING(0, "strategy", &strategy),
        DQ_OPT_STRING(0, "override-freeze", &override),
        DQ_OPT_STRING(0, "vars-from", &vars_from),
        DQ_OPT_FLAG(0, "no-checks", &no_checks),
        DQ_OPT_INT('j', "jobs", &jobs, 1, 64, "--jobs: a number from 1 to 64"),
        DQ_OPT_FLAG('q', "quiet", &ck.quiet),
        DQ_OPT_END,
    };
    dq_config *cfg;
    check_list *lists = NULL;
    target *targets = NULL;
    size_t n_targets = 0;
    unset_tokens tokens = {.n = 0};
    char **file_names = NULL;
    char err[1024];
    int rc, n_envs = 0, failed = 0;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    if (!service != !env)
        return dq_cli_usage(&cli, check_usage, 2, "--service and --env go together");
    if (version && !service)
        return dq_cli_usage(&cli, check_usage, 2, "--version needs --service and --env");
    if (service && br.n)
        return dq_cli_usage(&cli, check_usage, 2, "--branch or --service/--env, not both");
    if (jobs == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        jobs = cpus > 0 ? (cpus > 64 ? 64 : cpus) : 1;
    }
    if (vars_from && !(file_names = dotenv_names(vars_from, err, sizeof err))) {
        dq_cli_fail(&cli, "%s", err);
        return 1;
    }

    cfg = dq_cli_load_config(&cli);
    if (!cfg) {
        names_free(file_names);
        return 1; /* the reason ("path:line: message") is printed */
    }
    ck.cfg = cfg;
    note(&ck, "ok: %s parses", cfg->path ? cfg->path : "the built-in configuration");

    /* 1. lint: every section, so a typo anywhere fails the push, not a deploy */
    tokens_placeholder(&ck, &tokens);
    lint_top(&ck);
    for (size_t i = 0; i < cfg->n_services; i++)
        n_envs += (int)cfg->services[i].n_envs;
    lists = calloc(cfg->n_services + 1, sizeof *lists);
    targets = calloc((size_t)n_envs + 1, sizeof *targets); /* each environment at most once */
    if (!lists || !targets) {
        problem(&ck, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < cfg->n_services; i++) {
        const dq_service *s = &cfg->services[i];
        dq_gh_config gc;
        dq_sentry_config sc;
        int found;

        checks_load(&ck, s, &lists[i]);
        memset(&gc, 0, sizeof gc);
        if (dq_gh_config_load(cfg, s->name, &gc, &found, err, sizeof err) != 0)
            problem(&ck, "%s", err);
        dq_gh_config_clear(&gc);
        memset(&sc, 0, sizeof sc);
        if (dq_sentry_config_load(cfg, s->name, &sc, &found, err, sizeof err) != 0)
            problem(&ck, "%s", err);
        dq_sentry_config_clear(&sc);
        for (size_t j = 0; j < s->n_envs; j++) {
            const cJSON *b = dq_json_get(s->envs[j].view, "branch");

            lint_env(&ck, s->name, &s->envs[j]);
            for (size_t k = 0; k < br.n && cJSON_IsString(b); k++)
                if (strcmp(b->valuestring, br.v[k]) == 0) {
                    targets[n_targets++] = (target){s->name, s->envs[j].name, i};
                    break;
                }
        }
    }
    tokens_restore(&tokens); /* before any check runs: they see the user's environment */
    note(&ck, "ok: %zu service(s), %d environment(s) checked", cfg->n_services, n_envs);

    /* 2. the targets */
    if (service) {
        const dq_service *s = dq_config_service(cfg, service);

        check_target(&ck, cfg, service, env, override);
        check_request(&ck, cfg, service, env, version ? version : "0000000", strategy, override);
        if (s && dq_config_environment(cfg, service, env))
            targets[n_targets++] = (target){service, env, (size_t)(s - cfg->services)};
    }
    for (size_t k = 0; k < br.n; k++) {
        int any = 0;

        for (size_t t = 0; t < n_targets; t++)
            any |= strcmp(dq_json_get(dq_config_env_view(cfg, targets[t].service, targets[t].env), "branch")
                              ->valuestring,
                          br.v[k]) == 0;
        if (!any)
            printf("deployq: check: no environment has branch: %s: lint only for it, no check ran\n", br.v[k]);
    }
    for (size_t t = 0; t < n_targets; t++) {
        if (br.n)
            check_target(&ck, cfg, targets[t].service, targets[t].env, override);
        check_required(&ck, targets[t].service, targets[t].env, file_names, vars_from);
    }

    /* 3. the checks */
    if (ck.problems) {
        if (n_targets && !no_checks)
            fprintf(stderr, "deployq: check: checks not run: fix the configuration first\n");
        goto out;
    }
    if (n_targets == 0)
        note(&ck, "lint only: no check ran (give --service and --env, or --branch, to run checks:)");
    else if (no_checks)
        printf("deployq: check: checks not run (--no-checks)\n");
    for (size_t t = 0; t < n_targets && !no_checks; t++)
        failed += run_checks(&ck, targets[t].service, targets[t].env, &lists[targets[t].svc_index], (int)jobs);

out:
    tokens_restore(&tokens);
    for (size_t i = 0; i < ck.n_said; i++)
        free(ck.said[i]);
    for (size_t i = 0; lists && i < cfg->n_services; i++)
        checks_free(&lists[i]);
    free(lists);
    free(targets);
    names_free(file_names);
    dq_config_free(cfg);
    if (ck.problems) {
        fprintf(stderr, "deployq: check: %d problem(s)\n", ck.problems);
        return 1;
    }
    if (failed) {
        fprintf(stderr, "deployq: check: %d check(s) failed\n", failed);
        return 3;
    }
    return 0;
}
