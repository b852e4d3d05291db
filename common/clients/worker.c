/*
 * worker.c - the start-up every worker shares (see worker.h).
 */
#include "worker.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"
#include "log.h"
#include "signals.h"
#include "util.h"

enum { OPT_BROKERS = 1100, OPT_REDIS, OPT_LOG_LEVEL, OPT_HEALTH };

static const struct option common_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"brokers", required_argument, NULL, OPT_BROKERS},
    {"redis-url", required_argument, NULL, OPT_REDIS},
    {"group", required_argument, NULL, 'g'},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"health-listen", required_argument, NULL, OPT_HEALTH},
    {"help", no_argument, NULL, 'h'},
};

/* The workers with endpoints of their own, and where they listen unless told otherwise:
 * one port each, so all four run on one machine (docs/operations.md, "Health and
 * metrics"). The registry serves the same paths on registry.http.listen. */
static const struct {
    const char *name, *listen;
} health_defaults[] = {
    {"validator", "127.0.0.1:9101"},
    {"executor", "127.0.0.1:9102"},
    {"monitor", "127.0.0.1:9103"},
    {"rollback", "127.0.0.1:9104"},
};

#define N_COMMON (sizeof common_opts / sizeof common_opts[0])
#define MAX_EXTRA 32

/* glibc's heap policy for every worker (docs/performance.md, "Memory"); worker.h says why
 * each number. Set before the first thread: a thread picks its arena at its first malloc. */
#define WORKER_ARENA_MAX 2
#define WORKER_TRIM_THRESHOLD (1024 * 1024)

const char *dq_worker_health_default(const char *name)
{
    for (size_t i = 0; name && i < sizeof health_defaults / sizeof health_defaults[0]; i++)
        if (strcmp(health_defaults[i].name, name) == 0)
            return health_defaults[i].listen;
    return NULL;
}

/* The configuration's health.<name>, checked: a mapping keyed by worker, each an address.
 * 0 with the address in out ("" when absent), or -1 with "file:line: health...: reason"
 * logged. */
static int health_from_config(const dq_worker *w, char *out, size_t outlen)
{
    static const char *const known[] = {"validator", "executor", "monitor", "rollback", NULL};
    const cJSON *sec = dq_config_view(w->cfg, "health"), *it;
    char err[1024], host[256], port[16];

    out[0] = '\0';
    if (!sec || cJSON_IsNull(sec))
        return 0;
    if (!cJSON_IsObject(sec)) {
        dq_config_fail(w->cfg, sec, err, sizeof err,
                       "health: expected a mapping of worker: address (validator: 127.0.0.1:9101)");
        dq_error("%s", err);
        return -1;
    }
    if (dq_config_check_keys(w->cfg, sec, known, "health", err, sizeof err) != 0) {
        dq_error("%s", err);
        return -1;
    }
    cJSON_ArrayForEach(it, sec)
    {
        char nb[32];
        const char *v = dq_config_text(w->cfg, it, nb, sizeof nb);

        if (!v || (strcmp(v, "off") != 0 &&
                   dq_listen_split(v, host, sizeof host, port, sizeof port) != 0)) {
            dq_config_fail(w->cfg, it, err, sizeof err,
                           "health.%s: expected HOST:PORT, :PORT or off", it->string);
            dq_error("%s", err);
            return -1;
        }
        if (strcmp(it->string, w->name) == 0)
            dq_strlcpy(out, v, outlen);
    }
    return 0;
}

/* Make the metrics registry and start the health server (worker.h). 0, or 1 on a bad
 * address (the exit status). */
static int health_start(dq_worker *w, const char *flag)
{
    const char *env = getenv("DEPLOYQ_HEALTH_LISTEN"), *listen, *origin;
    const char *def = dq_worker_health_default(w->name);
    char err[512], host[256], port[16], conf[256];

    w->metrics = dq_metrics_new("worker", w->name);
    if (!w->metrics) {
        dq_error("out of memory");
        return 1;
    }
    if (health_from_config(w, conf, sizeof conf) != 0)
        return 1;
    if (env && env[0]) {
        listen = env;
        origin = "DEPLOYQ_HEALTH_LISTEN";
    } else if (flag) {
        listen = flag;
        origin = "--health-listen";
    } else if (conf[0]) {
        listen = conf; /* checked by health_from_config */
        origin = "the configuration's health section";
    } else {
        listen = def ? def : "off";
        origin = "the default";
    }
    if (!def) {
        /* the registry: its HTTP API serves the same endpoints */
        if (strcmp(listen, "off") != 0 && (flag || (env && env[0])))
            dq_warn("%s ignored: the %s serves /healthz, /readyz and /metrics on its own "
                    "HTTP listener", origin, w->name);
        dq_strlcpy(w->health_listen, "off", sizeof w->health_listen);
        return 0;
    }
    dq_strlcpy(w->health_listen, listen, sizeof w->health_listen);
    if (strcmp(listen, "off") == 0)
        return 0;
    if (dq_listen_split(listen, host, sizeof host, port, sizeof port) != 0) {
        dq_error("%s %s: expected HOST:PORT, :PORT or off", origin, listen);
        return 1;
    }
    {
        dq_healthsrv_opts o = {.listen = listen,
                               .redis_url = w->cfg->redis_url,
                               .redis_timeout_ms = w->cfg->redis_timeout_ms < 1000
                                                       ? w->cfg->redis_timeout_ms
                                                       : 1000,
                               .metrics = w->metrics};

        w->health = dq_healthsrv_start(&o, err, sizeof err);
    }
    if (!w->health) {
        /* two copies of a worker on one machine: the second goes on without endpoints */
        dq_warn("%s; going on without /healthz, /readyz and /metrics (set --health-listen, "
                "DEPLOYQ_HEALTH_LISTEN or health.%s to another address, or off)",
                err, w->name);
        return 0;
    }
    dq_info("health: /healthz, /readyz, /metrics on %s", listen);
    return 0;
}

