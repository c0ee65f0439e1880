"""The libcloud drivers the ``cloud`` instance plugin calls, and how it calls them.

A driver is made from the plugin's environment on first use (so the plugin starts, and
answers with a clear error, without credentials), one per place and thread (a libcloud
connection is not thread-safe); a call is retried while its fault may pass and its errors
come back naming what failed; the sizes and images a place offers are looked up once.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
import requests.exceptions
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import InvalidCredsError, LibcloudError, ServiceUnavailableError
from libcloud.compute.providers import DRIVERS, get_driver

from infrakit.plugins.instance import retry
from infrakit.spi.errors import PluginError

THROTTLING = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
    "TooManyRequestsException", "SlowDown",
})
"""Error codes (EC2's spelling) of a request refused unmade: always safe to send again."""
TRANSIENT = THROTTLING | {
    "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure",
    "RequestTimeout", "PriorRequestNotComplete", "InsufficientInstanceCapacity",
}
TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
FIELD_OF_CODE = {"InvalidAMIID": "Image", "InvalidInstanceType": "Size",
                 "Unsupported": "Size"}
"""The Properties field an EC2-style error code (before its first dot) points at."""

_CODE = re.compile(r"([A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)*): ")


class Place(msgspec.Struct, rename="pascal", frozen=True, kw_only=True):
    """Where nodes are made and listed: a driver, a region, and how tags are kept."""

    driver: str
    region: str
    tag_style: Literal["metadata", "name"]

    @property
    def key(self) -> str:
        return f"{self.driver}/{self.region}/{self.tag_style}"

    def __str__(self) -> str:
        return f"{self.driver} ({self.region or 'default region'})"


class Absent(Exception):
    """Nothing has the ID looked up (never retried, never shown)."""


def error_code(exc: BaseException) -> str:
    """The provider's error code in a libcloud HTTP error (EC2's ``Code: message``)."""
    match = _CODE.match(getattr(exc, "message", "") or "")
    return match.group(1) if match else ""


def throttled(exc: BaseException) -> bool:
    if isinstance(exc, RateLimitReachedError):
        return True
    return isinstance(exc, BaseHTTPError) and (exc.code == 429 or error_code(exc) in THROTTLING)


def transient(exc: BaseException) -> bool:
    if throttled(exc) or isinstance(exc, ServiceUnavailableError):
        return True
    if isinstance(exc, BaseHTTPError):
        return exc.code in TRANSIENT_HTTP or error_code(exc) in TRANSIENT
    return isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout)


def not_found(exc: BaseException) -> bool:
    """Whether a lookup by ID failed because nothing has that ID."""
    if isinstance(exc, IndexError):  # EC2's get_image of an unknown ID
        return True
    return isinstance(exc, BaseHTTPError) and (
        exc.code == 404 or error_code(exc).startswith(("InvalidAMIID", "InvalidInstanceID")))


def transient_or_unknown(exc: BaseException) -> bool:
    """For a call on a node just made: the provider may not know it everywhere yet."""
    return transient(exc) or not_found(exc)


def parameters(function: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(function).parameters)


