"""What ``instance-redfish`` does to one system, through sushy: set its boot source, power
it on or off and wait until its BMC reports the change, eject its media; and publish a
spec's Init where the system's boot image fetches it (see the plugin's notes on Init)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import sushy

from infrakit.atomicfile import write_atomic
from infrakit.plugins.instance.redfish_bmc import cd_drive, wait_power
from infrakit.plugins.instance.redfish_claims import Checked, Claim
from infrakit.settings import REDFISH
from infrakit.spi.errors import PluginError

log = logging.getLogger(__name__)

OFF = ("Off",)


def set_boot(system: Any, checked: Checked, which: str) -> None:
    """Boot once from the BootImage (inserted in the virtual CD) or from the network."""
    if checked.boot == "Cd":
        drive = cd_drive(system)
        if drive is None:
            raise PluginError(f"{which} has no virtual CD drive to insert the BootImage into")
        if drive.inserted:
            drive.eject_media()
        drive.insert_media(checked.props.boot_image, inserted=True, write_protected=True)
        system.set_system_boot_options(target=sushy.BOOT_SOURCE_TARGET_CD,
                                       enabled=sushy.BOOT_SOURCE_ENABLED_ONCE)
    elif checked.boot == "Pxe":
        system.set_system_boot_options(target=sushy.BOOT_SOURCE_TARGET_PXE,
                                       enabled=sushy.BOOT_SOURCE_ENABLED_ONCE)


def power_on(system: Any, timeout: float, which: str) -> None:
    """Power on, or restart a system that is on (so that it boots from the new source);
    returns once the BMC reports it on."""
    on = str(getattr(system.power_state, "value", system.power_state)) == "On"
    system.reset_system(sushy.RESET_FORCE_RESTART if on else sushy.RESET_ON)
    if wait_power(system, lambda s: s == "On", time.monotonic() + timeout) is None:
        raise PluginError(f"{which} did not power on within {timeout:g} s "
                          f"(${REDFISH['power_timeout'].env})")


def power_off(system: Any, grace: float, timeout: float, which: str) -> None:
    """A graceful shutdown; the power forced off when it is not off after ``grace``."""
    if wait_power(system, lambda s: s in OFF, 0) is not None:
        return
    if grace > 0:
        system.reset_system(sushy.RESET_GRACEFUL_SHUTDOWN)
        if wait_power(system, lambda s: s in OFF, time.monotonic() + grace) is not None:
            return
        log.info("%s did not shut down within StopGrace (%g s): forcing the power off",
                 which, grace)
    system.reset_system(sushy.RESET_FORCE_OFF)
    if wait_power(system, lambda s: s in OFF, time.monotonic() + timeout) is None:
        raise PluginError(f"{which} did not power off within {timeout:g} s of a forced "
                          "power off")


def eject(system: Any) -> None:
    drive = cd_drive(system)
    if drive is not None and drive.inserted:
        drive.eject_media()


def _folder(directory: Path, record: Claim) -> Path:
    return directory / (record.uuid or record.system)


def publish(directory: Path, iid: str, record: Claim, init: str) -> None:
    """The Init as user data, by the system's UUID, in cloud-init's NoCloud layout;
    readable by the web server that serves the directory."""
    folder = _folder(directory, record)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        meta = f"instance-id: {iid}\nlocal-hostname: {iid}\n"
        write_atomic(folder / "meta-data", meta.encode(), mode=0o644)
        write_atomic(folder / "user-data", init.encode(), mode=0o644)
    except OSError as exc:
        raise PluginError(f"pool UserData.Directory: cannot write {str(folder)!r}: "
                          f"{exc.strerror}") from None


def unpublish(directory: Path, record: Claim) -> None:
    shutil.rmtree(_folder(directory, record), ignore_errors=True)
