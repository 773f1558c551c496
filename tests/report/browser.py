"""Headless Chromium (Debian's package) driven over the DevTools protocol, for the report's browser tests.

``open_report`` loads a Snakemake report, records every JavaScript exception, console error and log error,
shows each result the way a click on it does (the report app's own ``app.setView``), waits until the image is
decoded, and takes a screenshot of it. No browser download, no Node: the chromium binary and websocket-client.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.errors: list[str] = []
        self.events: list[dict[str, Any]] = []

    def _note(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params") or {}
        self.events.append(msg)
        if method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.errors.append(f"exception: {(d.get('exception') or {}).get('description') or d.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(
                "console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self._note(msg)

    def eval(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(expression)

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return data


@contextmanager
def browser(width: int = 1400, height: int = 1000):
    """A fresh headless Chromium with its own profile; yields a Page attached to its first tab."""
    import websocket

    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH (apt-get install chromium)")
    # ignore_cleanup_errors: a helper process of chromium's that outlives the group's kill by a moment may still
    # write into the profile; the test's verdict is not the profile's removal
    with tempfile.TemporaryDirectory(prefix="aiev-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            end = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text().strip():
                if time.monotonic() > end or proc.poll() is not None:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.1)
            port = port_file.read_text().split()[0]
            tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            url = next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
            ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
            try:
                page = Page(ws)
                for domain in ("Runtime", "Log", "Page"):
                    page.call(f"{domain}.enable")
                yield page
            finally:
                ws.close()
        finally:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill chromium and every helper process it started (its own session), and wait until they are gone."""
    import os
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def open_report(report: Path, shots: Path) -> dict[str, Any]:
    """Open ``report``; show and screenshot every image result. Returns the result paths, the JS errors, the
    screenshots (result path -> PNG file) and each shown image's natural size."""
    shots.mkdir(parents=True, exist_ok=True)
    with browser() as page:
        page.call("Page.navigate", url=report.resolve().as_uri())
        page.wait_for("document.readyState === 'complete' && typeof app !== 'undefined' && app !== undefined")
        results = page.eval("Object.keys(results)")
        mimes = page.eval("Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.mime_type]))")
        page.screenshot(shots / "index.png")
        shown: dict[str, Any] = {}
        for path in results:
            if not mimes[path].startswith("image/"):
                continue
            page.eval(f"app.setView({{content: 'img', contentPath: results[{json.dumps(path)}].data_uri, "
                      f"resultPath: {json.dumps(path)}}}); true")  # fmt: skip
            found = f"document.querySelector('#app img[src=\"' + results[{json.dumps(path)}].data_uri + '\"]')"
            size = page.wait_for(
                f"(() => {{ const i = {found}; return i && i.complete && i.naturalWidth > 0 ? "
                "[i.naturalWidth, i.naturalHeight] : null; })()"
            )
            shot = shots / (Path(path).stem + ".png")
            page.screenshot(shot)
            shown[path] = {"screenshot": shot, "size": size}
        return {"results": results, "mimes": mimes, "errors": list(page.errors), "shown": shown}
