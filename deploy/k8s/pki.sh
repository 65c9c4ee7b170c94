#!/usr/bin/env bash
# Writes what kustomization.yaml packs into Secrets and ConfigMaps, beside
# it: a development CA with the hub's, node vpcp's and the readiness
# probe's certificates (pki/), and one audit signing key per hub replica
# (keys/hub-0.key ...). In production the certificates come from the
# agencies' CA instead; keep the same file names. Never overwrites.
set -euo pipefail
cd "$(dirname "$0")"
truc=${TRUC:-truc}
"$truc" pki init --dir pki --node vpcp --node lgsp-langson --client vpcp-dms --client langson-dms
# The readiness probe's certificate: an operator's (truc://admin/probe).
"$truc" pki issue --dir pki --role admin --name probe
for i in 0 1 2; do
  "$truc" pki audit-key --dir keys --name "hub-$i"
done
