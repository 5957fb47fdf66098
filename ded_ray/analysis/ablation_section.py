"""The report's `ded ablate` section: the arms' scores with their intervals (a chart and the table), and which
trajectories each diversity selection picked for the questions where the selections disagree.

Reads the summary `steps.ablate.ablate` writes (`ablation.json`) and the run's curation rows for the texts.
"""

from __future__ import annotations

import base64
import html
import io

import pandas as pd

from ded_ray import schema as S

DIVERSITY_ARMS = ("right-hard-diverse", "diverse-reasoning", "diverse-dedupe", "diverse-guard")


def ablation_section(ablation: dict | None, rows: pd.DataFrame, questions: int = 3, chars: int = 300) -> str:
    if not ablation or not ablation.get("arms"):
        return ""
    arms, base = ablation["arms"], ablation.get("base", {})
    chart = "".join(f"<figure><img alt='ablation {html.escape(b)}' src='data:image/png;base64,"
                    f"{base64.b64encode(scores_png(arms, b, base.get(b))).decode()}'><figcaption>{html.escape(b)}: "
                    f"mean over {ablation.get('seeds', 1)} seed(s), 95% interval</figcaption></figure>"
                    for b in sorted({b for r in arms.values() for b in r.get("benchmarks", {})}))
    return (f"<h2>Ablation (Table 3 arms)</h2><div class='grid'>{chart}</div>{_table(arms)}"
            f"{_picks(arms, rows, questions, chars)}")


def scores_png(arms: dict, bench: str, base: dict | None) -> bytes:
    """Horizontal bars: each arm's mean avg@k on `bench` with a 95% interval; the untrained student as a line."""
    from matplotlib.figure import Figure

    names = [a for a, r in arms.items() if r.get("benchmarks", {}).get(bench, {}).get("avg_at_k") is not None]
    means = [100 * arms[a]["benchmarks"][bench]["avg_at_k"] for a in names]
    errors = [196 * (arms[a]["benchmarks"][bench].get("stderr") or 0.0) for a in names]
    fig = Figure(figsize=(6, 0.45 * len(names) + 1.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(names, means, xerr=errors, color=["#888" if a == "random" else "#4c78a8" for a in names], capsize=3)
    if base and base.get("avg_at_k") is not None:
        ax.axvline(100 * base["avg_at_k"], color="#b42318", linestyle="--", label="untrained student")
        ax.legend(loc="lower right")
    ax.invert_yaxis()
    ax.set_xlabel(f"{bench} avg@k (%)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _table(arms: dict) -> str:
    head = ("<tr><th>arm</th><th>rows</th><th>questions</th><th>benchmark</th><th>avg@k ± stderr</th>"
            "<th>seeds</th><th>vs random [95%]</th><th>min distance</th></tr>")
    lines = []
    for arm, result in arms.items():
        name = html.escape(arm + (f" (= {result['same_as']})" if result.get("same_as") else ""))
        distance = result.get("selection", {}).get("mean_min_distance")
        for bench, s in result.get("benchmarks", {}).items():
            gap = s.get("vs_random")
            versus = "-" if not gap else f"{100 * gap['gap']:+.1f} [{100 * gap['low']:+.1f}, {100 * gap['high']:+.1f}]"
            score = "-" if s.get("avg_at_k") is None else f"{100 * s['avg_at_k']:.1f}% ± {100 * (s.get('stderr') or 0):.1f}"
            lines.append(f"<tr><td>{name}</td><td>{result['rows']}</td><td>{result['questions']}</td>"
                         f"<td>{html.escape(bench)}</td><td>{score}</td><td>{s.get('seeds', '-')}</td><td>{versus}</td>"
                         f"<td>{'-' if distance is None else f'{distance:.3f}'}</td></tr>")
    return f"<table>{head}{''.join(lines)}</table>"


def _picks(arms: dict, rows: pd.DataFrame, questions: int, chars: int) -> str:
    """For the first `questions` questions whose diversity arms picked different trajectories: each arm's picks."""
    picks = {a: arms[a]["selection"]["picks"] for a in DIVERSITY_ARMS if arms.get(a, {}).get("selection", {}).get("picks")}
    if len(picks) < 2:
        return ""
    texts = rows.set_index(S.ROLLOUT_ID)[S.RESPONSE].to_dict() if S.RESPONSE in rows and S.ROLLOUT_ID in rows else {}
    asked = rows.drop_duplicates(S.PROBLEM_ID).set_index(S.PROBLEM_ID)[S.QUESTION].to_dict() \
        if S.QUESTION in rows and S.PROBLEM_ID in rows else {}
    differ = [q for q in sorted(set().union(*picks.values()))
              if len({tuple(p.get(q, ())) for p in picks.values()}) > 1]
    blocks = []
    for q in differ[:questions]:
        panes = "".join(
            f"<pre><b>{html.escape(arm)}</b>\n" + "\n\n".join(
                f"{html.escape(rid)}: {html.escape(str(texts.get(rid, ''))[:chars])}" for rid in chosen.get(q, ()))
            + "</pre>" for arm, chosen in picks.items())
        blocks.append(f"<h3>{html.escape(str(asked.get(q, q)))}</h3><div class='traj'>{panes}</div>")
    note = (f"<p class='muted'>{len(differ)} of {len(set().union(*picks.values()))} questions got different picks "
            f"from the diversity selections; the first {min(questions, len(differ))} are shown.</p>")
    return "<h3>What each diversity selection picked</h3>" + note + "".join(blocks)
