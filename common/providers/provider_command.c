/*
 * provider_command.c - a local deploy command (railway up --ci, a script) as a provider.
 *
 * The command is an argument vector with placeholders ({service}, {environment},
 * {version}, {deployment_id}, {fence}) expanded per argument and started by the process
 * runner (proc.h): no shell ever sees a value, and a timeout or a cancel stops its whole
 * process group. A thread per run waits in dq_proc_wait (which keeps the tail of stdout and
 * stderr together, enforces the time limit and reaps it), so the chain can poll the run
 * like any remote provider. Exit 0 is success; anything else fails. Runs live in memory
 * only: after a restart their ids are unknown (and say so).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc.h"
#include "provider.h"
#include "util.h"

#define CMD_DEFAULT_TIMEOUT_MS (10 * 60 * 1000)
#define CMD_DEFAULT_OUTPUT DQ_PROC_OUT_DEFAULT

typedef struct cmd_impl cmd_impl;

typedef struct cmd_run {
    struct cmd_run *next;
    cmd_impl *impl;
    char id[64];
    dq_proc *proc; /* used by the run's thread only, until it is joined */
    pthread_t thread;
    /* Guarded by the impl mutex: */
    int done;
    int cancel_requested;
    dq_proc_result res; /* set when done */
} cmd_run;

struct cmd_impl {
    char **argv; /* the template, NULL-terminated */
    size_t argc;
    char *cwd;
    int64_t timeout_ms;
    size_t output_limit;
    pthread_mutex_t mu;
    cmd_run *runs;
    unsigned seq;
};

static const char *const placeholders[] = {"{service}", "{environment}", "{version}", "{deployment_id}", "{fence}",
                                           NULL};

/* 0 when every {...} in s is a known placeholder. */
static int check_template(const char *s)
{
    for (const char *c = strchr(s, '{'); c != NULL; c = strchr(c + 1, '{')) {
        int known = 0;
        for (size_t i = 0; placeholders[i]; i++)
            if (strncmp(c, placeholders[i], strlen(placeholders[i])) == 0)
                known = 1;
        if (!known)
            return -1;
    }
    return 0;
}

static int cmd_init(dq_provider *p, const cJSON *cfg, char *err, size_t errlen)
{
    cmd_impl *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&c->mu, NULL);
    p->impl = c;
    const cJSON *argv = cJSON_GetObjectItemCaseSensitive(cfg, "argv");
    if (!cJSON_IsArray(argv) || cJSON_GetArraySize(argv) == 0) {
        snprintf(err, errlen, "provider %s: \"argv\" must be a non-empty array of strings", p->name);
        return -1;
    }
    c->argc = (size_t)cJSON_GetArraySize(argv);
    c->argv = calloc(c->argc + 1, sizeof *c->argv);
    if (c->argv == NULL)
        goto oom;
    size_t i = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, argv)
    {
        if (!cJSON_IsString(a) || check_template(a->valuestring) != 0) {
            snprintf(err, errlen, "provider %s: argv[%zu] is not a string or has an unknown {placeholder}", p->name,
                     i);
            return -1;
        }
        if ((c->argv[i++] = strdup(a->valuestring)) == NULL)
            goto oom;
    }
    if (check_template(c->argv[0]) != 0 || strchr(c->argv[0], '{') != NULL) {
        snprintf(err, errlen, "provider %s: the program (argv[0]) cannot be a placeholder", p->name);
        return -1;
    }
    /* Here "timeout" is the command's time limit, not an HTTP timeout. */
    c->timeout_ms = dq_provider_cfg_duration(cfg, "timeout", CMD_DEFAULT_TIMEOUT_MS);
    if (c->timeout_ms <= 0) {
        snprintf(err, errlen, "provider %s: timeout must be a positive duration", p->name);
        return -1;
    }
    if (cJSON_GetObjectItemCaseSensitive(cfg, "deadline") == NULL)
        p->deadline_ms = c->timeout_ms + DQ_PROC_KILL_GRACE_MS + 1000;
    c->output_limit = CMD_DEFAULT_OUTPUT;
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(cfg, "output_limit");
    if (lim != NULL) {
        if (!cJSON_IsNumber(lim) || lim->valuedouble < 64 || lim->valuedouble > 1048576) {
            snprintf(err, errlen, "provider %s: output_limit must be a number of bytes from 64 to 1048576", p->name);
            return -1;
        }
        c->output_limit = (size_t)lim->valuedouble;
    }
    const char *cwd = dq_provider_cfg_str(cfg, "cwd");
    if (cwd != NULL && (c->cwd = strdup(cwd)) == NULL)
        goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static void run_free(cmd_run *r)
{
    if (r == NULL)
        return;
    dq_proc_free(r->proc);
    dq_proc_result_free(&r->res);
    free(r);
}

