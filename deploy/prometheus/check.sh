#!/usr/bin/env bash
# Validates the Prometheus files of this folder with promtool:
#   - prometheus.yml is a valid configuration (and loads alerts.yaml),
#   - alerts.yaml holds valid alerting rules,
#   - alerts_test.yaml, the unit tests of every alert, passes.
# When promtool is missing it is installed from Debian's `prometheus` package
# (about 19 MB to download, a few seconds; the package's daemon is not
# started where policy-rc.d forbids it, as in containers) if this runs as
# root with apt-get; otherwise it fails and says what to install.
#
# Usage: deploy/prometheus/check.sh   (from any directory)
set -euo pipefail

cd "$(dirname "$0")"

if ! command -v promtool >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "promtool not found: installing Debian's prometheus package"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	fi
	if ! command -v promtool >/dev/null 2>&1; then
		echo "promtool is needed to check the alert rules: install promtool (apt-get install prometheus)" >&2
		exit 1
	fi
fi

promtool check config prometheus.yml
promtool check rules alerts.yaml
promtool test rules alerts_test.yaml
