#!/usr/bin/env bash
# The README's grpcurl lines, against a running `truc demo`, each with the
# answer it must give. CI runs it with grpcurl 1.8.6, which speaks only
# server reflection v1alpha.
#
#   deploy/grpcurl.sh [DATA]     DATA: the demo's --data (default ./truc-data)
#
# GRPCURL names the grpcurl binary (default: grpcurl on PATH). Exits non-zero
# at the first answer that is not the expected one.
set -euo pipefail

data=${1:-truc-data}
grpcurl=${GRPCURL:-grpcurl}
pki=$data/pki

endpoint() { # the gRPC address of "hub" or of node $1, from demo.json
  python3 - "$data/demo.json" "$1" <<'PY'
import json, sys
demo = json.load(open(sys.argv[1]))
name = sys.argv[2]
if name == "hub":
    print(demo["hub"]["grpc"])
else:
    print(next(n["grpc"] for n in demo["nodes"] if n["id"] == name))
PY
}
hub=$(endpoint hub)
node=$(endpoint lgsp-langson)

# The operator's certificate, for the hub.
admin=(-cacert "$pki/ca.crt" -cert "$pki/admin-admin.crt" -key "$pki/admin-admin.key" -servername hub)
# Lạng Sơn's document system, for its node.
client=(-cacert "$pki/ca.crt" -cert "$pki/client-langson-dms.crt" -key "$pki/client-langson-dms.key" -servername lgsp-langson)

failures=0
expect() { # what, expected text (a line of the answer, or a fixed string), answer
  if grep -qF -- "$2" <<<"$3"; then
    echo "ok: $1"
  else
    echo "FAILED: $1: expected $2 in:" >&2
    echo "$3" >&2
    failures=$((failures + 1))
  fi
}
same() { # what, expected answer, answer
  if [ "$2" = "$3" ]; then
    echo "ok: $1"
  else
    printf 'FAILED: %s: expected\n%s\ngot\n%s\n' "$1" "$2" "$3" >&2
    failures=$((failures + 1))
  fi
}

# The services of the hub: its own, health and reflection, nothing else.
same "hub: grpcurl list" "grpc.health.v1.Health
grpc.reflection.v1.ServerReflection
grpc.reflection.v1alpha.ServerReflection
truc.v1.Admin
truc.v1.Audit
truc.v1.Hub
truc.v1.Reporting" "$("$grpcurl" "${admin[@]}" "$hub" list 2>&1 | sort)"

# The services of a node.
same "node: grpcurl list" "grpc.health.v1.Health
grpc.reflection.v1.ServerReflection
grpc.reflection.v1alpha.ServerReflection
truc.v1.Agency
truc.v1.Node" "$("$grpcurl" "${client[@]}" "$node" list 2>&1 | sort)"

# A service's methods and a message, described through reflection.
expect "hub: describe truc.v1.Reporting" "rpc GetStats" \
  "$("$grpcurl" "${admin[@]}" "$hub" describe truc.v1.Reporting 2>&1)"
expect "node: describe truc.v1.CallRequest" "bytes payload = 4;" \
  "$("$grpcurl" "${client[@]}" "$node" describe truc.v1.CallRequest 2>&1)"

# Health, per service.
expect "hub: health of truc.v1.Hub" '"status": "SERVING"' \
  "$("$grpcurl" "${admin[@]}" -d '{"service":"truc.v1.Hub"}' "$hub" grpc.health.v1.Health/Check 2>&1)"

# A data call as the province's document system (bytes are base64 in JSON).
payload=$(printf '%s' '{"id":"001089012345"}' | base64 | tr -d '\n')
expect "node: truc.v1.Agency/Call" '"receipt"' \
  "$("$grpcurl" "${client[@]}" -d "{\"client_agency\":\"000.00.00.H37\",\"service\":\"000.00.00.G22/citizen-lookup/v1\",\"content_type\":\"application/json\",\"payload\":\"$payload\"}" "$node" truc.v1.Agency/Call 2>&1)"

# The hub's counts, as the operator.
expect "hub: truc.v1.Reporting/GetStats" '"rows"' \
  "$("$grpcurl" "${admin[@]}" -d '{}' "$hub" truc.v1.Reporting/GetStats 2>&1)"

if [ "$failures" -ne 0 ]; then
  echo "$failures grpcurl check(s) failed" >&2
  exit 1
fi
echo "all grpcurl checks passed"
