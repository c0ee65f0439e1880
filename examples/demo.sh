#!/usr/bin/env bash
# The walk-through `make demo` runs: start the file instance plugin, the vanilla flavor and
# the group controller; commit a group and watch it converge, heal, scale, roll a config
# change through and survive a restart of the controller; then destroy it. Everything
# lives in a throw-away INFRAKIT_HOME.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export INFRAKIT_HOME="$(mktemp -d /tmp/infrakit-demo.XXXXXX)"
export INFRAKIT_GROUP_POLL="${INFRAKIT_GROUP_POLL:-0.5}"
unset INFRAKIT_PLUGINS_DIR

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }
cleanup() {
    infrakit plugin stop group instance-file flavor-vanilla >/dev/null 2>&1 || true
    rm -rf "$INFRAKIT_HOME"
}
trap cleanup EXIT

# Wait until the group reports Converged (members match the spec, nothing in flight).
converged() {
    local deadline=$((SECONDS + 30))
    until infrakit group describe "$1" -o json | grep -q '"Converged": true'; do
        if [ "$SECONDS" -ge "$deadline" ]; then echo "group $1 did not converge" >&2; exit 1; fi
        sleep 0.2
    done
    run infrakit group describe "$1"
}

step "Start the plugins (each is its own process on a UNIX socket)"
run infrakit plugin start instance-file flavor-vanilla group
run infrakit plugin ls

step "Commit a group of 3: first --pretend, which changes nothing, then for real"
run infrakit group commit --pretend "$here/file/group.yml"
run infrakit group commit "$here/file/group.yml"
converged cattle

step "Destroy a member behind the group's back: the group replaces it"
victim="$(infrakit group describe cattle -q | head -n 1)"
run infrakit instance --name instance-file destroy "$victim"
converged cattle

step "Scale to 5 and roll new instance properties through, in one commit"
run infrakit group commit "$here/file/group-v2.yml"
converged cattle

step "Restart the group controller: the committed group is resumed from its store"
run infrakit plugin stop group
run infrakit plugin start group
run infrakit group ls
run infrakit group set-size cattle 2
converged cattle

step "Destroy the group: every member goes, then the plugins stop"
run infrakit group destroy cattle
run infrakit instance --name instance-file describe
run infrakit plugin stop group instance-file flavor-vanilla
