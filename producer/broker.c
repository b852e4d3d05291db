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
#include "stack.h"
#include "util.h"

static const char broker_usage[] =
    "Usage: deployq broker [--partitions N] [--brokers N] [--address-file FILE]\n"
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
    "  -b, --brokers N        brokers in the cluster (default 1)\n"
    "  -a, --address-file F   where to write the bootstrap address\n"
    "  -h, --help             this help\n";

int dq_cmd_broker(int argc, char **argv)
{
    static const struct option opts[] = {
        {"partitions", required_argument, NULL, 'p'},
        {"brokers", required_argument, NULL, 'b'},
        {"address-file", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    dq_cli cli = {.verb = "broker"};
    long long partitions = DQ_PARTITIONS_DEFAULT, nbrokers = 1;
    const char *addr_file = NULL;
    char *dir = NULL, pathbuf[4200], err[512], *line = NULL;
    volatile sig_atomic_t *stop;
    dq_mock_broker *mb;
    FILE *f;
    int c, dirfd = -1, written;

    optind = 1;
    while ((c = getopt_long(argc, argv, "p:b:a:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (dq_parse_int(optarg, 1, 64, &partitions) != 0)
                return dq_cli_usage(&cli, broker_usage, 2, "--partitions must be 1..64");
            break;
        case 'b':
            if (dq_parse_int(optarg, 1, 5, &nbrokers) != 0)
                return dq_cli_usage(&cli, broker_usage, 2, "--brokers must be 1..5");
            break;
        case 'a':
            addr_file = optarg;
            break;
        case 'h':
            return dq_cli_usage(&cli, broker_usage, 0, NULL);
        default:
            return dq_cli_usage(&cli, broker_usage, 2, NULL);
        }
    }
    if (optind < argc)
        return dq_cli_usage(&cli, broker_usage, 2, "unexpected argument");
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
