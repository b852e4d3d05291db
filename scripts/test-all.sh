#!/usr/bin/env bash
# test-all.sh: the README's second command, and what CI runs (.ci/run): the `full` tier of
# scripts/test.sh (installs what is missing, builds, and runs every test: both brokers,
# SASL/SCRAM, ASan/UBSan, fuzzing, fault injection). See scripts/test.sh --help for the
# quick and pr tiers and the DEPLOYQ_SKIP_* switches. Its last line is
# "N passed, N failed, N skipped" over all runs.
exec "$(dirname "$0")/test.sh" full "$@"
