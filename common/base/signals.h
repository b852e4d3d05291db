/*
 * signals.h - SIGINT/SIGTERM become a stop flag that a loop polls.
 *
 * The handler does nothing but set a volatile sig_atomic_t: everything a stop involves
 * (leaving the consumer loop, closing the consumer, flushing the producer) happens in the
 * program's own loop, outside signal context and in order. That loop must wake up often
 * enough to see the flag: dq_consumer_run (kafka.h) polls with a short timeout for this.
 * SIGTERM is handled as well as SIGINT because that is what containers and systemd send.
 *
 * Signal dispositions belong to the process, so there is exactly one flag per process;
 * nothing here is per thread or per handle.
 */
#ifndef DQ_SIGNALS_H
#define DQ_SIGNALS_H

#include <signal.h>

/* Install handlers for SIGINT and SIGTERM that only set the returned flag to 1, without
 * SA_RESTART (a blocking call returns EINTR, so the loop sees the flag), and ignore
 * SIGPIPE (a peer that closes a socket gives EPIPE on write instead of killing us).
 * Returns the process-wide flag: the same pointer on every call, never NULL. The flag
 * starts at 0 and is never reset here; any thread may read it, and a program may set it
 * itself to stop its other loops. Replaces whatever handlers were installed before. */
volatile sig_atomic_t *dq_stop_flag_install(void);

#endif
