"""The HTML report (snakemake --report): built from a real Figure 4 run on the tiny config, checked
as a file (valid HTML, every built figure listed with its caption and its bytes) and, where a
Chromium is installed, opened in a headless browser that shows each figure and takes screenshots."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import copy_repo, run_snakemake

pytestmark = pytest.mark.slow
TINY = ["--configfile", "config/test/config.yaml"]
REPORT = "results/report.html"
# Elements HTML closes by itself: never on the stack of open tags.
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StrictParser(HTMLParser):
    """html.parser accepts anything; this one records what a browser would have to repair: a
    closing tag with no open match, an element left open, text or tags outside <html>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.doctype = ""
        self.roots = 0

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        if not self.stack:
            self.roots += 1
            if tag != "html":
                self.errors.append(f"<{tag}> outside <html> at line {self.getpos()[0]}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'} at line {self.getpos()[0]}")
            if tag in self.stack:  # resynchronise, so one slip is one error
                del self.stack[len(self.stack) - 1 - self.stack[::-1].index(tag) :]
            return
        self.stack.pop()

    def close(self):
        super().close()
        if self.stack:
            self.errors.append(f"left open: {self.stack}")


def embedded(html: str, name: str) -> dict:
    """A JSON object the report embeds as ``<script id="NAME">var NAME = {...};</script>``."""
    match = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', html, re.S)
    assert match, f"no <script id={name!r}> in the report"
    return json.loads(match.group(1))


def data_uri_bytes(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    assert header.endswith(";base64"), header[:80]
    return base64.b64decode(payload)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A workflow copy with Figure 4 built and its report made. The report names its target:
    without one it covers the DAG of `all` and stops at the first marked output not yet built."""
    work = copy_repo(tmp_path_factory.mktemp("report") / "repo")
    out = run_snakemake(["figures/fig4.pdf", "-c2", *TINY], cwd=work)
    assert out.returncode == 0, out.stderr[-4000:]
    out = run_snakemake(["figures/fig4.pdf", "--report", REPORT, *TINY], cwd=work, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return work


@pytest.fixture(scope="module")
def html(built) -> str:
    return (built / REPORT).read_text()


def built_figures(work: Path) -> list[str]:
    return sorted(str(p.relative_to(work)) for p in (work / "figures").rglob("*.pdf"))


def test_report_is_one_valid_html_page(built, html):
    assert (built / REPORT).stat().st_size > 100_000  # scripts and figures are inlined: one self-contained file
    parser = StrictParser()
    parser.feed(html)
    parser.close()
    assert parser.doctype.lower() == "doctype html"
    assert parser.roots == 1 and parser.errors == []


def test_report_lists_every_built_figure_with_caption_and_bytes(built, html):
    results = embedded(html, "results")
    figures = built_figures(built)
    assert figures == ["figures/fig4.pdf"]  # what the build made; a new figure must appear below too
    for path in figures:
        entry = results.get(path)
        assert entry, f"{path} missing from the report"
        assert entry["mime_type"] == "application/pdf"
        assert data_uri_bytes(entry["data_uri"]) == (built / path).read_bytes()
    caption = results["figures/fig4.pdf"]["caption"]
    # what it shows, the config it was made with (rendered from the run's config), where deviations are
    assert "Figure 4" in caption and "smollm2-135m" in caption and "K = 4 samples" in caption
    assert "deviations_from_paper" in caption and "figures/fig4.pdf.provenance.json" in caption
    categories = embedded(html, "categories")
    assert set(categories) >= {"Figures", "Tables", "Analyses", "Provenance"}
    table = results["results/tables/smollm2-135m/bundled/table3.csv"]
    assert "Table 3" in table["caption"] and data_uri_bytes(table["data_uri"]).startswith(b"strategy,")
    provenance = json.loads(data_uri_bytes(results["figures/fig4.pdf.provenance.json"]["data_uri"]))
    assert "deviations_from_paper" in provenance


def test_report_front_page_states_the_configuration(html):
    assert "smollm2-135m" in html and "How the embedded default differs from the paper" in html


# ------------------------------------------------------------------ a real browser


def chromium_executable() -> str | None:
    """Playwright's own Chromium when `playwright install chromium` ran, else a system one (Debian's
    `chromium`); None when neither is there."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        if Path(p.chromium.executable_path).is_file():
            return p.chromium.executable_path
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def no_browser(reason: str):
    """Skip, saying why; fail instead under TESTTIME_REQUIRE_BROWSER=1 (.ci/run), so that CI cannot
    pass with the browser test skipped."""
    if os.environ.get("TESTTIME_REQUIRE_BROWSER") == "1":
        pytest.fail(f"TESTTIME_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("playwright is not installed (pip install -e '.[test]')")
    executable = chromium_executable()
    if executable is None:
        no_browser("no Chromium: `apt-get install chromium` or `python -m playwright install chromium`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


def pdf_viewer(page, timeout_s: float = 20):
    """The frame of Chromium's PDF viewer on the page, or None when none opened in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frames = [f for f in page.frames if f.url.startswith("chrome-extension://") and not f.is_detached()]
        if frames:
            return frames[-1]
        page.wait_for_timeout(200)
    return None


def test_report_in_a_headless_browser_shows_every_figure(browser, built, tmp_path):  # browser first: a skip builds nothing
    """Open the report as a reader does, click through to each figure and screenshot it; fail on a
    script error, a figure missing from the Figures category, or one that does not load as a
    non-empty PDF in its frame. Screenshots stay in pytest's tmp dir (printed below)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto((built / REPORT).as_uri())
    nav = page.locator("nav").first  # the side bar (its breadcrumbs are a nav inside it)
    nav.get_by_text("Figures", exact=True).click()
    page.screenshot(path=tmp_path / "figures.png")
    listed = page.evaluate("Object.keys(categories['Figures']).flatMap(s => categories['Figures'][s])")
    assert sorted(listed) == built_figures(built)
    for path in listed:
        name = Path(path).name
        row = nav.locator("tr", has_text=path)
        row.locator("a").first.click()  # the eye button: the figure in the main pane
        frame = page.locator("iframe")
        frame.wait_for(state="attached", timeout=10_000)
        src = frame.get_attribute("src")
        assert src and src.startswith("data:application/pdf;"), f"{path}: frame shows {src!r:.80}"
        # the frame's own bytes, fetched by the browser: what a reader's PDF viewer gets
        size = page.evaluate("async src => (await (await fetch(src)).arrayBuffer()).byteLength", src)
        assert size == (built / path).stat().st_size, f"{path}: {size} bytes in the report"
        box = frame.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, f"{path}: frame is {box}"
        # Chromium's PDF viewer (an extension frame inside the report's frame) shows the page count
        # once the document has loaded; a broken PDF gets its error dialog and no count instead
        viewer = pdf_viewer(page)
        assert viewer is not None, f"{path}: no PDF viewer opened in the frame"
        pages = viewer.locator("#pagelength")
        expect(pages).to_have_text(re.compile(r"^[1-9][0-9]*$"), timeout=20_000)
        row.locator("a").nth(1).click()  # the (i) button: its caption in the side bar, beside the figure
        expect(nav).to_contain_text("deviations_from_paper")
        shot = tmp_path / f"{name}.png"
        page.screenshot(path=shot)
        assert shot.stat().st_size > 0
        nav.get_by_text("Figures", exact=True).first.click()  # back to the list, for the next figure
    assert errors == [], errors
    print(f"screenshots: {tmp_path}")
