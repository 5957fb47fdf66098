"""report.html: built from a real run directory's files, self-contained, and rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ded_ray import schema as S
from ded_ray.analysis.report import build_report, write_report
from ded_ray.rundir import RunDir
from ded_ray.runner import run_stage
from ded_ray.stages.base import mark_rejected
from ded_ray.steps.evaluate import record_eval


def _trajectories() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for q in range(4):
        for k in range(4):
            rows.append({S.PROBLEM_ID: f"q{q}", S.ROLLOUT_ID: f"q{q}#t#{k}", S.DOMAIN: "math", S.TEACHER: "t",
                         S.QUESTION: f"What is {q} + {k}?", S.RESPONSE: f"{q} + {k} = {q + k}. " + "step " * k,
                         S.NUM_TOKENS: int(rng.integers(5, 40)), S.VERDICT: "correct" if k < 3 else "wrong",
                         S.TOKEN_ENTROPY: float(rng.random())})
    return pd.DataFrame(rows)


@pytest.fixture
def run_dir(tmp_path) -> RunDir:
    """A run directory written through the real runner: rollout → correctness → pass rate → diversity → mix."""
    run = RunDir(str(tmp_path), "r")
    run.update_manifest(config={"run": {"name": "r"}, "curate": {"diversity": {"unit": "char"}}}, git_sha="abc")
    rows = _trajectories()
    run_stage(run, 3, "rollout", lambda _d: rows.copy(), id_column=None)
    right = mark_rejected(rows.copy(), rows[S.VERDICT] != "correct", "wrong")
    run_stage(run, 4, "correctness", lambda _d: right, id_column=None)
    hard = right[right[S.REJECT_REASON].isna()].drop(columns=[S.REJECT_REASON, S.REJECT_DETAIL]).copy()
    hard[S.PASS_RATE] = hard[S.PROBLEM_ID].map({"q0": 1.0, "q1": 0.5, "q2": 0.25, "q3": 0.0})
    hard = mark_rejected(hard, hard[S.PASS_RATE] > 0.75, "too_easy")
    run_stage(run, 7, "pass_rate", lambda _d: hard, id_column=None)
    diverse = hard[hard[S.REJECT_REASON].isna()].drop(columns=[S.REJECT_REASON, S.REJECT_DETAIL]).copy()
    diverse[S.DIVERSITY_MIN_DISTANCE] = 0.5
    diverse = mark_rejected(diverse, diverse[S.ROLLOUT_ID].str.endswith("#2"), "not_selected")
    run_stage(run, 8, "diversity", lambda _d: diverse, id_column=None)
    final = diverse[diverse[S.REJECT_REASON].isna()].drop(columns=[S.REJECT_REASON, S.REJECT_DETAIL])
    run_stage(run, 10, "mix", lambda _d: final, id_column=None)
    for label, score in (("base", 0.25), ("student", 0.5)):
        record_eval(run, label, "m", {"arith": {"questions": 4, "k": 2, "avg_at_k": score, "stderr": 0.1}})
    return run


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
