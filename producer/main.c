/*
 * main.c - the `deployq` CLI: the table of verbs, which `deployq --help` lists and main
 * dispatches on. Each verb lives in its own file; what they share is cli.c.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "log.h"

static int cmd_help(int argc, char **argv);
static int cmd_version(int argc, char **argv);

typedef struct dq_verb {
    const char *name;
    int (*fn)(int argc, char **argv); /* argv[0] is the verb; returns the exit status */
    const char *group;                /* the heading `deployq --help` lists it under */
    const char *summary;              /* one line */
} dq_verb;

/* The headings of `deployq --help`, in their order. */
#define DEPLOYING "Deploying"
#define STACK "Running the stack"
#define REGISTRY "The registry (what happened)"
#define KEYS "Keys"
#define INCIDENT "In an incident (signed with an operator key)"
#define BREAK_GLASS "Break-glass (Kafka or the workers down)"
#define HELP "Help"

/* Every verb, once, in the order `deployq --help` lists them (a group's verbs together). */
static const dq_verb verbs[] = {
    {"submit", dq_cmd_submit, DEPLOYING, "submit a signed deploy request (what a CI job runs)"},
    {"check", dq_cmd_check, DEPLOYING, "stage 1: lint the configuration, check variables, run checks:"},
    {"hook", dq_cmd_hook, DEPLOYING, "install or remove the git pre-push hook that runs check"},
    {"approve", dq_cmd_approve, DEPLOYING, "approve a deployment that waits for approval"},
    {"deny", dq_cmd_deny, DEPLOYING, "deny a deployment that waits for approval"},
    {"approvals", dq_cmd_approvals, DEPLOYING,
     "what waits for approval: since when, until when, which version"},
    {"drift", dq_cmd_drift, DEPLOYING,
     "how environments' variables differ, by name (values compared as keyed hashes)"},
    {"rollback", dq_cmd_rollback, DEPLOYING, "ask for a rollback of a service/environment"},
    {"cancel", dq_cmd_cancel, INCIDENT, "cancel a deployment: dropped if waiting, else at the provider"},
    {"retry", dq_cmd_retry, INCIDENT, "deploy a failed deployment's version again, as a new deployment"},
    {"pause", dq_cmd_pause, INCIDENT, "start no deploy of a target; they wait in order"},
    {"resume", dq_cmd_resume, INCIDENT, "run a paused target's waiting deploys, in order"},
    {"hold", dq_cmd_hold, INCIDENT, "hold automatic rollback of a target (still watched, notified)"},
    {"release", dq_cmd_release, INCIDENT, "let automatic rollback act again"},
    {"up", dq_cmd_up, STACK, "run the whole stack here: embedded broker, Redis, every worker"},
    {"broker", dq_cmd_broker, STACK, "run only the embedded Kafka broker"},
    {"status", dq_cmd_status, REGISTRY,
     "each target's version now, its last verified, a deploy in flight"},
    {"history", dq_cmd_history, REGISTRY, "the registry's events, filtered"},
    {"replay", dq_cmd_replay, REGISTRY,
     "every target's state, now or at a past time or offset, with its hash"},
    {"report", dq_cmd_report, REGISTRY,
     "delivery figures: success rate, MTTR, frequency, lead time"},
    {"verify", dq_cmd_verify, REGISTRY,
     "check the registry's hash chains; sign or check a checkpoint"},
    {"keygen", dq_cmd_keygen, KEYS, "create an Ed25519 key pair (ci, approver or operator)"},
    {"deploy", dq_cmd_deploy, BREAK_GLASS,
     "deploy --direct from this machine; the events go to a local spool"},
    {"spool", dq_cmd_spool, BREAK_GLASS,
     "spool flush: publish the spooled events to deployq.events"},
    {"help", cmd_help, HELP, "the help of one verb: `deployq help VERB` = `deployq VERB --help`"},
    {"version", cmd_version, HELP, "print the version"},
};

static void usage(FILE *out)
{
    const char *group = NULL;

    fputs("Usage: deployq <verb> [options]\n"
          "\n"
          "deployq, the deploy control plane: CI submits signed deploy requests to Kafka,\n"
          "workers validate and execute them, every event lands in deployq.events.\n",
          out);
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (!group || strcmp(group, verbs[i].group) != 0) {
            group = verbs[i].group;
            fprintf(out, "\n%s:\n", group);
        }
        fprintf(out, "  %-9s %s\n", verbs[i].name, verbs[i].summary);
    }
    fputs("\n"
          "Run `deployq VERB --help` for a verb's options and exit status. Documentation:\n"
          "README.md, docs/.\n",
          out);
}

static const dq_verb *find_verb(const char *name)
{
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (strcmp(name, verbs[i].name) == 0)
            return &verbs[i];
    return NULL;
}

static int unknown_verb(const char *prefix, const char *name)
{
    fprintf(stderr, "deployq: %sunknown verb '%s'; `deployq --help` lists the verbs\n", prefix,
            name);
    return 2;
}

static int cmd_help(int argc, char **argv)
{
    const dq_verb *v;
    char *hargv[3] = {NULL, (char *)"--help", NULL};

    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    v = find_verb(argv[1]);
    if (!v)
        return unknown_verb("help: ", argv[1]);
    hargv[0] = argv[1];
    return v->fn(2, hargv);
}

static int cmd_version(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
        fputs("Usage: deployq version\n\nPrint the version of deployq.\n", stdout);
    else
        printf("deployq %s\n", DQ_VERSION);
    return 0;
}

int main(int argc, char **argv)
{
    const dq_verb *v;

    /* The CLI reports its failures itself, as one line (dq_cli_fail); library logs, such
     * as librdkafka's connection errors while a broker is down, would only repeat them
     * noisily. --log-level (or DEPLOYQ_LOG_LEVEL) turns them on. */
    dq_log_init("deployq", DQ_LOG_OFF, -1);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(1, argv + 1);
    v = find_verb(argv[1]);
    if (!v)
        return unknown_verb("", argv[1]);
    return v->fn(argc - 1, argv + 1);
}
