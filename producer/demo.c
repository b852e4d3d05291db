/*
 * demo.c - `deployq up --demo` (see demo.h): the demo service, the local provider, the
 * demo's services configuration, and the driver that submits a good and a bad version
 * and narrates what deployq does with them, one plain line per event of deployq.events.
 *
 * The driver submits through `deployq submit` itself (this binary, run as a child), so
 * the demo exercises exactly what a CI job runs; it reads the events with a group-less
 * consumer from the beginning of the topic (the demo's broker is fresh), so nothing can
 * slip by between a submit and the first read.
 */
#include "demo.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "event.h"
#include "http.h"
#include "json.h"
#include "kafka.h"
#include "stack.h"
#include "util.h"

#define PHASE_TIMEOUT_MS 50000 /* each of the two deploys; the whole demo stays < 2 min */
#define PROVIDER_NAME "demo-provider"

struct dq_demo {
    char dir[PATH_MAX];       /* where health.py and deploy.py are */
    char health_base[128];    /* http://127.0.0.1:PORT */
    char health_url[160];     /* .../health */
    pid_t service_pid;
};

/* ---- finding the scripts, running the demo service ---- */

static int has_scripts(const char *dir)
{
    char p[PATH_MAX + 32];

    snprintf(p, sizeof p, "%s/health.py", dir);
    if (access(p, R_OK) != 0)
        return 0;
    snprintf(p, sizeof p, "%s/deploy.py", dir);
    return access(p, R_OK) == 0;
}

/* $DEPLOYQ_DEMO_DIR, else demo/ next to this binary (the build tree), else
 * ../share/deployq/demo (an installed tree). */
