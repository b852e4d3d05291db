/*
 * proc.c - the child-process runner (see proc.h): posix_spawnp with file actions and
 * attributes instead of code between fork and exec, and one poll loop that reads the
 * pipes, enforces the time limit, asks keep_going and reaps the child.
 *
 * Why posix_spawn: glibc runs the child on a vfork-like clone and only applies the file
 * actions and attributes before exec, all async-signal-safe, so it is correct in a threaded
 * worker; code of ours after fork() is not (malloc, setenv and stdio may hold locks that
 * another thread took).
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

extern char **environ;

/* The signals a worker may ignore or block (SIGPIPE for sockets, SIGTERM/SIGINT while it
 * shuts down): an ignored disposition and the mask survive exec, so they are reset. */
static const int default_signals[] = {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGALRM, SIGUSR1, SIGUSR2};

typedef struct capture {
    char *buf; /* max + 1 bytes */
    size_t len, max, total;
    int head;
} capture;

struct dq_proc {
    pid_t pid;
    int fd[2]; /* stdout (with stderr unless apart), stderr when apart; -1 when closed */
    capture cap[2];
    int64_t deadline; /* monotonic ms; 0: none */
    int64_t grace_ms; /* < 0: SIGKILL at once */
    int (*keep_going)(void *ctx);
    void *ctx;
    int reaped;
};

/* ---- the environment ---- */

static int var_name_is(const char *kv, const char *name)
{
    size_t l = strlen(name);

    return strncmp(kv, name, l) == 0 && kv[l] == '=';
}

char **dq_proc_env(const dq_proc_var *set, size_t n)
{
    size_t have = 0, o = 0;
    char **env;

    while (environ != NULL && environ[have] != NULL)
        have++;
    env = calloc(have + n + 1, sizeof *env);
    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < have; i++) {
        int replaced = 0;

        for (size_t k = 0; k < n && !replaced; k++)
            replaced = var_name_is(environ[i], set[k].name);
        if (!replaced && (env[o++] = strdup(environ[i])) == NULL)
            goto oom;
    }
    for (size_t k = 0; k < n; k++) {
        size_t len;

        if (set[k].value == NULL)
            continue;
        /* a later entry of set for the same name wins */
        for (size_t j = k + 1; j < n; j++)
            if (strcmp(set[j].name, set[k].name) == 0)
                goto next;
        len = strlen(set[k].name) + strlen(set[k].value) + 2;
        if ((env[o] = malloc(len)) == NULL)
            goto oom;
        snprintf(env[o++], len, "%s=%s", set[k].name, set[k].value);
    next:;
    }
    return env;
oom:
    dq_proc_env_free(env);
    return NULL;
}

void dq_proc_env_free(char **env)
{
    if (env == NULL)
        return;
    for (size_t i = 0; env[i] != NULL; i++)
        free(env[i]);
    free(env);
}

/* ---- output ---- */

/* Keep what the capture's mode keeps of n more bytes. */
static void capture_add(capture *c, const char *data, size_t n)
{
    c->total += n;
    if (c->head) {
        size_t room = c->max - c->len;
        size_t take = n < room ? n : room;

        memcpy(c->buf + c->len, data, take);
        c->len += take;
    } else if (n >= c->max) {
        memcpy(c->buf, data + (n - c->max), c->max);
        c->len = c->max;
    } else {
        if (c->len + n > c->max) {
            size_t drop = c->len + n - c->max;

            memmove(c->buf, c->buf + drop, c->len - drop);
            c->len -= drop;
        }
        memcpy(c->buf + c->len, data, n);
        c->len += n;
    }
    c->buf[c->len] = '\0';
}

static int capture_init(capture *c, size_t max, int head)
{
    c->max = max;
    c->head = head;
    c->buf = malloc(max + 1);
    if (c->buf == NULL)
        return -1;
    c->buf[0] = '\0';
    return 0;
}

char *dq_proc_text(const char *buf, size_t len, size_t total)
{
    size_t prefix = total > len ? 4 : 0;
    size_t cap = prefix + len + 1;
    char *raw = malloc(cap);
    char *out = malloc(cap + 16); /* "***" may be longer than a short secret */

    if (raw == NULL || out == NULL) {
        free(raw);
        free(out);
        return NULL;
    }
    memcpy(raw, "...\n", prefix);
    if (len > 0)
        memcpy(raw + prefix, buf, len);
    raw[prefix + len] = '\0';
    /* text for an event or a log line: a NUL would cut it short */
    for (size_t i = 0; i < prefix + len; i++)
        if (raw[i] == '\0')
            raw[i] = ' ';
    dq_redact(raw, out, cap + 16);
    free(raw);
    return out;
}

/* ---- start ---- */

/* A pipe whose ends are both above 2 (so the child's dup2 onto 0-2 cannot overwrite one
 * before it is used), close-on-exec in this process. */
static int pipe_above_stdio(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        if (fds[i] > 2)
            continue;
        int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3), e = errno;

        close(fds[i]);
        fds[i] = moved;
        errno = e;
    }
    if (fds[0] < 0 || fds[1] < 0) {
        int saved = errno;

        if (fds[0] >= 0)
            close(fds[0]);
        if (fds[1] >= 0)
            close(fds[1]);
        errno = saved;
        return -1;
    }
    return 0;
}

