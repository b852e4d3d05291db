#!/usr/bin/env bash
# tests/fuzz/seeds.sh - (re)make the seed corpora checked in under tests/fuzz/corpus/.
#
# Only needed when the inputs change (schemas corpus, example configuration, record
# layout); run.sh uses the checked-in files and never writes to them.
#   request/  every request document of tests/schema/corpus/request signed with the fuzz
#             key (out/seedgen), plus the signed wrappers of tests/schema/corpus/signed
#   event/    the envelope and per-type event documents of tests/schema/corpus
#   config/   docs/examples/deployq.yaml, tests/unit/data/*.yaml, the ```yaml blocks of
#             docs/configuration.md and docs/providers.md, and a few of our own
#   reglog/   registry logs written by the real writer (out/seedgen), in fuzz_reglog's
#             input layout
# Files named regress-* are inputs that once found a bug; this script keeps them.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
corpus=$here/corpus
schema_corpus=$root/tests/schema/corpus

"$here/build.sh"
# Everything is remade but the regression inputs (regress-*): those are findings of
# earlier runs, kept so every run replays them first.
[ ! -d "$corpus" ] || find "$corpus" -type f ! -name 'regress-*' -delete
mkdir -p "$corpus"/{request,event,config,reglog}

"$here/out/seedgen" request "$corpus/request" "$schema_corpus"/request/*.json
for f in "$schema_corpus"/signed/*.json; do
    cp "$f" "$corpus/request/wrapper-$(basename "$f")"
done

for f in "$schema_corpus"/envelope/*.json; do
    cp "$f" "$corpus/event/envelope-$(basename "$f")"
done
for d in "$schema_corpus"/events/*/; do
    t=$(basename "$d")
    for f in "$d"*.json; do
        cp "$f" "$corpus/event/$t-$(basename "$f")"
    done
done

cp "$root/docs/examples/deployq.yaml" "$corpus/config/example-deployq.yaml"
for f in "$root"/tests/unit/data/*.yaml; do
    [ -e "$f" ] && cp "$f" "$corpus/config/unit-$(basename "$f")"
done
for doc in configuration providers; do
    awk -v out="$corpus/config/doc-$doc-" '
        /^```yaml/ { n++; file = out n ".yaml"; inblock = 1; next }
        /^```/ { inblock = 0; next }
        inblock { print > file }' "$root/docs/$doc.md"
done
cat >"$corpus/config/secret-reference.yaml" <<'EOF'
redis:
  url: redis://:${FUZZ_SECRET}@127.0.0.1:6379/0
kafka:
  sasl.password: "${FUZZ_SECRET}"
  literal: $${NOT_A_REFERENCE}
EOF
cat >"$corpus/config/missing-variable.yaml" <<'EOF'
redis:
  url: redis://:${FUZZ_NOT_SET}@127.0.0.1:6379/0
EOF
cat >"$corpus/config/anchors-and-flow.yaml" <<'EOF'
base: &env {requires: staging, approval: required}
services:
  api:
    environments:
      staging: {}
      production: *env
keys: [{id: a, public_key: "rQKhOKJbc80BgVmbxIJeq4NjbAQOZmp4uABJ6k6Q+/M="}]
EOF
printf 'kafka:\n  a: 1\n---\nkafka:\n  b: 2\n' >"$corpus/config/two-documents.yaml"
: >"$corpus/config/empty.yaml"

tmp=$("$here/out/seedgen" reglog "$corpus/reglog")
rm -rf "$tmp"

for t in request event config reglog; do
    printf '%s: %s files, %s bytes\n' "$t" "$(find "$corpus/$t" -type f | wc -l)" \
        "$(cat "$corpus/$t"/* | wc -c)"
done
