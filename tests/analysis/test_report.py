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


def test_where_the_time_went_lists_the_steps_longest_first(run_dir):
    from ded_ray.pipeline import record_step

    record_step(run_dir, "rollouts", 120.0)
    record_step(run_dir, "smoke test", 240.0)
    record_step(run_dir, "rollouts", 1.0)  # a rerun that reused the step keeps what computing it took
    page = build_report(run_dir)
    section = page[page.index("Where the time went"):page.index("Timings per stage")]
    assert section.index("smoke test") < section.index("rollouts")
    assert "<td>rollouts</td><td>120</td><td>33%</td>" in section and "<b>360</b>" in section


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


def test_ablation_section_charts_the_arms_and_shows_what_each_selection_picked(run_dir):
    """After `ded ablate`: a chart per benchmark, the arms' table with the gap to the control, and the
    picks of the diversity selections side by side where they disagree (read from the run's own rows)."""
    from ded_ray.steps.ablate import RANDOM, _combine, arm_rows, selection_record

    arms = arm_rows(run_dir)
    names = ("right-hard-diverse", RANDOM, "diverse-reasoning")
    score = [{"arith": {"questions": 4, "k": 2, "avg_at_k": 0.5, "stderr": 0.1}}]
    meta = {a: {"rows": len(arms[a]), "questions": 3,
                **({"selection": selection_record(arms[a])} if a != RANDOM else {})} for a in names}
    summary = {"base": {"arith": score[0]["arith"]}, "seeds": 1,
               "arms": _combine(meta, {a: score for a in names})}
    run_dir.update_manifest(ablation=summary)
    page = build_report(run_dir)
    assert "Ablation (Table 3 arms)" in page and "arith: mean over 1 seed(s), 95% interval" in page
    assert "<td>right-hard-diverse</td><td>6</td><td>3</td><td>arith</td><td>50.0% ± 10.0</td><td>1</td><td>+0.0 [" in page
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,", page)) == 5
    # the fixture's diverse arm drops sample 2; distance-based selection keeps the farthest pair (0 and 2)
    differ = {q for q in ("q1", "q2", "q3")
              if set(meta["right-hard-diverse"]["selection"]["picks"][q]) != set(meta["diverse-reasoning"]["selection"]["picks"][q])}
    assert differ and f"{len(differ)} of 3 questions got different picks" in page
    picks = page[page.index("What each diversity selection picked"):]
    assert len(re.findall(r"<h3>What is \d \+ 0\?</h3><div class='traj'><pre><b>right-hard-diverse</b>", picks)) == len(differ)
