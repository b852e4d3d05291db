#!/usr/bin/python3
"""flood_gen.py - N deploy requests for tests/chaos/flood.sh, valid and invalid mixed.

Signs like `deployq submit` (docs/architecture.md, "Requests and signatures": Ed25519 over
the exact bytes of the inner request, carried as a string in the signed wrapper), with
Debian's python3-cryptography, about a thousand times faster than one `deployq submit
--dry-run` process per request. Output: one "service/environment<TAB>value" line per
request, for `kcat -P -K '\\t'`, and a summary of the mix on stderr.

  flood_gen.py KEY.pem KEY_ID N SEED > lines

The mix (drawn with random.Random(SEED)):
  valid       signed, known target, fresh nonce                      -> deploy.validated
  badsig      one byte of the signature changed                      -> deploy.rejected
  unknown     signed, a service the configuration does not list      -> deploy.rejected
  replay      an earlier valid request again (same nonce)            -> deploy.rejected
  stale       signed, issued two days ago                            -> deploy.rejected
  schema      signed, no "version"                                   -> deploy.rejected
  oversize    signed, a 5 KiB requested_by (above max_request_bytes) -> deploy.rejected
  garbage     not JSON at all                                        -> deploy.rejected
"""

import base64
import json
import random
import sys
import time
import uuid

from cryptography.hazmat.primitives.serialization import load_pem_private_key

MIX = [("valid", 60), ("badsig", 8), ("unknown", 6), ("replay", 6), ("stale", 5), ("schema", 5),
       ("oversize", 5), ("garbage", 5)]
TARGETS = [("api", "staging"), ("api", "production"), ("web", "staging"), ("web", "production")]


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def main():
    key_path, key_id, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with open(key_path, "rb") as f:
        key = load_pem_private_key(f.read(), password=None)
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
    now = time.time()
    counts = {}
    valid_lines = []
    out = sys.stdout

    def signed(req):
        text = json.dumps(req, separators=(",", ":"))
        sig = base64.b64encode(key.sign(text.encode())).decode()
        return {"schema": "deployq.signed/v1", "key_id": key_id, "alg": "ed25519", "signature": sig,
                "request": text}

    for i in range(n):
        kind = rng.choice(kinds)
        if kind == "replay" and not valid_lines:
            kind = "valid"
        counts[kind] = counts.get(kind, 0) + 1
        svc, env = rng.choice(TARGETS)
        if kind == "replay":
            out.write(rng.choice(valid_lines))
            continue
        if kind == "garbage":
            out.write("%s/%s\tnot json %d {\n" % (svc, env, i))
            continue
        req = {"schema": "deployq.request/v1", "deployment_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
               "service": "nosuch" if kind == "unknown" else svc, "environment": env,
               "version": "v%d" % i, "strategy": "rolling", "nonce": "%032x" % rng.getrandbits(128),
               "issued_at": rfc3339(now - 2 * 86400 if kind == "stale" else now)}
        if kind == "schema":
            del req["version"]
        if kind == "oversize":
            req["requested_by"] = "x" * 5000
        doc = signed(req)
        if kind == "badsig":
            raw = bytearray(base64.b64decode(doc["signature"]))
            raw[rng.randrange(len(raw))] ^= 0x01
            doc["signature"] = base64.b64encode(bytes(raw)).decode()
        line = "%s/%s\t%s\n" % (req["service"], env, json.dumps(doc, separators=(",", ":")))
        if kind == "valid" and len(valid_lines) < 1000:
            valid_lines.append(line)
        out.write(line)
    print(json.dumps(counts, sort_keys=True), file=sys.stderr)


if __name__ == "__main__":
    main()
