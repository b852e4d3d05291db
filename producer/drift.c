/*
 * drift.c - `deployq drift`: how a service's environments differ in their variables, by
 * name. Values are read where the drift gate reads them (gates.h: drift_check or Railway's
 * `variables`), turned into keyed hashes at once, and never printed: only names are. The
 * same comparison as the validator's gate (drift_ignore, drift_allow), plus what changed
 * since the hash set the validator recorded at the environment's last deploy (drift.key).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gates.h"
#include "json.h"
#include "redis.h"
#include "util.h"

static const char drift_usage[] =
    "Usage: deployq drift --service NAME [--env NAME [--against NAME]] [--json] [options]\n"
    "\n"
    "Compare a service's environments' variables by name and by value, without ever\n"
    "printing a value: each value is replaced by a keyed hash (HMAC-SHA256 with drift.key)\n"
    "where it is read, exactly as the validator's drift gate does. For each comparison it\n"
    "prints the variables missing in the environment, missing in the one compared with,\n"
    "differing in value, and allowed to differ (drift_allow); and, when drift.key is set\n"
    "and the validator recorded the environment's hashes at its last deploy, the variables\n"
    "changed since that deploy.\n"
    "\n"
    "  -s, --service NAME   the service (required)\n"
    "  -e, --env NAME       the environment to look at (default: every environment of the\n"
    "                       service that has `requires:`, each against that one)\n"
    "  -a, --against NAME   the environment to compare with (default: --env's `requires`;\n"
    "                       without either, only what changed since its last deploy)\n"
    "      --json           one JSON document instead of text\n"
    "\n" DQ_CLI_COMMON_USAGE
    "\n"
    "Drift is: a variable missing in the environment (drift_ignore excepted), a value that\n"
    "differs (drift_allow and drift_ignore excepted), or a variable changed since the last\n"
    "deploy. A variable only the environment has is shown, not counted. Variables printed\n"
    "as names only (a drift_check without =VALUE) are compared by name only.\n"
    "\n"
    "Exit status: 0 no drift, 1 drift, 2 usage or configuration, 3 the variables could not\n"
    "be read.\n";

#define EXIT_DRIFT 1
#define EXIT_UNREADABLE 3

typedef struct since {
    int known;
    char version[160];
    int64_t at_ms;
    dq_drift_diff d;
    const char **changed;
    size_t n_changed;
} since;

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The target's hashes recorded at its last deploy, compared with now. Redis down or no
 * record: s->known stays 0 (said on stderr for Redis). */
static void since_deploy(const dq_cli *cli, const dq_config *cfg, const dq_drift_settings *ds, const char *service,
                         const char *env, const dq_drift_vars *now, dq_drift_vars *rec, since *s)
{
    char err[512], key[512], key_id[17] = "";
    char *text = NULL;
    dq_redis *r;

    if (!ds->key.persistent)
        return;
    r = dq_redis_connect(cfg->redis_url, cfg->redis_timeout_ms, err, sizeof err);
    if (!r) {
        dq_cli_fail(cli, "what changed since the last deploy is not known: redis: %s", err);
        return;
    }
    if (dq_redis_get(r, dq_drift_record_key(service, env, key, sizeof key), &text) != 0)
        dq_cli_fail(cli, "what changed since the last deploy is not known: redis: %s", dq_redis_errstr(r));
    else if (text && dq_drift_record_parse(text, rec, &s->at_ms, s->version, sizeof s->version, key_id) == 0) {
        if (strcmp(key_id, ds->key.id) != 0)
            dq_cli_fail(cli, "%s/%s: its hashes were recorded under another drift.key; not compared", service, env);
        else if (dq_drift_compare(now, rec, NULL, &s->d) == 0) {
            s->changed = calloc(s->d.n_differs + s->d.n_missing + s->d.n_extra + 1, sizeof *s->changed);
            if (s->changed) {
                for (size_t i = 0; i < s->d.n_differs; i++)
                    s->changed[s->n_changed++] = s->d.differs[i];
                for (size_t i = 0; i < s->d.n_missing; i++)
                    s->changed[s->n_changed++] = s->d.missing[i];
                for (size_t i = 0; i < s->d.n_extra; i++)
                    s->changed[s->n_changed++] = s->d.extra[i];
                qsort(s->changed, s->n_changed, sizeof *s->changed, by_name);
                s->known = 1;
            }
        }
    }
    free(text);
    dq_redis_free(r);
}

