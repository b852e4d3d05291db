/*
 * cli.c - what the `deployq` verbs share (see cli.h): one option parser, so every verb's
 * shared options, --help and usage errors behave the same; the configuration with its
 * precedence; one-line errors. main.c holds the table of verbs and the dispatch.
 */
#include "cli.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"
#include "log.h"
#include "stack.h"
#include "util.h"

/* getopt_long's values: the shared long-only options, then a verb's own long-only option
 * i as OPT_OWN_BASE + i (short ones return their letter). */
enum { OPT_BROKERS = 1000, OPT_REDIS, OPT_LOG_LEVEL, OPT_JSON, OPT_OWN_BASE = 1100 };

static const struct option help_opts[] = {{"help", no_argument, NULL, 'h'}};
static const struct option config_opts[] = {{"config", required_argument, NULL, 'c'}};
static const struct option connect_opts[] = {
    {"brokers", required_argument, NULL, OPT_BROKERS},
    {"redis-url", required_argument, NULL, OPT_REDIS},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
};
static const struct option json_opts[] = {{"json", no_argument, NULL, OPT_JSON}};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_OPTS 48 /* shared and own together; submit, the largest, has 21 */

static size_t append(struct option *dst, size_t n, const struct option *src, size_t k)
{
    memcpy(dst + n, src, k * sizeof *src);
    return n + k;
}

/* Whether a verb's own option repeats a shared one's name or any option's letter. */
static int clashes(const struct option *shared, size_t n_shared, const char *shortopts,
                   const dq_cli_opt *o)
{
    if (o->letter && strchr(shortopts, o->letter))
        return 1;
    for (size_t i = 0; i < n_shared; i++)
        if (strcmp(shared[i].name, o->name) == 0)
            return 1;
    return 0;
}

/* A shared option: 1 taken, 0 not a shared one, -1 a bad value (one line printed). */
static int shared_opt(dq_cli *cli, int c, const char *arg)
{
    switch (c) {
    case 'c':
        cli->config_path = arg;
        return 1;
    case OPT_BROKERS:
        cli->brokers = arg;
        return 1;
    case OPT_REDIS:
        cli->redis_url = arg;
        return 1;
    case OPT_JSON:
        cli->json = 1;
        return 1;
    case OPT_LOG_LEVEL:
        if (dq_log_level_parse(arg) < 0) {
            dq_cli_fail(cli, "--log-level %s: expected debug, info, warn or error", arg);
            return -1;
        }
        cli->log_level = arg;
        dq_log_init("deployq", (dq_log_level)dq_log_level_parse(arg), -1);
        return 1;
    case 'X':
        if (!strchr(arg, '=')) {
            dq_cli_fail(cli, "-X %s: expected KEY=VALUE", arg);
            return -1;
        }
        if (cli->n_kafka_kv >= DQ_CLI_MAX_KV) {
            dq_cli_fail(cli, "too many -X options");
            return -1;
        }
        cli->kafka_kv[cli->n_kafka_kv++] = arg;
        return 1;
    default:
        return 0;
    }
}

/* Store a verb's own option: 0, or -1 when its value is refused. */
static int own_opt(const dq_cli_opt *o, const char *arg)
{
    switch (o->kind) {
    case DQ_CLI_FLAG:
        *(int *)o->dst = 1;
        return 0;
    case DQ_CLI_STRING:
        *(const char **)o->dst = arg;
        return 0;
    case DQ_CLI_INT:
        return dq_parse_int(arg, o->min, o->max, (long long *)o->dst);
    case DQ_CLI_PARSE:
        return o->parse(o->dst, arg);
    }
    return -1;
}

int dq_cli_parse(dq_cli *cli, const dq_cli_opt *opts, int argc, char **argv)
{
    struct option lopts[MAX_OPTS + 1];
    char shortopts[2 * MAX_OPTS + 8];
    size_t n = 0, n_shared, ns;
    int c;

    n = append(lopts, n, help_opts, N_OF(help_opts));
    if (cli->takes & DQ_CLI_CONFIG)
        n = append(lopts, n, config_opts, N_OF(config_opts));
    if (cli->takes & DQ_CLI_CONNECT)
        n = append(lopts, n, connect_opts, N_OF(connect_opts));
    if (cli->takes & DQ_CLI_JSON)
        n = append(lopts, n, json_opts, N_OF(json_opts));
    n_shared = n;
    ns = (size_t)snprintf(shortopts, sizeof shortopts, "h%s%s",
                          cli->takes & DQ_CLI_CONFIG ? "c:" : "",
                          cli->takes & DQ_CLI_CONNECT ? "X:" : "");
    for (size_t i = 0; opts && opts[i].name; i++) {
        int has_arg = opts[i].kind != DQ_CLI_FLAG;

        /* An option that shadowed another would silently lose it: refuse at once, so the
         * first run of that verb (its --help in the tests) says so. */
        if (n == MAX_OPTS || clashes(lopts, n_shared, shortopts, &opts[i])) {
            dq_cli_fail(cli, "internal error: --%s: %s", opts[i].name,
                        n == MAX_OPTS ? "too many options" : "it clashes with another option");
            return 2;
        }
        lopts[n++] = (struct option){opts[i].name, has_arg ? required_argument : no_argument,
                                     NULL, opts[i].letter ? opts[i].letter : OPT_OWN_BASE + (int)i};
        if (opts[i].letter) {
            shortopts[ns++] = (char)opts[i].letter;
            if (has_arg)
                shortopts[ns++] = ':';
            shortopts[ns] = '\0';
        }
    }
    memset(&lopts[n], 0, sizeof lopts[n]);

    optind = 1;
    while ((c = getopt_long(argc, argv, shortopts, lopts, NULL)) != -1) {
        const dq_cli_opt *o = NULL;
        int shared = shared_opt(cli, c, optarg);

        if (shared < 0)
            return 2;
        if (shared > 0)
            continue;
        if (c == 'h')
            return dq_cli_usage(cli, cli->usage, 0, NULL);
        if (c >= OPT_OWN_BASE)
            o = &opts[c - OPT_OWN_BASE];
        for (size_t i = 0; !o && opts && opts[i].name; i++)
            if (opts[i].letter == c)
                o = &opts[i];
        if (!o) /* '?': getopt said what was wrong */
            return dq_cli_usage(cli, cli->usage, 2, NULL);
        if (own_opt(o, optarg) != 0)
            return dq_cli_usage(cli, cli->usage, 2, o->reason);
    }
    cli->args = argv + optind;
    if (argc - optind != cli->n_args)
        return dq_cli_usage(cli, cli->usage, 2,
                            cli->args_reason ? cli->args_reason : "unexpected argument");
    return -1;
}

