"""The built site as a reader sees it, in headless Chromium: pages render, figures load, navigation works.

Kept out of ``make test``: it runs only with ``FLOWFORGE_DOCS_BROWSER=1`` (``make docs-check`` sets
it) and skips when no Chromium is installed (Debian: ``apt-get install -y chromium``). The site is
built with ``mkdocs build --strict`` into a scratch folder and served on localhost. Screenshots of
the home page and of a tutorial go to ``$DOCS_SCREENSHOTS`` (``make docs-check``: ``site/screenshots``)
for a person to look at.

How the browser checks work without a driver: a small page served next to the site loads the home
page in a same-origin iframe, reads every image's ``naturalWidth`` (0 for a broken image), clicks
the navigation link of the tutorial, waits for the new page, and checks its images too; it writes
what it saw as JSON into its own DOM, which ``chromium --dump-dom`` prints.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import Path

import pytest

from ._site import mkdocs_build

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = "Density estimation"  # the nav entry whose page (with figures) is opened by a click

pytestmark = pytest.mark.skipif(
    os.environ.get("FLOWFORGE_DOCS_BROWSER") != "1",
    reason="browser check of the docs: run `make docs-check` (needs chromium)",
)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")


CHECKER = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="f" style="width:1280px;height:900px"></iframe>
<script>
const frame = document.getElementById("f");
const loaded = () => new Promise(r => frame.addEventListener("load", r, {once: true}));
async function images(doc) {
  const list = [...doc.images];
  await Promise.all(list.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return list.map(i => ({src: i.getAttribute("src"), width: i.naturalWidth}));
}
(async () => {
  const res = {};
  try {
    let wait = loaded(); frame.src = "index.html"; await wait;
    let doc = frame.contentDocument;
    res.home = {title: doc.title, h1: (doc.querySelector("h1") || {}).textContent, images: await images(doc)};
    const links = [...doc.querySelectorAll("a.md-nav__link")].filter(a => a.getAttribute("href"));
    res.nav = links.map(a => ({text: a.textContent.trim(), href: a.href}));
    const link = links.find(a => a.textContent.trim() === "__TUTORIAL__");
    if (link) {
      wait = loaded(); link.click(); await wait;
      doc = frame.contentDocument;
      res.tutorial = {path: frame.contentWindow.location.pathname,
                      h1: (doc.querySelector("h1") || {}).textContent, images: await images(doc)};
    }
  } catch (e) { res.error = String(e); }
  document.getElementById("result").textContent = JSON.stringify(res);
})();
</script></body></html>
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = mkdocs_build(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (out / "_check.html").write_text(CHECKER.replace("__TUTORIAL__", TUTORIAL))
    return out


@pytest.fixture(scope="module")
def server(site: Path):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def _run_chromium(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    # A fresh profile per call: instances sharing the default profile hand over to each other and hang.
    with tempfile.TemporaryDirectory() as profile:
        command = [_chromium(), *flags, f"--user-data-dir={profile}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _screens() -> Path:
    folder = Path(os.environ.get("DOCS_SCREENSHOTS") or ROOT / "site" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_figures_load_and_navigation_works(server: str) -> None:
    proc = _run_chromium("--virtual-time-budget=30000", "--dump-dom", server + "_check.html")
    match = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    assert match, f"no result from chromium:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    res = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert "error" not in res, res["error"]
    assert res["home"]["h1"].replace("¶", "").strip() == "flowforge"
    assert res["home"]["title"].startswith("flowforge")
    texts = [link["text"] for link in res["nav"]]
    for entry in ("Getting started", "Conventions", "Layer catalogue", "Troubleshooting", TUTORIAL):
        assert entry in texts, f"{entry!r} missing from the navigation: {texts}"
    tutorial = res.get("tutorial")
    assert tutorial, f"clicking {TUTORIAL!r} did not open a page"
    assert tutorial["path"].rstrip("/").endswith("tutorials/density")
    assert tutorial["h1"].strip().startswith("Density estimation")
    figures = [i for i in tutorial["images"] if "figures/" in (i["src"] or "")]
    assert len(figures) >= 3, tutorial["images"]
    broken = [i["src"] for i in tutorial["images"] + res["home"]["images"] if i["width"] == 0]
    assert not broken, f"images that did not load: {broken}"


def test_every_nav_page_and_image_is_served(server: str, site: Path) -> None:
    """Every page the navigation names answers 200, and every <img> of every page exists."""
    home = urllib.request.urlopen(server).read().decode()
    hrefs = sorted(set(re.findall(r'class="md-nav__link[^"]*"\s+href="([^"#]+)"', home)))
    hrefs += sorted(set(re.findall(r'href="([^"#]+)"\s+class="md-nav__link', home)))
    assert len(hrefs) > 10, hrefs
    for href in hrefs:
        if href.startswith("http"):
            continue
        assert urllib.request.urlopen(server + href.lstrip("./")).status == 200, href
    for page in site.rglob("*.html"):
        for src in re.findall(r'<img[^>]+src="([^"]+)"', page.read_text()):
            if src.startswith(("http", "data:")):
                continue
            assert (page.parent / src).resolve().is_file(), f"{page.relative_to(site)}: broken image {src}"


@pytest.mark.parametrize("path", ["", "tutorials/density/", "tutorials/vi-eight-schools/"])
def test_screenshots(server: str, path: str) -> None:
    import matplotlib.image

    name = (path.strip("/").replace("/", "-") or "home") + ".png"
    shot = _screens() / name
    shot.unlink(missing_ok=True)
    proc = _run_chromium("--window-size=1280,2200", f"--screenshot={shot}", server + path)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] == 1280
    assert pixels[..., :3].std() > 0.05, "the screenshot is (nearly) blank"
