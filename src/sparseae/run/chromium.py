"""Headless Chromium, driven over the DevTools protocol, to look at a report as a reader would.

The protocol runs over two pipes (`--remote-debugging-pipe`): Chromium reads commands on its file
descriptor 3 and writes replies and events on 4, each a JSON object followed by a NUL byte. No port,
no websocket, no package beyond the standard library: what `sparseae report --screenshot` and the
browser tests use. The browser is the system's (Debian: `apt-get install chromium`), started with
a new, empty profile and nothing that reaches the network.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import SparseAEError

# Headless as root (no sandbox), no GPU, and no background traffic: the page is a local file.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe")


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def find_chromium() -> str | None:
    """The Chromium executable on PATH ($SPARSEAE_CHROMIUM first), or None."""
    for name in (os.environ.get("SPARSEAE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class BrowserError(SparseAEError):
    """The browser could not be started, or a page's script failed."""


class Chromium:
    """One headless Chromium with one page; a context manager (the browser is closed on exit).

    >>> with Chromium() as browser:
    ...     browser.open(Path("report.html").resolve().as_uri())
    ...     browser.evaluate("document.title")
    """

    def __init__(self, executable: str | None = None, width: int = 1200, height: int = 900, timeout: float = 60):
        executable = executable or find_chromium()
        if executable is None:
            raise BrowserError("no chromium found (Debian: apt-get install chromium; or set $SPARSEAE_CHROMIUM)")
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="sparseae-chromium-")
        # Our ends stay here; bash makes theirs Chromium's fds 3 and 4. They are numbered >= 10 first, so
        # neither redirection overwrites the other's source (and bash, as dash takes one-digit fds only).
        cmd_r, self._cmd_w = (_high(fd) for fd in os.pipe())
        self._res_r, res_w = (_high(fd) for fd in os.pipe())
        argv = [executable, *FLAGS, f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}",
                "about:blank"]
        self._log = tempfile.TemporaryFile()  # chromium's messages, for an error (a pipe could fill up)
        self._proc = subprocess.Popen(["/bin/bash", "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{res_w}', *argv],
                                      pass_fds=(cmd_r, res_w), stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=self._log)
        os.close(cmd_r)
        os.close(res_w)
        self._buffer, self._events, self._next_id, self.session = b"", [], 0, None
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.send("Page.enable")
            self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the protocol ---

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command (to the page once attached) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        try:
            os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        except OSError as e:
            raise BrowserError(f"chromium is gone ({e.strerror}){self._stderr()}") from None
        reply = self._receive(lambda m: m.get("id") == self._next_id, method)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def wait_event(self, method: str) -> dict[str, Any]:
        """The next event `method` of the page (one already received counts)."""
        for i, event in enumerate(self._events):
            if event.get("method") == method:
                return self._events.pop(i).get("params", {})
        return self._receive(lambda m: m.get("method") == method and "id" not in m, method).get("params", {})

    def _receive(self, wanted, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    return message
                if "id" not in message:
                    self._events.append(message)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._res_r], [], [], left)[0]:
                raise BrowserError(f"{what}: no answer from chromium within {self.timeout:g} s")
            chunk = os.read(self._res_r, 1 << 20)
            if not chunk:
                raise BrowserError(f"{what}: chromium closed the connection{self._stderr()}")
            self._buffer += chunk

    # --- what the tests and `report --screenshot` do ---

    def open(self, url: str) -> None:
        """Load `url` and wait for its load event (every image of the static page decoded)."""
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page; a promise is awaited."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"script failed: {text}")
        return result["result"].get("value")

    def screenshot(self, path: str | os.PathLike, selector: str | None = None,
                   max_height: float | None = None) -> Path:
        """Save a PNG of the viewport, or of the element `selector` (its top `max_height` pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            box = self.evaluate(f"""(() => {{
                const e = document.querySelector({json.dumps(selector)});
                if (!e) return null;
                e.scrollIntoView();
                const r = e.getBoundingClientRect();
                return {{x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height}};
            }})()""")
            if box is None:
                raise BrowserError(f"no element {selector} on the page")
            if max_height is not None:
                box["height"] = min(box["height"], max_height)
            params.update(clip={**box, "scale": 1}, captureBeyondViewport=True)
        data = base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])
        from .files import atomic_write, write_bytes_synced

        atomic_write(path, lambda tmp: write_bytes_synced(tmp, data))
        return Path(path)

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.session = None
                self.send("Browser.close")
            except BrowserError:
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        self._profile.cleanup()

    def _stderr(self) -> str:
        if self._proc.poll() is None:
            return ""
        self._log.seek(0)
        tail = self._log.read().decode(errors="replace").strip().splitlines()[-3:]
        return (": " + " | ".join(tail)) if tail else ""


def _high(fd: int) -> int:
    """`fd` renumbered to 10 or above (close-on-exec), the original closed."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high
