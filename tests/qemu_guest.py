"""A tiny guest for the VM tests, built here from what Debian installed, with no download:
the kernel of ``linux-image-amd64`` (uncompressed once from its ``/boot/vmlinuz-*``, which
QEMU then boots through its PVH entry point: about twice as fast on TCG), and an initramfs
holding ``busybox-static``, the kernel's virtio modules and an ``/init`` that:

1. loads the modules (virtio, network, block, ISO 9660, fw_cfg, ACPI button);
2. brings up ``eth0`` with DHCP from QEMU's user-mode network;
3. runs ``busybox acpid`` so that a QMP ``system_powerdown`` powers the guest off;
4. finds the instance's Init: the fw_cfg file ``opt/infrakit/init`` (direct kernel boot),
   else the ``user-data`` of a NoCloud seed (a disk labelled ``cidata``), and runs it.
"""

from __future__ import annotations

import glob
import lzma
import os
import stat
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
MODULES = ("virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio",
           "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_blk", "cdrom",
           "isofs", "qemu_fw_cfg", "evdev", "button")
"""In the order they load: each after the ones it needs."""

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /seed /etc /var/log
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in MODULES; do insmod /lib/modules/$m.ko; done
ip link set lo up; ip link set eth0 up
udhcpc -i eth0 -q -s /bin/dhcp-script >/dev/null 2>&1
mkdir -p /etc/acpi/PWRF; printf '#!/bin/sh\npoweroff -f\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080; acpid -l /var/log/acpid.log
FW=/sys/firmware/qemu_fw_cfg/by_name/opt/infrakit
if [ -e $FW/init/raw ]; then
    cat $FW/init/raw > /tmp/init.sh; echo "infrakit: Init from fw_cfg"
else
    for d in /dev/vd?; do
        if mount -t iso9660 -o ro $d /seed 2>/dev/null; then
            if [ -e /seed/user-data ]; then
                cp /seed/user-data /tmp/init.sh; cp /seed/meta-data /tmp/meta-data
                echo "infrakit: Init from the NoCloud seed on $d"
            fi
            umount /seed
        fi
    done
fi
echo "infrakit: guest up at $(cat /proc/uptime)"
[ -e /tmp/init.sh ] && (cd /tmp && sh /tmp/init.sh) > /dev/console 2>&1
while true; do sleep 3600; done
""".replace("MODULES", " ".join(MODULES))

DHCP_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add $ip/${mask:-24} dev $interface
[ -n "$router" ] && ip route add default via ${router%% *}
exit 0
"""


def kernel_problem() -> str | None:
    """Why there is no guest to boot here, or None."""
    if not glob.glob("/boot/vmlinuz-*"):
        return "no guest kernel: install linux-image-amd64 (scripts/install-system-deps.sh)"
    if not BUSYBOX.exists():
        return "no /bin/busybox: install busybox-static (scripts/install-system-deps.sh)"
    return None


def _kernel_files() -> tuple[Path, Path]:
    vmlinuz = Path(sorted(glob.glob("/boot/vmlinuz-*"))[-1])
    version = vmlinuz.name.removeprefix("vmlinuz-")
    return vmlinuz, Path("/lib/modules") / version


def extract_kernel(vmlinuz: Path, out: Path) -> Path:
    """The uncompressed ELF kernel inside a bzImage (compressed with xz, as Debian's is)."""
    data = vmlinuz.read_bytes()
    at = data.find(b"\xfd7zXZ\x00")
    if at < 0:
        raise RuntimeError(f"{vmlinuz} holds no xz stream: cannot uncompress it")
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[at:])
    if not elf.startswith(b"\x7fELF"):
        raise RuntimeError(f"{vmlinuz}: its xz stream is not an ELF kernel")
    out.write_bytes(elf)
    return out


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 1) -> bytes:
    """One member of a ``newc`` cpio archive, the format the kernel unpacks."""
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def build_initramfs(out: Path) -> Path:
    """The initramfs described above, as an uncompressed cpio archive."""
    _, modules = _kernel_files()
    dirs = ["bin", "lib", "lib/modules", "dev", "proc", "sys", "tmp"]
    members = [_cpio_entry(d, stat.S_IFDIR | 0o755, ino=i + 1) for i, d in enumerate(dirs)]
    files: list[tuple[str, bytes, int]] = [
        ("bin/busybox", BUSYBOX.read_bytes(), 0o755), ("init", INIT.encode(), 0o755),
        ("bin/dhcp-script", DHCP_SCRIPT.encode(), 0o755)]
    built = {}
    for found in modules.rglob("*.ko*"):
        name = found.name.split(".ko")[0]
        if name in MODULES:
            raw = found.read_bytes()
            built[name] = lzma.decompress(raw) if found.name.endswith(".xz") else raw
    missing = set(MODULES) - set(built)
    if missing:
        raise RuntimeError(f"modules missing from {modules}: {sorted(missing)}")
    files += [(f"lib/modules/{n}.ko", data, 0o644) for n, data in built.items()]
    members += [_cpio_entry(name, stat.S_IFREG | mode, data, ino=100 + i)
                for i, (name, data, mode) in enumerate(files)]
    members.append(_cpio_entry("TRAILER!!!", 0, ino=0))
    out.write_bytes(b"".join(members))
    return out


def build_guest(directory: Path) -> tuple[Path, Path]:
    """(kernel, initramfs) in ``directory``."""
    vmlinuz, _ = _kernel_files()
    kernel = extract_kernel(vmlinuz, directory / "vmlinux")
    initrd = build_initramfs(directory / "initramfs.cpio")
    os.chmod(kernel, 0o644)
    return kernel, initrd


APPEND = "console=ttyS0 quiet"