void dq_cli_fail(const dq_cli *cli, const char *fmt, ...)
{
    char msg[1024];
    char clean[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* An error may quote a library's message, which may quote a value: redact anyway. */
    dq_redact(msg, clean, sizeof clean);
    fprintf(stderr, "deployq: %s: %s\n", cli && cli->verb ? cli->verb : "error", clean);
}

int dq_cli_key_id_from_path(const char *path, char *out, size_t outlen)
{
    const char *base = strrchr(path, '/');
    size_t n;

    base = base ? base + 1 : path;
    n = strcspn(base, ".");
    if (n == 0 || n >= outlen)
        return -1;
    memcpy(out, base, n);
    out[n] = '\0';
    return 0;
}

int dq_cli_usage(const dq_cli *cli, const char *usage, int code, const char *reason)
{
    if (code == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (reason)
        fprintf(stderr, "deployq: %s: %s\n", cli->verb, reason);
    fputs(usage, stderr);
    return code;
}

dq_config *dq_cli_load_config(const dq_cli *cli)
{
    return dq_cli_load_config_sections(cli, NULL);
}

int dq_cli_send_signed(const dq_cli *cli, const char *key, const char *signed_text, dq_config **cfg_out,
                       int32_t *partition, int64_t *offset)
{
    dq_config *cfg = dq_cli_load_config(cli);
    dq_producer *producer = NULL;
    char err[1024];

    *cfg_out = NULL;
    if (!cfg)
        return 1;
    if (!dq_config_kafka_get(cfg, "bootstrap.servers")) {
        dq_cli_fail(cli, "no broker configured: pass --brokers, set DEPLOYQ_BROKERS, "
                         "or start a stack with `deployq up`");
        goto fail;
    }
    producer = dq_producer_new(cfg, err, sizeof err);
    if (!producer || dq_producer_send(producer, cfg->topic_requests, key, signed_text, strlen(signed_text), 10000,
                                      partition, offset, err, sizeof err) != 0) {
        dq_cli_fail(cli, "%s", err);
        goto fail;
    }
    dq_producer_free(producer);
    *cfg_out = cfg;
    return 0;
fail:
    dq_producer_free(producer);
    dq_config_free(cfg);
    return 1;
}

dq_config *dq_cli_load_config_sections(const dq_cli *cli, const char *const *sections)
{
    char err[512];
    const char *path = cli->config_path;
    dq_stack *stack = dq_stack_find();
    dq_config *cfg;

    if (!path && !getenv("DEPLOYQ_CONFIG") && stack && stack->config_path)
        path = stack->config_path;
    cfg = dq_config_load_sections(path, sections, err, sizeof err);
    if (!cfg) {
        dq_cli_fail(cli, "%s", err);
        dq_stack_free(stack);
        return NULL;
    }
    /* Talking to the running stack (its configuration, or none at all): its broker and
     * Redis are what is really running, whatever the file says. Flags and the
     * environment still win below. */
    if (stack && (!cfg->path || (stack->config_path && strcmp(cfg->path, stack->config_path) == 0))) {
        if (stack->brokers)
            dq_config_set_kafka(cfg, "bootstrap.servers", stack->brokers);
        if (stack->redis_url) {
            free(cfg->redis_url);
            cfg->redis_url = strdup(stack->redis_url);
        }
    }
    for (int i = 0; i < cli->n_kafka_kv; i++) {
        const char *eq = strchr(cli->kafka_kv[i], '=');
        char key[256];
        size_t klen = (size_t)(eq - cli->kafka_kv[i]);

        if (klen >= sizeof key)
            klen = sizeof key - 1;
        memcpy(key, cli->kafka_kv[i], klen);
        key[klen] = '\0';
        dq_config_set_kafka(cfg, key, eq + 1);
    }
    if (cli->brokers)
        dq_config_set_kafka(cfg, "bootstrap.servers", cli->brokers);
    if (cli->redis_url) {
        free(cfg->redis_url);
        cfg->redis_url = strdup(cli->redis_url);
    }
    dq_config_apply_env(cfg); /* the environment wins over flags */
    dq_stack_free(stack);
    return cfg;
}
