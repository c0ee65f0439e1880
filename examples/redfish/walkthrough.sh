#!/usr/bin/env bash
# instance-redfish end to end against the sushy-tools Redfish emulator, all on loopback
# (ports 8000 for the BMC, 8001 for images and user data). From the checkout, with the
# dev extra installed (it brings sushy and sushy-tools):
#     bash examples/redfish/walkthrough.sh
# Everything it makes lives in a temporary directory, removed at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
export INFRAKIT_HOME=$work/home
emulator_pid="" web_pid=""
finish() {
    infrakit plugin stop --force group flavor-vanilla instance-redfish >/dev/null 2>&1 || true
    [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null || true
    [ -n "$web_pid" ] && kill "$web_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap finish EXIT
say() { printf '\n== %s\n' "$*"; }

say "a BMC with seven servers (4, 16 and 64 CPUs), behind a password"
password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
mkdir -p "$work/bmc" "$work/www/user-data"
python3 -c 'import bcrypt, sys; print("admin:" + bcrypt.hashpw(sys.argv[1].encode(),
            bcrypt.gensalt()).decode())' "$password" > "$work/htpasswd"
sed -e "s|@STATE@|$work/bmc|" -e "s|@AUTH@|$work/htpasswd|" "$here/emulator.conf" \
    > "$work/emulator.conf"
TMPDIR=$work/bmc python3 "$repo/tests/redfish_emulator.py" "$work/emulator.conf" \
    > "$work/emulator.log" 2>&1 &
emulator_pid=$!

say "a web server of boot images and user data"
printf 'CD001 installer v1' > "$work/www/installer-v1.iso"
printf 'CD001 installer v2' > "$work/www/installer-v2.iso"
python3 -m http.server -b 127.0.0.1 -d "$work/www" 8001 > "$work/web.log" 2>&1 &
web_pid=$!
for _ in $(seq 100); do
    curl -sf -o /dev/null -u "admin:$password" http://127.0.0.1:8000/redfish/v1/ && break
    sleep 0.1
done

say "the pool file, mode 600"
mkdir -p "$INFRAKIT_HOME/instance-redfish/instance-redfish"
pool=$INFRAKIT_HOME/instance-redfish/instance-redfish/pool.yml
sed -e "s|@PASSWORD@|$password|" -e "s|@USERDATA@|$work/www/user-data|" \
    "$here/pool.yml" > "$pool"
chmod 600 "$pool"

say "plugins, and a group of three web servers"
infrakit plugin start instance-redfish flavor-vanilla group
infrakit group commit --wait --wait-timeout 120 "$here/group.yml"
infrakit instance --name instance-redfish describe --properties -o json |
    python3 -c 'import json, sys
for d in json.load(sys.stdin):
    p = d["Properties"]
    print(d["ID"], p["Name"], p["CPUs"], "CPUs", p["PowerState"], p["Health"], p["BootImage"])'

say "user data for one of them, as its boot image would fetch it by its UUID"
uuid=$(infrakit instance --name instance-redfish describe --properties -o json |
       python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["Properties"]["UUID"])')
curl -s "http://127.0.0.1:8001/user-data/$uuid/user-data"

say "a rolling update to installer v2, one server at a time"
sed 's/installer-v1/installer-v2/' "$here/group.yml" > "$work/group-v2.yml"
infrakit group commit --wait --wait-timeout 300 "$work/group-v2.yml"
infrakit instance --name instance-redfish describe --properties -o json |
    python3 -c 'import json, sys
for d in json.load(sys.stdin):
    print(d["ID"], d["Properties"]["Name"], d["Properties"]["BootImage"])'

say "destroy: every server shut down, its media ejected, the pool free"
infrakit group destroy web
curl -s -u "admin:$password" 'http://127.0.0.1:8000/redfish/v1/Systems?$expand=.($levels=1)' |
    python3 -c 'import json, sys
for s in json.load(sys.stdin)["Members"]:
    print(s["Name"], s["PowerState"])'
