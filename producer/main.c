/*
 * main.c - the `deployq` CLI: verb dispatch and what every verb shares (options,
 * configuration precedence, one-line errors). Each verb lives in its own file.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"
#include "stack.h"

static const char usage_text[] =
    "Usage: deployq <verb> [options]\n"
    "\n"
    "deployq is the deploy control plane: CI submits signed deploy requests onto Kafka,\n"
    "workers validate and execute them, and every event lands in deployq.events.\n"
    "\n"
    "Verbs:\n"
    "  submit     submit a signed deploy request (what a CI job runs)\n"
    "  keygen     create an Ed25519 key pair for signing requests\n"
    "  up         run the whole stack on this machine (embedded broker, Redis, workers)\n"
    "  broker     run only the embedded Kafka broker\n"
    "  help VERB  the help of one verb (same as `deployq VERB --help`)\n"
    "  version    print the version\n"
    "\n"
    "Run `deployq VERB --help` for a verb's options. Documentation: README.md, docs/.\n";

struct verb {
    const char *name;
    int (*fn)(int, char **);
};

static const struct verb verbs[] = {
    {"submit", dq_cmd_submit},
    {"keygen", dq_cmd_keygen},
    {"up", dq_cmd_up},
    {"broker", dq_cmd_broker},
    {"approve", dq_cmd_approve},
    {"deny", dq_cmd_deny},
    {"check", dq_cmd_check},
    {"hook", dq_cmd_hook},
    {"status", dq_cmd_status},
    {"history", dq_cmd_history},
    {"replay", dq_cmd_replay},
    {"verify", dq_cmd_verify},
    {"report", dq_cmd_report},
    {"rollback", dq_cmd_rollback},
    {"deploy", dq_cmd_deploy},
    {"spool", dq_cmd_spool},
};

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

int dq_cli_common_opt(dq_cli *cli, int c, const char *arg)
{
    switch (c) {
    case 'c':
    case DQ_OPT_CONFIG:
        cli->config_path = arg;
        return 1;
    case DQ_OPT_BROKERS:
        cli->brokers = arg;
        return 1;
    case DQ_OPT_REDIS:
        cli->redis_url = arg;
        return 1;
    case DQ_OPT_LOG_LEVEL:
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
        if (cli->n_kafka_kv >= (int)(sizeof cli->kafka_kv / sizeof cli->kafka_kv[0])) {
            dq_cli_fail(cli, "too many -X options");
            return -1;
        }
        cli->kafka_kv[cli->n_kafka_kv++] = arg;
        return 1;
    default:
        return 0;
    }
}

dq_config *dq_cli_load_config(const dq_cli *cli)
{
    return dq_cli_load_config_sections(cli, NULL);
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

int main(int argc, char **argv)
{
    const char *verb;
    int rc;

    /* The CLI reports its failures itself, as one line (dq_cli_fail); library logs, such
     * as librdkafka's connection errors while a broker is down, would only repeat them
     * noisily. --log-level (or DEPLOYQ_LOG_LEVEL) turns them on. */
    dq_log_init("deployq", DQ_LOG_OFF, -1);
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    verb = argv[1];
    if (strcmp(verb, "-h") == 0 || strcmp(verb, "--help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(verb, "version") == 0 || strcmp(verb, "--version") == 0) {
        printf("deployq %s\n", DQ_VERSION);
        return 0;
    }
    if (strcmp(verb, "help") == 0) {
        if (argc < 3) {
            fputs(usage_text, stdout);
            return 0;
        }
        for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
            if (strcmp(argv[2], verbs[i].name) == 0) {
                char *hargv[] = {argv[2], (char *)"--help", NULL};
                return verbs[i].fn(2, hargv);
            }
        fprintf(stderr, "deployq: help: unknown verb '%s'\n", argv[2]);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strcmp(verb, verbs[i].name) == 0) {
            rc = verbs[i].fn(argc - 1, argv + 1);
            curl_global_cleanup();
            return rc;
        }
    }
    fprintf(stderr, "deployq: unknown verb '%s'\n", verb);
    fputs(usage_text, stderr);
    curl_global_cleanup();
    return 2;
}
