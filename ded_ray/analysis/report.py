"""`report.html`: one self-contained page (inline CSS, images as data URIs, no scripts, no network).

Sections appear when the run has their data: summary, teacher smoke test (the paper's Table 1), student
before/after, the funnel (Table 3), `ded ablate`'s arms, histograms, selected trajectories side by side,
where the time went (steps, then stages), config.
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np
import pandas as pd
import yaml

from ded_ray import schema as S
from ded_ray.analysis.histograms import distance_png, histogram_png, length_png, pass_rate_png
from ded_ray import plan
from ded_ray.analysis.ablation_section import ablation_section
from ded_ray.analysis.funnel import build_funnel
from ded_ray.analysis.run_data import curation_rows
from ded_ray.rundir import EVAL_FILE, RunDir

REPORT_FILE = "report.html"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0} th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f4f4f4}
.muted{color:#777;font-size:.9rem} .grid{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0;flex:1 1 46%} figcaption{font-size:.85rem;color:#555}
.traj{display:flex;gap:.6rem;align-items:stretch} .traj pre{flex:1;white-space:pre-wrap;background:#f8f8f8;
border:1px solid #ddd;padding:.5rem;font-size:.8rem;margin:0;max-height:18rem;overflow:auto}
.bar{background:#4c78a8;height:.8rem} .good{color:#18794e} .bad{color:#b42318} img{max-width:100%;border:1px solid #eee}
details pre{background:#f8f8f8;padding:.6rem;font-size:.8rem;overflow:auto}
"""


def write_report(run: RunDir) -> str:
    """Build the page from what is in the run directory and write report.html; returns its path."""
    page = build_report(run)
    path = run.file(REPORT_FILE)
    with run.fs.open_output_stream(path) as out:
        out.write(page.encode())
    return path


def build_report(run: RunDir) -> str:
    manifest = run.read_manifest()
    evals = run.read_json(EVAL_FILE)
    rows = curation_rows(run)
    sections = [
        _summary(manifest, evals),
        _smoke(manifest.get("smoke")),
        _eval(evals),
        _funnel(rows, manifest),
        ablation_section(manifest.get("ablation"), rows),
        _histograms(rows, manifest),
        _trajectories(rows),
        _timings(manifest),
        _config(manifest),
    ]
    body = "\n".join(s for s in sections if s)
    name = html.escape(manifest.get("config", {}).get("run", {}).get("name", "run"))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>DED run {name}</title>"
            f"<style>{CSS}</style></head><body><h1>DED run: {name}</h1>"
            f"<p class='muted'>{html.escape(run.uri)} · updated {html.escape(str(manifest.get('updated_at', '')))}"
            f" · ded_ray git {html.escape(str(manifest.get('git_sha')))}</p>{body}</body></html>")


# --- sections ------------------------------------------------------------------------------------------


def _summary(manifest: dict, evals: dict) -> str:
    items = []
    if manifest.get("teacher"):
        items.append(f"Teacher: <b>{html.escape(str(manifest['teacher']))}</b>")
    corpus = manifest.get("corpus")
    if corpus:
        items.append(f"Corpus: <b>{corpus['rows']}</b> trajectories for {corpus['questions']} questions")
    for label in ("base", "student"):
        for bench, result in evals.get(label, {}).get("benchmarks", {}).items():
            items.append(f"{label} on {html.escape(bench)}: <b>{_pct(result.get('avg_at_k'))}</b> ± "
                         f"{_pct(result.get('stderr'))} (avg@{result.get('k')})")
    if manifest.get("run_dir_bytes") is not None:
        items.append(f"Run directory: <b>{manifest['run_dir_bytes'] / 1e9:.2f} GB</b>")
    if not items:
        return ""
    return "<h2>Summary</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _smoke(smoke: dict | None) -> str:
    if not smoke or not smoke.get("teachers"):
        return ""
    benches = sorted({b for t in smoke["teachers"] for b in t.get("student", {})})
    head = "<tr><th>teacher</th><th>rank</th><th>teacher acc</th><th>resp. tokens</th>" + "".join(
        f"<th>{html.escape(b)} student acc</th><th>Δ vs base</th>" for b in benches) + "<th>status</th></tr>"
    body = []
    for t in smoke["teachers"]:
        cells = [html.escape(t["name"]), str(t.get("rank", "-")), _pct(t.get("teacher_accuracy")),
                 _num(t.get("mean_response_tokens"))]
        for b in benches:
            s = t.get("student", {}).get(b, {})
            cells += [_pct(s.get("avg_at_k")), _signed_pct(s.get("gain"))]
        cells.append(html.escape(t.get("status", "ok")))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    chart = smoke.get("chart_png")
    img = f"<img alt='smoke test chart' src='data:image/png;base64,{chart}'>" if chart else ""
    return ("<h2>Teacher smoke test (as the paper's Table 1)</h2><p class='muted'>Teachers are ranked by the "
            "student each one produces; the teacher's own accuracy is shown beside it.</p>"
            f"<table>{head}{''.join(body)}</table>{img}{_diagnostics(smoke['teachers'])}")


