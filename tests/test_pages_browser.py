"""The class page in a real browser (headless Chromium, driven by Playwright) on a phone-sized screen: no
sideways page scroll, the student's name beside every task column as the table scrolls, the legend there."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PATIENCE_MS, ROOT, TUTORIAL6, PatientBrowser

DEMO = ROOT / "submissions" / "tutorial6"
PHONE = {"width": 400, "height": 900}


def _chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                      shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("no Chromium on this machine (.ci/run installs it)")


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """The demo's saved-model students (alice, bob, carol with her truncated 2a.h5, dave, erin) graded by
    `grader grade`: a real class page, with passed, partial, failed, missing and could-not-be-graded cells."""
    klass = tmp_path_factory.mktemp("class")
    for who in ("alice", "bob", "carol", "dave"):
        shutil.copytree(DEMO / who, klass / who)
    shutil.copy(DEMO / "erin_1b.h5", klass / "erin_1b.h5")
    out = tmp_path_factory.mktemp("out") / "tutorial6"
    proc = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(klass), "-a", str(TUTORIAL6), "-o",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    executable = _chromium()
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"],
                                     timeout=PATIENCE_MS)
        try:
            yield PatientBrowser(chromium)
        finally:
            chromium.close()


def _phone_page(browser, path: Path):
    page = browser.new_page(viewport=PHONE)
    page.goto(path.as_uri())
    return page


def test_the_class_page_fits_a_phone_with_the_names_beside_every_task(graded_class, browser, tmp_path):
    page = _phone_page(browser, graded_class / "index.html")
    try:
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), \
            page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert page.locator("#legend").is_visible()
        legend = page.locator("#legend").inner_text()
        for word in ("passed", "partial", "failed", "missing", "could not be graded"):
            assert word in legend, legend
        box = page.locator("#class-table")
        sizes = box.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert sizes[0] > sizes[1], sizes  # the tasks do not fit 400 px: they scroll inside their own box

        rows = page.locator("#students tbody tr")
        carol = page.locator("#students tbody tr", has=page.locator('a[href="students/carol.html"]'))
        assert rows.count() == 5
        name = carol.locator("td.pin")
        cells = carol.locator("td.cell")
        for i in range(cells.count()):
            cell = cells.nth(i)
            cell.scroll_into_view_if_needed()
            n, c = name.bounding_box(), cell.bounding_box()
            assert n["x"] >= 0 and n["x"] + n["width"] <= PHONE["width"], (i, n)  # the name is on screen ...
            assert c["x"] >= n["x"] + n["width"] - 1 and c["x"] + c["width"] <= PHONE["width"] + 1, (i, n, c)
            # ... and on top: nothing scrolled over it (the cell at its middle is the name's own)
            assert name.evaluate("(e, p) => e.contains(document.elementFromPoint(p[0], p[1]))",
                                 [n["x"] + n["width"] / 2, n["y"] + n["height"] / 2]), i
        assert box.evaluate("e => e.scrollLeft") > 0  # it did scroll to reach the last tasks
        error = carol.locator("span.status.error")
        assert error.count() == 1 and "⚠" in error.inner_text()
        shot = tmp_path / "class-400px.png"
        box.evaluate("e => e.scrollLeft = 0")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    finally:
        page.close()


def test_a_student_page_fits_a_phone_and_explains_its_marks(graded_class, browser):
    page = _phone_page(browser, graded_class / "students" / "carol.html")
    try:
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.locator("#legend").is_visible() and "could not be graded" in page.locator("#legend").inner_text()
        text = page.locator("body").inner_text()
        assert "truncated or not an HDF5 Keras file" in text and "sblock" not in text
    finally:
        page.close()
