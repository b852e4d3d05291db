/*
 * cli.h - what the verbs of the `deployq` CLI share: the global options every verb
 * accepts (--config, --brokers, --redis-url, -X, --log-level), loading the configuration
 * with the right precedence, finding a running `deployq up` stack, and one-line errors.
 */
#ifndef DQ_CLI_H
#define DQ_CLI_H

#include <getopt.h>
#include <stdio.h>

#include "config.h"

/* Options every verb takes; the verbs put DQ_CLI_COMMON_OPTIONS in their option table. */
typedef struct dq_cli {
    const char *verb;
    const char *config_path;
    const char *brokers;
    const char *redis_url;
    const char *kafka_kv[32]; /* "key=value" from -X */
    int n_kafka_kv;
    const char *log_level;
} dq_cli;

enum {
    DQ_OPT_CONFIG = 1000,
    DQ_OPT_BROKERS,
    DQ_OPT_REDIS,
    DQ_OPT_LOG_LEVEL,
    DQ_OPT_VERB_BASE = 1100, /* verbs number their own long-only options from here */
};

#define DQ_CLI_COMMON_LONGOPTS                                                             \
    {"config", required_argument, NULL, DQ_OPT_CONFIG},                                    \
        {"brokers", required_argument, NULL, DQ_OPT_BROKERS},                              \
        {"redis-url", required_argument, NULL, DQ_OPT_REDIS},                              \
        {"log-level", required_argument, NULL, DQ_OPT_LOG_LEVEL},                          \
        {"help", no_argument, NULL, 'h'}

#define DQ_CLI_COMMON_USAGE                                                                \
    "Common options:\n"                                                                    \
    "  -c, --config FILE     configuration file (default: $DEPLOYQ_CONFIG, or the running\n" \
    "                        `deployq up` stack's)\n"                                      \
    "      --brokers LIST    Kafka bootstrap servers (env DEPLOYQ_BROKERS wins)\n"         \
    "      --redis-url URL   Redis URL (env DEPLOYQ_REDIS_URL wins)\n"                     \
    "  -X KEY=VALUE          any librdkafka property (repeatable)\n"                       \
    "      --log-level L     library logs: debug|info|warn|error (default: off;\n"        \
    "                        failures are reported as one line anyway)\n"                \
    "  -h, --help            this help\n"

/* Handle one of the common options (c is getopt's return). Returns 1 when handled,
 * 0 when c is not a common option, -1 on a bad value (message printed). */
int dq_cli_common_opt(dq_cli *cli, int c, const char *arg);

/* Load the configuration: file (flag, $DEPLOYQ_CONFIG, or the running stack's), then
 * flags, then the environment. When no broker is configured anywhere, the running
 * stack's is used. Prints a one-line error and returns NULL on failure. */
dq_config *dq_cli_load_config(const dq_cli *cli);
/* The same for a verb that uses only the given top-level sections (config.h,
 * dq_config_load_sections): a ${NAME} elsewhere need not be set. */
dq_config *dq_cli_load_config_sections(const dq_cli *cli, const char *const *sections);
/* What the registry's readers (status, history, replay, report, verify) use. */
#define DQ_CLI_READER_SECTIONS ((const char *const[]){"registry", "keys", NULL})

/* The key id a key file implies: its base name up to the first '.' ("keys/ci-2026.key"
 * gives "ci-2026"), what `deployq keygen` uses when no --id is given. 0, or -1 when the
 * name gives none or it does not fit in outlen. */
int dq_cli_key_id_from_path(const char *path, char *out, size_t outlen);

/* "deployq: <verb>: <message>" on stderr. */
void dq_cli_fail(const dq_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print usage (to stdout when code is 0, else stderr, after "deployq: <verb>: reason")
 * and return code; the verbs call it as `return dq_cli_usage(...)`. */
int dq_cli_usage(const dq_cli *cli, const char *usage, int code, const char *reason);

/* Verbs. Each returns the process exit code. */
int dq_cmd_keygen(int argc, char **argv);
int dq_cmd_submit(int argc, char **argv);
int dq_cmd_broker(int argc, char **argv);
int dq_cmd_up(int argc, char **argv);
int dq_cmd_approve(int argc, char **argv);  /* approve.c */
int dq_cmd_deny(int argc, char **argv);     /* approve.c */
int dq_cmd_check(int argc, char **argv);    /* check.c */
int dq_cmd_hook(int argc, char **argv);     /* hook.c */
int dq_cmd_status(int argc, char **argv);   /* registry_cli.c */
int dq_cmd_history(int argc, char **argv);  /* registry_cli.c */
int dq_cmd_replay(int argc, char **argv);   /* registry_cli.c */
int dq_cmd_verify(int argc, char **argv);   /* registry_cli.c */
int dq_cmd_report(int argc, char **argv);   /* registry_cli.c */
int dq_cmd_rollback(int argc, char **argv); /* rollback.c */
int dq_cmd_deploy(int argc, char **argv);   /* direct.c */
int dq_cmd_spool(int argc, char **argv);    /* direct.c */

#endif
