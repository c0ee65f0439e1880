#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real (as root only; elsewhere it
# says what is missing and the tests that need it skip, or fail under
# INFRAKIT_REQUIRE_ENGINES=1).
set -euo pipefail

packages=(curl)
missing=()
for pkg in "${packages[@]}"; do
    command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "not installed (tests that need them will skip): ${missing[*]}" >&2
fi
