"""The report as a person sees it: ``report.html`` opened in headless Chromium.

Chromium is driven over ``--remote-debugging-pipe`` (the DevTools protocol as
NUL-separated JSON on file descriptors 3 and 4), so no browser-automation package is
needed. The page is loaded from disk, a full-page screenshot is taken, every ``<img>``
must have decoded (natural size > 0) and the console must hold no error. Skipped, with
the reason, where Debian's ``chromium`` is not installed (``make setup`` installs it when
run as root).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lossrate._results import Prediction
from lossrate.fit import predict
from lossrate.report import figures as F
from lossrate.report import write_report
from lossrate.report.analysis import fit_prefix
from test_report import CLOSURE, synthetic_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian package 'chromium'; `make setup` as root installs it)",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class DevTools:
    """A headless Chromium and a minimal DevTools-protocol client over its pipe."""

    def __init__(self, profile: Path, timeout: float = 60.0) -> None:
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()

        def wire() -> None:  # in the child: the browser reads fd 3 and writes fd 4
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)  # out of the way first
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)  # os.dup2 makes the copies inheritable
            os.dup2(high_w, 4)

        assert CHROMIUM is not None
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",  # the test may run as root
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            close_fds=False,  # Python's own descriptors are not inheritable (PEP 446)
            preexec_fn=wire,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.deadline = time.monotonic() + timeout
        self.events: list[dict[str, Any]] = []
        self._buf = b""
        self._id = 0

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)  # type: ignore[no-any-return]

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]
            self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._read_message()
            if event.get("method") == method:
                return event
            self.events.append(event)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    """Errors the page reported: console.error/assert, uncaught exceptions, failed loads."""
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            out.append(p["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(p["entry"].get("text", ""))
    return out


def open_page(html: Path, shot: Path, profile: Path) -> tuple[list[list[Any]], list[str]]:
    """Load ``html``, save a full-page screenshot to ``shot``; returns, per <img>,
    [complete, naturalWidth, naturalHeight, alt], and the console errors."""
    chrome = DevTools(profile)
    try:
        target = chrome.send("Target.createTarget", url="about:blank")["targetId"]
        session = chrome.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            chrome.send(f"{domain}.enable", session)
        chrome.send(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=1200,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        chrome.send("Page.navigate", session, url=html.resolve().as_uri())
        chrome.wait_event("Page.loadEventFired")
        images = json.loads(
            chrome.send(
                "Runtime.evaluate",
                session,
                expression="JSON.stringify(Array.from(document.images, i => "
                "[i.complete, i.naturalWidth, i.naturalHeight, i.alt]))",
                returnByValue=True,
            )["result"]["value"]
        )
        size = chrome.send("Page.getLayoutMetrics", session)["cssContentSize"]
        png = chrome.send(
            "Page.captureScreenshot",
            session,
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )["data"]
        shot.write_bytes(base64.b64decode(png))
        return images, console_errors(chrome.events)
    finally:
        chrome.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report with every figure (loss, phi, closure ratio, residuals, peers)."""
    traj = synthetic_run()
    f = fit_prefix(traj, until=0.3, bootstrap=0)
    pred = predict(f, traj.step)
    other = Prediction(
        step=pred.step,
        t=pred.t,
        loss=pred.loss * np.linspace(1.0, 1.2, pred.step.size),
        lower=pred.lower,
        upper=pred.upper,
        level=pred.level,
    )
    folder = tmp_path_factory.mktemp("browser") / "rep"
    files = write_report(folder, traj, f, pred, closure=CLOSURE, peers={"drifting": other})
    assert len(files.figures) == 5
    return files.html


@needs_chromium
def test_every_figure_decodes_and_the_console_is_clean(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    images, errors = open_page(report, shot, tmp_path / "profile")
    assert errors == []
    assert len(images) == 5, images
    for complete, width, height, alt in images:
        assert complete and width > 0 and height > 0, f"figure {alt!r} did not decode"
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1200 and height > 2000  # the whole page, five figures tall


@needs_chromium
def test_a_broken_figure_and_a_console_error_are_caught(report: Path, tmp_path: Path) -> None:
    """The checks above can fail: a figure whose bytes are not an image has natural size 0,
    and a script error reaches the console."""
    page = report.read_text(encoding="utf-8")
    start = page.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = page[:start] + "AAAA" + page[start + 4 :]
    broken = broken.replace("</body>", "<script>console.error('boom')</script></body>", 1)
    bad = tmp_path / "broken.html"
    bad.write_text(broken, encoding="utf-8")
    images, errors = open_page(bad, tmp_path / "broken.png", tmp_path / "profile")
    assert any("boom" in e for e in errors)
    assert sum(1 for _c, w, _h, _a in images if w == 0) == 1


def test_legend_fits_and_cut_label_is_clear_of_the_info_box() -> None:
    """What the screenshots showed: a long model name pushed the loss figure's legend past
    both edges, and with a late cut the "fit | predict" label sat behind the info box."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    traj = synthetic_run(200, stats=False)
    pred = Prediction(
        step=traj.step.astype(float),
        t=traj.t,
        loss=traj.loss,
        lower=traj.loss * 0.9,
        upper=traj.loss * 1.1,
        level=0.9,
    )
    label = "auto (" + " + ".join(f"member_{i} 0.{i}0" for i in range(1, 8)) + ")"
    fig = F.loss_figure(traj, pred, cut_step=170.0, model_label=label)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
    (ax,) = fig.axes
    cut = next(t for t in ax.texts if "predict" in t.get_text())
    info = next(t for t in ax.texts if "observed" in t.get_text())
    info_box = info.get_bbox_patch().get_window_extent(renderer)
    assert not cut.get_window_extent(renderer).overlaps(info_box)
