/*
 * mockbroker.h - the embedded broker: librdkafka's mock cluster, for `deployq broker`,
 * `deployq up` and the tests.
 *
 * librdkafka's mock cluster speaks the real wire protocol, so clients cannot tell it from
 * Kafka, but it is a test double with limits the user must know:
 *   - it listens on random loopback ports only (a new port on every start), so clients
 *     learn the address from dq_mock_broker_bootstraps(), not from a fixed config;
 *   - it keeps everything in RAM: topics, messages and committed offsets are gone when it
 *     stops (production points kafka.bootstrap.servers at a real cluster);
 *   - a group rebalance waits for every known member to rejoin or for a whole
 *     session.timeout.ms, so a consumer joining or leaving can stall the group for that
 *     long: keep session.timeout.ms small (e.g. 6000, heartbeat.interval.ms 500) against it.
 *
 * The cluster is hosted by an otherwise idle librdkafka producer handle inside this
 * process and runs on librdkafka's threads: it serves clients only while the process
 * lives and until dq_mock_broker_free().
 */
#ifndef DQ_MOCKBROKER_H
#define DQ_MOCKBROKER_H

#include <stddef.h>

typedef struct dq_mock_broker dq_mock_broker;

/* Start a mock cluster of n_brokers (<= 0: 1) on random loopback ports and create the
 * deployq topics in it: requests and events with `partitions` partitions (<= 0:
 * DQ_PARTITIONS_DEFAULT of kafka.h), dead with 1, each with min(n_brokers, 3) replicas.
 * The caller frees the result with dq_mock_broker_free(). NULL with "mock broker: <reason>"
 * in err. */
dq_mock_broker *dq_mock_broker_new(int n_brokers, int partitions, char *err, size_t errlen);

/* "127.0.0.1:port,...": the value for kafka.bootstrap.servers. Owned by b, valid until
 * dq_mock_broker_free(b). NULL when b is NULL. */
const char *dq_mock_broker_bootstraps(const dq_mock_broker *b);

/* Stop the cluster (its clients see the broker go away) and free. Everything it held is
 * lost. NULL is a no-op. */
void dq_mock_broker_free(dq_mock_broker *b);

#endif
