#!/usr/bin/env bash
# Builds the original InfraKit's binaries (tag v0.5 by default) from a git directory of
# its repository, offline, from its vendor/ tree, for bench/original_e2e.sh:
#
#   bench/build_original.sh GIT_DIR [GOPATH]     # GOPATH defaults to /work/orig
#
# Needs Debian's golang-1.19-go (apt-get install golang-1.19-go). Go 1.19 in GOPATH mode
# (GO111MODULE=off, GOPROXY=off: nothing is downloaded). The tree is written file by file
# from `git ls-tree`, so that blobs missing from a partial copy (a few *.test binaries)
# are skipped rather than failing the whole export as `git archive` would.
#
# One line is added to the source: cmd/infrakit/manager/manager.go declares
# updatablePluginName, assigns it in a closure and never reads it. The 2017 compiler let
# that pass; Go 1.18 and later reject it ("declared but not used"). The added line
# `_ = updatablePluginName` reads it, and changes nothing else.
#
# Writes GOPATH/src/github.com/docker/infrakit/build/{infrakit, infrakit-manager,
# infrakit-group-default, infrakit-instance-file, infrakit-flavor-vanilla}, with the
# -ldflags of the original's Makefile.

set -o errexit
set -o nounset
set -o pipefail

GIT_DIR=${1:?usage: build_original.sh GIT_DIR [GOPATH]}
GOPATH_DIR=${2:-/work/orig}
TAG=${TAG:-v0.5}
GO=${GO:-/usr/lib/go-1.19/bin/go}
SRC=$GOPATH_DIR/src/github.com/docker/infrakit

rm -rf "$SRC"
mkdir -p "$SRC"
git --git-dir "$GIT_DIR" ls-tree -r "$TAG" | while IFS=$'\t' read -r meta path; do
  read -r mode type sha <<<"$meta"
  [ "$type" = blob ] || continue
  mkdir -p "$SRC/$(dirname "$path")"
  if [ "$mode" = 120000 ]; then
    ln -s "$(git --git-dir "$GIT_DIR" cat-file blob "$sha")" "$SRC/$path"
  elif git --git-dir "$GIT_DIR" cat-file blob "$sha" >"$SRC/$path" 2>/dev/null; then
    if [ "$mode" = 100755 ]; then chmod +x "$SRC/$path"; fi
  else
    echo "skipped (not in this copy): $path" >&2
    rm -f "$SRC/$path"
  fi
done

manager=$SRC/cmd/infrakit/manager/manager.go
sed -i 's|^\(\t*\)updatablePluginName = name$|&\n\1_ = updatablePluginName // never read; Go >= 1.18 rejects that|' "$manager"
grep -q '_ = updatablePluginName' "$manager"

export GO111MODULE=off GOPATH=$GOPATH_DIR GOFLAGS= GOPROXY=off GOCACHE=$GOPATH_DIR/.gocache
revision=$(git --git-dir "$GIT_DIR" rev-parse "$TAG^{commit}")
ldflags="-X github.com/docker/infrakit/pkg/cli.Version=$TAG -X github.com/docker/infrakit/pkg/cli.Revision=$revision -X github.com/docker/infrakit/pkg/util/docker.ClientVersion=1.24"
cd "$SRC"
mkdir -p build
for target in infrakit:cmd/infrakit infrakit-manager:cmd/manager infrakit-group-default:cmd/group \
    infrakit-instance-file:examples/instance/file infrakit-flavor-vanilla:examples/flavor/vanilla; do
  "$GO" build -o "build/${target%%:*}" -ldflags "$ldflags" "github.com/docker/infrakit/${target#*:}"
  echo "built build/${target%%:*}"
done
"$GO" version
