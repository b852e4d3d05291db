/*
 * cli.h - what the verbs of the `deployq` CLI share: one option parser (the verb's own
 * options as a table, the options several verbs share appended by the parser), loading
 * the configuration with the right precedence, and one-line errors.
 *
 * A verb declares itself in a dq_cli (its name, its help text, which shared options it
 * takes, how many positional arguments), lists its own options in a dq_cli_opt table that
 * points at its own variables, and calls dq_cli_parse once:
 *
 *     const char *out = NULL;
 *     long long n = 1;
 *     dq_cli cli = {.verb = "frob", .usage = frob_usage, .takes = DQ_CLI_COMMON};
 *     const dq_cli_opt opts[] = {
 *         DQ_OPT_STRING('o', "out", &out),
 *         DQ_OPT_INT('n', "count", &n, 1, 5, "--count must be 1..5"),
 *         DQ_OPT_END,
 *     };
 *     if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
 *         return rc;
 *
 * The list of verbs and their one-line summaries is main.c's table.
 */
#ifndef DQ_CLI_H
#define DQ_CLI_H

#include <stdio.h>

#include "config.h"

/* The shared options, by what they are for; a verb takes the ones its help text lists
 * (dq_cli.takes). -h/--help is always there. */
enum {
    DQ_CLI_CONFIG = 1 << 0,  /* -c, --config FILE                        -> config_path */
    DQ_CLI_CONNECT = 1 << 1, /* --brokers LIST, --redis-url URL, -X KEY=VALUE,
                                --log-level L (applied at once)          -> brokers, ... */
    DQ_CLI_JSON = 1 << 2,    /* --json (what it prints is the verb's)    -> json */
    DQ_CLI_COMMON = DQ_CLI_CONFIG | DQ_CLI_CONNECT,
};

#define DQ_CLI_MAX_KV 32

typedef struct dq_cli {
    /* the verb's declaration, set before dq_cli_parse */
    const char *verb;        /* "submit": errors read "deployq: submit: ..." */
    const char *usage;       /* its help text: --help prints it, a usage error follows it */
    unsigned takes;          /* DQ_CLI_CONFIG | DQ_CLI_CONNECT | DQ_CLI_JSON, or 0 */
    int n_args;              /* the positional arguments it takes: exactly this many */
    const char *args_reason; /* the usage error when their number differs (NULL:
                                "unexpected argument") */
    /* set by dq_cli_parse (pointers into argv) */
    const char *config_path;
    const char *brokers;
    const char *redis_url;
    const char *kafka_kv[DQ_CLI_MAX_KV]; /* "key=value" from -X */
    int n_kafka_kv;
    const char *log_level;
    int json;
    char **args; /* the n_args positional arguments */
} dq_cli;

/* One option of a verb's own. Write them with the DQ_OPT_* macros below, which check that
 * the variable has the right type; end the table with DQ_OPT_END. */
typedef enum dq_cli_kind {
    DQ_CLI_FLAG,   /* no argument: the int is set to 1 */
    DQ_CLI_STRING, /* the const char * points at the argument */
    DQ_CLI_INT,    /* a whole number in [min, max] into the long long, else `reason` */
    DQ_CLI_PARSE,  /* parse(dst, arg): 0 taken, -1 refused with `reason` */
} dq_cli_kind;

typedef struct dq_cli_opt {
    int letter;         /* the short option, 0 for none */
    const char *name;   /* the long option, without "--" */
    dq_cli_kind kind;
    void *dst;          /* where the value goes */
    long long min, max; /* DQ_CLI_INT */
    const char *reason; /* DQ_CLI_INT, DQ_CLI_PARSE: the usage error for a bad value */
    int (*parse)(void *dst, const char *arg); /* DQ_CLI_PARSE */
} dq_cli_opt;

/* p converted to void *, where the compiler has checked that it is a `type *`. */
#define DQ_CLI_DST(type, p) (1 ? (p) : (type *)0)

#define DQ_OPT_FLAG(letter, name, p)                                                       \
    {(letter), (name), DQ_CLI_FLAG, DQ_CLI_DST(int, p), 0, 0, NULL, NULL}
#define DQ_OPT_STRING(letter, name, p)                                                     \
    {(letter), (name), DQ_CLI_STRING, DQ_CLI_DST(const char *, p), 0, 0, NULL, NULL}
#define DQ_OPT_INT(letter, name, p, lo, hi, reason)                                        \
    {(letter), (name), DQ_CLI_INT, DQ_CLI_DST(long long, p), (lo), (hi), (reason), NULL}
#define DQ_OPT_PARSE(letter, name, p, fn, reason)                                          \
    {(letter), (name), DQ_CLI_PARSE, (p), 0, 0, (reason), (fn)}
#define DQ_OPT_END {0, NULL, DQ_CLI_FLAG, NULL, 0, 0, NULL, NULL}

/* The help lines of DQ_CLI_COMMON, for a verb's usage text. */
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

/* Parse argv (argv[0] is the verb): the shared options cli->takes names, -h/--help, and
 * opts (the verb's own; may be NULL; a long name must not repeat a shared option the verb
 * takes). Each value is stored as its option says, in command-line order; the positional
 * arguments are left in cli->args. Returns -1 when the verb should go on, else the exit
 * status to return at once: 0 after --help (the usage on stdout), 2 on a usage error (the
 * reason, then the usage, on stderr; a bad shared value is one line only). */
int dq_cli_parse(dq_cli *cli, const dq_cli_opt *opts, int argc, char **argv);

/* Load the configuration: file (flag, $DEPLOYQ_CONFIG, or the running stack's), then
 * flags, then the environment. When no broker is configured anywhere, the running
 * stack's is used. Prints a one-line error and returns NULL on failure. */
dq_config *dq_cli_load_config(const dq_cli *cli);
/* Send a signed document (an approval decision, an operator command) to the configured
 * requests topic under key, waiting for the broker's acknowledgement: loads the
 * configuration and refuses one that names no broker. 0 with *cfg_out (the caller frees
 * it; its topic names are for the caller's message) and the partition and offset written
 * (each may be NULL); 1 after a one-line error. */
int dq_cli_send_signed(const dq_cli *cli, const char *key, const char *signed_text, dq_config **cfg_out,
                       int32_t *partition, int64_t *offset);
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

/* Verbs: each returns the process exit code; argv[0] is the verb. main.c's table lists
 * them with their summaries. */
int dq_cmd_keygen(int argc, char **argv);   /* keygen.c */
int dq_cmd_submit(int argc, char **argv);   /* submit.c */
int dq_cmd_broker(int argc, char **argv);   /* broker.c */
int dq_cmd_up(int argc, char **argv);       /* up.c */
int dq_cmd_approve(int argc, char **argv);  /* approve.c */
int dq_cmd_deny(int argc, char **argv);     /* approve.c */
int dq_cmd_approvals(int argc, char **argv); /* approvals.c */
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
int dq_cmd_cancel(int argc, char **argv);   /* operate.c */
int dq_cmd_retry(int argc, char **argv);    /* operate.c */
int dq_cmd_pause(int argc, char **argv);    /* operate.c */
int dq_cmd_resume(int argc, char **argv);   /* operate.c */
int dq_cmd_hold(int argc, char **argv);     /* operate.c */
int dq_cmd_release(int argc, char **argv);  /* operate.c */
int dq_cmd_drift(int argc, char **argv);    /* drift.c */

#endif
