/*
 * up.c - `deployq up`: the whole stack on one machine. It hosts the embedded broker,
 * starts a redis-server on a free port, writes a configuration (or takes the user's),
 * starts every worker binary that exists, records all of it in the stack state file so
 * a second `deployq` finds it without flags, restarts a worker that dies, and on
 * Ctrl-C / SIGTERM stops everything it started, in reverse order.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "demo.h"
#include "kafka.h"
#include "log.h"
#include "mockbroker.h"
#include "redis.h"
#include "sign.h"
#include "signals.h"
#include "stack.h"
#include "util.h"

static const char up_usage[] =
    "Usage: deployq up [--config FILE] [--redis-server PATH] [--partitions N] [--demo]\n"
    "\n"
    "Run the whole deployq stack on this machine until Ctrl-C or SIGTERM:\n"
    "  - the embedded Kafka broker (librdkafka's mock cluster, RAM only),\n"
    "  - a redis-server on a free loopback port (no persistence),\n"
    "  - every worker that is built: deployq-validator (and the executor, monitor,\n"
    "    rollback and registry workers when they exist).\n"
    "Without --config, a configuration with the service `demo` (environments staging and\n"
    "production) and a fresh CI signing key are written to the state directory, so\n"
    "`deployq submit --service demo --env staging --version v1` works at once from another\n"
    "terminal: later `deployq` commands find this stack without flags. Worker logs go to\n"
    "<state dir>/logs/. A worker that dies is restarted.\n"
    "\n"
    "  -c, --config FILE       use this configuration (its services and keys); the\n"
    "                          broker and Redis are still the ones `up` starts\n"
    "      --redis-server P    the redis-server binary (default: redis-server in PATH)\n"
    "  -p, --partitions N      partitions of requests/events (default 6)\n"
    "      --demo              run the demo unattended, then stop: a demo service and a\n"
    "                          local provider; deploy v1 (verified), then v2-bad, which\n"
    "                          fails its health checks and is rolled back automatically,\n"
    "                          narrated step by step with the evidence and the MTTR.\n"
    "                          Exit 0 when the rollback happened (under two minutes)\n"
    "  -h, --help              this help\n"
    "\n"
    "State directory: $DEPLOYQ_STATE_DIR, else $XDG_RUNTIME_DIR/deployq, else\n"
    "/tmp/deployq-<uid>. It is created 0700, and refused unless it is a real directory of\n"
    "yours that no one else can write (the two defaults: mode 0700 exactly).\n";

#define MAX_WORKERS 8

static const char *const worker_names[] = {"validator", "executor", "monitor", "rollback",
                                           "registry"};

typedef struct worker {
    const char *name;
    char path[PATH_MAX];
    pid_t pid;
    int64_t started_ms;
    int restarts;
} worker;

typedef struct up_state {
    char *dir;
    int dirfd;    /* the checked state directory: everything is created under it */
    int logdirfd; /* its logs/ */
    char config[PATH_MAX];
    char logdir[PATH_MAX];
    char brokers[512];
    char redis_url[128];
    pid_t redis_pid;
    worker workers[MAX_WORKERS];
    size_t n_workers;
} up_state;

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* fork+exec argv with stdout/stderr appended to <logs>/<logname>; the child gets its own
 * process group so a Ctrl-C in the terminal reaches `up` only, which then stops it in order.
 * The log is opened here, in the parent, under the checked logs/ descriptor: never through
 * a symbolic link, 0600. When it cannot be, the child keeps up's stdout and stderr. */
static pid_t spawn(char *const argv[], int logdirfd, const char *logname,
                   char *const extra_env[])
{
    int fd = dq_stack_open_file(logdirfd, logname, O_CREAT | O_APPEND);
    pid_t pid;

    if (fd < 0)
        fprintf(stderr, "deployq: up: cannot open the log %s: %s; %s logs here\n", logname,
                strerror(errno), argv[0]);
    pid = fork();
    if (pid != 0) {
        if (fd >= 0)
            close(fd);
        return pid;
    }
    setpgid(0, 0);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    for (size_t i = 0; extra_env && extra_env[i]; i++)
        putenv(extra_env[i]);
    execvp(argv[0], argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* Where the worker binaries are: next to this executable (installed), or in the build
 * tree (producer/../workers/<name>/), else PATH. Returns 0 when found. */
static int find_worker(const char *name, char *out, size_t outlen)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char *slash;

    if (n > 0) {
        self[n] = '\0';
        slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            if ((size_t)snprintf(out, outlen, "%s/deployq-%s", self, name) < outlen &&
                access(out, X_OK) == 0)
                return 0;
            if ((size_t)snprintf(out, outlen, "%s/../workers/%s/deployq-%s", self, name, name) <
                    outlen &&
                access(out, X_OK) == 0)
                return 0;
        }
    }
    {
        const char *path = getenv("PATH");
        char *copy = path ? strdup(path) : NULL, *save = NULL;

        for (char *p = copy ? strtok_r(copy, ":", &save) : NULL; p;
             p = strtok_r(NULL, ":", &save)) {
            if ((size_t)snprintf(out, outlen, "%s/deployq-%s", p, name) < outlen &&
                access(out, X_OK) == 0) {
                free(copy);
                return 0;
            }
        }
        free(copy);
    }
    return -1;
}

