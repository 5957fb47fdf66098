"""report.html: built from a real run directory's files, self-contained, and rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil

import pytest
from curated_run import write_curated_run

from ded_ray.analysis.report import build_report, write_report
from ded_ray.rundir import RunDir


@pytest.fixture
def run_dir(tmp_path) -> RunDir:
    return write_curated_run(str(tmp_path))


def test_report_has_every_section_and_no_external_resources(run_dir):
    page = build_report(run_dir)
    for title in ("Summary", "Student before and after", "Curation funnel", "Distributions",
                  "Selected trajectories", "Timings per stage", "Configuration"):
        assert title in page, title
    assert "+25.0 pts" in page  # student vs base
    assert "16 trajectories = 6 in the corpus + 10 rejected" in page
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,", page)) == 4
    assert not re.search(r"(src|href)=['\"]https?://", page)  # opens offline
    assert "<script" not in page


def _chromium() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them as root)")
    return browser, driver


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    browser, driver_path = _chromium()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    path = write_report(run_dir)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(f"file://{path}")
        assert driver.title == "DED run r"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) == 4 and all(done and width > 0 for done, width in images)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        assert driver.execute_script("return document.querySelectorAll('table').length") >= 4
        driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        driver.quit()


def test_eval_table_has_a_row_per_domain_and_split(run_dir):
    from ded_ray.steps.evaluate import record_eval

    def result(math: float, code: float) -> dict:
        return {"mixed": {"questions": 4, "k": 1, "avg_at_k": (math + code) / 2, "stderr": 0.1,
                          "domains": {"code": {"questions": 2, "k": 1, "avg_at_k": code},
                                      "math": {"questions": 2, "k": 1, "avg_at_k": math}},
                          "splits": {"easy": {"questions": 4, "k": 1, "avg_at_k": 0.5}}}}

    record_eval(run_dir, "base", "m", result(0.5, 0.0))
    record_eval(run_dir, "student", "m", result(1.0, 0.5))
    page = build_report(run_dir)
    for name, change in (("mixed / code", "+50.0 pts"), ("mixed / math", "+50.0 pts"), ("mixed / easy", "+0.0 pts")):
        assert re.search(rf"{re.escape(name)}</td>.*?{re.escape(change)}", page), name