def _diagnostics(arms: list[dict]) -> str:
    """Per arm: the base student's token entropy on the teacher's responses and the PCA shift (paper §4)."""
    rows, figures = [], []
    for arm in arms:
        diag = arm.get("diagnostics") or {}
        entropy, shift = diag.get("entropy") or {}, diag.get("pca_shift") or {}
        if not entropy and not shift:
            continue
        rows.append(f"<tr><td>{html.escape(arm['name'])}</td><td>{_num2(entropy.get('mean'))}</td>"
                    f"<td>{_num2(entropy.get('median'))}</td><td>{_num2(shift.get('mean_shift'))}</td></tr>")
        for key, title in (("histogram_png", "token entropy"), ("plot_png", "PCA shift by layer")):
            png = (entropy if key == "histogram_png" else shift).get(key)
            if png:
                figures.append(f"<figure><img alt='{html.escape(arm['name'])} {title}' src='data:image/png;base64,"
                               f"{png}'><figcaption>{html.escape(arm['name'])}: {title}</figcaption></figure>")
    if not rows:
        return ""
    return ("<h3>Diagnostics (paper §4)</h3><p class='muted'>Entropy: bits per response token of the base "
            "student's next-token distribution on each teacher's responses (teacher forcing). PCA shift: "
            "how far the distilled student's hidden states moved from the base's, per layer.</p>"
            "<table><tr><th>teacher</th><th>entropy mean</th><th>entropy median</th><th>mean PCA shift</th></tr>"
            f"{''.join(rows)}</table><div class='grid'>{''.join(figures)}</div>")


def _eval(evals: dict) -> str:
    if not evals:
        return ""
    labels = list(evals)
    benches = sorted({b for e in evals.values() for b in e.get("benchmarks", {})})
    head = "<tr><th>benchmark</th>" + "".join(f"<th>{html.escape(l)}: avg@k ± stderr</th>" for l in labels)
    head += "<th>change</th></tr>" if {"base", "student"} <= set(labels) else "</tr>"
    def result(label: str, bench: str, group: str | None, key: str | None) -> dict:
        r = evals[label]["benchmarks"].get(bench, {})
        return r.get(group, {}).get(key, {}) if group else r

    rows = []
    for b in benches:
        # the benchmark, then its per-domain and per-difficulty rows (a mixed benchmark is not one number)
        subs = [(None, None, b)] + [
            (group, key, f"&nbsp;&nbsp;{html.escape(b)} / {html.escape(key)}")
            for group in ("domains", "splits")
            for key in dict.fromkeys(k for l in labels for k in evals[l]["benchmarks"].get(b, {}).get(group, {}))
        ]
        for group, key, name in subs:
            cells = [html.escape(name) if group is None else name]
            for l in labels:
                r = result(l, b, group, key)
                cells.append(f"{_pct(r.get('avg_at_k'))} ± {_pct(r.get('stderr'))} (n={r.get('questions', 0)}, "
                             f"k={r.get('k', '-')})")
            if {"base", "student"} <= set(labels):
                before = result("base", b, group, key).get("avg_at_k")
                after = result("student", b, group, key).get("avg_at_k")
                delta = None if before is None or after is None else after - before
                css = "good" if (delta or 0) > 0 else "bad"
                cells.append(f"<span class='{css}'>{_signed_pct(delta)}</span>")
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<h2>Student before and after</h2><table>{head}{''.join(rows)}</table>"