static void proc_close_fds(dq_proc *p)
{
    for (int i = 0; i < 2; i++)
        if (p->fd[i] >= 0) {
            close(p->fd[i]);
            p->fd[i] = -1;
        }
}

dq_proc_status dq_proc_start(const dq_proc_opts *o, dq_proc **out, char *err, size_t errlen)
{
    static char *const empty_env[] = {NULL};
    int outp[2] = {-1, -1}, errp[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int fa_ok = 0, attr_ok = 0, serr;
    dq_proc_status rc = DQ_PROC_ESETUP;
    sigset_t none, dfl;
    size_t out_max, err_max;
    dq_proc *p;

    *out = NULL;
    if (o->argv == NULL || o->argv[0] == NULL || o->argv[0][0] == '\0') {
        snprintf(err, errlen, "no program to run");
        return DQ_PROC_ESETUP;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        snprintf(err, errlen, "cannot start %s: out of memory", o->argv[0]);
        return DQ_PROC_ESETUP;
    }
    p->fd[0] = p->fd[1] = -1;
    p->pid = -1;
    p->reaped = 1; /* until there is a child */
    p->grace_ms = o->kill_grace_ms == 0 ? DQ_PROC_KILL_GRACE_MS : o->kill_grace_ms;
    p->keep_going = o->keep_going;
    p->ctx = o->ctx;
    out_max = o->out_max ? o->out_max : DQ_PROC_OUT_DEFAULT;
    err_max = !o->stderr_apart ? 0 : o->err_max ? o->err_max : DQ_PROC_ERR_DEFAULT;
    if (capture_init(&p->cap[0], out_max, o->out_keep == DQ_PROC_KEEP_HEAD) != 0 ||
        capture_init(&p->cap[1], err_max, 0) != 0) {
        snprintf(err, errlen, "cannot start %s: out of memory", o->argv[0]);
        goto out;
    }
    if (pipe_above_stdio(outp) != 0 || (o->stderr_apart && pipe_above_stdio(errp) != 0)) {
        snprintf(err, errlen, "cannot start %s: pipe: %s", o->argv[0], strerror(errno));
        goto out;
    }
    if (posix_spawn_file_actions_init(&fa) != 0 || (fa_ok = 1, posix_spawnattr_init(&attr)) != 0) {
        snprintf(err, errlen, "cannot start %s: posix_spawn setup failed", o->argv[0]);
        goto out;
    }
    attr_ok = 1;
    sigemptyset(&none);
    sigemptyset(&dfl);
    for (size_t i = 0; i < sizeof default_signals / sizeof default_signals[0]; i++)
        sigaddset(&dfl, default_signals[i]);
    /* The pipes' ends are above 2 (pipe_above_stdio), so these dup2s cannot clobber each
     * other; the close from 3 up drops every descriptor of ours, the pipes included. */
    if (posix_spawn_file_actions_adddup2(&fa, outp[1], 1) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, o->stderr_apart ? errp[1] : outp[1], 2) != 0 ||
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) != 0 ||
        (o->cwd != NULL && posix_spawn_file_actions_addchdir_np(&fa, o->cwd) != 0) ||
        posix_spawn_file_actions_addclosefrom_np(&fa, 3) != 0 ||
        posix_spawnattr_setsigmask(&attr, &none) != 0 || posix_spawnattr_setsigdefault(&attr, &dfl) != 0 ||
        posix_spawnattr_setpgroup(&attr, 0) != 0 || /* its own group: a kill reaches its children */
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) != 0) {
        snprintf(err, errlen, "cannot start %s: posix_spawn setup failed", o->argv[0]);
        goto out;
    }
    serr = posix_spawnp(&p->pid, o->argv[0], &fa, &attr, o->argv, o->envp != NULL ? o->envp : empty_env);
    if (serr != 0) {
        snprintf(err, errlen, "cannot start %s: %s", o->argv[0], strerror(serr));
        rc = DQ_PROC_ESPAWN;
        goto out;
    }
    p->reaped = 0;
    if (o->timeout_ms > 0)
        p->deadline = dq_mono_ms() + o->timeout_ms;
    p->fd[0] = outp[0];
    outp[0] = -1;
    if (o->stderr_apart) {
        p->fd[1] = errp[0];
        errp[0] = -1;
    }
    *out = p;
    p = NULL; /* now the caller's */
    rc = DQ_PROC_OK;
out:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    /* our copies of the write ends: the child holds its own, and EOF needs ours gone */
    for (int i = 0; i < 2; i++) {
        if (outp[i] >= 0)
            close(outp[i]);
        if (errp[i] >= 0)
            close(errp[i]);
    }
    dq_proc_free(p);
    return rc;
}

pid_t dq_proc_pid(const dq_proc *p)
{
    return p->pid;
}

/* ---- wait ---- */

