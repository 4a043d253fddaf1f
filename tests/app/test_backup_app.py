"""Backup in the web app, in a real Chromium (PROTOCOL.md Part X §10): after onboarding the
page asks for a PIN (a weak one is refused, "Not now" is possible), Settings shows the
backup and backs up on demand, and a second app on a fresh profile restores the account
and its history with "Restore from backup" — a wrong PIN first says how many guesses
remain. A real relay, three real realm processes, a CLI contact."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _app_helpers import cli, onboard, start_app

from xchat.realm.testing import running_realms
from xchat.testing import ServerProcess, running_server

TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def realm_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("backup-app")
    with running_realms(root / "realms", 3) as realms:
        urls = ",".join(r.url for r in realms)
        with running_server(root / "relay", pow_bits=4, realms=urls) as srv:
            yield srv


def test_pin_after_onboarding_then_restore_from_backup(
    realm_relay: ServerProcess, browser: Any, tmp_path: Path, artifacts: Path
) -> None:
    handle, bob_handle = f"alicepage{os.getpid() % 1000}", f"bobpage{os.getpid() % 1000}"
    first = start_app(tmp_path / "first", realm_relay.url)
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        onboard(page, first, handle, artifacts, False)
        # The PIN prompt comes up by itself once the account exists.
        page.wait_for_selector("#dlg-backup-pin[open]")
        page.fill("#backup-pin", "123456")
        page.fill("#backup-pin2", "123456")
        page.click("#btn-backup-set")
        page.wait_for_selector("#backup-pin-error:has-text('too easy')")
        page.fill("#backup-pin", "482913")
        page.fill("#backup-pin2", "482913")
        page.click("#btn-backup-set")
        page.wait_for_selector("#dlg-backup-pin", state="hidden")

        bob = tmp_path / "bob"
        cli(bob, "account", "create", "--server", realm_relay.url, "--handle", bob_handle)
        # Alice writes first, so Bob is a contact, not a message request (Part VIII §7).
        page.fill("#newchat-input", f"@{bob_handle}")
        page.press("#newchat-input", "Enter")
        page.wait_for_selector(f"#conv-title:has-text('@{bob_handle}')")
        page.fill("#composer-input", "hello from the page")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.out .bubble:has-text('hello from the page')")
        cli(bob, "recv")
        cli(bob, "send", f"@{handle}", "kept in the backup")
        page.wait_for_selector(".msg.in .bubble:has-text('kept in the backup')")

        page.click("#btn-settings")
        page.wait_for_selector("#dlg-settings[open]")
        page.wait_for_selector("#backup-status:has-text('2 of 3 realms')")
        page.click("#btn-backup-now")
        page.wait_for_selector("#backup-status:has-text('2 messages')")
        page.screenshot(path=str(artifacts / "backup-settings.png"))
        page.click("#btn-settings-close")
    finally:
        ctx.close()
        first.stop()

    second = start_app(tmp_path / "second", realm_relay.url)
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(second.url)
        page.wait_for_selector("#form-create", state="visible")
        page.click("#btn-show-restore-backup")
        page.wait_for_selector("#form-restore-backup", state="visible")
        assert page.input_value("#backup-server") == realm_relay.url
        page.fill("#backup-target", f"@{handle}")
        page.fill("#backup-restore-pin", "777001")
        page.click("#btn-restore-backup")
        page.wait_for_selector("#backup-restore-error:has-text('9 guess(es) remain')")
        page.fill("#backup-restore-pin", "482913")
        page.click("#btn-restore-backup")
        page.wait_for_selector("#view-app", state="visible")
        page.wait_for_selector("#restore-note", state="hidden")  # history is here
        page.click(f".conv-item:has-text('@{bob_handle}')")
        page.wait_for_selector(".msg.in .bubble:has-text('kept in the backup')")
        page.wait_for_selector(".msg.out .bubble:has-text('hello from the page')")
        page.screenshot(path=str(artifacts / "backup-restored.png"))
    finally:
        ctx.close()
        second.stop()