def driver_class(name: str) -> Any:
    """The libcloud driver class a provider name names, or an error listing the names."""
    if name not in DRIVERS:
        close = difflib.get_close_matches(name, list(DRIVERS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PluginError(f"Properties.Driver: {name!r} is not a libcloud compute driver"
                          f"{hint} (known: {', '.join(sorted(DRIVERS))})")
    try:
        return get_driver(name)
    except (AttributeError, ImportError) as exc:
        raise PluginError(f"Properties.Driver: {name!r}: {exc}") from None


class Drivers:
    """The drivers of every place the plugin uses, and the calls it makes through them."""

    def __init__(self, retry_seconds: float) -> None:
        self.retry_seconds = retry_seconds
        self._local = threading.local()
        """Drivers by place, one set per thread: a libcloud connection is not thread-safe."""
        self._cache_lock = threading.Lock()
        self._sizes: dict[str, list[Any]] = {}
        self._images: dict[tuple[str, str], Any] = {}

    def driver(self, place: Place) -> Any:
        """The driver of ``place`` for this thread, made on first use from the environment,
        so that the plugin starts (and answers with a clear error) without credentials."""
        drivers: dict[tuple[str, str], Any] = self._local.__dict__.setdefault("drivers", {})
        where = (place.driver, place.region)
        if where not in drivers:
            drivers[where] = self._make_driver(place)
        return drivers[where]

    def _make_driver(self, place: Place) -> Any:
        cls = driver_class(place.driver)
        init = parameters(cls.__init__)
        key = os.environ.get("INFRAKIT_CLOUD_KEY")
        secret = os.environ.get("INFRAKIT_CLOUD_SECRET")
        if not key or ("secret" in init and not secret):
            needed = "$INFRAKIT_CLOUD_KEY and $INFRAKIT_CLOUD_SECRET" if "secret" in init \
                else "$INFRAKIT_CLOUD_KEY"
            raise PluginError(f"credentials for driver {place.driver!r} are missing: set "
                              f"{needed} in the plugin's environment")
        kwargs: dict[str, Any] = {"key": key}
        if "secret" in init:
            kwargs["secret"] = secret
        token = os.environ.get("INFRAKIT_CLOUD_TOKEN")
        if token and "token" in init:
            kwargs["token"] = token
        kwargs.update(_endpoint())
        if place.region:
            kwargs["region"] = place.region
        kwargs.update(_driver_args(place.driver))
        try:
            return cls(**kwargs)
        except (TypeError, ValueError, LibcloudError) as exc:
            raise PluginError(f"driver {place.driver!r} (region {place.region or 'default'}) "
                              f"cannot be made: {exc} (check $INFRAKIT_CLOUD_DRIVER_ARGS "
                              "and Properties.Region)") from None

    def call(self, place: Place, doing: str, function: Callable[..., Any], *args: Any,
             passes: Callable[[BaseException], bool] = transient, **kwargs: Any) -> Any:
        """One driver call, retried while ``passes`` says its faults pass, its errors
        made plain."""
        with self._errors(place, doing):
            return retry.retrying(self.retry_seconds, passes)(function, *args, **kwargs)

    @contextlib.contextmanager
    def _errors(self, place: Place, doing: str) -> Iterator[None]:
        try:
            yield
        except InvalidCredsError as exc:
            raise PluginError(f"{place} {doing}: the credentials in $INFRAKIT_CLOUD_KEY and "
                              f"$INFRAKIT_CLOUD_SECRET were refused: {exc.value}") from None
        except BaseHTTPError as exc:
            message = exc.message or f"HTTP {exc.code}"
            if transient(exc):
                raise PluginError(f"{place} {doing}: {message} (still failing after "
                                  f"{self.retry_seconds:g} s of retries)") from None
            field = FIELD_OF_CODE.get(error_code(exc).split(".")[0])
            where = f"Properties.{field}: " if field else ""
            raise PluginError(f"{where}{place} {doing}: {message}") from None
        except LibcloudError as exc:
            raise PluginError(f"{place} {doing}: {exc.value}") from None
        except requests.exceptions.RequestException as exc:
            raise PluginError(f"{place} {doing}: the endpoint is unreachable (still failing "
                              f"after {self.retry_seconds:g} s of retries): {exc}") from None

    def size(self, place: Place, wanted: str) -> Any:
        """The size ``wanted`` names, by ID, else by its one name."""
        with self._cache_lock:
            sizes = self._sizes.get(place.key)
        if sizes is None:
            driver = self.driver(place)
            sizes = list(self.call(place, "listing sizes", driver.list_sizes))
            with self._cache_lock:
                self._sizes[place.key] = sizes
        for size in sizes:
            if size.id == wanted:
                return size
        named = [s for s in sizes if s.name == wanted]
        if len(named) == 1:
            return named[0]
        close = difflib.get_close_matches(wanted, [s.id for s in sizes], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PluginError(f"Properties.Size: {place} has no size {wanted!r}{hint}")

    def image(self, place: Place, wanted: str) -> Any:
        """The image ``wanted`` names, by ID, else by name (EC2-family drivers filter on the
        name; others list their images)."""
        cache = (f"{place.driver}/{place.region}", wanted)
        with self._cache_lock:
            if cache in self._images:
                return self._images[cache]
        driver = self.driver(place)
        try:
            image = self.call(place, f"looking up image {wanted!r}",
                               self._get_image, driver, wanted)
        except Absent:
            image = self._image_named(place, driver, wanted)
        with self._cache_lock:
            self._images[cache] = image
        return image

    @staticmethod
    def _get_image(driver: Any, wanted: str) -> Any:
        try:
            return driver.get_image(wanted)
        except NotImplementedError:
            raise Absent() from None
        except Exception as exc:
            if not_found(exc):
                raise Absent() from None
            raise

    def _image_named(self, place: Place, driver: Any, wanted: str) -> Any:
        if "ex_filters" in parameters(driver.list_images):
            images = self.call(place, f"looking up image {wanted!r}", driver.list_images,
                                ex_filters={"name": wanted})
        else:
            images = [i for i in self.call(place, "listing images", driver.list_images)
                      if wanted in (i.id, i.name)]
        if len(images) == 1:
            return images[0]
        if images:
            raise PluginError(f"Properties.Image: {len(images)} images of {place} are named "
                              f"{wanted!r} ({', '.join(sorted(i.id for i in images))}); "
                              "name one by its ID")
        raise PluginError(f"Properties.Image: {place} has no image {wanted!r} (by ID or "
                          "name)")


def _endpoint() -> dict[str, Any]:
    """The driver arguments ``$INFRAKIT_CLOUD_ENDPOINT`` stands for (none if unset)."""
    raw = os.environ.get("INFRAKIT_CLOUD_ENDPOINT")
    if not raw:
        return {}
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PluginError(f"$INFRAKIT_CLOUD_ENDPOINT: {raw!r} is not an http or https URL")
    try:
        port = parts.port
    except ValueError:
        raise PluginError(f"$INFRAKIT_CLOUD_ENDPOINT: {raw!r} has a bad port") from None
    endpoint: dict[str, Any] = {"secure": parts.scheme == "https", "host": parts.hostname}
    if port is not None:
        endpoint["port"] = port
    return endpoint


def _driver_args(driver: str) -> dict[str, Any]:
    """The constructor arguments ``$INFRAKIT_CLOUD_DRIVER_ARGS`` gives ``driver``."""
    raw = os.environ.get("INFRAKIT_CLOUD_DRIVER_ARGS")
    if not raw:
        return {}
    try:
        table = json.loads(raw)
    except ValueError as exc:
        raise PluginError(f"$INFRAKIT_CLOUD_DRIVER_ARGS: not JSON: {exc}") from None
    args = table.get(driver, {}) if isinstance(table, dict) else None
    if not isinstance(args, dict):
        raise PluginError("$INFRAKIT_CLOUD_DRIVER_ARGS: expected an object of objects by "
                          'driver name, e.g. {"ec2": {"signature_version": "4"}}')
    return args
