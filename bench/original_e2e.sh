#!/usr/bin/env bash
# The original InfraKit's end-to-end scenario (scripts/e2e-test.sh at v0.5), with a choice
# of which plugins serve it, for timing ours against the original's own Go binaries.
#
#   bench/original_e2e.sh ours               # our group, instance-file and flavor-vanilla,
#                                            # started by `infrakit plugin start` (ours on PATH)
#   bench/original_e2e.sh original           # the original's infrakit-group-default --name group
#                                            # --poll-interval 500ms, infrakit-instance-file --dir
#                                            # and infrakit-flavor-vanilla, from $ORIGINAL_BUILD
#   bench/original_e2e.sh original-manager   # as the original script starts them: three
#                                            # infrakit-manager (group, group1, group2; os leader
#                                            # file) proxying for infrakit-group-default --name
#                                            # group-stateless, after its fixed 5 s wait
#
# The CLI that runs the steps is $INFRAKIT (ours, or the original's Go `infrakit`). The
# steps, the cattle.json / cattle2.json files (tests/e2e/) and the fixed waits (2 s, 5 s,
# 5 s) are those of tests/e2e/e2e-test.sh, which are the original's, less its
# "16 plugins should be discoverable" step (a count that only the manager setup gives).
# Plugin start-up is waited for by polling for the sockets, not by the original's fixed
# 5 s sleep after `plugin start`. Prints the start-up time, and the wall time up to the
# last step (stopping the plugins on exit is not in it; time the whole with `time`).
#
# The original's binaries are built from its v0.5 source by Go 1.19 in GOPATH mode: see
# the section of bench/RESULTS.md that gives the figures.
#
# INFRAKIT_HOME defaults to a fresh directory under /tmp; INFRAKIT_CLI_DIR defaults to
# $INFRAKIT_HOME/cli (the original's CLI otherwise creates ~/.infrakit/cli whatever
# INFRAKIT_HOME says). Every process started here is stopped on exit.

set -o errexit
set -o nounset

MODE=${1:?usage: original_e2e.sh ours|original|original-manager}
cd "$(dirname "${BASH_SOURCE[0]}")/../tests/e2e"

export INFRAKIT_HOME=${INFRAKIT_HOME:-$(mktemp -d /tmp/infrakit-e2e.XXXXXX)}
export INFRAKIT_CLI_DIR=${INFRAKIT_CLI_DIR:-$INFRAKIT_HOME/cli}
INFRAKIT=${INFRAKIT:-infrakit}
ORIGINAL_BUILD=${ORIGINAL_BUILD:-/work/orig/src/github.com/docker/infrakit/build}
export INFRAKIT_GROUP_POLL=${INFRAKIT_GROUP_POLL:-0.5}   # ours: the original's --poll-interval 500ms

t0=$(date +%s.%N)
pids=()

case "$MODE" in
  ours)
    INSTANCE_FILE_DIR=$INFRAKIT_HOME/instance-file/instance-file
    cleanup() { infrakit plugin stop --all >/dev/null 2>&1 || true; }
    trap cleanup EXIT
    infrakit plugin start group instance-file flavor-vanilla >/dev/null
    ;;
  original|original-manager)
    INSTANCE_FILE_DIR=$INFRAKIT_HOME/instance-file
    logs=$INFRAKIT_HOME/logs
    mkdir -p "$INFRAKIT_HOME/plugins" "$INSTANCE_FILE_DIR" "$logs"
    cleanup() {
      for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
      for _ in $(seq 30); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
      done
      # a manager serving a request that never ends does not stop on TERM
      for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
      wait 2>/dev/null || true
    }
    trap cleanup EXIT
    group=group
    if [ "$MODE" = original-manager ]; then
      # as scripts/e2e-test.sh: three managers proxying for group-stateless, the leader
      # named in a file, then its fixed 5 s wait for the leader to be detected
      group=group-stateless
      mkdir -p "$INFRAKIT_HOME/configs"
      echo group > "$INFRAKIT_HOME/leader"
      for name in group group1 group2; do
        "$ORIGINAL_BUILD/infrakit-manager" --name $name --proxy-for-group group-stateless os \
          --leader-file "$INFRAKIT_HOME/leader" --store-dir "$INFRAKIT_HOME/configs" \
          >"$logs/$name.log" 2>&1 </dev/null &
        pids+=($!)
      done
      sleep 5
    fi
    "$ORIGINAL_BUILD/infrakit-group-default" --name $group --poll-interval 500ms \
      >"$logs/$group.log" 2>&1 </dev/null &
    pids+=($!)
    "$ORIGINAL_BUILD/infrakit-instance-file" --dir "$INSTANCE_FILE_DIR" \
      >"$logs/instance-file.log" 2>&1 </dev/null &
    pids+=($!)
    "$ORIGINAL_BUILD/infrakit-flavor-vanilla" >"$logs/flavor-vanilla.log" 2>&1 </dev/null &
    pids+=($!)
    for _ in $(seq 200); do
      [ -S "$INFRAKIT_HOME/plugins/group" ] && [ -S "$INFRAKIT_HOME/plugins/$group" ] \
        && [ -S "$INFRAKIT_HOME/plugins/instance-file" ] \
        && [ -S "$INFRAKIT_HOME/plugins/flavor-vanilla" ] && break
      sleep 0.05
    done
    ;;
  *)
    echo "usage: original_e2e.sh ours|original|original-manager" >&2
    exit 2
    ;;
esac
echo "plugins up after $(echo "$(date +%s.%N) - $t0" | bc) s (INFRAKIT_HOME=$INFRAKIT_HOME)"

. ./steps.sh  # the steps of tests/e2e/e2e-test.sh, unchanged
echo "wall $(echo "$(date +%s.%N) - $t0" | bc) s"
