"""The login page in a real browser under the server's CSP: a workspace with users sends the viewer to /login,
logging in comes back, the session bar logs out (and a cookie request without the CSRF header is refused)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, expect

import gigavision as gv
from gigavision.store.users import Accounts
from tests.browser.conftest import run_server

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


def test_login_logout(chromium_browser: Browser, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with gv.init_workspace(ws) as workspace:
        Accounts(workspace.session).add("ada", "admin", PASSWORD)
    with run_server(ws, tmp_path / "server.log") as base_url:
        context = chromium_browser.new_context(bypass_csp=False)
        context.set_default_timeout(15_000)
        page = context.new_page()
        errors: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error" and "Failed to load resource" not in message.text:  # 401, 403, 404 here
                errors.append(message.text)  # e.g. a script or style the CSP refused

        page.on("console", on_console)
        page.goto(f"{base_url}/#/image/{'a' * 64}")
        page.wait_for_url("**/login?next=*")
        page.fill("#login-name", "ada")
        page.fill("#login-password", "wrong password")
        page.click("button[type=submit]")
        expect(page.get_by_test_id("login-error")).to_have_text("Wrong user name or password.")
        page.fill("#login-password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"**/#/image/{'a' * 64}")
        expect(page.get_by_test_id("session")).to_contain_text("ada (admin)")
        # the cookie alone does not make a write: the CSRF header is needed (the viewer's api.ts sends it)
        status = page.evaluate("fetch('/api/v1/labels/x', {method: 'PUT', body: '{}'}).then(r => r.status)")
        assert status == 403
        page.get_by_test_id("logout").click()
        page.wait_for_url("**/login")
        assert page.evaluate("fetch('/api/v1/me').then(r => r.status)") == 401
        assert errors == []
        context.close()
