#!/usr/bin/env bash
# Checks the observability assets: the alert rules with their unit tests
# (`promtool test rules`), and every dashboard query's PromQL syntax (each is
# turned into a recording rule that `promtool check rules` parses). Installs
# promtool from Debian's `prometheus` package when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v promtool >/dev/null 2>&1; then
  echo "check: installing promtool (Debian package prometheus)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

promtool check rules alerts.yml
promtool test rules alerts_test.yml

queries=$(mktemp --suffix=.yml)
trap 'rm -f "$queries"' EXIT
python3 - dashboard.json "$queries" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
rules = []
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        rules.append({"record": "dashboard:query_%d" % len(rules), "expr": target["expr"]})
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print("check: %d dashboard queries in %d panels" % (len(rules), len(dashboard["panels"])))
PY
promtool check rules "$queries"
