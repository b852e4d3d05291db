/*
 * up.c - `deployq up`: the whole stack on one machine. It uses an existing Kafka and Redis
 * when told to (--brokers/--redis, the configuration, the environment), else hosts the
 * embedded broker and starts a redis-server on a free port; it writes a configuration (or
 * takes the user's), creates the topics, starts every worker binary that exists, records
 * all of it (and what it started itself) in the stack state file so a second `deployq`
 * finds it without flags, restarts a worker that dies, and on Ctrl-C / SIGTERM stops what
 * it started, in reverse order: never an existing Kafka or Redis.
 *
 * With --data DIR the stack's state outlives it: the redis-server it starts keeps an
 * append-only file in DIR/redis, the registry its log in DIR/registry, the generated
 * signing keys stay in DIR. The embedded broker keeps nothing, and its partitions start
 * at offset 0 again, while the registry resumes after the last offset it stored: so `up`
 * first fills each partition of the events topic with empty placeholder messages up to
 * that offset (align_events), and the new events continue the registry's log.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "cli.h"
#include "config.h"
#include "demo.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "mockbroker.h"
#include "redis.h"
#include "reglog.h"
#include "sign.h"
#include "signals.h"
#include "stack.h"
#include "util.h"

static const char up_usage[] =
    "Usage: deployq up [--brokers LIST] [--redis URL] [--data DIR] [--config FILE]\n"
    "                  [--redis-server PATH] [--partitions N] [--demo]\n"
    "\n"
    "Run deployq on this machine until Ctrl-C or SIGTERM: every worker that is built\n"
    "(deployq-validator, -executor, -monitor, -rollback, -registry), on\n"
    "  - Kafka: an existing cluster when one is named (--brokers, or kafka.bootstrap.servers\n"
    "    in --config's file; $DEPLOYQ_BROKERS wins over both), else the embedded broker\n"
    "    (librdkafka's mock cluster, in memory: its topics are gone when `up` stops);\n"
    "  - Redis: an existing server when one is named (--redis, or redis.url in the file;\n"
    "    $DEPLOYQ_REDIS_URL wins over both), else a redis-server `up` starts on a free\n"
    "    loopback port.\n"
    "The topics are created when missing; `up` stops with one line saying so when it cannot\n"
    "reach the Kafka or the Redis it is given. Ctrl-C stops what `up` started, never an\n"
    "existing Kafka or Redis (stack.json records which is which).\n"
    "Without --config, a configuration is written to the state directory: service `demo`\n"
    "with staging and production (two small local HTTP services stand for them, a local\n"
    "provider deploys to them, a monitor watches each), production `requires: staging`,\n"
    "and fresh CI and approver signing keys, so\n"
    "  deployq submit --service demo --env staging --version v1   (verified ~12 s later)\n"
    "  deployq submit --service demo --env production --version v1\n"
    "work at once from another terminal: later `deployq` commands find this stack without\n"
    "flags. Worker logs go to <state dir>/logs/. A worker that dies is restarted.\n"
    "\n"
    "      --brokers LIST      an existing Kafka (host:port,...): no embedded broker\n"
    "      --redis URL         an existing Redis (redis://[[user]:password@]host:port[/db]):\n"
    "                          no redis-server is started (--redis-url is the same)\n"
    "  -X KEY=VALUE            a librdkafka property for `up` and every worker, e.g. the\n"
    "                          security.protocol of your Kafka (repeatable)\n"
    "  -d, --data DIR          keep the stack's state in DIR (created 0700) across restarts:\n"
    "                          the redis-server `up` starts writes an append-only file in\n"
    "                          DIR/redis (verified versions, so promotions still pass;\n"
    "                          nonces; approvals waiting; locks), the registry its log in\n"
    "                          DIR/registry (`deployq history` after a restart shows it\n"
    "                          all), the generated keys stay in DIR. An existing Redis keeps\n"
    "                          its own persistence. With the embedded broker the topics'\n"
    "                          contents are not kept: a request or event not yet consumed\n"
    "                          when `up` stops is lost, so stop it when nothing is in\n"
    "                          flight, or use a real Kafka (--brokers) for that too\n"
    "  -c, --config FILE       use this configuration (its services, keys, kafka and redis)\n"
    "      --redis-server P    the redis-server binary (default: redis-server in PATH)\n"
    "  -p, --partitions N      partitions of requests/events (default 6)\n"
    "      --demo              run the demo unattended, then stop: a demo service and a\n"
    "                          local provider; deploy v1 (verified), then v2-bad, which\n"
    "                          fails its health checks and is rolled back automatically,\n"
    "                          narrated step by step with the evidence and the MTTR.\n"
    "                          Exit 0 when the rollback happened (under two minutes)\n"
    "      --log-level L       up's own library logs: debug|info|warn|error\n"
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
    char redis_url[1024];
    int own_broker;   /* the embedded broker, hosted by this process */
    pid_t redis_pid;  /* > 0: the redis-server `up` started; 0: none, or an existing Redis */
    char *data;       /* --data DIR (absolute), or NULL */
    int datafd;       /* its descriptor, checked like the state directory */
    dq_demo *services[2]; /* plain `up`: the local services standing for staging, production */
    const char *const *kafka_kv; /* -X key=value, passed on to every worker */
    int n_kafka_kv;
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
 * process group so a Ctrl-C in the terminal reaches `up` only, which then stops it in order,
 * and a SIGTERM when `up` dies without stopping it (SIGKILL, a crash): a worker or a
 * redis-server left running would hold the state directory's ports and locks unseen.
 * The log is opened here, in the parent, under the checked logs/ descriptor: never through
 * a symbolic link, 0600. When it cannot be, the child keeps up's stdout and stderr. */
