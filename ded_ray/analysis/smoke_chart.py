"""Bar chart of the smoke test: per teacher, the student's score next to the teacher's own accuracy."""

from __future__ import annotations

import base64
import io


def smoke_chart_png(summary: dict) -> str | None:
    """Base64 PNG (for the manifest and report.html), or None when no arm finished."""
    arms = [a for a in summary.get("teachers", []) if a.get("status") == "ok"]
    if not arms:
        return None
    from matplotlib.figure import Figure

    names = [a["name"] for a in arms]
    student = [100 * (a.get("score") or 0) for a in arms]
    teacher = [100 * (a.get("teacher_accuracy") or 0) for a in arms]
    base = [v for v in summary.get("base", {}).values() if v is not None]
    fig = Figure(figsize=(6, 3.4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    x = range(len(arms))
    ax.bar([i - 0.2 for i in x], student, width=0.4, label="student trained on it (avg@k)")
    ax.bar([i + 0.2 for i in x], teacher, width=0.4, label="teacher's own accuracy")
    if base:
        ax.axhline(100 * sum(base) / len(base), color="gray", linestyle="--", label="base student")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Teacher smoke test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()