void dq_worker_watch(dq_worker *w, dq_consumer *c)
{
    if (w && w->health && dq_healthsrv_watch(w->health, c) != 0)
        dq_warn("health: too many consumers; this one is not part of readiness");
}

void dq_worker_health_stop(dq_worker *w)
{
    if (!w)
        return;
    dq_healthsrv_stop(w->health);
    w->health = NULL;
}

static void memory_policy(void)
{
    mallopt(M_ARENA_MAX, WORKER_ARENA_MAX);
    mallopt(M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD);
}

int dq_worker_start(dq_worker *w, int argc, char **argv, const char *usage,
                    const struct option *extra_opts, const char *extra_short,
                    dq_worker_opt_fn on_opt, void *ctx)
{
    struct option opts[N_COMMON + MAX_EXTRA + 1];
    char shortopts[128];
    const char *config_path = NULL, *brokers = NULL, *redis_url = NULL, *group = NULL;
    const char *health = NULL;
    const char *kv[DQ_WORKER_MAX_KV];
    size_t n = 0;
    int n_kv = 0, c, level = DQ_LOG_INFO;
    char err[1024];

    memory_policy();
    memcpy(opts, common_opts, sizeof common_opts);
    n = N_COMMON;
    for (size_t i = 0; extra_opts && extra_opts[i].name && n < N_COMMON + MAX_EXTRA; i++)
        opts[n++] = extra_opts[i];
    memset(&opts[n], 0, sizeof opts[n]);
    snprintf(shortopts, sizeof shortopts, "c:g:X:h%s", extra_short ? extra_short : "");

    optind = 1;
    while ((c = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case OPT_BROKERS: brokers = optarg; break;
        case OPT_REDIS: redis_url = optarg; break;
        case 'g': group = optarg; break;
        case 'X':
            if (!strchr(optarg, '=') || n_kv >= DQ_WORKER_MAX_KV) {
                fprintf(stderr, "%s: -X %s: expected KEY=VALUE\n", w->program, optarg);
                return 2;
            }
            kv[n_kv++] = optarg;
            break;
        case OPT_LOG_LEVEL:
            level = dq_log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "%s: --log-level %s: expected debug, info, warn or error\n",
                        w->program, optarg);
                return 2;
            }
            break;
        case OPT_HEALTH: health = optarg; break;
        case 'h': fputs(usage, stdout); return 0;
        case '?': fputs(usage, stderr); return 2;
        default:
            if (!on_opt || on_opt(ctx, c, optarg) != 0) {
                fputs(usage, stderr);
                return 2;
            }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", w->program, argv[optind]);
        fputs(usage, stderr);
        return 2;
    }
    w->log_level = level;
    dq_log_init(w->program, (dq_log_level)level, -1);
    w->stop = dq_stop_flag_install();

    w->cfg = dq_config_load(config_path, err, sizeof err);
    if (!w->cfg) {
        dq_error("%s", err);
        return 1;
    }
    for (int i = 0; i < n_kv; i++) {
        char key[256];
        const char *eq = strchr(kv[i], '=');
        size_t klen = (size_t)(eq - kv[i]) < sizeof key ? (size_t)(eq - kv[i]) : sizeof key - 1;

        memcpy(key, kv[i], klen);
        key[klen] = '\0';
        dq_config_set_kafka(w->cfg, key, eq + 1);
    }
    if (brokers)
        dq_config_set_kafka(w->cfg, "bootstrap.servers", brokers);
    if (redis_url) {
        free(w->cfg->redis_url);
        w->cfg->redis_url = strdup(redis_url);
    }
    dq_config_apply_env(w->cfg); /* the environment wins over flags */
    if (group) {
        w->group = group;
    } else if (w->cfg->group_prefix && w->group && strncmp(w->group, "deployq-", 8) == 0) {
        /* two installations sharing one Kafka cluster keep their groups apart */
        snprintf(w->group_buf, sizeof w->group_buf, "%s-%s", w->cfg->group_prefix, w->group + 8);
        w->group = w->group_buf;
    }
    if (!dq_config_kafka_get(w->cfg, "bootstrap.servers")) {
        dq_error("no broker configured: set kafka.bootstrap.servers, --brokers or DEPLOYQ_BROKERS");
        return 1;
    }
    w->name = strncmp(w->program, "deployq-", 8) == 0 ? w->program + 8 : w->program;
    if (health_start(w, health) != 0)
        return 1;
    return -1;
}

dq_redis *dq_worker_redis(const dq_worker *w)
{
    char err[512] = "";
    dq_redis *r = NULL;

    for (int i = 0; i < 60 && !*w->stop && !r; i++) {
        r = dq_redis_connect(w->cfg->redis_url, w->cfg->redis_timeout_ms, err, sizeof err);
        if (!r) {
            if (i == 0)
                dq_warn("redis: %s; retrying", err);
            dq_sleep_ms(500);
        }
    }
    if (!r)
        dq_error("redis: %s", err);
    return r;
}

void dq_worker_ensure_topics(const dq_worker *w)
{
    char err[512];

    if (dq_kafka_ensure_topics(w->cfg, DQ_PARTITIONS_DEFAULT, 15000, err, sizeof err) != 0)
        dq_warn("could not ensure topics: %s", err);
}

void dq_worker_finish(dq_worker *w)
{
    if (!w)
        return;
    dq_worker_health_stop(w);
    dq_metrics_free(w->metrics);
    w->metrics = NULL;
    dq_config_free(w->cfg);
    w->cfg = NULL;
}
