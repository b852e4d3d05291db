#!/usr/bin/env bash
# quickstart.sh: the README's first command. Installs what is missing, builds, and runs
# `deployq up --demo`: the whole stack on this machine (embedded Kafka, Redis, every
# worker), a demo service and a local provider; a good version deployed and verified,
# then a bad one whose failing health checks are detected and rolled back automatically,
# narrated step by step with the evidence and the MTTR. The demo stops everything it
# started; this script exits with its status (0: the rollback happened).
set -euo pipefail
cd "$(dirname "$0")/.."

[ -n "${DEPLOYQ_SKIP_INSTALL:-}" ] || scripts/install-deps.sh
scripts/build.sh build
DEPLOYQ=$PWD/build/producer/deployq

# A state directory of its own, so a stack already running here is not in the way.
state=$(mktemp -d /tmp/deployq-quickstart.XXXXXX)
export DEPLOYQ_STATE_DIR=$state

echo
echo "\$ deployq up --demo"
rc=0
"$DEPLOYQ" up --demo || rc=$?
echo
if [ "$rc" -eq 0 ]; then
    echo "Again: $DEPLOYQ up --demo"
    echo "The stack for your own services: $DEPLOYQ up --config deployq.yaml (README, \"Using it\")"
else
    echo "The demo did not finish (exit $rc); the worker logs are in $state/logs/"
fi
exit "$rc"
