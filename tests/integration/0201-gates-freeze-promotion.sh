#!/usr/bin/env bash
# Promotion and freeze gates: a production deploy of a version not verified in staging is
# rejected (promotion) and so is one inside a freeze window (freeze), both reasons at
# once; once deploy.verified for that version is on deployq.events (injected with kcat, as
# the monitor would) only the freeze remains; --override-freeze passes and records the
# reason in deploy.validated. promotion_needs: succeeded counts deploy.succeeded instead.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-gates.sh"

start_redis
start_broker
write_config '  shop:
    environments:
      staging: {}
      production:
        requires: staging
        freeze:
          - {from: "2020-01-01T00:00:00Z", until: "2099-01-01T00:00:00Z", reason: launch week}
      canary:
        requires: staging
        promotion_needs: succeeded'
start_validator a

# 1. Neither verified nor outside the freeze: both reasons.
id=$(submit --service shop --env production --version v1) || fail "submit failed"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for $id"
assert_eq "$(reason_codes "$ev")" "freeze,promotion" "reason codes"
assert_eq "$(jq -r '.data.reasons[0].message' <<<"$ev")" \
    "shop/production is frozen until 2099-01-01T00:00:00.000Z (launch week); pass --override-freeze REASON to deploy anyway" \
    "freeze message"
assert_eq "$(jq -r '.data.reasons[1].message' <<<"$ev")" \
    "version v1 has not been verified in staging (production requires: staging)" "promotion message"

# 2. v1 verified in staging (as the monitor would say): promotion passes, freeze holds.
inject deploy.verified shop staging v1 "$(new_uuid)" "$verified_data" >/dev/null
wait_recorded deployq:verified:shop:staging:v1
id=$(submit --service shop --env production --version v1) || fail "submit failed"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for $id"
assert_eq "$(reason_codes "$ev")" "freeze" "only the freeze remains"

# 3. --override-freeze: validated, the reason recorded.
id=$(submit --service shop --env production --version v1 --override-freeze "hotfix INC-42") || fail "submit failed"
ev=$(wait_event "$id" deploy.validated 60) || fail "no deploy.validated for $id"
assert_eq "$(jq -r .data.override_freeze.reason <<<"$ev")" "hotfix INC-42" "override reason"
# A version verified elsewhere does not count.
id=$(submit --service shop --env production --version v9 --override-freeze "hotfix") || fail "submit failed"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for $id"
assert_eq "$(reason_codes "$ev")" "promotion" "v9 unverified"

# 4. promotion_needs: succeeded.
id=$(submit --service shop --env canary --version v2) || fail "submit failed"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for $id"
assert_eq "$(jq -r '.data.reasons[0].message' <<<"$ev")" \
    "version v2 has not been deployed successfully in staging (canary requires: staging)" "succeeded message"
inject deploy.succeeded shop staging v2 "$(new_uuid)" "$(succeeded_data railway d-1)" >/dev/null
wait_recorded deployq:succeeded:shop:staging:v2
id=$(submit --service shop --env canary --version v2) || fail "submit failed"
wait_event "$id" deploy.validated 60 >/dev/null || fail "canary v2 not validated"

# Every event on the topic is valid against schemas/.
events | schema_check >/dev/null || fail "events not valid against schemas/"
echo ok
