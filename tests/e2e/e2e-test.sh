#!/usr/bin/env bash
# The original's end-to-end scenario (scripts/e2e-test.sh at v0.5), its steps, files,
# expected outputs and fixed waits unchanged, on our plugins. The CLI is `$INFRAKIT`
# ("infrakit" by default; the original's Go CLI works too). Run from this directory with
# INFRAKIT_HOME set; the plugins must not be running yet.

set -o errexit
set -o nounset

cd "$(dirname "${BASH_SOURCE[0]}")"
INFRAKIT=${INFRAKIT:-infrakit}
: "${INFRAKIT_HOME:?set INFRAKIT_HOME to a private directory}"
export INFRAKIT_GROUP_POLL=${INFRAKIT_GROUP_POLL:-0.5}   # the original's --poll-interval 500ms
INSTANCE_FILE_DIR=$INFRAKIT_HOME/instance-file/instance-file

cleanup() {
  infrakit plugin stop --all >/dev/null 2>&1 || true
}
trap cleanup EXIT

infrakit plugin start group instance-file flavor-vanilla >/dev/null

. ./steps.sh