static int write_demo_config(up_state *st, const dq_demo *demo, char *key_id,
                             size_t key_id_len, char *err, size_t errlen)
{
    char keypath[PATH_MAX], apath[PATH_MAX];
    char *pub = NULL, *apub = NULL;
    FILE *f;
    int fd, rc = -1;

    snprintf(keypath, sizeof keypath, "%s/ci.key", st->dir);
    snprintf(apath, sizeof apath, "%s/approver.key", st->dir);
    /* A fresh pair for every `up`: the previous stack's keys mean nothing now. The keys
     * are created O_EXCL, 0600 (dq_sign_keygen), in the directory checked to be ours. */
    unlinkat(st->dirfd, "ci.key", 0);
    unlinkat(st->dirfd, "approver.key", 0);
    if (dq_sign_keygen(keypath, &pub, err, errlen) != 0 ||
        dq_sign_keygen(apath, &apub, err, errlen) != 0)
        goto out;
    dq_strlcpy(key_id, "ci-local", key_id_len);
    if ((size_t)snprintf(st->config, sizeof st->config, "%s/deployq.yaml", st->dir) >=
        sizeof st->config) {
        snprintf(err, errlen, "state directory path too long");
        goto out;
    }
    /* Rewritten on every `up`: removed, then created afresh (O_EXCL, never a link). */
    unlinkat(st->dirfd, "deployq.yaml", 0);
    fd = dq_stack_open_file(st->dirfd, "deployq.yaml", O_CREAT | O_EXCL);
    f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        int n = snprintf(err, errlen, "cannot write %s: %s", st->config, strerror(errno));
        (void)n; /* a truncated message is still the right message */
        if (fd >= 0)
            close(fd);
        goto out;
    }
    fprintf(f,
            "# Written by `deployq up` for this stack; edit a copy and pass it with --config.\n"
            "kafka:\n"
            "  bootstrap.servers: \"%s\"\n"
            "  # the embedded broker stalls rebalances for a whole session timeout\n"
            "  session.timeout.ms: \"6000\"\n"
            "  heartbeat.interval.ms: \"500\"\n"
            "redis:\n"
            "  url: \"%s\"\n"
            "keys:\n"
            "  - id: ci-local\n"
            "    public_key: \"%s\"\n"
            "    role: ci\n"
            "  - id: approver-local\n"
            "    public_key: \"%s\"\n"
            "    role: approver\n",
            st->brokers, st->redis_url, pub, apub);
    /* --demo (demo.c): its own services section, wired to the demo service. */
    if (demo)
        dq_demo_write_services(demo, f);
    else
        fputs("services:\n"
              "  demo:\n"
              "    environments:\n"
              "      staging: {}\n"
              "      production:\n"
              "        requires: staging\n",
              f);
    if (fclose(f) != 0) {
        snprintf(err, errlen, "cannot write %s", st->config);
        goto out;
    }
    rc = 0;
out:
    free(pub);
    free(apub);
    return rc;
}

static pid_t start_worker(up_state *st, worker *w)
{
    char log[64];
    char *argv[] = {w->path, (char *)"--config", st->config, (char *)"-X",
                    (char *)"session.timeout.ms=6000", (char *)"-X",
                    (char *)"heartbeat.interval.ms=500", NULL};
    static char env_brokers[600], env_redis[200], env_state[PATH_MAX + 32];
    /* The state directory too: the registry keeps its files under it, where `deployq
     * status` and friends look for the running stack's registry. */
    char *envv[] = {env_brokers, env_redis, env_state, NULL};

    snprintf(env_brokers, sizeof env_brokers, "DEPLOYQ_BROKERS=%s", st->brokers);
    snprintf(env_redis, sizeof env_redis, "DEPLOYQ_REDIS_URL=%s", st->redis_url);
    snprintf(env_state, sizeof env_state, "DEPLOYQ_STATE_DIR=%s", st->dir);
    snprintf(log, sizeof log, "%s.log", w->name);
    w->pid = spawn(argv, st->logdirfd, log, envv);
    w->started_ms = dq_mono_ms();
    return w->pid;
}

