/*
 * signals.c - SIGINT/SIGTERM become a stop flag (see signals.h).
 *
 * A worker's loop polls Kafka with a short timeout and checks this flag between polls, so
 * the handler does nothing but set it: everything else (closing the consumer, flushing the
 * producer) happens in the loop, outside signal context, in order. SIGTERM matters as much
 * as SIGINT because that is what containers and systemd send.
 */
#include "signals.h"

#include <signal.h>
#include <string.h>

/* The one flag of the process: signal dispositions are process-wide anyway. */
static volatile sig_atomic_t stop_flag;

static void on_stop_signal(int signo)
{
    (void)signo;
    stop_flag = 1;
}

volatile sig_atomic_t *dq_stop_flag_install(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a blocking call should return EINTR so the loop sees the flag. */
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* A peer that closes a socket must give EPIPE on write, not kill the process. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);

    return &stop_flag;
}
