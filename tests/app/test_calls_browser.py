"""Two browser app instances call each other (PROTOCOL.md Part IX §8): real ``xchat app``
processes on a real relay, Chromium with fake camera/microphone devices, WebRTC on loopback.
The pages hold the media keys; the app processes carry the signalling as E2EE content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _app_helpers import CHROMIUM, CHROMIUM_ARGS, AppProcess, start_app

from _cli_helpers import account
from xchat.testing import TURNSERVER, running_coturn, running_server

SRC = Path(__file__).parents[2] / "src"
MEDIA_ARGS = [
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def callers(relay: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """Two app processes with accounts @callera / @callerb (handles unique per module)."""
    base = tmp_path_factory.mktemp("call-profiles")
    tag = os.getpid() % 10_000
    names = [f"ca{tag}", f"cb{tag}"]
    apps: list[AppProcess] = []
    try:
        for name in names:
            account(base / name, relay.url, name)
            apps.append(start_app(base / name, relay.url))
        yield [(a, n) for a, n in zip(apps, names, strict=True)]
    finally:
        for a in apps:
            a.stop()


def _launch(pw: Any, fake_ui: bool) -> Any:
    args = [*CHROMIUM_ARGS, *MEDIA_ARGS]
    if fake_ui:
        args.append("--use-fake-ui-for-media-stream")  # allow camera/microphone
    return pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; `make` does it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        yield pw


def _wait_frames(page: Any) -> int:
    """Poll getStats until the page has decoded a video frame (``wait_for_function`` does
    not await a promise, so it cannot run the async getStats itself)."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        n = int(page.evaluate("async () => await window.xchatCall.framesDecoded()"))
        if n > 0:
            return n
        page.wait_for_timeout(100)
    raise AssertionError("no video frame decoded")


def _open_chat(page: Any, app: AppProcess, peer: str) -> None:
    page.goto(app.url)
    page.wait_for_selector("#view-app:not([hidden])", timeout=TIMEOUT_MS)
    page.fill("#newchat-input", "@" + peer)
    page.press("#newchat-input", "Enter")
    page.wait_for_selector("#btn-call-video:not([hidden])", timeout=TIMEOUT_MS)


def test_two_browsers_video_call_decode_frames_and_hang_up(
    callers: list[Any], playwright: Any
) -> None:
    (app_a, name_a), (app_b, name_b) = callers
    browser = _launch(playwright, fake_ui=True)
    try:
        a = browser.new_context().new_page()
        b = browser.new_context().new_page()
        for page in (a, b):
            page.set_default_timeout(TIMEOUT_MS)
        _open_chat(a, app_a, name_b)
        b.goto(app_b.url)
        b.wait_for_selector("#view-app:not([hidden])")

        a.click("#btn-call-video")
        a.wait_for_selector("#call-screen:not([hidden])")
        b.wait_for_selector("#call-screen[data-state='incoming'] #btn-call-accept:not([hidden])")
        # the caller by @handle once the callee's client has checked the claim, else address
        peer = b.text_content("#call-peer") or ""
        assert name_a in peer or peer.startswith("xc1")
        assert "Incoming video call" in b.text_content("#call-status")
        b.click("#btn-call-accept")

        # both pages decode the other's (fake camera) video: getStats framesDecoded > 0
        for page in (a, b):
            _wait_frames(page)
            page.wait_for_selector("#call-screen[data-state='connected']")
            page.wait_for_selector("#btn-call-mute:not([hidden])")
            assert "Not verified" in page.text_content("#call-safety")
        a.click("#btn-call-mute")
        assert a.get_attribute("#btn-call-mute", "aria-pressed") == "true"
        a.click("#btn-call-camera")
        assert a.text_content("#btn-call-camera") == "Camera on"

        a.click("#btn-call-hangup")
        for page in (a, b):
            page.wait_for_selector("#call-screen[data-state='ended']")
            assert "Call ended" in page.text_content("#call-status")
            page.click("#btn-call-close")
            page.wait_for_selector("#call-screen", state="hidden")
        # the call is an entry of the conversation on both sides
        a.wait_for_selector(".call-entry[data-call-state='ended']")
        state = httpx.get(f"{app_a.base}/api/state", headers={"X-XChat-Secret": app_a.secret})
        b.click(f".conv-item[data-conv='{state.json()['account']['address']}']")
        b.wait_for_selector(".call-entry[data-call-state='ended']")
        assert "Incoming video call" in b.text_content(".call-entry")
    finally:
        browser.close()