static void cmd_destroy(dq_provider *p)
{
    cmd_impl *c = p->impl;
    if (c == NULL)
        return;
    /* Stop whatever still runs: a provider that is gone cannot report on it. */
    pthread_mutex_lock(&c->mu);
    for (cmd_run *r = c->runs; r != NULL; r = r->next)
        r->cancel_requested = 1;
    pthread_mutex_unlock(&c->mu);
    while (c->runs != NULL) {
        cmd_run *r = c->runs;
        c->runs = r->next;
        pthread_join(r->thread, NULL);
        run_free(r);
    }
    for (size_t i = 0; c->argv != NULL && i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->cwd);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The runner's keep_going: a cancel (or the provider going away) stops the run. */
static int run_keep_going(void *arg)
{
    cmd_run *r = arg;
    int cancel;

    pthread_mutex_lock(&r->impl->mu);
    cancel = r->cancel_requested;
    pthread_mutex_unlock(&r->impl->mu);
    return !cancel;
}

static void *run_thread(void *arg)
{
    cmd_run *r = arg;
    dq_proc_result res;

    /* DQ_PROC_EWAIT leaves exit_code -1 and term_signal 0: reported as a failure. */
    dq_proc_wait(r->proc, &res);
    pthread_mutex_lock(&r->impl->mu);
    r->res = res;
    r->done = 1;
    pthread_mutex_unlock(&r->impl->mu);
    return NULL;
}

/* Expand the placeholders of one argument into out (when not NULL); returns the length. */
static size_t expand_into(const char *tmpl, const char *const vals[5], char *out)
{
    size_t o = 0;
    while (*tmpl != '\0') {
        size_t k;
        for (k = 0; placeholders[k]; k++)
            if (strncmp(tmpl, placeholders[k], strlen(placeholders[k])) == 0)
                break;
        if (placeholders[k] != NULL) {
            const char *v = vals[k] ? vals[k] : "";
            size_t vl = strlen(v);
            if (out != NULL)
                memcpy(out + o, v, vl);
            o += vl;
            tmpl += strlen(placeholders[k]);
        } else {
            if (out != NULL)
                out[o] = *tmpl;
            o++;
            tmpl++;
        }
    }
    if (out != NULL)
        out[o] = '\0';
    return o;
}

/* The argument with its placeholders expanded, malloc'd. */
static char *expand_arg(const char *tmpl, const dq_provider_request *req, const char *fence)
{
    const char *const vals[5] = {req->service, req->environment, req->version, req->deployment_id, fence};
    char *out = malloc(expand_into(tmpl, vals, NULL) + 1);
    if (out != NULL)
        expand_into(tmpl, vals, out);
    return out;
}

/* The process environment with DEPLOYQ_* for this deploy; NULL on allocation failure. */
static char **child_env(const dq_provider_request *req, const char *fence)
{
    const dq_proc_var vars[] = {
        {"DEPLOYQ_DEPLOYMENT_ID", req->deployment_id ? req->deployment_id : ""},
        {"DEPLOYQ_SERVICE", req->service ? req->service : ""},
        {"DEPLOYQ_ENVIRONMENT", req->environment ? req->environment : ""},
        {"DEPLOYQ_VERSION", req->version ? req->version : ""},
        {"DEPLOYQ_FENCE", fence},
    };

    return dq_proc_env(vars, sizeof vars / sizeof vars[0]);
}

static int cmd_deploy(dq_provider *p, const dq_provider_request *req, char *id, size_t idlen, dq_provider_error *e)
{
    cmd_impl *c = p->impl;
    char fence[32], why[512];
    char **argv = calloc(c->argc + 1, sizeof *argv);
    char **env = NULL;
    cmd_run *r = NULL;
    dq_proc_status ps;
    int rc = -1;

    snprintf(fence, sizeof fence, "%lld", (long long)req->fence);
    if (argv == NULL)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
    for (size_t i = 0; i < c->argc; i++) {
        if ((argv[i] = expand_arg(c->argv[i], req, fence)) == NULL) {
            dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "out of memory");
            goto out;
        }
        /* A value that starts an argument with "-" would be read as an option. */
        if (c->argv[i][0] == '{' && argv[i][0] == '-') {
            dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "argument %zu would start with \"-\"", i);
            goto out;
        }
    }
    if ((env = child_env(req, fence)) == NULL || (r = calloc(1, sizeof *r)) == NULL) {
        dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "cannot prepare the command: out of memory");
        goto out;
    }
    r->impl = c;
    const dq_proc_opts po = {
        .argv = argv,
        .envp = env,
        .cwd = c->cwd,
        .timeout_ms = c->timeout_ms,
        .out_max = c->output_limit,
        .out_keep = DQ_PROC_KEEP_TAIL,
        .keep_going = run_keep_going,
        .ctx = r,
    };
    ps = dq_proc_start(&po, &r->proc, why, sizeof why);
    if (ps == DQ_PROC_ESPAWN) {
        /* Nothing ran: a missing or unusable program lets the next provider try. */
        dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "config", 0, "%s", why);
        goto out;
    }
    if (ps != DQ_PROC_OK) {
        dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "cannot prepare the command: %s", why);
        goto out;
    }

    pthread_mutex_lock(&c->mu);
    snprintf(r->id, sizeof r->id, "cmd-%d-%u", (int)dq_proc_pid(r->proc), ++c->seq);
    if (pthread_create(&r->thread, NULL, run_thread, r) != 0) {
        pthread_mutex_unlock(&c->mu);
        /* run_free kills and reaps the child through dq_proc_free */
        dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "cannot start a thread for the command");
        goto out;
    }
    r->next = c->runs;
    c->runs = r;
    pthread_mutex_unlock(&c->mu);
    dq_strlcpy(id, r->id, idlen);
    r = NULL; /* now owned by the run table */
    rc = 0;