/* Read what fd i has: a chunk into its capture, or EOF/error (then closed). */
static void drain_one(dq_proc *p, int i)
{
    char buf[4096];
    ssize_t got = read(p->fd[i], buf, sizeof buf);

    if (got > 0)
        capture_add(&p->cap[i], buf, (size_t)got);
    else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(p->fd[i]);
        p->fd[i] = -1;
    }
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

dq_proc_status dq_proc_wait(dq_proc *p, dq_proc_result *res)
{
    int status = 0, exited = 0, lost = 0, termed = 0, killed = 0;
    int64_t exited_at = 0, term_at = 0, asked_at = -DQ_PROC_POLL_MS;
    dq_proc_stop stop = DQ_PROC_STOP_NONE;

    memset(res, 0, sizeof *res);
    for (;;) {
        int64_t now = dq_mono_ms(), step = DQ_PROC_POLL_MS;
        struct pollfd pfd[2];
        int map[2], n = 0;

        if (!exited) {
            pid_t w = waitpid(p->pid, &status, WNOHANG);

            if (w == p->pid || (w < 0 && errno != EINTR)) {
                lost = w < 0;
                exited = 1;
                exited_at = now;
                p->reaped = 1;
            }
        }
        if (stop == DQ_PROC_STOP_NONE && p->cap[0].head && p->cap[0].total > p->cap[0].max)
            stop = DQ_PROC_STOP_OUTPUT;
        if (exited) {
            if ((p->fd[0] < 0 && p->fd[1] < 0) || now - exited_at >= DQ_PROC_DRAIN_MS)
                break;
            step = min64(step, exited_at + DQ_PROC_DRAIN_MS - now);
        } else {
            /* The child is not reaped yet, so its pid (= the group id) cannot have been
             * reused: signalling the group is safe only here. */
            if (stop == DQ_PROC_STOP_NONE && p->deadline > 0 && now >= p->deadline)
                stop = DQ_PROC_STOP_TIMEOUT;
            /* at most every DQ_PROC_POLL_MS, however fast the output comes */
            if (stop == DQ_PROC_STOP_NONE && p->keep_going != NULL && now - asked_at >= DQ_PROC_POLL_MS) {
                asked_at = now;
                if (!p->keep_going(p->ctx))
                    stop = DQ_PROC_STOP_REQUESTED;
            }
            if (stop != DQ_PROC_STOP_NONE && !termed) {
                termed = 1;
                term_at = now;
                killed = p->grace_ms < 0;
                kill(-p->pid, killed ? SIGKILL : SIGTERM);
            } else if (stop != DQ_PROC_STOP_NONE && !killed && now - term_at >= p->grace_ms) {
                killed = 1;
                kill(-p->pid, SIGKILL);
            }
            if (stop == DQ_PROC_STOP_NONE && p->deadline > 0)
                step = min64(step, p->deadline - now);
            else if (stop != DQ_PROC_STOP_NONE && !killed)
                step = min64(step, term_at + p->grace_ms - now);
        }
        for (int i = 0; i < 2; i++)
            if (p->fd[i] >= 0) {
                pfd[n].fd = p->fd[i];
                pfd[n].events = POLLIN;
                map[n++] = i;
            }
        if (n == 0)
            step = min64(step, 10); /* both pipes closed: only the exit is left to see */
        if (step < 0)
            step = 0;
        if (poll(n > 0 ? pfd : NULL, (nfds_t)n, (int)step) > 0)
            for (int k = 0; k < n; k++)
                if (pfd[k].revents != 0)
                    drain_one(p, map[k]);
    }
    proc_close_fds(p);
    res->stopped = stop;
    res->exit_code = !lost && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    res->term_signal = !lost && WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    res->out = p->cap[0].buf;
    res->out_len = p->cap[0].len;
    res->out_total = p->cap[0].total;
    res->err = p->cap[1].buf;
    res->err_len = p->cap[1].len;
    res->err_total = p->cap[1].total;
    p->cap[0].buf = p->cap[1].buf = NULL; /* now the result's */
    return lost ? DQ_PROC_EWAIT : DQ_PROC_OK;
}

void dq_proc_free(dq_proc *p)
{
    if (p == NULL)
        return;
    if (!p->reaped) {
        kill(-p->pid, SIGKILL);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    proc_close_fds(p);
    free(p->cap[0].buf);
    free(p->cap[1].buf);
    free(p);
}

dq_proc_status dq_proc_run(const dq_proc_opts *o, dq_proc_result *res, char *err, size_t errlen)
{
    dq_proc *p;
    dq_proc_status rc = dq_proc_start(o, &p, err, errlen);

    if (rc != DQ_PROC_OK) {
        memset(res, 0, sizeof *res);
        return rc;
    }
    rc = dq_proc_wait(p, res);
    if (rc == DQ_PROC_EWAIT)
        snprintf(err, errlen, "%s ran but could not be reaped: its status is unknown", o->argv[0]);
    dq_proc_free(p);
    return rc;
}

void dq_proc_result_free(dq_proc_result *res)
{
    if (res == NULL)
        return;
    free(res->out);
    free(res->err);
    memset(res, 0, sizeof *res);
}
