"""The web console in a real browser (headless Chromium): an operator logs in, watches a
group converge, sees a killed member replaced, sets the size and follows a rolling update,
all without reloading the page; a viewer is refused the same action; and every input has
a label and every action is reached with the keyboard. Screenshots go to
``test-artifacts/console/``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, Processes, StartPlugin
from tests.console_browser import (
    Cable,
    Shots,
    Stack,
    driven,
    log_in,
    seen,
    start_stack,
    text_of,
)

MARK = "window.__notReloaded = 'yes'"
"""Set on the page once: if it is still there later, the page was never reloaded."""


@pytest.fixture
def stack(procs: Processes, home: Path, cli: Cli, start_plugin: StartPlugin,
          tmp_path: Path) -> Iterator[Stack]:
    stack = start_stack(procs, home, cli, start_plugin, tmp_path)
    try:
        yield stack
    finally:
        stack.destroy()


@pytest.fixture
def chrome(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Shots]]:
    yield from driven(request.node.name)


def _not_reloaded(driver: Any) -> bool:
    return bool(driver.execute_script("return window.__notReloaded === 'yes'"))


def _members(driver: Any) -> set[str]:
    rows = driver.find_elements("css selector", "#members tbody tr")
    try:
        return {str(r.get_attribute("data-member")) for r in rows}
    except Exception:  # a row replaced while read: read again
        return set()


def _row(driver: Any, column: str) -> str:
    cells = driver.find_elements("css selector", f"#group-table tr[data-group='web'] .{column}")
    try:
        return str(cells[0].text) if cells else ""
    except Exception:
        return ""


def test_an_operator_watches_heals_resizes_and_updates_a_group_live(
        stack: Stack, chrome: tuple[Any, Shots]) -> None:
    driver, shot = chrome
    log_in(driver, stack, "olive")
    driver.execute_script(MARK)
    shot("overview-empty")
    stack.commit(3)
    seen(driver, lambda: _row(driver, "status") == "converged" and _row(driver, "ready") == "3",
         30, "the overview to show the group of 3 converged")
    assert _not_reloaded(driver)
    shot("overview-converged")

    driver.get(stack.url + "group/web")
    seen(driver, lambda: len(_members(driver)) == 3 and text_of(driver, "live-state") == "live",
         10, "the group's page to show 3 members, live")
    driver.execute_script(MARK)
    victim = sorted(_members(driver))[0]
    killed = time.monotonic()
    stack.kill(victim)
    gone = seen(driver, lambda: victim not in _members(driver), 30,
                f"the page to show {victim} gone")
    seen(driver, lambda: len(_members(driver)) == 3 and victim not in _members(driver)
         and text_of(driver, "status") == "converged", 30, "a replacement to show")
    replaced = time.monotonic() - killed
    print(f"\nconsole: a killed member showed gone after {gone:.2f}s and replaced after "
          f"{replaced:.2f}s, without a reload")
    assert _not_reloaded(driver)
    assert "member died" in text_of(driver, "events")
    shot("member-replaced")

    _set_size(driver, 4)
    seen(driver, lambda: "increase the group size to 4" in text_of(driver, "notice"), 10,
         "the page to say what the new size does")
    driver.execute_script(MARK)
    seen(driver, lambda: len(_members(driver)) == 4 and text_of(driver, "ready") == "4",
         30, "4 members ready")
    assert "by olive" in text_of(driver, "events")  # the audit log names the operator
    shot("resized")

    _follow_a_rolling_update(driver, stack, shot)
    assert _not_reloaded(driver)


def _set_size(driver: Any, size: int) -> None:
    field = driver.find_element("id", "size")
    field.clear()
    field.send_keys(str(size))
    driver.find_element("id", "set-size").click()


def _follow_a_rolling_update(driver: Any, stack: Stack, shot: Shots) -> None:
    """Commit a new config and watch the progress bar move to the end."""
    stack.commit(4, sleep="3601")
    values: list[int] = []

    def progressed() -> bool:
        bars = driver.find_elements("id", "update-progress")
        try:
            if bars:
                values.append(int(bars[0].get_attribute("value")))
                if len(values) == 1:
                    shot("rolling-update")
        except Exception:
            return False
        return bool(values) and not bars and text_of(driver, "current") == "4" \
            and text_of(driver, "status") == "converged"

    seen(driver, progressed, 90, "the rolling update to run to its end")
    assert values == sorted(values), values
    shot("rolling-update-done")


def test_a_viewer_sees_but_is_refused_the_operators_action(
        stack: Stack, chrome: tuple[Any, Shots]) -> None:
    driver, shot = chrome
    stack.commit(1)
    log_in(driver, stack, "vic")
    driver.get(stack.url + "group/web")
    seen(driver, lambda: text_of(driver, "status") == "converged", 30, "the group converged")
    _set_size(driver, 2)
    refusal = ("token 'vic' (viewer) may not call Group.CommitGroup: it needs the operator "
               "role")
    seen(driver, lambda: refusal in text_of(driver, "message"), 10, "the refusal")
    shot("viewer-refused")
    driver.get(stack.url + "group/web")
    seen(driver, lambda: text_of(driver, "status") == "converged", 10, "the group's page")
    assert text_of(driver, "target") == "1"


def test_every_input_has_a_label_and_every_action_is_reached_by_keyboard(
        stack: Stack, chrome: tuple[Any, Shots]) -> None:
    from selenium.webdriver.common.keys import Keys

    driver, shot = chrome
    stack.commit(2)
    driver.get(stack.url + "login")
    _labelled(driver)
    log_in(driver, stack, "olive")
    driver.get(stack.url + "group/web")
    seen(driver, lambda: len(_members(driver)) == 2, 30, "2 members")
    _labelled(driver)
    # by their markup: the live part is drawn anew while the keys go, its buttons with it
    buttons = set(driver.execute_script(
        "return [...document.querySelectorAll('button')].map(b => b.outerHTML)"))
    reached = set()
    driver.find_element("tag name", "body").click()
    for _ in range(60):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        reached.add(driver.execute_script("return document.activeElement.outerHTML"))
    shot("keyboard")
    assert buttons <= reached, "buttons that Tab never reached"
    focused = driver.find_element("id", "set-size")
    driver.execute_script("arguments[0].focus()", focused)
    assert driver.switch_to.active_element == focused


def _labelled(driver: Any) -> None:
    """Every visible input has a label (``<label for>`` or ``aria-label``)."""
    for field in driver.find_elements("css selector", "input:not([type=hidden])"):
        name = field.get_attribute("id")
        labels = driver.find_elements("css selector", f"label[for='{name}']") if name else []
        assert labels or field.get_attribute("aria-label"), \
            f"input {field.get_attribute('name')!r} has no label"


def test_a_page_whose_stream_dropped_shows_what_it_missed_once_back(
        stack: Stack, chrome: tuple[Any, Shots]) -> None:
    driver, shot = chrome
    stack.commit(2)
    cable = Cable(int(stack.url.split(":")[2].split("/")[0]))
    url = f"https://127.0.0.1:{cable.port}/ui/"
    try:
        log_in(driver, Stack(stack.home, stack.cli, url, stack.spec), "vic")
        driver.get(url + "group/web")
        seen(driver, lambda: len(_members(driver)) == 2
             and text_of(driver, "live-state") == "live", 30, "2 members, live")
        driver.execute_script(MARK)
        cable.cut()
        # the stream's failure, or the next periodic refresh's, says so
        seen(driver, lambda: text_of(driver, "live-state") == "reconnecting…", 15,
             "the page to see that it is cut off")
        victim = sorted(_members(driver))[0]
        stack.kill(victim)
        seen(driver, lambda: victim not in stack.members() and len(stack.members()) == 2, 30,
             "the group to replace the member")
        assert victim in _members(driver)  # the page could not have heard of it
        shot("cut-off")
        cable.join()
        seen(driver, lambda: text_of(driver, "live-state") == "live"
             and victim not in _members(driver) and len(_members(driver)) == 2, 30,
             "the page, back, to show the replacement")
        assert _not_reloaded(driver)
        shot("back")
    finally:
        cable.close()