static pid_t spawn(char *const argv[], int logdirfd, const char *logname,
                   char *const extra_env[])
{
    int fd = dq_stack_open_file(logdirfd, logname, O_CREAT | O_APPEND);
    pid_t parent = getpid(), pid;

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
    /* up died between fork and prctl: the signal would never come. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
        _exit(127);
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

/* The redis URL as it may be shown: credentials replaced by three stars, the host kept. */
static const char *redis_shown(const char *url, char *buf, size_t len)
{
    const char *rest = strstr(url, "://");
    const char *at;

    rest = rest ? rest + 3 : url;
    at = strrchr(rest, '@');
    if (!at)
        return url;
    snprintf(buf, len, "%.*s***%s", (int)(rest - url), url, at);
    return buf;
}

/* The key pair `name` (ci.key, approver.key) in dir (dirfd): with keep (--data) the one
 * already there, else a fresh one (created O_EXCL, 0600 by dq_sign_keygen). Its public
 * half (malloc'd) in *pub. 0, or -1 with err. */
static int key_pair(int dirfd, const char *dir, const char *name, int keep, char **pub,
                    char *err, size_t errlen)
{
    char path[PATH_MAX];
    struct stat sb;

    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    if (keep && fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
        dq_signer *signer;

        if (!S_ISREG(sb.st_mode) || sb.st_uid != geteuid()) {
            snprintf(err, errlen, "%s is not a regular file of yours; remove it", path);
            return -1;
        }
        signer = dq_signer_load(path, err, errlen);
        if (!signer)
            return -1;
        *pub = dq_signer_public_b64(signer);
        dq_signer_free(signer);
        if (!*pub) {
            snprintf(err, errlen, "%s: out of memory", path);
            return -1;
        }
        return 0;
    }
    /* A fresh pair: the previous stack's keys mean nothing now. */
    unlinkat(dirfd, name, 0);
    return dq_sign_keygen(path, pub, err, errlen);
}

static int write_demo_config(up_state *st, const dq_demo *demo, char *key_id,
                             size_t key_id_len, char *keypath, size_t keypath_len, char *err,
                             size_t errlen)
{
    /* The keys live in --data DIR when given (kept across restarts), else in the state
     * directory (fresh for every `up`). Both directories were checked to be ours. */
    const char *keydir = st->data ? st->data : st->dir;
    int keyfd = st->data ? st->datafd : st->dirfd;
    char *pub = NULL, *apub = NULL, shown[1100];
    FILE *f;
    int fd, rc = -1;

    if (key_pair(keyfd, keydir, "ci.key", st->data != NULL, &pub, err, errlen) != 0 ||
        key_pair(keyfd, keydir, "approver.key", st->data != NULL, &apub, err, errlen) != 0)
        goto out;
    dq_strlcpy(key_id, "ci-local", key_id_len);
    snprintf(keypath, keypath_len, "%s/ci.key", keydir);
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
            "# Written by `deployq up` for this stack; edit a copy and pass it with --config,\n"
            "# without its kafka: and redis: sections: they name this stack's engines, which stop\n"
            "# with it (kept, `up --config` uses them as existing ones and will not start its own).\n"
            "kafka:\n"
            "  bootstrap.servers: \"%s\"\n",
            st->brokers);
    if (st->own_broker)
        fputs("  # the embedded broker stalls rebalances for a whole session timeout\n"
              "  session.timeout.ms: \"6000\"\n"
              "  heartbeat.interval.ms: \"500\"\n",
              f);
    /* A password given with --redis stays out of the file: the workers get the URL in
     * their environment ($DEPLOYQ_REDIS_URL), which wins over the file anyway. */
    if (strcmp(redis_shown(st->redis_url, shown, sizeof shown), st->redis_url) == 0)
        fprintf(f, "redis:\n  url: \"%s\"\n", st->redis_url);
    else
        fprintf(f, "# redis: %s, passed to every worker as $DEPLOYQ_REDIS_URL\n", shown);
    if (st->data)
        fprintf(f,
                "registry:\n"
                "  dir: \"%s/registry\"   # --data: the registry's log survives a restart\n",
                st->data);
    fprintf(f,
            "keys:\n"
            "  - id: ci-local\n"
            "    public_key: \"%s\"\n"
            "    role: ci\n"
            "  - id: approver-local\n"
            "    public_key: \"%s\"\n"
            "    role: approver\n",
            pub, apub);
    /* --demo (demo.c): its own services section, wired to the demo service. */
    if (demo)
        dq_demo_write_services(demo, f);
    else if (st->services[0] && st->services[1])
        dq_demo_write_promotion(st->services[0], st->services[1], f);
    else
        fputs("# The local services could not start (see the warning `up` printed): no\n"
              "# provider deploys anything, and no monitor verifies, so production only asks\n"
              "# that the version succeeded in staging. Add providers and monitors.\n"
              "services:\n"
              "  demo:\n"
              "    environments:\n"
              "      staging: {}\n"
              "      production:\n"
              "        requires: staging\n"
              "        promotion_needs: succeeded\n",
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

static void count_failed_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err && m->_private)
        (*(long *)m->_private)++;
}

