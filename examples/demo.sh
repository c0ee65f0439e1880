#!/usr/bin/env bash
# The walk-through `make demo` runs, on this machine alone (no Docker, no etcd): start the
# process instance plugin, the vanilla flavor and the group controller; commit a group of 3
# local web servers with an HTTP health check; kill one with SIGKILL and watch it replaced;
# scale to 5; roll a config change through; destroy the group and stop the plugins.
# Everything lives in a throw-away INFRAKIT_HOME.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export INFRAKIT_HOME="$(mktemp -d /tmp/infrakit-demo.XXXXXX)"
export INFRAKIT_GROUP_POLL="${INFRAKIT_GROUP_POLL:-0.5}"
unset INFRAKIT_PLUGINS_DIR

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# Members are processes in sessions of their own: they outlive the plugins by design, so
# whatever happened, the demo destroys them before it stops the plugins, and then checks
# that none is left (each has the plugin's environment: this INFRAKIT_HOME and an instance
# ID). One that is left is named, killed with its process group, and the demo fails.
members_left() {
    python3 - "$INFRAKIT_HOME" <<'EOF'
import os, signal, sys
home = f"INFRAKIT_HOME={sys.argv[1]}".encode()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        continue
    iid = [v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"INFRAKIT_INSTANCE_ID=")]
    if home in env and iid:
        print(f"  pid {pid} instance {iid[0]}: {cmd}")
        try:
            os.killpg(os.getpgid(int(pid)), signal.SIGKILL)
        except OSError:
            pass
EOF
}
cleanup() {
    local status=$? left
    infrakit group destroy web >/dev/null 2>&1 || true
    infrakit plugin stop --force group >/dev/null 2>&1 || true
    # members the group could not destroy (its plugin died, say): one by one
    for id in $(infrakit instance --name instance-process describe -q 2>/dev/null); do
        infrakit instance --name instance-process destroy "$id" >/dev/null 2>&1 || true
    done
    infrakit plugin stop --force instance-process flavor-vanilla >/dev/null 2>&1 || true
    left="$(members_left)"
    if [ -n "$left" ]; then
        printf 'member processes outlived the demo (now killed):\n%s\n' "$left" >&2
        status=1
    fi
    rm -rf "$INFRAKIT_HOME"
    exit "$status"
}
trap cleanup EXIT

# A fact about a member, from the instance plugin's description of it.
fact() {
    infrakit instance --name instance-process describe --properties -o json |
        python3 -c 'import json, sys
print(next(d["Properties"][sys.argv[2]] for d in json.load(sys.stdin) if d["ID"] == sys.argv[1]))' "$1" "$2"
}
# What a member serves on its port.
page() {
    python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())' "$1"
}
show() { run infrakit group describe web -v; }
# Wait until the group has converged with this many members.
converged() {
    local deadline=$((SECONDS + 60))
    until [ "$(infrakit group describe web -q | wc -l)" -eq "$1" ] &&
          infrakit group describe web -o json | grep '"Converged": true' >/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "group web did not converge" >&2; exit 1; }
        sleep 0.1
    done
}

step "Start the plugins (each is its own process on a UNIX socket)"
run infrakit plugin start instance-process flavor-vanilla group
run infrakit plugin ls

step "Commit a group of 3 web servers; --wait shows progress until all are healthy"
run infrakit group commit --pretend "$here/process/group.yml"
run infrakit group commit --wait --wait-timeout 60 "$here/process/group.yml"
show
first="$(infrakit group describe web -q | sed -n 1p)"  # reads all: no SIGPIPE
port="$(fact "$first" Ports | python3 -c 'import ast, sys; print(ast.literal_eval(sys.stdin.read())["http"])')"
printf '$ GET http://127.0.0.1:%s/\n' "$port"
page "http://127.0.0.1:$port/"

step "Kill a member with SIGKILL behind the group's back: the group replaces it"
pid="$(fact "$first" PID)"
run kill -9 "$pid"
started="$(date +%s.%N)"
until ! infrakit group describe web -q | grep -x "$first" >/dev/null; do sleep 0.05; done
converged 3
printf '%s (pid %s) is gone; its replacement was healthy %s s after the kill\n' \
    "$first" "$pid" "$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")"
show

step "Scale to 5"
run infrakit group set-size web 5
converged 5
show

step "Roll a config change through (version 2 of the page), one surge member at a time"
run infrakit group commit --wait --wait-timeout 120 "$here/process/group-v2.yml"
newest="$(infrakit group describe web -q | tail -n 1)"
port="$(fact "$newest" Ports | python3 -c 'import ast, sys; print(ast.literal_eval(sys.stdin.read())["http"])')"
printf '$ GET http://127.0.0.1:%s/\n' "$port"
page "http://127.0.0.1:$port/"

step "Destroy the group: every member is stopped, then the plugins stop"
run infrakit group destroy web
run infrakit instance --name instance-process describe
run infrakit plugin stop group instance-process flavor-vanilla
