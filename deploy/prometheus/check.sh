#!/usr/bin/env bash
# Checks the Prometheus config, the alert rules and their unit tests with
# promtool (and, if python3 is there, that the Grafana dashboard is valid JSON).
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v promtool >/dev/null 2>&1; then
    echo "check.sh: promtool not found (Debian/Ubuntu: apt-get install prometheus)" >&2
    exit 1
fi

echo "== $(promtool --version 2>&1 | head -n 1)"

echo "== promtool check config prometheus.yml"
promtool check config prometheus.yml

echo "== promtool check rules rules.yml alerts.yml"
promtool check rules rules.yml alerts.yml

echo "== promtool test rules rules_test.yml alerts_test.yml"
promtool test rules rules_test.yml alerts_test.yml

dashboard=../grafana/truc.json
if command -v python3 >/dev/null 2>&1; then
    echo "== python3 -m json.tool $dashboard"
    python3 -m json.tool "$dashboard" >/dev/null
    echo "  SUCCESS: valid JSON"
else
    echo "== skipped $dashboard (python3 not found)"
fi

echo "== all checks passed"
