/*
 * provider_command.c - a local deploy command (railway up --ci, a script) as a provider.
 *
 * The command is an argument vector with placeholders ({service}, {environment},
 * {version}, {deployment_id}, {fence}) expanded per argument and started with
 * posix_spawnp: no shell ever sees a value. It runs in its own process group so a timeout
 * or a cancel stops everything it started. A thread per run drains its output (stdout and
 * stderr together) into a bounded tail buffer, enforces the time limit and reaps it, so
 * the chain can poll it like any remote provider. Exit 0 is success; anything else fails.
 * Runs live in memory only: after a restart their ids are unknown (and say so).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "provider.h"
#include "util.h"

extern char **environ;

#define CMD_DEFAULT_TIMEOUT_MS (10 * 60 * 1000)
#define CMD_DEFAULT_OUTPUT 8192
#define CMD_KILL_GRACE_MS 2000
#define CMD_DRAIN_GRACE_MS 500

typedef struct cmd_run {
    struct cmd_run *next;
    char id[64];
    pid_t pid;
    int fd;
    pthread_t thread;
    int64_t deadline; /* monotonic */
    /* Guarded by the impl mutex: */
    int done;
    int exit_code; /* -1 when killed by a signal */
    int term_signal;
    int timed_out;
    int cancel_requested;
    char *out; /* tail of the output, out_cap bytes at most */
    size_t out_len;
    size_t out_cap;
    size_t out_total;
} cmd_run;

typedef struct {
    char **argv; /* the template, NULL-terminated */
    size_t argc;
    char *cwd;
    int64_t timeout_ms;
    size_t output_limit;
    pthread_mutex_t mu;
    cmd_run *runs;
    unsigned seq;
} cmd_impl;

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
        p->deadline_ms = c->timeout_ms + CMD_KILL_GRACE_MS + 1000;
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
    free(r->out);
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

/* Keep the last out_cap bytes of everything written. Called with the mutex held. */
static void tail_append(cmd_run *r, const char *buf, size_t n)
{
    r->out_total += n;
    if (n >= r->out_cap) {
        memcpy(r->out, buf + (n - r->out_cap), r->out_cap);
        r->out_len = r->out_cap;
        return;
    }
    if (r->out_len + n > r->out_cap) {
        size_t drop = r->out_len + n - r->out_cap;
        memmove(r->out, r->out + drop, r->out_len - drop);
        r->out_len -= drop;
    }
    memcpy(r->out + r->out_len, buf, n);
    r->out_len += n;
}

static void *run_thread(void *arg)
{
    cmd_impl *c = ((void **)arg)[0];
    cmd_run *r = ((void **)arg)[1];
    int exited = 0, status = 0;
    int64_t term_at = 0, exited_at = 0;
    char buf[4096];

    free(arg);
    for (;;) {
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        int n = poll(&pfd, 1, 100);
        if (n > 0 && r->fd >= 0) {
            ssize_t got = read(r->fd, buf, sizeof buf);
            if (got > 0) {
                pthread_mutex_lock(&c->mu);
                tail_append(r, buf, (size_t)got);
                pthread_mutex_unlock(&c->mu);
            } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
                close(r->fd);
                r->fd = -1;
            }
        }
        int64_t now = dq_mono_ms();
        if (!exited && waitpid(r->pid, &status, WNOHANG) == r->pid) {
            exited = 1;
            exited_at = now;
        }
        /* Grandchildren may hold the pipe open after the command exits: drain briefly. */
        if (exited && (r->fd < 0 || now - exited_at > CMD_DRAIN_GRACE_MS))
            break;
        if (exited)
            continue;
        pthread_mutex_lock(&c->mu);
        int cancel = r->cancel_requested;
        if (!r->timed_out && !cancel && now >= r->deadline)
            r->timed_out = 1;
        int stop = cancel || r->timed_out;
        pthread_mutex_unlock(&c->mu);
        if (stop && term_at == 0) {
            kill(-r->pid, SIGTERM);
            term_at = now;
        } else if (stop && now - term_at > CMD_KILL_GRACE_MS) {
            kill(-r->pid, SIGKILL);
        }
    }
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
    pthread_mutex_lock(&c->mu);
    r->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r->term_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    r->done = 1;
    pthread_mutex_unlock(&c->mu);
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

#define ENV_OURS 5

/* environ without our variables, then DEPLOYQ_* for this deploy (the last ENV_OURS
 * entries, the only ones to free: see env_free). NULL on allocation failure. */
static char **child_env(const dq_provider_request *req, const char *fence)
{
    static const char *const names[ENV_OURS] = {"DEPLOYQ_DEPLOYMENT_ID", "DEPLOYQ_SERVICE", "DEPLOYQ_ENVIRONMENT",
                                                "DEPLOYQ_VERSION", "DEPLOYQ_FENCE"};
    const char *vals[ENV_OURS] = {req->deployment_id, req->service, req->environment, req->version, fence};
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **env = calloc(n + ENV_OURS + 1, sizeof *env);
    size_t o = 0;
    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int ours = 0;
        for (size_t k = 0; k < ENV_OURS; k++) {
            size_t l = strlen(names[k]);
            if (strncmp(environ[i], names[k], l) == 0 && environ[i][l] == '=')
                ours = 1;
        }
        if (!ours)
            env[o++] = environ[i];
    }
    for (size_t k = 0; k < ENV_OURS; k++) {
        size_t len = strlen(names[k]) + strlen(vals[k] ? vals[k] : "") + 2;
        char *kv = malloc(len);
        if (kv == NULL) {
            for (size_t j = 0; j < k; j++)
                free(env[o - 1 - j]);
            free(env);
            return NULL;
        }
        snprintf(kv, len, "%s=%s", names[k], vals[k] ? vals[k] : "");
        env[o++] = kv;
    }
    return env;
}

