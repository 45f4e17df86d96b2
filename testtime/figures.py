"""Figures, drawn from the tables the workflow writes (never from raw records)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

LABELS = {
    "best-correct": "Oracle",
    "surprisal-guided-top3": "Surprisal\nTop-3",
    "surprisal-guided": "Surprisal",
    "random-correct": "Random",
    "confidence-guided": "Confidence",
}
COLORS = {
    "best-correct": "#4d4d4d",
    "surprisal-guided-top3": "#1f5fa8",
    "surprisal-guided": "#4a90d9",
    "random-correct": "#a6a6a6",
    "confidence-guided": "#d9534f",
}


def fig4(summary: pd.DataFrame, out: str | Path, style: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Selection strategies: (a) fast_1 success rate with std across seeds, (b) mean speedup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(summary["strategy"])
    x = range(len(strategies))
    colors = [COLORS.get(s, "#888888") for s in strategies]
    labels = [LABELS.get(s, s) for s in strategies]
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(9, 3.6))
    rate = summary["fast_1"] * 100
    err = summary["fast_1_std"].fillna(0) * 100
    ax_a.bar(x, rate, yerr=err, color=colors, capsize=4)
    for xi, r in zip(x, rate):
        ax_a.text(xi, r + 2, f"{r:.0f}%", ha="center", fontsize=8)
    ax_a.set_ylabel("fast$_1$ success (%)")
    ax_a.set_ylim(0, 110)
    ax_a.set_title("(a) fast$_1$ success rate", fontsize=10)
    speed = summary["mean_speedup"].clip(lower=1e-3)
    ax_b.bar(x, speed, color=colors)
    for xi, s in zip(x, summary["mean_speedup"]):
        ax_b.text(xi, max(s, 1e-3) * 1.05, f"{s:.2f}x", ha="center", fontsize=8)
    if style.get("log_speedup", True):
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax_b.set_yscale("log")
        ax_b.set_ylim(min(0.1, float(speed.min()) / 2), max(2.0, float(speed.max()) * 3))
        ax_b.yaxis.set_major_locator(LogLocator(base=10))
        ax_b.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax_b.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax_b.axhline(1.0, color="black", lw=0.8, ls="--")
    ax_b.set_ylabel("mean selected speedup (x)")
    ax_b.set_title("(b) mean speedup", fontsize=10)
    for ax in (ax_a, ax_b):
        ax.set_xticks(list(x), labels, fontsize=8)
    n_seeds, n_tasks = int(summary["n_seeds"].max()), int(summary["n_tasks"].max())
    fig.suptitle(style.get("title") or f"Selection strategies ({n_tasks} tasks x {n_seeds} seeds)", fontsize=11)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.pdf")
    fig.savefig(tmp, metadata={"Title": "testtime Figure 4", "Keywords": json.dumps({"config_hash": provenance.get("config_hash")})})
    plt.close(fig)
    tmp.replace(out)