static int find_demo_dir(char *out, size_t outlen)
{
    const char *env = getenv("DEPLOYQ_DEMO_DIR");
    char self[PATH_MAX], *slash;
    ssize_t n;

    if (env && *env)
        return has_scripts(env) && dq_strlcpy(out, env, outlen) < outlen ? 0 : -1;
    n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    slash = strrchr(self, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    if ((size_t)snprintf(out, outlen, "%s/demo", self) < outlen && has_scripts(out))
        return 0;
    if ((size_t)snprintf(out, outlen, "%s/../share/deployq/demo", self) < outlen &&
        has_scripts(out))
        return 0;
    return -1;
}

static void stop_child(pid_t pid)
{
    int status;

    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return;
        dq_sleep_ms(100);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
}

dq_demo *dq_demo_start(const char *state_dir, const char *logdir, const char *name, char *err,
                       size_t errlen)
{
    dq_demo *d = calloc(1, sizeof *d);
    char script[PATH_MAX + 16], portfile[PATH_MAX], log[PATH_MAX + 32];
    long long port = 0;
    int logfd;

    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (find_demo_dir(d->dir, sizeof d->dir) != 0) {
        snprintf(err, errlen, "the demo scripts (health.py, deploy.py) are not next to deployq "
                              "(demo/ or ../share/deployq/demo); set DEPLOYQ_DEMO_DIR");
        goto fail;
    }
    snprintf(script, sizeof script, "%s/health.py", d->dir);
    snprintf(portfile, sizeof portfile, "%s/%s.port", state_dir, name);
    snprintf(log, sizeof log, "%s/%s.log", logdir, name);
    unlink(portfile);
    /* In the logs/ directory `up` checked; opened here, never through a symbolic link. */
    logfd = dq_stack_open_file(AT_FDCWD, log, O_CREAT | O_APPEND);
    if (logfd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", log, strerror(errno));
        goto fail;
    }
    d->service_pid = fork();
    if (d->service_pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(logfd);
        goto fail;
    }
    if (d->service_pid == 0) {
        char *argv[] = {(char *)"python3", script, (char *)"--port", (char *)"0",
                        (char *)"--port-file", portfile, NULL};

        setpgid(0, 0); /* a Ctrl-C reaches `up`, which stops the service in order */
        dup2(logfd, STDOUT_FILENO);
        dup2(logfd, STDERR_FILENO);
        close(logfd);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run python3: %s\n", strerror(errno));
        _exit(127);
    }
    close(logfd);
    for (int i = 0; i < 100 && port == 0; i++) {
        char *text;
        int status;

        if (waitpid(d->service_pid, &status, WNOHANG) == d->service_pid) {
            d->service_pid = 0;
            snprintf(err, errlen, "the demo service exited at start (is python3 installed? see %s)",
                     log);
            goto fail;
        }
        text = dq_read_file(portfile, 64, NULL);
        if (text) {
            text[strcspn(text, "\r\n")] = '\0';
            if (dq_parse_int(text, 1, 65535, &port) != 0)
                port = 0;
        }
        free(text);
        if (port == 0)
            dq_sleep_ms(100);
    }
    if (port == 0) {
        snprintf(err, errlen, "the demo service did not start within 10 s (see %s)", log);
        goto fail;
    }
    snprintf(d->health_base, sizeof d->health_base, "http://127.0.0.1:%lld", port);
    snprintf(d->health_url, sizeof d->health_url, "%s/health", d->health_base);
    return d;
fail:
    dq_demo_free(d);
    return NULL;
}

const char *dq_demo_health_url(const dq_demo *d)
{
    return d->health_url;
}

void dq_demo_free(dq_demo *d)
{
    if (!d)
        return;
    stop_child(d->service_pid);
    free(d);
}

/* s as a YAML double-quoted scalar (paths may hold anything). */
static void yaml_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* One environment of service `demo` (at six spaces of indent): the local provider aimed at
 * d's service, automatic rollback and a monitor whose watch window is window. */
static void write_env(const dq_demo *d, FILE *f, const char *env, const char *window)
{
    char deploy_py[PATH_MAX + 16];

    snprintf(deploy_py, sizeof deploy_py, "%s/deploy.py", d->dir);
    fprintf(f,
            "      %s:\n"
            "        providers:\n"
            "          - type: command\n"
            "            name: " PROVIDER_NAME "\n"
            "            # tells the demo service which version to serve; *-bad versions fail\n"
            "            argv: [python3, ",
            env);
    yaml_quoted(f, deploy_py);
    fputs(", ", f);
    yaml_quoted(f, d->health_base);
    fprintf(f,
            ", \"{version}\"]\n"
            "            timeout: 30s\n"
            "            poll_interval: 200ms\n"
            "            deadline: 60s\n"
            "        rollback: auto\n"
            "        # the monitor is what emits deploy.verified: without it a version could\n"
            "        # never be promoted from here (deployq check refuses that)\n"
            "        monitor:\n"
            "          interval: 1s\n"
            "          window: %s\n"
            "          failure_threshold: 3\n"
            "          probes:\n"
            "            - name: health\n"
            "              type: http\n"
            "              url: ",
            window);
    yaml_quoted(f, d->health_url);
    fputs("\n"
          "              expect_status: 200\n"
          "              missing: fail\n",
          f);
}

void dq_demo_write_services(const dq_demo *d, FILE *f)
{
    fputs("# `deployq up --demo`: one service, a local provider, a short watch window.\n"
          "services:\n"
          "  demo:\n"
          "    environments:\n",
          f);
    write_env(d, f, "staging", "8s");
}

void dq_demo_write_promotion(const dq_demo *staging, const dq_demo *production, FILE *f)
{
    fputs("# Service `demo`: two local HTTP services stand for its staging and production,\n"
          "# a local provider deploys to them. A version verified in staging (its watch\n"
          "# window passed clean) may then go to production.\n"
          "services:\n"
          "  demo:\n"
          "    environments:\n",
          f);
    write_env(staging, f, "staging", "10s");
    write_env(production, f, "production", "10s");
    fputs("        requires: staging\n"
          "        promotion_needs: verified\n",
          f);
}

/* ---- following deployq.events ---- */

typedef struct follower {
    rd_kafka_t *rk;
} follower;

static void follower_close(follower *fl)
{
    if (fl->rk) {
        rd_kafka_consumer_close(fl->rk);
        rd_kafka_destroy(fl->rk);
        fl->rk = NULL;
    }
}

/* A consumer of every partition of the events topic from the beginning, joining no group. */
static int follower_open(follower *fl, const dq_config *cfg, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = dq_kafka_conf(cfg, err, errlen);
    rd_kafka_topic_partition_list_t *parts = NULL;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = NULL;
    char errstr[512];
    int64_t deadline = dq_mono_ms() + 30000;
    int rc = -1;

    if (!conf)
        return -1;
    if (rd_kafka_conf_set(conf, "group.id", "deployq-demo", errstr, sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    fl->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!fl->rk) {
        snprintf(err, errlen, "kafka: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    conf = NULL; /* now owned by the rd_kafka_t */
    rkt = rd_kafka_topic_new(fl->rk, cfg->topic_events, NULL);
    /* The workers create the topic as they start: ask until it has partitions. */
    while (rkt && dq_mono_ms() < deadline) {
        rd_kafka_resp_err_t e = rd_kafka_metadata(fl->rk, 0, rkt, &md, 2000);

        if (e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && !md->topics[0].err &&
            md->topics[0].partition_cnt > 0)
            break;
        if (md)
            rd_kafka_metadata_destroy(md);
        md = NULL;
        dq_sleep_ms(200);
    }
    if (!md) {
        snprintf(err, errlen, "%s has no partitions after 30 s", cfg->topic_events);
        goto out;
    }
    parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, cfg->topic_events, md->topics[0].partitions[i].id)
            ->offset = RD_KAFKA_OFFSET_BEGINNING;
    if (rd_kafka_assign(fl->rk, parts) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "cannot read %s", cfg->topic_events);
        goto out;
    }
    rc = 0;
out:
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return rc;
}

/* The next event of deployment_id, or NULL at the deadline or on *stop. */
static dq_event *next_event(follower *fl, const char *deployment_id, int64_t deadline,
                            volatile sig_atomic_t *stop)
{
    while (dq_mono_ms() < deadline && !(stop && *stop)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(fl->rk, 200);
        dq_event *ev;
        char why[256];

        if (!msg)
            continue;
        if (msg->err) {
            rd_kafka_message_destroy(msg);
            continue;
        }
        ev = dq_event_decode(msg->payload, msg->len, why, sizeof why);
        rd_kafka_message_destroy(msg);
        if (ev && ev->deployment_id && strcmp(ev->deployment_id, deployment_id) == 0)
            return ev;
        dq_event_free(ev);
    }
    return NULL;
}

/* ---- narration ---- */

/* "10:00:01.2", local time, for people. */
static char *clock_of(int64_t ms, char out[16])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;

    if (ms <= 0 || !localtime_r(&s, &tm)) {
        snprintf(out, 16, "?");
        return out;
    }
    snprintf(out, 16, "%02d:%02d:%02d.%d", tm.tm_hour % 24, tm.tm_min % 60, tm.tm_sec % 61,
             (int)((ms % 1000) / 100));
    return out;
}

/* The clock of an RFC 3339 member of obj, "?" when absent. */
static char *clock_at(const cJSON *obj, const char *name, char out[16])
{
    int64_t ms = 0;
    const char *s = dq_json_str(obj, name);

    if (!s || dq_time_parse(s, &ms) != 0)
        ms = 0;
    return clock_of(ms, out);
}

static const char *str_or(const cJSON *obj, const char *name, const char *fallback)
{
    const char *s = dq_json_str(obj, name);

    return s ? s : fallback;
}

/* "HTTP 500, expected 200" / "latency 900 ms, limit 500 ms" / the probe's own words. */
static void what_failed(const cJSON *ev, char *out, size_t len)
{
    const char *check = str_or(ev, "check", "");
    const cJSON *obs = cJSON_GetObjectItemCaseSensitive(ev, "observed");
    const cJSON *thr = cJSON_GetObjectItemCaseSensitive(ev, "threshold");

    if (strcmp(check, "status") == 0 && cJSON_IsNumber(obs) && cJSON_IsNumber(thr))
        snprintf(out, len, "HTTP %d, expected %d", (int)obs->valuedouble, (int)thr->valuedouble);
    else if (strcmp(check, "latency") == 0 && cJSON_IsNumber(obs) && cJSON_IsNumber(thr))
        snprintf(out, len, "latency %d ms, limit %d ms", (int)obs->valuedouble, (int)thr->valuedouble);
    else if (dq_json_str(ev, "detail"))
        snprintf(out, len, "%s", dq_json_str(ev, "detail"));
    else
        snprintf(out, len, "%s", check[0] ? check : "failing");
}

/* One plain-English line for ev (nothing for the events a person need not see). */
static void narrate(FILE *out, const dq_event *ev)
{
    const cJSON *d = ev->data;
    const char *t = ev->type;
    const char *v = ev->version ? ev->version : "?";
    char when[16], a[16], b[16], c[16], line[1024];

    line[0] = '\0';
    if (strcmp(t, DQ_EV_VALIDATED) == 0) {
        snprintf(line, sizeof line, "validated: signed by %s, strategy %s",
                 str_or(d, "key_id", "?"), str_or(d, "strategy", "rolling"));
    } else if (strcmp(t, DQ_EV_REJECTED) == 0) {
        const cJSON *r = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(d, "reasons"), 0);

        snprintf(line, sizeof line, "rejected: %s", str_or(r, "message", "see deployq.events"));
    } else if (strcmp(t, DQ_EV_STARTED) == 0) {
        snprintf(line, sizeof line, "deploying %s through %s", v, str_or(d, "provider", "?"));
    } else if (strcmp(t, DQ_EV_PROVIDER_FAILED) == 0) {
        snprintf(line, sizeof line, "provider %s unavailable: %s", str_or(d, "provider", "?"),
                 str_or(d, "detail", "?"));
    } else if (strcmp(t, DQ_EV_SUCCEEDED) == 0) {
        snprintf(line, sizeof line, "deployed in %.1f s", dq_json_num(d, "duration_ms", 0) / 1000.0);
    } else if (strcmp(t, DQ_EV_FAILED) == 0) {
        snprintf(line, sizeof line, "deploy failed (%s): %s", str_or(d, "reason", "?"),
                 str_or(d, "detail", ""));
    } else if (strcmp(t, DQ_EV_MONITOR_STARTED) == 0) {
        snprintf(line, sizeof line,
                 "watching health for %.0f s: a probe every %.0f s, %.0f failures in a row roll back",
                 dq_json_num(d, "window_ms", 0) / 1000.0, dq_json_num(d, "interval_ms", 0) / 1000.0,
                 dq_json_num(d, "failure_threshold", 0));
    } else if (strcmp(t, DQ_EV_HEALTH_DEGRADED) == 0) {
        char why[256];

        what_failed(d, why, sizeof why);
        if (strcmp(str_or(d, "state", ""), "recovered") == 0)
            snprintf(line, sizeof line, "health recovered (probe %s)", str_or(d, "probe", "?"));
        else
            snprintf(line, sizeof line, "health degraded: probe %s saw %s", str_or(d, "probe", "?"),
                     why);
    } else if (strcmp(t, DQ_EV_VERIFIED) == 0) {
        snprintf(line, sizeof line,
                 "verified: %.0f s window passed clean (%.0f probes); %s is the last verified version",
                 dq_json_num(d, "window_ms", 0) / 1000.0, dq_json_num(d, "samples", 0), v);
    } else if (strcmp(t, DQ_EV_ROLLBACK_REQUESTED) == 0) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(d, "evidence");
        char why[256];

        what_failed(e, why, sizeof why);
        if (strcmp(str_or(e, "kind", ""), "consecutive_failures") == 0)
            snprintf(line, sizeof line, "watching health: %.0f probes failed (%s): rollback requested",
                     dq_json_num(e, "failures", 0), why);
        else
            snprintf(line, sizeof line, "watching health: %s (%s): rollback requested",
                     str_or(d, "reason", "unhealthy"), why);
    } else if (strcmp(t, DQ_EV_ROLLBACK_STARTED) == 0) {
        snprintf(line, sizeof line, "rolling back to %s (last verified) by %s through %s",
                 str_or(d, "to_version", "?"), str_or(d, "method", "?"), str_or(d, "provider", "?"));
    } else if (strcmp(t, DQ_EV_TRAFFIC_SWITCHED) == 0) {
        snprintf(line, sizeof line, "traffic switched from %s to %s", str_or(d, "from_color", "?"),
                 str_or(d, "to_color", "?"));
    } else if (strcmp(t, DQ_EV_ROLLBACK_SUCCEEDED) == 0) {
        snprintf(line, sizeof line, "rolled back to %s: MTTR %.1f s (detected %s, decided %s, restored %s)",
                 str_or(d, "to_version", "?"), dq_json_num(d, "mttr_ms", 0) / 1000.0,
                 clock_at(d, "detected_at", a), clock_at(d, "decided_at", b),
                 clock_at(d, "restored_at", c));
    } else if (strcmp(t, DQ_EV_ROLLBACK_FAILED) == 0) {
        snprintf(line, sizeof line, "rollback failed: %s", str_or(d, "reason", "?"));
    }
    if (!line[0])
        return;
    fprintf(out, "  %s  %s\n", clock_of(ev->at_ms, when), line);
    /* The evidence the monitor attached, sample by sample: what a person would check. */
    if (strcmp(t, DQ_EV_ROLLBACK_REQUESTED) == 0) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(d, "evidence"), *s;

        fprintf(out, "  %10s  evidence: probe %s, first failure %s, decided %s\n", "",
                str_or(e, "probe", "?"), clock_at(e, "detected_at", a), clock_at(e, "decided_at", b));
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(e, "samples"))
        {
            if (cJSON_IsObject(s))
                fprintf(out, "  %10s    %s  %s\n", "", clock_at(s, "at", a),
                        str_or(s, "detail", str_or(s, "outcome", "?")));
        }
    }
    fflush(out);
}

