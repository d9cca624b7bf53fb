#!/usr/bin/env bash
# Debian packages the test suite needs besides the Slurm cluster's own (see slurm-cluster-up.sh).
set -euo pipefail
missing=()
for package in chromium; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
