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

enum { OPT_BROKERS = 1100, OPT_REDIS, OPT_LOG_LEVEL };

static const struct option common_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"brokers", required_argument, NULL, OPT_BROKERS},
    {"redis-url", required_argument, NULL, OPT_REDIS},
    {"group", required_argument, NULL, 'g'},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"help", no_argument, NULL, 'h'},
};

#define N_COMMON (sizeof common_opts / sizeof common_opts[0])
#define MAX_EXTRA 32

/* glibc's heap policy for every worker (docs/performance.md, "Memory"); worker.h says why
 * each number. Set before the first thread: a thread picks its arena at its first malloc. */
#define WORKER_ARENA_MAX 2
#define WORKER_TRIM_THRESHOLD (1024 * 1024)

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
    dq_config_free(w->cfg);
    w->cfg = NULL;
}