/* --data on the embedded broker: fill each partition of the events topic with empty
 * messages (no value: every worker skips them) up to the offset after the last one the
 * registry's log under regdir stored, so the registry, which resumes there and refuses an
 * offset it already has, stores every new event. Checked against the high watermarks.
 * 0, or -1 with err. */
static int align_events(const char *regdir, const dq_config *cfg, int partitions, char *err,
                        size_t errlen)
{
    int64_t want[64] = {0};
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    long failed = 0;
    int any = 0, rc = -1;
    char msg[512];

    for (int p = 0; p < partitions && p < 64; p++) {
        char sub[PATH_MAX];
        struct stat sb;
        dq_reglog_opts o = {.tail_only = 1};
        dq_reglog *log;

        snprintf(sub, sizeof sub, "%s/p%d", regdir, p);
        if (stat(sub, &sb) != 0)
            continue; /* nothing stored for this partition yet */
        log = dq_reglog_open(regdir, p, &o, msg, sizeof msg);
        if (!log) {
            snprintf(err, errlen, "registry log %s: %s", regdir, msg);
            return -1;
        }
        want[p] = dq_reglog_last_offset(log) + 1;
        dq_reglog_close(log);
        any |= want[p] > 0;
    }
    if (!any)
        return 0;
    conf = dq_kafka_conf(cfg, err, errlen);
    if (!conf)
        return -1;
    /* Exactly want[p] messages: no duplicate on a retry. */
    if (rd_kafka_conf_set(conf, "enable.idempotence", "true", err, errlen) != RD_KAFKA_CONF_OK)
        goto out;
    rd_kafka_conf_set_dr_msg_cb(conf, count_failed_delivery);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);
    if (!rk)
        goto out;
    conf = NULL; /* now owned by rk */
    for (int p = 0; p < partitions && p < 64; p++)
        for (int64_t i = 0; i < want[p]; i++) {
            rd_kafka_resp_err_t e;

            while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(cfg->topic_events),
                                          RD_KAFKA_V_PARTITION(p), RD_KAFKA_V_VALUE(NULL, 0),
                                          RD_KAFKA_V_OPAQUE(&failed), RD_KAFKA_V_END)) ==
                   RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(rk, 50);
            if (e) {
                snprintf(err, errlen, "%s [%d]: %s", cfg->topic_events, p, rd_kafka_err2str(e));
                goto out;
            }
        }
    if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR || failed) {
        snprintf(err, errlen, "%s: %ld placeholder message(s) not delivered", cfg->topic_events,
                 failed + (long)rd_kafka_outq_len(rk));
        goto out;
    }
    for (int p = 0; p < partitions && p < 64; p++) {
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, cfg->topic_events, p, &lo, &hi, 10000);

        if (e || hi != want[p]) {
            snprintf(err, errlen, "%s [%d] ends at offset %lld, not at %lld where the registry "
                     "resumes%s%s", cfg->topic_events, p, (long long)hi, (long long)want[p],
                     e ? ": " : "", e ? rd_kafka_err2str(e) : "");
            goto out;
        }
        if (want[p] > 0)
            dq_info("%s [%d]: %lld placeholders; the registry's log continues at offset %lld",
                    cfg->topic_events, p, (long long)want[p], (long long)want[p]);
    }
    rc = 0;
out:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (rk)
        rd_kafka_destroy(rk);
    return rc;
}

static pid_t start_worker(up_state *st, worker *w)
{
    char log[64], regdir[PATH_MAX + 16];
    char *argv[7 + 2 + 2 * DQ_CLI_MAX_KV + 1] = {
        w->path, (char *)"--config", st->config, (char *)"-X", (char *)"session.timeout.ms=6000",
        (char *)"-X", (char *)"heartbeat.interval.ms=500"};
    size_t n = 7;
    static char env_brokers[600], env_redis[1100], env_state[PATH_MAX + 32];
    /* The state directory too: the registry keeps its files under it, where `deployq
     * status` and friends look for the running stack's registry. */
    char *envv[] = {env_brokers, env_redis, env_state, NULL};

    snprintf(env_brokers, sizeof env_brokers, "DEPLOYQ_BROKERS=%s", st->brokers);
    snprintf(env_redis, sizeof env_redis, "DEPLOYQ_REDIS_URL=%s", st->redis_url);
    snprintf(env_state, sizeof env_state, "DEPLOYQ_STATE_DIR=%s", st->dir);
    snprintf(log, sizeof log, "%s.log", w->name);
    /* --data: the registry keeps its log there, whatever the configuration says. */
    if (st->data && strcmp(w->name, "registry") == 0) {
        snprintf(regdir, sizeof regdir, "%s/registry", st->data);
        argv[n++] = (char *)"--dir";
        argv[n++] = regdir;
    }
    for (int i = 0; i < st->n_kafka_kv && i < DQ_CLI_MAX_KV; i++) {
        argv[n++] = (char *)"-X";
        argv[n++] = (char *)st->kafka_kv[i];
    }
    argv[n] = NULL;
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

/* Wait (at most timeout_ms) until every partition of the requests and events topics
 * answers a ListOffsets from its leader: a topic Kafka has just created has partitions
 * whose leader is not ready yet for a moment, and `up` says it is up only once a
 * `submit --wait` can work. 0, or -1 with the last error in err. */
static int wait_topics_ready(const dq_config *cfg, int partitions, int timeout_ms, char *err,
                             size_t errlen)
{
    const char *topics[] = {cfg->topic_requests, cfg->topic_events};
    rd_kafka_conf_t *conf = dq_kafka_conf(cfg, err, errlen);
    rd_kafka_t *rk;
    int64_t deadline = dq_mono_ms() + timeout_ms;
    int rc = 0;

    if (!conf)
        return -1;
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    /* conf is now owned by rk */
    for (size_t t = 0; t < 2 && rc == 0; t++)
        for (int p = 0; p < partitions && rc == 0; p++) {
            int64_t lo, hi;
            rd_kafka_resp_err_t e;

            while ((e = rd_kafka_query_watermark_offsets(rk, topics[t], p, &lo, &hi, 5000)) !=
                   RD_KAFKA_RESP_ERR_NO_ERROR) {
                if (dq_mono_ms() >= deadline) {
                    snprintf(err, errlen, "%s [%d] not ready after %d s: %s", topics[t], p,
                             timeout_ms / 1000, rd_kafka_err2str(e));
                    rc = -1;
                    break;
                }
                dq_sleep_ms(200);
            }
        }
    rd_kafka_destroy(rk);
    return rc;
}

/* Start a redis-server on a free loopback port (with --data: an append-only file in
 * DIR/redis) and wait until it answers. 0, or -1 after saying why. */
static int start_redis(up_state *st, dq_cli *cli, const char *redis_bin)
{
    char portbuf[16], log[PATH_MAX + 16], rdir[PATH_MAX + 16], err[512];
    char *rargv[] = {(char *)redis_bin, (char *)"--port", portbuf, (char *)"--bind",
                     (char *)"127.0.0.1", (char *)"--save", (char *)"",
                     (char *)"--appendonly", (char *)"no", (char *)"--dir", st->dir,
                     NULL, NULL, NULL};
    dq_redis *probe = NULL;
    int port = free_port();

    if (st->data) {
        int fd;

        snprintf(rdir, sizeof rdir, "%s/redis", st->data);
        fd = dq_stack_subdir(st->datafd, "redis", rdir, err, sizeof err);
        if (fd < 0) {
            dq_cli_fail(cli, "%s", err);
            return -1;
        }
        close(fd);
        /* Every write is on disk before Redis answers: a nonce or a deploy's lock is
         * never lost to a crash of the machine. */
        rargv[8] = (char *)"yes";
        rargv[10] = rdir;
        rargv[11] = (char *)"--appendfsync";
        rargv[12] = (char *)"always";
    }
    snprintf(portbuf, sizeof portbuf, "%d", port);
    snprintf(log, sizeof log, "%s/redis.log", st->logdir);
    snprintf(st->redis_url, sizeof st->redis_url, "redis://127.0.0.1:%d", port);
    st->redis_pid = spawn(rargv, st->logdirfd, "redis.log", NULL);
    for (int i = 0; i < 100 && !probe; i++) {
        int status;

        if (waitpid(st->redis_pid, &status, WNOHANG) == st->redis_pid) {
            st->redis_pid = 0;
            dq_cli_fail(cli, "redis-server exited at start (see %s); is it installed? "
                             "(apt-get install redis-server)", log);
            return -1;
        }
        probe = dq_redis_connect(st->redis_url, 500, err, sizeof err);
        if (probe) {
            /* With an append-only file to load, Redis accepts connections while it loads
             * and answers LOADING until it is done. */
            redisReply *r = dq_redis_command(probe, "PING");

            if (!r || r->type == REDIS_REPLY_ERROR) {
                dq_redis_free(probe);
                probe = NULL;
            }
            if (r)
                freeReplyObject(r);
        }
        if (!probe)
            dq_sleep_ms(100);
    }
    if (!probe) {
        dq_cli_fail(cli, "redis-server did not answer on port %d: %s", port, err);
        return -1;
    }
    dq_redis_free(probe);
    return 0;
}

/* An existing Redis answers PING. 0, or -1 after saying why and where it was named. */
static int check_redis(dq_cli *cli, const char *url, const char *from)
{
    char err[512], shown[1100];
    dq_redis *r = dq_redis_connect(url, 3000, err, sizeof err);
    redisReply *reply = r ? dq_redis_command(r, "PING") : NULL;
    int ok = reply && reply->type != REDIS_REPLY_ERROR;

    if (!ok)
        dq_cli_fail(cli, "cannot reach Redis at %s (%s): %s", redis_shown(url, shown, sizeof shown),
                    from, r ? (reply ? reply->str : dq_redis_errstr(r)) : err);
    if (reply)
        freeReplyObject(reply);
    dq_redis_free(r);
    return ok ? 0 : -1;
}

int dq_cmd_up(int argc, char **argv)
{
    const char *user_config, *redis_bin = "redis-server";
    const char *brokers_arg = NULL, *redis_arg = NULL, *data_arg = NULL;
    const char *brokers_from = NULL, *redis_from = NULL;
    long long partitions = DQ_PARTITIONS_DEFAULT;
    int want_demo = 0; /* --demo (demo.c) */
    dq_cli cli = {.verb = "up", .usage = up_usage, .takes = DQ_CLI_CONFIG | DQ_CLI_CONNECT};
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('r', "redis-server", &redis_bin),
        DQ_OPT_INT('p', "partitions", &partitions, 1, 64, "--partitions must be 1..64"),
        DQ_OPT_FLAG(0, "demo", &want_demo),
        DQ_OPT_STRING(0, "redis", &redis_arg), /* --redis-url (DQ_CLI_CONNECT) is the same */
        DQ_OPT_STRING('d', "data", &data_arg),
        DQ_OPT_END,
    };
    up_state st = {.dirfd = -1, .logdirfd = -1, .datafd = -1};
    dq_mock_broker *mb = NULL;
    dq_stack stack = {0}, *running;
    dq_config *ucfg = NULL, *cfg = NULL;
    volatile sig_atomic_t *stop;
    char err[1024], key_id[64] = "", keypath[PATH_MAX] = "", shown[1100];
    const char *env;
    int rc;
    dq_demo *demo = NULL;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    rc = 1;
    user_config = cli.config_path;
    brokers_arg = cli.brokers;
    if (!redis_arg)
        redis_arg = cli.redis_url;
    st.kafka_kv = cli.kafka_kv;
    st.n_kafka_kv = cli.n_kafka_kv;
    if (want_demo && user_config)
        return dq_cli_usage(&cli, up_usage, 2, "--demo writes its own configuration; drop --config");
    if (brokers_arg && !*brokers_arg)
        return dq_cli_usage(&cli, up_usage, 2, "--brokers needs host:port[,host:port...]");
    if (redis_arg && !*redis_arg)
        return dq_cli_usage(&cli, up_usage, 2, "--redis needs a redis:// URL");
    if (data_arg && !*data_arg)
        return dq_cli_usage(&cli, up_usage, 2, "--data needs a directory");

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
    if (data_arg) {
        char real[PATH_MAX];

        /* Checked like the state directory: it will hold keys and the registry. */
        st.datafd = dq_stack_subdir(AT_FDCWD, data_arg, data_arg, err, sizeof err);
        if (st.datafd < 0) {
            dq_cli_fail(&cli, "--data: %s", err);
            goto out;
        }
        if (!realpath(data_arg, real) || !(st.data = strdup(real))) {
            dq_cli_fail(&cli, "--data %s: %s", data_arg, strerror(errno));
            goto out;
        }
    }

    /* Which Kafka and Redis: the precedence of docs/configuration.md, lowest first: the
     * file, the flag, the environment. None named: `up` brings its own. */
    if (user_config) {
        if (!realpath(user_config, st.config)) {
            dq_cli_fail(&cli, "%s: %s", user_config, strerror(errno));
            goto out;
        }
        ucfg = dq_config_load(st.config, err, sizeof err);
        if (!ucfg) {
            dq_cli_fail(&cli, "%s", err);
            goto out;
        }
        if (dq_json_get(dq_config_view(ucfg, "kafka"), "bootstrap.servers") &&
            dq_config_kafka_get(ucfg, "bootstrap.servers")) {
            dq_strlcpy(st.brokers, dq_config_kafka_get(ucfg, "bootstrap.servers"), sizeof st.brokers);
            brokers_from = "kafka.bootstrap.servers in the configuration";
        }
        if (dq_config_view(ucfg, "redis.url") && ucfg->redis_url) {
            dq_strlcpy(st.redis_url, ucfg->redis_url, sizeof st.redis_url);
            redis_from = "redis.url in the configuration";
        }
    }
    if (brokers_arg) {
        dq_strlcpy(st.brokers, brokers_arg, sizeof st.brokers);
        brokers_from = "--brokers";
    }
    if (redis_arg) {
        dq_strlcpy(st.redis_url, redis_arg, sizeof st.redis_url);
        redis_from = "--redis";
    }
    if ((env = getenv("DEPLOYQ_BROKERS")) && *env) {
        dq_strlcpy(st.brokers, env, sizeof st.brokers);
        brokers_from = "$DEPLOYQ_BROKERS";
    }
    if ((env = getenv("DEPLOYQ_REDIS_URL")) && *env) {
        dq_strlcpy(st.redis_url, env, sizeof st.redis_url);
        redis_from = "$DEPLOYQ_REDIS_URL";
    }
    stop = dq_stop_flag_install();

    if (!brokers_from) {
        mb = dq_mock_broker_new(1, (int)partitions, err, sizeof err);
        if (!mb) {
            dq_cli_fail(&cli, "embedded broker: %s", err);
            goto out;
        }
        st.own_broker = 1;
        dq_strlcpy(st.brokers, dq_mock_broker_bootstraps(mb), sizeof st.brokers);
    }
    if (!redis_from ? start_redis(&st, &cli, redis_bin) != 0
                    : check_redis(&cli, st.redis_url, redis_from) != 0)
        goto out;

    if (!user_config) {
        /* --demo (demo.c): the demo service runs before the config that points at it. */
        if (want_demo) {
            demo = dq_demo_start(st.dir, st.logdir, "demo-service", err, sizeof err);
            if (!demo) {
                dq_cli_fail(&cli, "demo: %s", err);
                goto out;
            }
        } else {
            /* Plain `up`: two local services stand for staging and production. Without
             * them (no python3) the stack still runs; the configuration says what is
             * missing. */
            const char *names[] = {"demo-staging", "demo-production"};

            for (int i = 0; i < 2; i++) {
                st.services[i] = dq_demo_start(st.dir, st.logdir, names[i], err, sizeof err);
                if (!st.services[i]) {
                    fprintf(stderr, "deployq: up: no local %s service (%s); the configuration "
                                    "has no provider\n", names[i] + 5, err);
                    break;
                }
            }
        }
        if (write_demo_config(&st, demo, key_id, sizeof key_id, keypath, sizeof keypath, err,
                              sizeof err) != 0) {
            dq_cli_fail(&cli, "%s", err);
            goto out;
        }
    }

    /* The workers' configuration, as they will see it, to create the topics with (its
     * topic names and Kafka security settings) and say at once when Kafka is out of reach,
     * instead of five workers retrying in their logs. */
    cfg = dq_config_load(st.config, err, sizeof err);
    if (!cfg) {
        dq_cli_fail(&cli, "%s", err);
        goto out;
    }
    dq_config_set_kafka(cfg, "bootstrap.servers", st.brokers);
    for (int i = 0; i < st.n_kafka_kv; i++) { /* -X key=value, as the workers get it */
        char kv[512], *eq;

        dq_strlcpy(kv, st.kafka_kv[i], sizeof kv);
        eq = strchr(kv, '=');
        if (eq) {
            *eq = '\0';
            dq_config_set_kafka(cfg, kv, eq + 1);
        }
    }
    if (dq_kafka_ensure_topics(cfg, (int)partitions, 15000, err, sizeof err) != 0) {
        dq_cli_fail(&cli, "cannot reach Kafka at %s (%s) to create the topics: %s", st.brokers,
                    brokers_from ? brokers_from : "the embedded broker", err);
        goto out;
    }
    if (wait_topics_ready(cfg, (int)partitions, 30000, err, sizeof err) != 0) {
        dq_cli_fail(&cli, "Kafka at %s: %s", st.brokers, err);
        goto out;
    }
    /* The embedded broker starts empty, but the registry's log outlives it: under --data,
     * and in the state directory (or registry.dir) from an earlier `up`. Either way the new
     * events must continue after what the log holds, or the registry takes them for
     * redeliveries and drops them. */
    if (st.own_broker) {
        char regdir[PATH_MAX + 16];
        const char *conf_dir = dq_json_str(dq_config_view(cfg, "registry"), "dir");

        if (st.data)
            snprintf(regdir, sizeof regdir, "%s/registry", st.data);
        else if (conf_dir)
            dq_strlcpy(regdir, conf_dir, sizeof regdir);
        else
            snprintf(regdir, sizeof regdir, "%s/registry", st.dir);
        if (align_events(regdir, cfg, (int)partitions, err, sizeof err) != 0) {
            dq_cli_fail(&cli, "the registry's log %s on the embedded broker: %s", regdir, err);
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
    stack.broker_started = st.own_broker;
    stack.redis_started = st.redis_pid > 0;
    stack.redis_pid = st.redis_pid;
    stack.data_dir = st.data;
    if (!user_config) {
        stack.ci_key_path = keypath;
        stack.ci_key_id = key_id;
    }
    if (dq_stack_write(st.dirfd, &stack) != 0) {
        dq_cli_fail(&cli, "cannot write the stack state in %s: %s", st.dir, strerror(errno));
        goto out;
    }

    printf("deployq stack is up (pid %d)\n", (int)getpid());
    if (st.own_broker)
        printf("  kafka (embedded)  %s\n", st.brokers);
    else
        printf("  kafka (existing)  %s, from %s; not stopped by up\n", st.brokers, brokers_from);
    if (st.redis_pid > 0)
        printf("  redis             %s\n", st.redis_url); /* persistence: the data line */
    else
        printf("  redis (existing)  %s, from %s; not stopped by up\n",
               redis_shown(st.redis_url, shown, sizeof shown), redis_from);
    if (st.data)
        printf("  data              %s (%sregistry/%s)\n", st.data,
               st.redis_pid > 0 ? "redis/ append-only file, " : "",
               user_config ? "" : ", the signing keys");
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
    if (!user_config && st.services[1]) {
        printf("  demo/staging      %s\n", dq_demo_health_url(st.services[0]));
        printf("  demo/production   %s\n", dq_demo_health_url(st.services[1]));
        printf("Try: deployq submit --service demo --env staging --version v1\n");
        printf("and, once it is verified: deployq submit --service demo --env production "
               "--version v1\n");
    } else if (!user_config) {
        printf("Try: deployq submit --service demo --env staging --version v1\n");
    }
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
    /* Only the redis-server `up` started (redis_pid): an existing Redis is left alone. */
    stop_pid(st.redis_pid, "redis-server");
    dq_demo_free(demo); /* --demo: the demo service */
    dq_demo_free(st.services[1]);
    dq_demo_free(st.services[0]);
    if (stack.pid)
        dq_stack_remove(st.dirfd);
    dq_mock_broker_free(mb);
    dq_config_free(cfg);
    dq_config_free(ucfg);
    if (st.logdirfd >= 0)
        close(st.logdirfd);
    if (st.datafd >= 0)
        close(st.datafd);
    if (st.dirfd >= 0)
        close(st.dirfd);
    free(st.data);
    free(st.dir);
    return rc;
}
