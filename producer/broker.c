/*
 * broker.c - `deployq broker`: only the embedded Kafka broker (librdkafka's mock
 * cluster), for running workers by hand or for tests. It listens on random loopback
 * ports (the mock cannot be told a port), so the address is printed and written to a
 * file. Everything is in RAM: stopping it forgets every message.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kafka.h"
#include "log.h"
#include "mockbroker.h"
#include "signals.h"
#include "stack.h"
#include "util.h"

static const char broker_usage[] =
    "Usage: deployq broker [--partitions N] [--count N] [--address-file FILE]\n"
    "\n"
    "Run librdkafka's mock Kafka cluster on random loopback ports until Ctrl-C or\n"
    "SIGTERM. The topics deployq.requests, deployq.events (N partitions each) and\n"
    "deployq.dead are created. The bootstrap address is printed on stdout and written to\n"
    "FILE (default: <state dir>/broker.addr, replaced atomically, mode 0600; a state\n"
    "directory that is not yours alone is refused).\n"
    "\n"
    "Caveats of the mock: random ports only, messages kept in RAM only (about 5 MiB per\n"
    "partition), no SASL/TLS, and consumer-group rebalances wait a whole\n"
    "session.timeout.ms (use a short one, e.g. -X session.timeout.ms=6000, in workers).\n"
    "\n"
    "  -p, --partitions N     partitions of requests and events (default 6)\n"
    "  -n, --count N          brokers in the cluster, 1..5 (default 1); its old name,\n"
    "                         --brokers N, still works in this release, with a warning\n"
    "  -a, --address-file F   where to write the bootstrap address\n"
    "  -h, --help             this help\n";

/* --brokers N: what --count was called until it clashed with every other verb's --brokers
 * LIST. Taken for one more release when it is a bare number, with a note. */
static int deprecated_brokers(void *dst, const char *arg)
{
    if (dq_parse_int(arg, 1, 5, dst) != 0)
        return -1;
    fprintf(stderr, "deployq: broker: --brokers N is deprecated (it goes in the next release): "
                    "use --count %s\n", arg);
    return 0;
}

int dq_cmd_broker(int argc, char **argv)
{
    long long partitions = DQ_PARTITIONS_DEFAULT, nbrokers = 1;
    const char *addr_file = NULL;
    dq_cli cli = {.verb = "broker", .usage = broker_usage};
    const dq_cli_opt opts[] = {
        DQ_OPT_INT('p', "partitions", &partitions, 1, 64, "--partitions must be 1..64"),
        DQ_OPT_INT('n', "count", &nbrokers, 1, 5, "--count must be 1..5"),
        DQ_OPT_PARSE('b', "brokers", &nbrokers, deprecated_brokers,
                     "--brokers is a Kafka bootstrap list in the other verbs; the number of "
                     "brokers is --count N (1..5)"),
        DQ_OPT_STRING('a', "address-file", &addr_file),
        DQ_OPT_END,
    };
    char *dir = NULL, pathbuf[4200], err[512], *line = NULL;
    volatile sig_atomic_t *stop;
    dq_mock_broker *mb;
    FILE *f;
    int rc, dirfd = -1, written;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    if (!addr_file) {
        /* The default file goes under the checked state directory's descriptor; a FILE
         * named on the command line is the user's own choice and written as given. */
        dirfd = dq_stack_dir_open(1, &dir, err, sizeof err);
        if (dirfd < 0) {
            dq_cli_fail(&cli, "%s", err);
            return 1;
        }
        snprintf(pathbuf, sizeof pathbuf, "%s/broker.addr", dir);
        addr_file = pathbuf;
    }
    stop = dq_stop_flag_install();
    mb = dq_mock_broker_new((int)nbrokers, (int)partitions, err, sizeof err);
    if (!mb) {
        dq_cli_fail(&cli, "%s", err);
        goto fail;
    }
    if (dirfd >= 0) {
        const char *bs = dq_mock_broker_bootstraps(mb);
        size_t n = strlen(bs);

        line = malloc(n + 1);
        if (line) {
            memcpy(line, bs, n);
            line[n] = '\n';
        }
        written = line && dq_stack_replace_file(dirfd, "broker.addr", line, n + 1) == 0;
    } else {
        f = fopen(addr_file, "w");
        written = f && fprintf(f, "%s\n", dq_mock_broker_bootstraps(mb)) >= 0;
        if (f && fclose(f) != 0)
            written = 0;
    }
    if (!written) {
        dq_cli_fail(&cli, "cannot write %s: %s", addr_file, strerror(errno));
        dq_mock_broker_free(mb);
        goto fail;
    }
    printf("%s\n", dq_mock_broker_bootstraps(mb));
    fflush(stdout);
    fprintf(stderr, "deployq: broker: listening on %s (address in %s); Ctrl-C stops it\n",
            dq_mock_broker_bootstraps(mb), addr_file);
    while (!*stop)
        dq_sleep_ms(100);
    if (dirfd >= 0)
        unlinkat(dirfd, "broker.addr", 0);
    else
        unlink(addr_file);
    dq_mock_broker_free(mb);
    free(line);
    free(dir);
    if (dirfd >= 0)
        close(dirfd);
    return 0;
fail:
    free(line);
    free(dir);
    if (dirfd >= 0)
        close(dirfd);
    return 1;
}