/* ---- the driver ---- */

/* `deployq submit ...` (this binary) for version; its deployment id into id. */
static int submit(const char *config_path, const char *key_path, const char *key_id,
                  const char *version, char *id, size_t idlen, char *err, size_t errlen)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    int fds[2], status = 0;
    size_t got = 0;
    pid_t pid;

    if (n <= 0) {
        snprintf(err, errlen, "cannot find the deployq binary: %s", strerror(errno));
        return -1;
    }
    self[n] = '\0';
    if (pipe(fds) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        char *argv[] = {self, (char *)"submit", (char *)"--config", (char *)config_path,
                        (char *)"--service", (char *)"demo", (char *)"--env", (char *)"staging",
                        (char *)"--version", (char *)version, (char *)"--key", (char *)key_path,
                        (char *)"--key-id", (char *)key_id, (char *)"--timeout", (char *)"20",
                        NULL};

        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(self, argv);
        _exit(127);
    }
    close(fds[1]);
    while (got + 1 < idlen) {
        ssize_t r = read(fds[0], id + got, idlen - 1 - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    id[got] = '\0';
    id[strcspn(id, "\r\n")] = '\0';
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || strlen(id) != DQ_UUID_LEN) {
        snprintf(err, errlen, "deployq submit of %s failed (exit %d)", version,
                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        return -1;
    }
    return 0;
}

/* Narrate deployment_id's events until one of type want. 0 reached; -1 with the reason
 * (another outcome, timeout, interrupted). *last gets the wanted event (caller frees). */
static int follow(follower *fl, const char *deployment_id, const char *want, FILE *out,
                  volatile sig_atomic_t *stop, dq_event **last, char *err, size_t errlen)
{
    int64_t deadline = dq_mono_ms() + PHASE_TIMEOUT_MS;
    dq_event *ev;

    while ((ev = next_event(fl, deployment_id, deadline, stop)) != NULL) {
        const char *t = ev->type;

        narrate(out, ev);
        if (strcmp(t, want) == 0) {
            *last = ev;
            return 0;
        }
        if (strcmp(t, DQ_EV_REJECTED) == 0 || strcmp(t, DQ_EV_FAILED) == 0 ||
            strcmp(t, DQ_EV_ROLLBACK_FAILED) == 0 || strcmp(t, DQ_EV_VERIFIED) == 0 ||
            strcmp(t, DQ_EV_ROLLBACK_SUCCEEDED) == 0) {
            snprintf(err, errlen, "expected %s for %s, got %s", want,
                     ev->version ? ev->version : "?", t);
            dq_event_free(ev);
            return -1;
        }
        dq_event_free(ev);
    }
    if (stop && *stop)
        snprintf(err, errlen, "interrupted");
    else
        snprintf(err, errlen, "no %s within %d s", want, PHASE_TIMEOUT_MS / 1000);
    return -1;
}

/* What the demo service says it serves now, and its health status (0 when unreachable). */
static long service_now(const dq_demo *d, char *version, size_t vlen)
{
    char url[200];
    dq_http_opts o = {.url = url, .timeout_ms = 3000};
    dq_http_response r = {0};
    long status = 0;
    char err[128];
    cJSON *doc;

    version[0] = '\0';
    snprintf(url, sizeof url, "%s/_fake/calls", d->health_base);
    if (dq_http_request(&o, &r) == 0 && r.status == 200 &&
        (doc = dq_json_parse(r.body, r.body_len, 65536, 8, NULL, err, sizeof err)) != NULL) {
        dq_strlcpy(version, str_or(doc, "version", ""), vlen);
        cJSON_Delete(doc);
    }
    dq_http_response_free(&r);
    o.url = d->health_url;
    if (dq_http_request(&o, &r) == 0)
        status = r.status;
    dq_http_response_free(&r);
    return status;
}

static int phase(follower *fl, const char *config_path, const char *key_path, const char *key_id,
                 const char *version, const char *want, FILE *out, volatile sig_atomic_t *stop,
                 dq_event **last, char *err, size_t errlen)
{
    char id[64];

    fprintf(out, "  $ deployq submit --service demo --env staging --version %s\n", version);
    fflush(out);
    if (submit(config_path, key_path, key_id, version, id, sizeof id, err, errlen) != 0)
        return -1;
    fprintf(out, "  deployment %s\n", id);
    return follow(fl, id, want, out, stop, last, err, errlen);
}

int dq_demo_run(dq_demo *d, const char *config_path, const char *key_path, const char *key_id,
                const char *logdir, volatile sig_atomic_t *stop, FILE *out)
{
    dq_config *cfg = NULL;
    follower fl = {0};
    dq_event *verified = NULL, *restored = NULL;
    char err[512], serving[128];
    const char *to;
    long health;
    int rc = 1;

    cfg = dq_config_load(config_path, err, sizeof err);
    if (!cfg || follower_open(&fl, cfg, err, sizeof err) != 0)
        goto out;

    fprintf(out, "\nThe demo: service `demo` answers at %s; deploying a version runs the\n"
                 "command provider `" PROVIDER_NAME "`, which tells the service to serve it. A version\n"
                 "named *-bad answers HTTP 500. deployq watches each deploy for 8 s.\n",
            d->health_url);
    fprintf(out, "\n1. Deploy %s, a good version: it is verified when its watch window passes clean.\n",
            DQ_DEMO_GOOD_VERSION);
    if (phase(&fl, config_path, key_path, key_id, DQ_DEMO_GOOD_VERSION, DQ_EV_VERIFIED, out, stop,
              &verified, err, sizeof err) != 0)
        goto out;

    fprintf(out, "\n2. Deploy %s, a bad version: nobody touches anything from here on.\n",
            DQ_DEMO_BAD_VERSION);
    if (phase(&fl, config_path, key_path, key_id, DQ_DEMO_BAD_VERSION, DQ_EV_ROLLBACK_SUCCEEDED,
              out, stop, &restored, err, sizeof err) != 0)
        goto out;
    to = str_or(restored->data, "to_version", "");
    if (strcmp(to, DQ_DEMO_GOOD_VERSION) != 0) {
        snprintf(err, sizeof err, "rolled back to %s, expected %s", to, DQ_DEMO_GOOD_VERSION);
        goto out;
    }
    health = service_now(d, serving, sizeof serving);
    if (strcmp(serving, DQ_DEMO_GOOD_VERSION) != 0 || health != 200) {
        snprintf(err, sizeof err, "after the rollback the demo service serves %s (health HTTP %ld)",
                 serving[0] ? serving : "nothing", health);
        goto out;
    }
    fprintf(out, "  the demo service serves %s again: %s answers HTTP 200\n", serving, d->health_url);
    fprintf(out, "\nDone: %s was verified; %s failed its health checks and was rolled back to %s\n"
                 "without anyone acting, %.1f s after its first failing probe (MTTR).\n"
                 "Worker logs: %s\n",
            DQ_DEMO_GOOD_VERSION, DQ_DEMO_BAD_VERSION, to,
            dq_json_num(restored->data, "mttr_ms", 0) / 1000.0, logdir);
    fflush(out);
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "deployq: up: demo: %s (worker logs: %s)\n", err, logdir);
    dq_event_free(verified);
    dq_event_free(restored);
    follower_close(&fl);
    dq_config_free(cfg);
    return rc;
}
