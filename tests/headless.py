"""Headless Chromium for the report test: the page is loaded by a real browser, not parsed by us."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=30000"]

# Appended to a copy of the report: decode every figure the report embeds (its `results` object) as an
# image, then write what the browser made of each into the DOM, which --dump-dom prints.
CHECK = """<script>
window.addEventListener("load", async () => {
  const seen = await Promise.all(Object.entries(results).map(([path, r]) => new Promise(done => {
    const img = new Image();
    img.onload = () => done([path, {width: img.naturalWidth, height: img.naturalHeight, caption: r.caption}]);
    img.onerror = () => done([path, {width: 0, height: 0, caption: r.caption}]);
    img.src = r.data_uri;
  })));
  const pre = document.createElement("pre");
  pre.id = "figure-check";
  pre.textContent = JSON.stringify(Object.fromEntries(seen));
  document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("no chromium on PATH; .ci/run installs Debian's chromium")
    pytest.skip("no chromium on PATH (apt install chromium)")


def dump_dom(page: Path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
                             capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def report_figures(report: Path) -> dict[str, dict]:
    """{path: {width, height, caption}} for every file the report embeds, as the browser decoded it."""
    text = report.read_text()
    with tempfile.TemporaryDirectory() as d:
        page = Path(d) / "report-check.html"
        page.write_text(text.replace("</body>", CHECK + "</body>"))
        dom = dump_dom(page)
    found = re.search(r'<pre id="figure-check">(.*?)</pre>', dom, re.S)
    assert found, "the check script did not run: " + dom[-1000:]
    return json.loads(html.unescape(found.group(1)))  # one pass: a caption's own &quot; stays as it was


def rendered_text(page: Path) -> str:
    """The page's #app after scripts ran, tags stripped."""
    dom = dump_dom(page)
    app = dom[dom.find('id="app"'):]
    return re.sub(r"<[^>]+>", " ", app)
