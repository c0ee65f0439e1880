#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real (as root only; elsewhere it
# says what is missing and the tests that need it skip, or fail under
# INFRAKIT_REQUIRE_ENGINES=1).
set -euo pipefail

# each package, and what shows that it is installed: a command, or a file (an absolute path)
packages=(
    "curl curl"
    "docker.io dockerd"           # the Docker engine, run privately by the docker tests
    "busybox-static /bin/busybox" # the one binary of the docker tests' image
    "etcd-server etcd"            # the etcd the store tests start privately
    "prometheus promtool"         # the Prometheus server and promtool of the metrics and alert tests
    "binutils readelf"            # readelf, which checks the headers of the tiny ELF executables
    "qemu-system-x86 qemu-system-x86_64" # the hypervisor of the qemu instance plugin's VM tests
    "qemu-utils qemu-img"         # the overlays and extra disks of the qemu plugin
    "linux-image-amd64 /boot/vmlinuz-*" # the guest kernel (and its virtio modules) the VM tests boot
    "chromium chromium"           # the headless browser of the console's browser tests
    "chromium-driver chromedriver" # what selenium drives it through
)
missing=()
for entry in "${packages[@]}"; do
    read -r pkg check <<<"$entry"
    if [[ $check == /* ]]; then
        compgen -G "$check" >/dev/null || missing+=("$pkg")
    else
        command -v "$check" >/dev/null 2>&1 || missing+=("$pkg")
    fi
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
