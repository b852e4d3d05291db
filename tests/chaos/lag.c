/*
 * lag.c - a consumer group's lag per partition, for tests/chaos/flood.sh.
 *
 * Neither kcat nor the embedded broker has a "describe consumer group", and the Kafka
 * tools need a JVM; this asks librdkafka the two numbers that make lag: the group's
 * committed offset (rd_kafka_committed, which does not join the group, so the workers
 * being measured see no rebalance) and the partition's high watermark. Works the same on
 * the embedded broker and on a real Kafka.
 *
 *   lag BROKERS GROUP TOPIC
 *
 * Prints one line per partition, "partition P committed C high H lag L" (a group with
 * nothing committed counts as lag H), then "total lag N". Exit 0, or 1 on an error.
 * Built by flood.sh with: cc -O2 -o lag lag.c -lrdkafka
 */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    char err[512];
    if (argc != 4) {
        fprintf(stderr, "usage: lag BROKERS GROUP TOPIC\n");
        return 1;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", argv[2], err, sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "lag: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (rk == NULL) {
        fprintf(stderr, "lag: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    int rc = 1;
    rd_kafka_topic_partition_list_t *parts = NULL;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, argv[3], NULL);
    if (rkt == NULL || rd_kafka_metadata(rk, 0, rkt, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "lag: no metadata for %s\n", argv[3]);
        goto done;
    }
    parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, argv[3], md->topics[0].partitions[i].id);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, parts, 10000);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "lag: committed offsets: %s\n", rd_kafka_err2str(e));
        goto done;
    }
    int64_t total = 0;
    for (int i = 0; i < parts->cnt; i++) {
        int64_t lo = 0, hi = 0;
        e = rd_kafka_query_watermark_offsets(rk, argv[3], parts->elems[i].partition, &lo, &hi, 10000);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "lag: watermarks of %d: %s\n", parts->elems[i].partition, rd_kafka_err2str(e));
            goto done;
        }
        int64_t committed = parts->elems[i].offset;
        /* Nothing committed yet: everything from the low watermark is still to read. */
        int64_t lag = committed < 0 ? hi - lo : hi - committed;
        total += lag;
        printf("partition %d committed %" PRId64 " high %" PRId64 " lag %" PRId64 "\n",
               parts->elems[i].partition, committed, hi, lag);
    }
    printf("total lag %" PRId64 "\n", total);
    rc = 0;
done:
    if (parts != NULL)
        rd_kafka_topic_partition_list_destroy(parts);
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    if (rkt != NULL)
        rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return rc;
}
