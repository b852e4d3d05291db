#!/usr/bin/env bash
# SASL/SCRAM-SHA-512 over TLS from deployq's own processes, on a real Apache Kafka 3.9.1
# with ACLs: the checks of 0601 (secure_kafka_checks, helpers-security.sh), with the
# configuration saying `sasl.mechanisms: SCRAM-SHA-512` and kcat logging in with SCRAM too.
# The right credentials carry a request end to end; a wrong password, plaintext and a
# wrong CA are refused with the cause on one line; the CI principal cannot write
# deployq.events; no password leaks into a log or an event.
#
# Kafka 3.9.1 because the librdkafka deployq links (2.0.2 on Debian 12) repeats the client
# nonce in its SCRAM client-final-message, which Kafka 3.9 accepts and Kafka 4 refuses
# (0601 shows the refusal). The broker offers SCRAM-SHA-512 alone, so a client that gets
# in used it; PLAIN is refused here to show that.
#
# Brings its own broker (suite 'local'); skipped (77) where Java is missing. The first run
# on a machine resolves the 3.9.1 jars from Maven Central (scripts/kafka.sh fetch).
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-security.sh"

export KAFKA_VERSION=3.9.1
secure_kafka_checks SCRAM-SHA-512

# The broker takes SCRAM-SHA-512 only: the successes above were SCRAM, not a fallback.
expect_refused plain-offered 'Unsupported SASL mechanism: broker.s supported mechanisms: SCRAM-SHA-512 ' \
    -X sasl.mechanisms=PLAIN
grep -q 'Invalid client nonce' "$KDIR/kafka.log" &&
    fail "Kafka $KAFKA_VERSION logged an invalid client nonce: the SCRAM exchange was not clean"

secure_kafka_finish
echo "ok"