static void env_free(char **env)
{
    size_t n = 0;
    if (env == NULL)
        return;
    while (env[n] != NULL)
        n++;
    for (size_t i = n - ENV_OURS; i < n; i++)
        free(env[i]);
    free(env);
}

static int cmd_deploy(dq_provider *p, const dq_provider_request *req, char *id, size_t idlen, dq_provider_error *e)
{
    cmd_impl *c = p->impl;
    char fence[32];
    char **argv = calloc(c->argc + 1, sizeof *argv);
    char **env = NULL;
    int pipefd[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int fa_ok = 0, attr_ok = 0, rc = -1;
    cmd_run *r = NULL;
    pid_t pid;

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
    if ((env = child_env(req, fence)) == NULL || pipe2(pipefd, O_CLOEXEC) != 0 ||
        (r = calloc(1, sizeof *r)) == NULL || (r->out = malloc(c->output_limit)) == NULL) {
        dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "cannot prepare the command: %s", strerror(errno));
        goto out;
    }
    r->out_cap = c->output_limit;
    if (posix_spawn_file_actions_init(&fa) != 0 || (fa_ok = 1, posix_spawnattr_init(&attr)) != 0) {
        dq_provider_fail(p, e, DQ_PROV_FAILED, "config", 0, "posix_spawn setup failed");
        goto out;
    }
    attr_ok = 1;
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    if (c->cwd != NULL)
        posix_spawn_file_actions_addchdir_np(&fa, c->cwd);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGINT);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setpgroup(&attr, 0); /* its own group: a kill reaches its children */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int serr = posix_spawnp(&pid, argv[0], &fa, &attr, argv, env);
    if (serr != 0) {
        /* Nothing ran: a missing or unusable program lets the next provider try. */
        dq_provider_fail(p, e, DQ_PROV_UNAVAILABLE, "config", 0, "cannot start %s: %s", argv[0], strerror(serr));
        goto out;
    }
    close(pipefd[1]);
    pipefd[1] = -1;
    r->pid = pid;
    r->fd = pipefd[0];
    pipefd[0] = -1;
    r->deadline = dq_mono_ms() + c->timeout_ms;

    void **arg = malloc(2 * sizeof *arg);
    pthread_mutex_lock(&c->mu);
    snprintf(r->id, sizeof r->id, "cmd-%d-%u", (int)pid, ++c->seq);
    if (arg != NULL) {
        arg[0] = c;
        arg[1] = r;
    }
    if (arg == NULL || pthread_create(&r->thread, NULL, run_thread, arg) != 0) {
        pthread_mutex_unlock(&c->mu);
        free(arg);
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(r->fd);
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
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    run_free(r);
    for (size_t i = 0; i < c->argc; i++)
        free(argv[i]);
    free(argv);
    env_free(env);
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

    if (r->timed_out) {
        st->state = DQ_DEPLOY_FAILED;
        st->timed_out = 1;
        snprintf(st->raw, sizeof st->raw, "timeout after %lld ms", (long long)c->timeout_ms);
    } else if (r->exit_code == 0) {
        st->state = DQ_DEPLOY_SUCCEEDED;
        dq_strlcpy(st->raw, "exit 0", sizeof st->raw);
    } else {
        st->state = DQ_DEPLOY_FAILED;
        if (r->exit_code >= 0)
            snprintf(st->raw, sizeof st->raw, "exit %d", r->exit_code);
        else
            snprintf(st->raw, sizeof st->raw, "signal %d", r->term_signal);
    }
    size_t prefix = r->out_total > r->out_len ? 4 : 0;
    size_t cap = r->out_len + prefix + 1;
    char *raw = malloc(cap);
    st->output = malloc(cap + 16); /* "***" may be longer than a short secret */
    if (raw != NULL && st->output != NULL) {
        memcpy(raw, "...\n", prefix);
        memcpy(raw + prefix, r->out, r->out_len);
        raw[prefix + r->out_len] = '\0';
        /* Output is text for an event: NULs would cut it short. */
        for (size_t i = 0; i < prefix + r->out_len; i++)
            if (raw[i] == '\0')
                raw[i] = ' ';
        dq_redact(raw, st->output, cap + 16);
    } else {
        free(st->output);
        st->output = NULL;
    }
    free(raw);
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

const dq_provider_ops dq_provider_command_ops = {
    .type = "command",
    .init = cmd_init,
    .deploy = cmd_deploy,
    .status = cmd_status,
    .rollback = cmd_rollback,
    .cancel = cmd_cancel,
    .destroy = cmd_destroy,
};