def _input_rows(manifest: dict) -> str:
    """The first stage's count: every input row of the problem sources, kept as a problem or rejected."""
    stats = manifest.get("stages", {}).get(plan.PROBLEMS.name)
    if not stats:
        return ""
    rejected = stats.get("rejected") or {}
    reasons = ", ".join(f"{html.escape(r)} {n}" for r, n in sorted(rejected.items(), key=lambda kv: -kv[1]))
    return (f"<p>Problems read: <b>{stats['rows']}</b> input rows = <b>{stats['kept']}</b> problems + "
            f"{sum(rejected.values())} rejected{f' ({reasons})' if reasons else ''}; rejected rows are under "
            f"<code>rejected/{plan.PROBLEMS.name}/&lt;reason&gt;/</code>.</p>")


def _funnel(rows: pd.DataFrame, manifest: dict) -> str:
    inputs = _input_rows(manifest)
    if rows.empty:
        return f"<h2>Curation funnel</h2>{inputs}" if inputs else ""
    funnel = build_funnel(rows)
    domains = sorted({r["domain"] for r in funnel.table3})
    cells = {(r["domain"], r["level"]): f"{r['rows']} / {r['questions']}" for r in funnel.table3}
    head = "<tr><th>level</th>" + "".join(f"<th>{html.escape(d)}: rows / questions</th>" for d in domains) + "</tr>"
    body = "".join("<tr><td>" + level + "</td>" + "".join(f"<td>{cells.get((d, level), '-')}</td>" for d in domains)
                   + "</tr>" for level in plan.LEVELS)
    reasons = "".join(f"<tr><td>{html.escape(r['stage'])}</td><td>{html.escape(str(r['reason']))}</td>"
                      f"<td>{r['rows']}</td><td>{r['questions']}</td></tr>" for r in funnel.by_reason)
    return ("<h2>Curation funnel (as the paper's Table 3)</h2>"
            f"{inputs}<table>{head}{body}</table><p class='muted'>{funnel.total} trajectories = {funnel.corpus} in the "
            f"corpus + {funnel.rejected} rejected:</p><table><tr><th>stage</th><th>reason</th><th>rows</th>"
            f"<th>questions</th></tr>{reasons}</table>")


def _histograms(rows: pd.DataFrame, manifest: dict) -> str:
    if rows.empty:
        return ""
    images = {}
    if S.PASS_RATE in rows:
        rates = rows.drop_duplicates(S.PROBLEM_ID)[S.PASS_RATE].dropna().to_numpy()
        images["Student pass rate per question"] = pass_rate_png(rates)
    if S.NUM_TOKENS in rows:
        kept = rows[S.REJECT_REASON].isna() if S.REJECT_REASON in rows else pd.Series(True, index=rows.index)
        images["Trajectory length"] = length_png([], by_label={"all": rows[S.NUM_TOKENS].dropna().tolist(),
                                                               "corpus": rows.loc[kept, S.NUM_TOKENS].dropna().tolist()})
    if S.RESPONSE in rows and S.VERDICT in rows:
        from ded_ray.analysis.histograms import pairwise_distance_values

        unit = manifest.get("config", {}).get("curate", {}).get("diversity", {}).get("unit", "token")
        images["Pairwise distance among correct trajectories"] = distance_png(
            pairwise_distance_values(rows, unit="char" if unit == "char" else "token"))
    if S.TOKEN_ENTROPY in rows and rows[S.TOKEN_ENTROPY].notna().any():
        images["Teacher token entropy (bits)"] = histogram_png(
            rows[S.TOKEN_ENTROPY].dropna().to_numpy(), "Teacher token entropy", "mean bits per token")
    figures = "".join(f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,"
                      f"{base64.b64encode(png).decode()}'><figcaption>{html.escape(t)}</figcaption></figure>"
                      for t, png in images.items())
    return f"<h2>Distributions</h2><div class='grid'>{figures}</div>"