static cJSON *names_json(const char *const *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();

    for (size_t i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

static void print_names(const char *label, const char *const *v, size_t n)
{
    printf("  %-28s ", label);
    if (n == 0)
        fputs("-", stdout);
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? ", " : "", v[i]);
    putchar('\n');
}

/* Compare env with against (may be NULL) and print; returns 0, EXIT_DRIFT or
 * EXIT_UNREADABLE. */
static int compare_one(const dq_cli *cli, const dq_config *cfg, const dq_drift_settings *ds, const char *service,
                       const char *env, const char *against, cJSON *out)
{
    char err[512], label[300], at[DQ_TIME_LEN + 1];
    dq_gates *g = NULL, *src = NULL;
    dq_drift_vars now = {0}, theirs = {0}, rec = {0};
    dq_drift_diff d = {0};
    since s = {0};
    int rc = EXIT_UNREADABLE, drift;

    g = dq_gates_load(cfg, service, env, err, sizeof err);
    if (!g || (against && !(src = dq_gates_load(cfg, service, against, err, sizeof err)))) {
        dq_cli_fail(cli, "%s", err);
        rc = 2;
        goto out;
    }
    if (dq_gates_read_hashed(g, &ds->key, &now, err, sizeof err) != 0) {
        dq_cli_fail(cli, "cannot read the variables of %s: %s", g->target, err);
        goto out;
    }
    if (src && dq_gates_read_hashed(src, &ds->key, &theirs, err, sizeof err) != 0) {
        dq_cli_fail(cli, "cannot read the variables of %s: %s", src->target, err);
        goto out;
    }
    if (src && dq_drift_compare(&now, &theirs, g, &d) != 0) {
        dq_cli_fail(cli, "out of memory");
        goto out;
    }
    since_deploy(cli, cfg, ds, service, env, &now, &rec, &s);
    if (!src && !s.known) {
        dq_cli_fail(cli, "%s/%s: nothing to compare with: it has no `requires` (pass --against) and no "
                         "variables recorded at a deploy (drift.key)", service, env);
        rc = 2;
        goto out;
    }
    drift = (src && dq_drift_diff_drifted(&d)) || (s.known && s.n_changed > 0);
    if (out) {
        cJSON *c = cJSON_CreateObject();

        cJSON_AddStringToObject(c, "env", env);
        if (src) {
            cJSON_AddStringToObject(c, "against", against);
            cJSON_AddItemToObject(c, "missing", names_json(d.missing, d.n_missing));
            cJSON_AddItemToObject(c, "missing_in_against", names_json(d.extra, d.n_extra));
            cJSON_AddItemToObject(c, "differs", names_json(d.differs, d.n_differs));
            cJSON_AddItemToObject(c, "allowed", names_json(d.allowed, d.n_allowed));
        }
        if (s.known) {
            cJSON *o = cJSON_AddObjectToObject(c, "since_deploy");

            if (s.version[0])
                cJSON_AddStringToObject(o, "version", s.version);
            cJSON_AddStringToObject(o, "recorded_at", dq_time_format(s.at_ms, at));
            cJSON_AddItemToObject(o, "changed", names_json(s.changed, s.n_changed));
        }
        cJSON_AddBoolToObject(c, "drift", drift);
        cJSON_AddItemToArray(out, c);
    } else {
        if (src) {
            printf("%s: %s against %s\n", service, env, against);
            snprintf(label, sizeof label, "missing in %s:", env);
            print_names(label, d.missing, d.n_missing);
            snprintf(label, sizeof label, "missing in %s:", against);
            print_names(label, d.extra, d.n_extra);
            print_names("differs in value:", d.differs, d.n_differs);
            print_names("allowed to differ:", d.allowed, d.n_allowed);
        } else {
            printf("%s: %s\n", service, env);
        }
        if (s.known) {
            printf("  changed since the deploy of %s (%s):\n", s.version[0] ? s.version : "?",
                   dq_time_format(s.at_ms, at));
            print_names("", s.changed, s.n_changed);
        } else if (ds->key.persistent) {
            printf("  changed since the last deploy: not known (nothing recorded)\n");
        } else {
            printf("  changed since the last deploy: not known (no drift.key)\n");
        }
        printf("  %s\n", drift ? "DRIFT" : "no drift");
    }
    rc = drift ? EXIT_DRIFT : 0;
out:
    free(s.changed);
    dq_drift_diff_clear(&s.d);
    dq_drift_diff_clear(&d);
    dq_drift_vars_clear(&now);
    dq_drift_vars_clear(&theirs);
    dq_drift_vars_clear(&rec);
    dq_gates_free(src);
    dq_gates_free(g);
    return rc;
}

int dq_cmd_drift(int argc, char **argv)
{
    dq_cli cli = {.verb = "drift", .usage = drift_usage, .takes = DQ_CLI_COMMON | DQ_CLI_JSON};
    const char *service = NULL, *env = NULL, *against = NULL;
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_STRING('a', "against", &against),
        DQ_OPT_END,
    };
    dq_config *cfg = NULL;
    dq_drift_settings ds = {0};
    const dq_service *svc = NULL;
    cJSON *doc = NULL, *list = NULL;
    char err[512];
    int rc, worst = 0, n = 0;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    if (!service || !service[0])
        return dq_cli_usage(&cli, drift_usage, 2, "--service is required");
    if (against && !env)
        return dq_cli_usage(&cli, drift_usage, 2, "--against needs --env");
    cfg = dq_cli_load_config(&cli);
    if (!cfg)
        return 2;
    rc = 2;
    if (dq_drift_settings_load(cfg, &ds, err, sizeof err) != 0) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    for (size_t i = 0; i < cfg->n_services && !svc; i++)
        if (strcmp(cfg->services[i].name, service) == 0)
            svc = &cfg->services[i];
    if (!svc) {
        dq_cli_fail(&cli, "service '%s' is not in the configuration", service);
        goto out;
    }
    if (cli.json) {
        doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "service", service);
        list = cJSON_AddArrayToObject(doc, "comparisons");
    }
    for (size_t j = 0; j < svc->n_envs; j++) {
        const dq_environment *e = &svc->envs[j];
        int r;

        if (env ? strcmp(e->name, env) != 0 : !e->requires)
            continue;
        if (n++ > 0 && !cli.json)
            putchar('\n');
        r = compare_one(&cli, cfg, &ds, service, e->name, against ? against : e->requires, list);
        if (r == 2) {
            rc = 2;
            goto out;
        }
        if (r > worst)
            worst = r;
    }
    if (n == 0) {
        if (env)
            dq_cli_fail(&cli, "service '%s' has no environment '%s'", service, env);
        else
            dq_cli_fail(&cli, "service '%s' has no environment with `requires:`; pass --env (and --against)",
                        service);
        goto out;
    }
    if (doc) {
        char *s;

        cJSON_AddBoolToObject(doc, "drift", worst == EXIT_DRIFT);
        s = cJSON_Print(doc);
        if (s)
            puts(s);
        free(s);
    }
    rc = worst;
out:
    cJSON_Delete(doc);
    dq_drift_settings_clear(&ds);
    dq_config_free(cfg);
    return rc;
}
