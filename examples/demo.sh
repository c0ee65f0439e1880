#!/usr/bin/env bash
# The walk-through `make demo` runs: start the file instance plugin and the vanilla flavor,
# let the flavor prepare instance specs, provision three instances, inspect, label and
# destroy them, and stop the plugins. Everything lives in a throw-away INFRAKIT_HOME.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export INFRAKIT_HOME="$(mktemp -d /tmp/infrakit-demo.XXXXXX)"
unset INFRAKIT_PLUGINS_DIR

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }
cleanup() {
    infrakit plugin stop instance-file flavor-vanilla >/dev/null 2>&1 || true
    rm -rf "$INFRAKIT_HOME"
}
trap cleanup EXIT

step "Start the plugins (each is its own process on a UNIX socket)"
run infrakit plugin start instance-file flavor-vanilla
run infrakit plugin ls

step "Validate the flavor's properties for a group of 3"
run infrakit flavor --name flavor-vanilla validate "$here/file/flavor.yml" --size 3

step "Let the flavor prepare an instance spec, then provision 3 instances from it"
for seq in 0 1 2; do
    infrakit flavor --name flavor-vanilla prepare "$here/file/flavor.yml" \
        "$here/file/instance.json" --size 3 --group web --sequence "$seq" -o json \
        | infrakit instance --name instance-file provision - | sed 's/^/provisioned /'
done
run infrakit instance --name instance-file describe

step "Label one instance and select by tag"
first="$(infrakit instance --name instance-file describe -q | head -n 1)"
run infrakit instance --name instance-file label "$first" role=leader
run infrakit instance --name instance-file describe --tags role=leader --properties

step "Ask the flavor about its health"
run infrakit flavor --name flavor-vanilla healthy "$here/file/flavor.yml" --id "$first"

step "Destroy every instance"
# shellcheck disable=SC2046
run infrakit instance --name instance-file destroy $(infrakit instance --name instance-file describe -q)
run infrakit instance --name instance-file describe

step "Stop the plugins: sockets and pid files are removed"
run infrakit plugin stop instance-file flavor-vanilla
run infrakit plugin ls