def _trajectories(rows: pd.DataFrame, questions: int = 3, per_question: int = 3) -> str:
    if rows.empty or S.RESPONSE not in rows or S.DIVERSITY_MIN_DISTANCE not in rows:
        return ""
    kept = rows[rows[S.REJECT_REASON].isna()] if S.REJECT_REASON in rows else rows
    kept = kept[kept[S.DIVERSITY_MIN_DISTANCE].notna()]
    if kept.empty:
        return ""
    # Show the questions whose kept trajectories differ most: where the selection had something to choose.
    spread = kept.groupby(S.PROBLEM_ID)[S.DIVERSITY_MIN_DISTANCE].max().sort_values(ascending=False, kind="stable")
    blocks = []
    for pid in spread.index[:questions]:
        group = kept[kept[S.PROBLEM_ID] == pid].sort_values(S.DIVERSITY_MIN_DISTANCE, ascending=False)[:per_question]
        question = html.escape(str(group[S.QUESTION].iloc[0])) if S.QUESTION in group else html.escape(pid)
        panes = "".join(f"<pre>min distance {float(d):.3f}\n\n{html.escape(str(r))}</pre>"
                        for r, d in zip(group[S.RESPONSE], group[S.DIVERSITY_MIN_DISTANCE]))
        blocks.append(f"<h3>{question}</h3><div class='traj'>{panes}</div>")
    return "<h2>Selected trajectories, side by side</h2>" + "".join(blocks)


def _timings(manifest: dict) -> str:
    return _step_timings(manifest.get("steps") or {}) + _stage_timings(manifest.get("stages") or {})


def _step_timings(steps: dict) -> str:
    """`ded run`'s steps, longest first, each with its share of the total as a bar."""
    if not steps:
        return ""
    total = sum(steps.values())
    rows = "".join(
        f"<tr><td>{html.escape(step)}</td><td>{seconds:.0f}</td><td>{100 * seconds / total:.0f}%</td>"
        f"<td style='text-align:left'><div class='bar' style='width:{200 * seconds / total:.0f}px'></div></td></tr>"
        for step, seconds in sorted(steps.items(), key=lambda item: -item[1]))
    return ("<h2>Where the time went</h2><table><tr><th>step</th><th>seconds</th><th>share</th><th></th></tr>"
            f"{rows}<tr><td><b>total</b></td><td><b>{total:.0f}</b></td><td></td><td></td></tr></table>"
            "<p class='muted'>Wall-clock seconds of each step of <code>ded run</code> (the longest time it took: "
            "a rerun that reuses a finished step does not replace it). Steps hold the stages below.</p>")


def _stage_timings(stages: dict) -> str:
    if not stages:
        return ""
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{s.get('rows', '-')}</td><td>{s.get('kept', '-')}</td>"
                   f"<td>{s.get('seconds', 0):.1f}</td></tr>" for n, s in stages.items())
    total = sum(s.get("seconds", 0) for s in stages.values())
    return ("<h2>Timings per stage</h2><table><tr><th>stage</th><th>rows</th><th>kept</th><th>seconds</th></tr>"
            f"{rows}<tr><td><b>total</b></td><td></td><td></td><td><b>{total:.1f}</b></td></tr></table>"
            "<p class='muted'>Seconds of the run that computed each stage (a resumed stage keeps its first timing).</p>")


def _config(manifest: dict) -> str:
    config = manifest.get("config")
    if not config:
        return ""
    versions = json.dumps(manifest.get("versions", {}), indent=1)
    return ("<h2>Configuration</h2><details><summary>resolved config (YAML)</summary><pre>"
            f"{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre></details>"
            f"<details><summary>package versions</summary><pre>{html.escape(versions)}</pre></details>")


# --- formatting ----------------------------------------------------------------------------------------


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.1f}%"


def _signed_pct(value) -> str:
    return "-" if value is None else f"{100 * value:+.1f} pts"


def _num2(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.0f}"