static void stop_pid(pid_t pid, const char *what)
{
    int status;

    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) { /* 10 s for a clean shutdown, then SIGKILL */
        if (waitpid(pid, &status, WNOHANG) == pid)
            return;
        dq_sleep_ms(100);
    }
    fprintf(stderr, "deployq: up: %s did not stop in 10 s; killing it\n", what);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
}

int dq_cmd_up(int argc, char **argv)
{
    const char *user_config, *redis_bin = "redis-server";
    long long partitions = DQ_PARTITIONS_DEFAULT;
    int want_demo = 0; /* --demo (demo.c) */
    dq_cli cli = {.verb = "up", .usage = up_usage, .takes = DQ_CLI_CONFIG};
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('r', "redis-server", &redis_bin),
        DQ_OPT_INT('p', "partitions", &partitions, 1, 64, "--partitions must be 1..64"),
        DQ_OPT_FLAG(0, "demo", &want_demo),
        DQ_OPT_END,
    };
    up_state st = {.dirfd = -1, .logdirfd = -1};
    dq_mock_broker *mb = NULL;
    dq_stack stack = {0}, *running;
    volatile sig_atomic_t *stop;
    char err[512], key_id[64] = "", keypath[PATH_MAX];
    int rc, port;
    dq_demo *demo = NULL;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    rc = 1;
    user_config = cli.config_path;
    if (want_demo && user_config)
        return dq_cli_usage(&cli, up_usage, 2, "--demo writes its own configuration; drop --config");

    /* First the directory: one that is not ours is refused before anything is read from
     * it (its stack.json) or written to it (keys, configuration, logs). */
    st.dirfd = dq_stack_dir_open(1, &st.dir, err, sizeof err);
    if (st.dirfd < 0) {
        dq_cli_fail(&cli, "%s", err);
        return 1;
    }
    running = dq_stack_find();
    if (running) {
        dq_cli_fail(&cli, "a stack is already running (pid %d, broker %s); stop it first",
                    (int)running->pid, running->brokers ? running->brokers : "?");
        dq_stack_free(running);
        goto out;
    }
    snprintf(st.logdir, sizeof st.logdir, "%s/logs", st.dir);
    st.logdirfd = dq_stack_subdir(st.dirfd, "logs", st.logdir, err, sizeof err);
    if (st.logdirfd < 0) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    stop = dq_stop_flag_install();

    mb = dq_mock_broker_new(1, (int)partitions, err, sizeof err);
    if (!mb) {
        dq_cli_fail(&cli, "embedded broker: %s", err);
        goto out;
    }
    dq_strlcpy(st.brokers, dq_mock_broker_bootstraps(mb), sizeof st.brokers);

    port = free_port();
    {
        char portbuf[16], log[PATH_MAX + 16];
        char *rargv[] = {(char *)redis_bin, (char *)"--port", portbuf, (char *)"--bind",
                         (char *)"127.0.0.1", (char *)"--save", (char *)"",
                         (char *)"--appendonly", (char *)"no", (char *)"--dir", st.dir, NULL};
        dq_redis *probe = NULL;

        snprintf(portbuf, sizeof portbuf, "%d", port);
        snprintf(log, sizeof log, "%s/redis.log", st.logdir);
        snprintf(st.redis_url, sizeof st.redis_url, "redis://127.0.0.1:%d", port);
        st.redis_pid = spawn(rargv, st.logdirfd, "redis.log", NULL);
        for (int i = 0; i < 50 && !probe; i++) {
            int status;

            if (waitpid(st.redis_pid, &status, WNOHANG) == st.redis_pid) {
                st.redis_pid = 0;
                dq_cli_fail(&cli, "redis-server exited at start (see %s); is it installed? "
                                  "(apt-get install redis-server)", log);
                goto out;
            }
            probe = dq_redis_connect(st.redis_url, 500, err, sizeof err);
            if (!probe)
                dq_sleep_ms(100);
        }
        if (!probe) {
            dq_cli_fail(&cli, "redis-server did not answer on port %d: %s", port, err);
            goto out;
        }
        dq_redis_free(probe);
    }

    if (user_config) {
        if (!realpath(user_config, st.config)) {
            dq_cli_fail(&cli, "%s: %s", user_config, strerror(errno));
            goto out;
        }
    } else {
        /* --demo (demo.c): the demo service runs before the config that points at it. */
        if (want_demo) {
            demo = dq_demo_start(st.dir, st.logdir, err, sizeof err);
            if (!demo) {
                dq_cli_fail(&cli, "demo: %s", err);
                goto out;
            }
        }
        if (write_demo_config(&st, demo, key_id, sizeof key_id, err, sizeof err) != 0) {
            dq_cli_fail(&cli, "%s", err);
            goto out;
        }
    }

    for (size_t i = 0; i < sizeof worker_names / sizeof worker_names[0]; i++) {
        worker *w = &st.workers[st.n_workers];

        w->name = worker_names[i];
        if (find_worker(w->name, w->path, sizeof w->path) != 0)
            continue;
        if (start_worker(&st, w) < 0) {
            dq_cli_fail(&cli, "cannot start %s: %s", w->path, strerror(errno));
            goto out;
        }
        st.n_workers++;
    }
    if (st.n_workers == 0) {
        dq_cli_fail(&cli, "no worker binaries found next to deployq or in PATH");
        goto out;
    }

    stack.pid = getpid();
    stack.brokers = st.brokers;
    stack.redis_url = st.redis_url;
    stack.config_path = st.config;
    if (!user_config) {
        snprintf(keypath, sizeof keypath, "%s/ci.key", st.dir);
        stack.ci_key_path = keypath;
        stack.ci_key_id = key_id;
    }
    if (dq_stack_write(st.dirfd, &stack) != 0) {
        dq_cli_fail(&cli, "cannot write the stack state in %s: %s", st.dir, strerror(errno));
        goto out;
    }

    printf("deployq stack is up (pid %d)\n", (int)getpid());
    printf("  kafka (embedded)  %s\n", st.brokers);
    printf("  redis             %s\n", st.redis_url);
    printf("  config            %s\n", st.config);
    if (!user_config)
        printf("  CI signing key    %s (key id %s)\n", keypath, key_id);
    for (size_t i = 0; i < st.n_workers; i++)
        printf("  %-17s pid %d, log %s/%s.log\n", st.workers[i].name, (int)st.workers[i].pid,
               st.logdir, st.workers[i].name);
    /* --demo (demo.c): narrate the demo, then stop everything and report its outcome. */
    if (demo) {
        printf("  demo service      %s, log %s/demo-service.log\n", dq_demo_health_url(demo),
               st.logdir);
        fflush(stdout);
        rc = dq_demo_run(demo, st.config, keypath, key_id, st.logdir, stop, stdout);
        goto out;
    }
    printf("Try: deployq submit --service demo --env staging --version v1\n");
    printf("Ctrl-C stops everything.\n");
    fflush(stdout);

    while (!*stop) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);

        if (pid > 0 && pid == st.redis_pid) {
            fprintf(stderr, "deployq: up: redis-server exited; stopping the stack\n");
            st.redis_pid = 0;
            goto out;
        }
        for (size_t i = 0; pid > 0 && i < st.n_workers; i++) {
            worker *w = &st.workers[i];

            if (w->pid != pid)
                continue;
            fprintf(stderr, "deployq: up: %s exited (%s %d); restarting it (log: %s/%s.log)\n",
                    w->name, WIFSIGNALED(status) ? "signal" : "status",
                    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), st.logdir,
                    w->name);
            /* Back off when it dies at once, so a broken config does not spin. */
            if (dq_mono_ms() - w->started_ms < 2000)
                dq_sleep_ms(2000);
            w->restarts++;
            start_worker(&st, w);
        }
        if (pid <= 0)
            dq_sleep_ms(100);
    }
    fprintf(stderr, "deployq: up: stopping\n");
    rc = 0;
out:
    for (size_t i = st.n_workers; i-- > 0;)
        stop_pid(st.workers[i].pid, st.workers[i].name);
    stop_pid(st.redis_pid, "redis-server");
    dq_demo_free(demo); /* --demo: the demo service */
    if (stack.pid)
        dq_stack_remove(st.dirfd);
    dq_mock_broker_free(mb);
    if (st.logdirfd >= 0)
        close(st.logdirfd);
    if (st.dirfd >= 0)
        close(st.dirfd);
    free(st.dir);
    return rc;
}
