/*
 * mockbroker.c - the embedded broker: librdkafka's mock cluster (see mockbroker.h).
 *
 * `deployq broker`, `deployq up` and the tests need a Kafka that starts in milliseconds
 * with nothing installed. librdkafka ships one: a mock cluster that speaks the real wire
 * protocol on loopback TCP ports, so every client (ours, kcat, a real Kafka client) talks
 * to it unchanged. It is hosted by an otherwise idle producer handle. Its limits (random
 * ports, RAM only, slow rebalances) are listed in mockbroker.h.
 */
#include "mockbroker.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h> /* must follow rdkafka.h */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "kafka.h"

struct dq_mock_broker {
    rd_kafka_t *rk; /* hosts the cluster; the cluster dies with it */
    rd_kafka_mock_cluster_t *cluster;
    char *bootstraps;
};

dq_mock_broker *dq_mock_broker_new(int n_brokers, int partitions, char *err, size_t errlen)
{
    const char *topics[] = {DQ_TOPIC_REQUESTS, DQ_TOPIC_EVENTS, DQ_TOPIC_DEAD};
    dq_mock_broker *b = NULL;
    rd_kafka_conf_t *conf = NULL;
    char why[512], num[16];
    int replicas;

    if (n_brokers <= 0)
        n_brokers = 1;
    if (partitions <= 0)
        partitions = DQ_PARTITIONS_DEFAULT;
    replicas = n_brokers < 3 ? n_brokers : 3;

    b = calloc(1, sizeof *b);
    conf = rd_kafka_conf_new();
    if (!b || !conf) {
        snprintf(err, errlen, "mock broker: out of memory");
        goto fail;
    }
    dq_kafka_conf_set_logging(conf);
    /* test.mock.num.brokers makes this handle create the cluster and point its own
     * bootstrap.servers at it, so it needs no broker address of its own. */
    snprintf(num, sizeof num, "%d", n_brokers);
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", num, why, sizeof why) !=
        RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "mock broker: %s", why);
        goto fail;
    }
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!b->rk) {
        snprintf(err, errlen, "mock broker: %s", why);
        goto fail;
    }
    conf = NULL; /* now owned by b->rk */
    b->cluster = rd_kafka_handle_mock_cluster(b->rk);
    if (!b->cluster) {
        snprintf(err, errlen, "mock broker: librdkafka created no mock cluster");
        goto fail;
    }
    b->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(b->cluster));
    if (!b->bootstraps) {
        snprintf(err, errlen, "mock broker: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++) {
        /* dead letters are rare and read in order: one partition */
        int n = strcmp(topics[i], DQ_TOPIC_DEAD) == 0 ? 1 : partitions;
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(b->cluster, topics[i], n, replicas);
        if (e) {
            snprintf(err, errlen, "mock broker: topic %s: %s", topics[i], rd_kafka_err2str(e));
            goto fail;
        }
    }
    return b;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    dq_mock_broker_free(b);
    return NULL;
}

const char *dq_mock_broker_bootstraps(const dq_mock_broker *b)
{
    return b ? b->bootstraps : NULL;
}

void dq_mock_broker_free(dq_mock_broker *b)
{
    if (!b)
        return;
    if (b->rk)
        rd_kafka_destroy(b->rk); /* also destroys the cluster it hosts */
    free(b->bootstraps);
    free(b);
}
