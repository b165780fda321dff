"""GraphiQL loads in headless Chromium from the API itself (no CDN) and runs a query."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.sync.client import connect

from tests.integration.api.api_support import ApiDatabase, RunningApi, free_port, make_event

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(__file__).parent / "artifacts" / "graphiql.png"
QUERY = "{ events(first: 3) { totalCount edges { node { eventId source eventType } } } }"


class DevTools:
    """The smallest Chrome DevTools Protocol client: send a command, wait for its answer."""

    def __init__(self, url: str) -> None:
        self.ws = connect(url, max_size=64 << 20).__enter__()
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        page = self.evaluate("document.body ? document.body.innerText.slice(0, 300) : ''")
        raise AssertionError(f"timed out waiting for {expression}; page shows: {page!r}")


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)"
)
def test_graphiql_runs_a_query(api: RunningApi, api_db: ApiDatabase) -> None:
    api_db.add_events([make_event(i) for i in range(5)])
    port = free_port()
    profile = tempfile.mkdtemp(prefix="hosepipe-chromium-")
    browser = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1400,900",
            f"--remote-debugging-port={port}",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                page = next(t for t in targets if t["type"] == "page")
                break
            except (httpx.HTTPError, StopIteration):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        tools = DevTools(page["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call("Page.navigate", url=f"{api.graphql}#query={quote(QUERY)}")
        tools.wait_for("!!document.querySelector('.graphiql-execute-button')")
        tools.evaluate("document.querySelector('.graphiql-execute-button').click()")
        text = tools.wait_for(
            "(() => { const r = document.querySelector('.result-window');"
            " return r && r.innerText.includes('e000004') ? r.innerText : ''; })()"
        )
        assert '"totalCount": 5' in text
        shot = tools.call("Page.captureScreenshot", format="png")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
        assert SCREENSHOT.stat().st_size > 10_000
        tools.ws.close()
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=10)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)