out:
    run_free(r);
    for (size_t i = 0; i < c->argc; i++)
        free(argv[i]);
    free(argv);
    dq_proc_env_free(env);
    return rc;
}

static int cmd_status(dq_provider *p, const dq_provider_request *req, const char *id, dq_deploy_status *st,
                      dq_provider_error *e)
{
    cmd_impl *c = p->impl;
    cmd_run **link, *r = NULL;

    pthread_mutex_lock(&c->mu);
    for (link = &c->runs; *link != NULL; link = &(*link)->next)
        if (strcmp((*link)->id, id) == 0) {
            r = *link;
            break;
        }
    if (r == NULL) {
        pthread_mutex_unlock(&c->mu);
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0,
                                "command run %s is unknown (runs do not survive a restart)", id);
    }
    if (!r->done) {
        st->state = DQ_DEPLOY_IN_FLIGHT;
        dq_strlcpy(st->raw, "running", sizeof st->raw);
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    /* Terminal: report once, then forget the run. */
    *link = r->next;
    pthread_mutex_unlock(&c->mu);
    pthread_join(r->thread, NULL);

    if (r->res.stopped == DQ_PROC_STOP_TIMEOUT) {
        st->state = DQ_DEPLOY_FAILED;
        st->timed_out = 1;
        snprintf(st->raw, sizeof st->raw, "timeout after %lld ms", (long long)c->timeout_ms);
    } else if (r->res.exit_code == 0) {
        st->state = DQ_DEPLOY_SUCCEEDED;
        dq_strlcpy(st->raw, "exit 0", sizeof st->raw);
    } else {
        st->state = DQ_DEPLOY_FAILED;
        if (r->res.exit_code >= 0)
            snprintf(st->raw, sizeof st->raw, "exit %d", r->res.exit_code);
        else
            snprintf(st->raw, sizeof st->raw, "signal %d", r->res.term_signal);
    }
    /* NULL on allocation failure: the status stands without its output */
    st->output = dq_proc_text(r->res.out, r->res.out_len, r->res.out_total);
    run_free(r);
    return 0;
}

static int cmd_rollback(dq_provider *p, const dq_provider_request *req, const char *id, char *new_id,
                        size_t new_idlen, dq_provider_error *e)
{
    /* The same command with the old version. */
    return cmd_deploy(p, req, new_id, new_idlen, e);
}

static int cmd_cancel(dq_provider *p, const dq_provider_request *req, const char *id, dq_provider_error *e)
{
    cmd_impl *c = p->impl;
    int found = 0;

    pthread_mutex_lock(&c->mu);
    for (cmd_run *r = c->runs; r != NULL; r = r->next)
        if (strcmp(r->id, id) == 0) {
            r->cancel_requested = 1;
            found = 1;
        }
    pthread_mutex_unlock(&c->mu);
    if (!found)
        return dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "command run %s is unknown", id);
    return 0;
}

static const char *const cmd_keys[] = {"argv", "cwd", "output_limit", NULL};

const dq_provider_ops dq_provider_command_ops = {
    .type = "command",
    .keys = cmd_keys,
    .init = cmd_init,
    .deploy = cmd_deploy,
    .status = cmd_status,
    .rollback = cmd_rollback,
    .cancel = cmd_cancel,
    .destroy = cmd_destroy,
};