def test_denied_microphone_says_so_and_places_no_call(callers: list[Any], playwright: Any) -> None:
    (app_a, _), (_, name_b) = callers
    browser = _launch(playwright, fake_ui=False)  # no permission granted: Chromium denies
    try:
        page = browser.new_context().new_page()
        page.set_default_timeout(TIMEOUT_MS)
        _open_chat(page, app_a, name_b)
        page.click("#btn-call-audio")
        page.wait_for_selector("#call-error:has-text('access was denied')")
        assert page.get_attribute("#call-screen", "data-state") == "ended"
        live = page.evaluate(
            "async () => (await (await fetch('/api/calls/live', {headers: "
            "{'X-XChat-Secret': sessionStorage.getItem('xchat-secret') || ''}})).json())"
        )
        assert live == {"call": None}
    finally:
        browser.close()


def test_relay_only_switch_without_turn_says_so(callers: list[Any], playwright: Any) -> None:
    (app_a, _), (_, name_b) = callers
    browser = _launch(playwright, fake_ui=True)
    try:
        page = browser.new_context().new_page()
        page.set_default_timeout(TIMEOUT_MS)
        _open_chat(page, app_a, name_b)
        page.click("#btn-settings")
        page.check("#set-relay-only")  # Settings → Calls → Relay calls
        page.click("#btn-settings-close")
        page.click("#btn-call-audio")
        page.wait_for_selector("#call-error:has-text('no TURN server')")
        assert page.get_attribute("#call-screen", "data-state") == "ended"
    finally:
        browser.close()


@pytest.mark.skipif(not Path(TURNSERVER).exists(), reason="coturn is not installed")
def test_relay_only_browser_call_goes_through_coturn(
    tmp_path_factory: pytest.TempPathFactory, playwright: Any
) -> None:
    """Both pages set "Relay calls": the video still flows, and the pair WebRTC selected
    uses a relayed (TURN) local candidate on both sides."""
    base = tmp_path_factory.mktemp("relay-only")
    tag = os.getpid() % 10_000
    names = [f"ra{tag}", f"rb{tag}"]
    with (
        running_coturn(base / "turn") as turn,
        running_server(base / "relay", pow_bits=2, **turn.server_env()) as srv,
    ):
        apps: list[AppProcess] = []
        browser = _launch(playwright, fake_ui=True)
        try:
            for name in names:
                account(base / name, srv.url, name)
                apps.append(start_app(base / name, srv.url))
            a = browser.new_context().new_page()
            b = browser.new_context().new_page()
            for page, app in ((a, apps[0]), (b, apps[1])):
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(app.url)
                page.wait_for_selector("#view-app:not([hidden])")
                page.evaluate("() => localStorage.setItem('xchat-calls-relay-only', '1')")
            _open_chat(a, apps[0], names[1])
            a.click("#btn-call-video")
            b.wait_for_selector(
                "#call-screen[data-state='incoming'] #btn-call-accept:not([hidden])"
            )
            b.click("#btn-call-accept")
            for page in (a, b):
                _wait_frames(page)
                kind = page.evaluate("async () => window.xchatCall.selectedCandidateType()")
                assert kind == "relay"
            a.click("#btn-call-hangup")
            b.wait_for_selector("#call-screen[data-state='ended']")
        finally:
            browser.close()
            for app in apps:
                app.stop()
        assert "ALLOCATE processed, success" in turn.log_text()


def test_sdk_caller_and_browser_callee_interoperate(
    relay: Any, callers: list[Any], playwright: Any, tmp_path: Path
) -> None:
    """aiortc (the ``xchat call`` command) calls Chromium (the web app): the two media
    stacks agree on the signals of PROTOCOL Part IX and carry audio and video both ways."""
    (_, _), (app_b, name_b) = callers
    profile = tmp_path / "cli-caller"
    account(profile, relay.url, f"cc{os.getpid() % 10_000}")
    browser = _launch(playwright, fake_ui=True)
    env = {**os.environ, "XCHAT_NO_KEYRING": "1"}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    caller = subprocess.Popen(
        [
            *(sys.executable, "-m", "xchat", "--profile", str(profile), "call", "@" + name_b),
            *("--video", "--duration", "3", "--json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        b = browser.new_context().new_page()
        b.set_default_timeout(TIMEOUT_MS)
        b.goto(app_b.url)
        b.wait_for_selector("#call-screen[data-state='incoming'] #btn-call-accept:not([hidden])")
        b.click("#btn-call-accept")
        _wait_frames(b)  # the CLI's test pattern, decoded by Chromium
        out, err = caller.communicate(timeout=60)
        b.wait_for_selector("#call-screen[data-state='ended']")
    finally:
        browser.close()
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    assert caller.returncode == 0, err
    result = json.loads(out)
    assert result["state"] == "ended"
    assert result["audio_frames_received"] > 0 and result["video_frames_received"] > 0
