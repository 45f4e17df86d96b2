"""Figures, drawn from the tables the workflow writes (never from raw records)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from testtime.selection import REGISTRY


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: str | Path, title: str, provenance: dict[str, Any]) -> None:
    """Write the PDF atomically, the config hash in its metadata."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.pdf")
    fig.savefig(tmp, metadata={"Title": title, "Keywords": json.dumps({"config_hash": provenance.get("config_hash")})})
    plt.close(fig)
    tmp.replace(out)


def fig3(
    table2: pd.DataFrame,
    ttt_fast_1: float,
    equivalent_k: float,
    out: str | Path,
    style: dict[str, Any],
    provenance: dict[str, Any],
) -> None:
    """Best-of-N scaling: pass@k (%) against K on a log2 axis with a ±1 std band, the TTT BoA
    line and its equivalent K, and the saturation region shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    k = table2["k"].to_numpy(dtype=float)
    y = table2["pass_at_k"].to_numpy(dtype=float) * 100
    std = table2["std"].fillna(0).to_numpy(dtype=float) * 100
    ax.plot(k, y, "o-", color="#1f5fa8", label="Best-of-N (oracle selection)")
    ax.fill_between(k, y - std, y + std, color="#1f5fa8", alpha=0.2, lw=0)
    sat = style.get("saturation_k")
    if sat is not None and k.max() >= sat:
        ax.axvspan(sat, k.max() * 1.4, color="#999999", alpha=0.15, lw=0)
        ax.text(sat * 1.05, 5, "Saturation", fontsize=8, color="#555555")
    if equivalent_k == float("inf"):
        label_k = f"TTT above the curve (equiv. K > {int(k.max())})"
    elif equivalent_k != equivalent_k:
        label_k = "TTT equiv. K undefined"
    else:
        label_k = f"TTT equiv. K={equivalent_k:.2g}"
    ax.axhline(ttt_fast_1 * 100, color="#d9534f", ls="--", label=f"TTT BoA ({ttt_fast_1 * 100:.1f}%)")
    ax.text(k.min(), ttt_fast_1 * 100 + 2.5, label_k, color="#d9534f", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(k, [f"{int(v)}" for v in k])
    ax.set_xlim(k.min() / 1.4, k.max() * 1.4)
    ax.set_ylim(0, 105)
    ax.set_xlabel("K (samples per task)")
    ax.set_ylabel("pass@k (%)")
    ax.legend(fontsize=8, loc="lower right")
    if style.get("title"):
        ax.set_title(style["title"], fontsize=11)
    fig.tight_layout()
    _save(fig, out, "testtime Figure 3", provenance)


def fig5(
    table6: pd.DataFrame, selection: pd.DataFrame, out: str | Path, style: dict[str, Any], provenance: dict[str, Any]
) -> None:
    """TTT trajectories: aggregate fast_1 (%) per adaptation step, one line per main run, a star
    at each run's BoA step, the 'minimum signal threshold' band shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    band = style.get("threshold_band")
    if band:
        ax.axvspan(band[0], band[1], color="#f0ad4e", alpha=0.15, lw=0, label="Minimum Signal Threshold")
    colors = ["#1f5fa8", "#d9534f", "#5cb85c", "#8e6bbf", "#f0ad4e", "#4d4d4d"]
    for i, (run, g) in enumerate(table6.groupby("run", sort=False)):
        g = g.sort_values("step")
        color = colors[i % len(colors)]
        seed = g["seed"].iloc[0]
        label = f"{run} (seed {seed})" if seed == seed else run
        ax.plot(g["step"], g["agg_fast_1"] * 100, "o-", color=color, label=label, ms=4)
        sel = selection[selection["run"] == run].iloc[0]
        ax.plot([sel["boa_step"]], [sel["boa_fast_1"] * 100], marker="*", ms=14, color=color, mec="black", mew=0.6, ls="none")
    ax.set_xlabel("adaptation step")
    ax.set_ylabel("aggregate fast$_1$ (%)")
    top = max(10.0, float(table6["agg_fast_1"].max()) * 100 * 1.25)
    ax.set_ylim(0, top)
    ax.set_xticks(sorted(table6["step"].unique()))
    ax.legend(fontsize=7, loc="best")
    ax.set_title(style.get("title") or "TTT trajectories (stars: Best-of-Adaptation)", fontsize=10)
    fig.tight_layout()
    _save(fig, out, "testtime Figure 5", provenance)


def fig6(probe: pd.DataFrame, out: str | Path, style: dict[str, Any], provenance: dict[str, Any]) -> None:
    """NLL probe: Spearman ρ(NLL, speedup) per TTT step over all samples and in the bottom
    quartile (the configured reading), with mean NLL on a second axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    ax.plot(probe["step"], probe["rho"], "o-", color="#1f5fa8", label=f"all samples (n = {int(probe['n'].iloc[0])})")
    reading = probe["bottom_quartile"].iloc[0]
    ax.plot(probe["step"], probe["rho_bottom_quartile"], "s--", color="#d9534f", label=f"bottom quartile ({reading})")
    ax.axhline(0, color="black", lw=0.6)
    ax2 = ax.twinx()
    ax2.plot(probe["step"], probe["mean_nll"], ":", color="#777777", label="mean NLL (right)")
    ax2.set_ylabel("mean NLL (nats)", color="#777777")
    finite = probe["rho_bottom_quartile"].dropna()
    if len(finite):
        i = finite.abs().idxmax()
        row = probe.loc[i]
        ax.annotate(
            f"ρ = {row['rho_bottom_quartile']:.2f} (p = {row['p_bottom_quartile']:.1e})",
            (row["step"], row["rho_bottom_quartile"]),
            textcoords="offset points",
            xytext=(5, -12),
            fontsize=7,
            color="#d9534f",
        )
    ax.set_xlabel("TTT step")
    ax.set_ylabel("Spearman ρ(NLL, speedup)")
    ax.set_xticks(probe["step"].tolist())
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="best")
    ax.set_title(style.get("title") or "NLL probe: fixed Best-of-N samples under each TTT checkpoint", fontsize=9)
    fig.tight_layout()
    _save(fig, out, "testtime Figure 6", provenance)


def fig4(summary: pd.DataFrame, out: str | Path, style: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Selection strategies: (a) fast_1 success rate with std across seeds (the paper's) or its 95%
    Wilson interval over task-seed outcomes (``style["error_bars"]``), (b) mean speedup (with
    ``wilson95``, also its 95% bootstrap interval over the task-seed picks)."""
    plt = _pyplot()
    strategies = list(summary["strategy"])
    x = range(len(strategies))
    colors = [REGISTRY[s].color if s in REGISTRY else "#888888" for s in strategies]
    labels = [REGISTRY[s].label if s in REGISTRY else s for s in strategies]
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(9, 3.6))
    rate = summary["fast_1"] * 100
    if style.get("error_bars", "seed_std") == "wilson95" and "fast_1_ci_low" in summary:
        err = [(rate - summary["fast_1_ci_low"] * 100).clip(lower=0), (summary["fast_1_ci_high"] * 100 - rate).clip(lower=0)]
        ax_a.set_xlabel("bars: 95% Wilson interval over task-seed outcomes", fontsize=7)
    else:
        err = summary["fast_1_std"].fillna(0) * 100
    ax_a.bar(x, rate, yerr=err, color=colors, capsize=4)
    upper = rate + (err[1] if isinstance(err, list) else err)  # labels above the error bars
    for xi, r, top in zip(x, rate, upper):
        ax_a.text(xi, top + 2, f"{r:.0f}%", ha="center", fontsize=8)
    ax_a.set_ylabel("fast$_1$ success (%)")
    ax_a.set_ylim(0, 110)
    ax_a.set_title("(a) fast$_1$ success rate", fontsize=10)
    speed = summary["mean_speedup"].clip(lower=1e-3)
    speed_err = None
    if style.get("error_bars", "seed_std") == "wilson95" and "mean_speedup_ci_low" in summary:
        # the bootstrap interval of the mean over task-seed picks (Table 3)
        speed_err = [
            (speed - summary["mean_speedup_ci_low"].clip(lower=1e-3)).clip(lower=0),
            (summary["mean_speedup_ci_high"] - speed).clip(lower=0),
        ]
        ax_b.set_xlabel("bars: 95% bootstrap interval of the mean over task-seed picks", fontsize=7)
    ax_b.bar(x, speed, yerr=speed_err, color=colors, capsize=4)
    tops = speed if speed_err is None else speed + speed_err[1]  # labels above the error bars
    for xi, s, top in zip(x, summary["mean_speedup"], tops):
        ax_b.text(xi, max(top, 1e-3) * 1.03, f"{s:.2f}x", ha="center", va="bottom", fontsize=8)
    if style.get("log_speedup", True):
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax_b.set_yscale("log")
        ax_b.set_ylim(min(0.1, float(speed.min()) / 2), max(2.0, float(tops.max()) * 3))
        ax_b.yaxis.set_major_locator(LogLocator(base=10))
        ax_b.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax_b.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    else:
        ax_b.set_ylim(0, max(2.0, float(tops.max()) * 1.15))
    ax_b.axhline(1.0, color="black", lw=0.8, ls="--")
    ax_b.set_ylabel("mean selected speedup (x)")
    ax_b.set_title("(b) mean speedup", fontsize=10)
    for ax in (ax_a, ax_b):
        ax.set_xticks(list(x), labels, fontsize=8)
    n_seeds, n_tasks = int(summary["n_seeds"].max()), int(summary["n_tasks"].max())
    fig.suptitle(style.get("title") or f"Selection strategies ({n_tasks} tasks x {n_seeds} seeds)", fontsize=11)
    fig.tight_layout()
    _save(fig, out, "testtime Figure 4", provenance)


def rlvr_curve(table5: pd.DataFrame, out: str | Path, style: dict[str, Any], provenance: dict[str, Any]) -> None:
    """RLVR training curve: training-batch correctness and fast_1 (%) per step (left axis) and
    mean reward (right axis), Table 5's checkpoint steps marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    t = table5.sort_values("step")
    ax.plot(t["step"], t["correct_rate"] * 100, "o-", color="#1f5fa8", ms=4, label="correct (training batch)")
    ax.plot(t["step"], t["fast_1"] * 100, "s--", color="#5cb85c", ms=4, label="fast$_1$ (training batch)")
    ckpt = t[t["checkpoint"].astype(bool)]
    ax.plot(
        ckpt["step"], ckpt["correct_rate"] * 100, "*", ms=13, color="#1f5fa8", mec="black", mew=0.6, ls="none", label="checkpoint"
    )
    paper = t.dropna(subset=["paper_correct_rate"])
    if len(paper):
        ax.plot(paper["step"], paper["paper_correct_rate"] * 100, "x", color="#4d4d4d", ms=7, ls="none", label="paper (Table 5)")
    ax.set_ylim(0, 105)
    ax.set_xlabel("RLVR step")
    ax.set_ylabel("% of the step's rollouts")
    right = ax.twinx()
    right.plot(t["step"], t["mean_reward"], ":", color="#d9534f", label="mean reward")
    right.set_ylabel("mean normalised reward", color="#d9534f")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower right")
    ax.set_xticks(sorted(t["step"].unique()))
    ax.set_title(style.get("title") or f"RLVR training curve ({t['run'].iloc[0] if 'run' in t else ''})", fontsize=10)
    fig.tight_layout()
    _save(fig, out, "testtime RLVR training curve", provenance)


#: Figure 1's strategy markers at the largest K (§15): strategy -> matplotlib marker.
FIG1_MARKERS: dict[str, str] = {
    "surprisal-guided-top3": "*",
    "surprisal-guided": "D",
    "random-correct": "s",
    "confidence-guided": "X",
}


def fig1(
    table2: pd.DataFrame,
    table3: pd.DataFrame,
    ttt: dict[str, Any],
    out: str | Path,
    style: dict[str, Any],
    provenance: dict[str, Any],
) -> None:
    """Teaser: the Best-of-N scaling curve (Table 2, ±std band, dotted K = 1 baseline) with each
    strategy's fast_1 (Table 3) and the TTT BoA mean (Table 6) as markers at the largest K, and a
    bracket between confidence and surprisal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    k = table2["k"].to_numpy(dtype=float)
    y = table2["pass_at_k"].to_numpy(dtype=float) * 100
    std = table2["std"].fillna(0).to_numpy(dtype=float) * 100
    ax.plot(k, y, "o-", color="#888888", label="Best-of-N (oracle)")
    ax.fill_between(k, y - std, y + std, color="#888888", alpha=0.2, lw=0)
    ax.axhline(y[0], color="#888888", ls=":", lw=1)
    x_end = k.max()
    values = table3.set_index("strategy")["fast_1"] * 100
    for name, marker in FIG1_MARKERS.items():
        if name in values:
            strategy = REGISTRY[name]
            ax.plot(
                [x_end],
                [values[name]],
                marker=marker,
                ms=11,
                color=strategy.color,
                ls="none",
                mec="black",
                mew=0.5,
                label=f"{strategy.label.replace(chr(10), ' ')} ({values[name]:.0f}%)",
            )
    boa = ttt.get("boa_fast_1_mean")
    if boa is not None and boa == boa:
        ax.plot(
            [x_end],
            [boa * 100],
            marker="v",
            ms=10,
            color="#5cb85c",
            ls="none",
            mec="black",
            mew=0.5,
            label=f"TTT BoA ({boa * 100:.1f}%)",
        )
    if {"surprisal-guided", "confidence-guided"} <= set(values.index):
        lo, hi = sorted((values["confidence-guided"], values["surprisal-guided"]))
        xb = x_end * 1.25
        ax.plot([xb, xb], [lo, hi], color="#2e7d32", lw=1.5)
        ax.text(
            xb * 1.05,
            (lo + hi) / 2,
            f"{values['surprisal-guided'] - values['confidence-guided']:+.0f}%",
            color="#2e7d32",
            fontsize=8,
            va="center",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(k, [f"{int(v)}" for v in k])
    ax.set_xlim(k.min() / 1.4, x_end * 2)
    ax.set_ylim(0, 105)
    ax.set_xlabel("K (samples per task)")
    ax.set_ylabel("pass@1 (%)")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(style.get("title") or "Best-of-N scaling and selection at the largest K", fontsize=10)
    fig.tight_layout()
    _save(fig, out, "testtime Figure 1", provenance)


def regime_points(per_task: pd.DataFrame, selection: pd.DataFrame, table8: pd.DataFrame, run: str, seed: int) -> pd.DataFrame:
    """Figure 7's points (D17): per task of TTT run ``run``, x = its step-0 fast_1 (base coverage,
    %) and y = its fast_1 at the run's BoA step minus the Best-of-N sample fast_1 of seed ``seed``
    (pp). Tasks without Best-of-N records of that seed are left out."""
    bon = table8[(table8["seed"] == seed) & (table8["problem_id"] >= 0)].set_index("problem_id")["sample_fast_1"]
    return regime_points_against(per_task, selection, bon, run)


def regime_points_against(per_task: pd.DataFrame, selection: pd.DataFrame, bon: pd.Series, run: str) -> pd.DataFrame:
    """:func:`regime_points` against a given Best-of-N sample fast_1 per task (``bon``, indexed by
    problem_id): Subset 1 takes it from Table 8, Subset 2 from Table 4's ``bon_fast_1``."""
    boa = int(selection.loc[selection["run"] == run, "boa_step"].iloc[0])
    tasks = per_task[per_task["run"] == run].pivot(index="problem_id", columns="step", values="fast_1")
    common = tasks.index.intersection(bon.index)
    return pd.DataFrame(
        {
            "problem_id": common,
            "coverage": tasks.loc[common, 0].to_numpy(dtype=float) * 100,
            "benefit": (tasks.loc[common, boa].to_numpy(dtype=float) - bon.loc[common].to_numpy(dtype=float)) * 100,
        }
    )


def fig7(
    per_task: pd.DataFrame,
    selection: pd.DataFrame,
    table8: pd.DataFrame,
    s2_trajectory: pd.DataFrame | None,
    s2_selection: pd.DataFrame | None,
    s2_tasks: pd.DataFrame | None,
    out: str | Path,
    style: dict[str, Any],
    provenance: dict[str, Any],
) -> None:
    """Regime dependence: BoA benefit over Best-of-N (pp) against base coverage (%), one labelled
    point per task, a dashed threshold line between the 'hard' and 'moderate' regimes. Subset 1
    (circles) is the first main run against Table 8; Subset 2 (squares), when ``style['subset2_run']``
    names the Subset-2 run, is that run (Table 4's trajectory and selection) against Table 4's
    per-task Best-of-N fast_1."""
    plt = _pyplot()
    subsets = [("Subset 1", "o", style["run"], regime_points(per_task, selection, table8, style["run"], int(style["seed"])))]
    if style.get("subset2_run") and s2_trajectory is not None:
        bon = s2_tasks.set_index("problem_id")["bon_fast_1"]
        subsets.append(
            ("Subset 2", "s", style["subset2_run"], regime_points_against(s2_trajectory, s2_selection, bon, style["subset2_run"]))
        )
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    benefits = [0.0]
    for label, marker, run, points in subsets:
        colors = ["#d9534f" if b < 0 else "#1f5fa8" for b in points["benefit"]]
        ax.scatter(points["coverage"], points["benefit"], c=colors, s=40, marker=marker, zorder=3, label=f"{label} ({run})")
        for r in points.itertuples():
            ax.annotate(str(int(r.problem_id)), (r.coverage, r.benefit), textcoords="offset points", xytext=(4, 4), fontsize=8)
        benefits += [abs(float(b)) for b in points["benefit"]]
    threshold = float(style.get("threshold", 30))
    ax.axvline(threshold, color="black", ls="--", lw=0.8)
    ax.axhline(0, color="#888888", lw=0.6)
    ax.text(0.02, 0.03, "Hard: Search > Adaptation", transform=ax.transAxes, fontsize=7, va="bottom")
    ax.text(0.98, 0.03, "Moderate: Adaptation Helps", transform=ax.transAxes, fontsize=7, va="bottom", ha="right")
    span = max(10.0, max(benefits) * 1.2)
    ax.set_ylim(-span, span)
    ax.set_xlim(-5, 105)
    ax.set_xlabel("base policy coverage: step-0 fast$_1$ (%)")
    ax.set_ylabel("BoA benefit over Best-of-N (pp)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(style.get("title") or f"Regime dependence (Best-of-N seed {style['seed']})", fontsize=10)
    fig.tight_layout()
    _save(fig, out, "testtime Figure 7", provenance)


#: The deployable orders' colours and labels: those of the post-hoc strategy each equals at m = K.
DEPLOYABLE_STRATEGY = {"surprisal": "surprisal-guided", "confidence": "confidence-guided", "random": "random-correct"}


def deployable_selection(table: pd.DataFrame, out: str | Path, style: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Open question 2: (a) fast_1 (%) and (b) evaluator calls per task against m, the number of
    top-ranked candidates the pipeline may evaluate, one line per order (testtime.deployable),
    with a ±1 std band across seeds on (a)."""
    plt = _pyplot()
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for order, g in table.groupby("order", sort=False):
        g = g.sort_values("m")
        strategy = REGISTRY.get(DEPLOYABLE_STRATEGY.get(order, ""))
        color = strategy.color if strategy else "#888888"
        y = g["fast_1"].to_numpy(dtype=float) * 100
        std = g["fast_1_std"].fillna(0).to_numpy(dtype=float) * 100
        ax_a.plot(g["m"], y, "-", color=color, label=f"{order} order", lw=1.6)
        ax_a.fill_between(g["m"], y - std, y + std, color=color, alpha=0.15, lw=0)
        ax_b.plot(g["m"], g["mean_calls"], "-", color=color, label=f"{order} order", lw=1.6)
    m_max = int(table["m"].max())
    ax_b.plot([1, m_max], [1, m_max], ":", color="#777777", lw=0.8, label="m (every candidate)")
    for ax in (ax_a, ax_b):
        ax.set_xscale("log", base=2)
        ticks = [2**i for i in range(int(np.log2(m_max)) + 1)]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("m (top-ranked candidates the pipeline may evaluate)")
        ax.legend(fontsize=7, loc="best")
    ax_a.set_ylim(0, 105)
    ax_a.set_ylabel("fast$_1$ of the returned sample (%)")
    ax_a.set_title("(a) fast$_1$ (0 when none of the top m is correct)", fontsize=9)
    ax_b.set_ylabel("evaluator calls per task")
    ax_b.set_title("(b) calls: up to the first correct candidate", fontsize=9)
    n_seeds, n_tasks = int(table["n_seeds"].max()), int(table["n_tasks"].max())
    fig.suptitle(
        style.get("title") or f"Deployable selection: rank by score, evaluate in order ({n_tasks} tasks x {n_seeds} seeds)",
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, out, "testtime deployable selection", provenance)


def _comparison(table: pd.DataFrame, panels: list[tuple[str, str, float]], title: str) -> Any:
    """TTT variants side by side (testtime.tables.compare_runs): one panel per ``(column, y
    label, scale)``, one line per run labelled by its variant, a star at each run's BoA step."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colors = ["#1f5fa8", "#d9534f", "#5cb85c", "#8e6bbf", "#f0ad4e", "#4d4d4d"]
    for i, (run, g) in enumerate(table.groupby("run", sort=False)):
        g = g.sort_values("step")
        color = colors[i % len(colors)]
        label = f"{run} ({g['variant'].iloc[0]})"
        boa = g[g["boa"].astype(bool)]
        for ax, (column, _, scale) in zip(axes[0], panels):
            ax.plot(g["step"], g[column] * scale, "o-", color=color, ms=4, label=label)
            ax.plot(boa["step"], boa[column] * scale, marker="*", ms=12, color=color, mec="black", mew=0.6, ls="none")
    for ax, (_, ylabel, _) in zip(axes[0], panels):
        ax.set_xlabel("TTT step")
        ax.set_ylabel(ylabel)
        ax.set_xticks(sorted(table["step"].unique()))
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def ttt_remedies(table: pd.DataFrame, out: str | Path, style: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Open question 1: the TTT trajectory (aggregate fast_1) and the NLL probe (mean NLL of the
    fixed Best-of-N samples, bottom-quartile ρ) per step of the paper run and its entropy-bonus
    and KL-penalty variants; stars at each run's BoA step."""
    panels = [
        ("agg_fast_1", "aggregate fast$_1$ (%)", 100.0),
        ("mean_nll", "probe: mean NLL (nats)", 1.0),
        ("rho_bottom_quartile", "probe: bottom-quartile ρ", 1.0),
    ]
    title = style.get("title") or "Over-sharpening remedies: trajectory and NLL probe (stars: BoA)"
    _save(_comparison(table, panels, title), out, "testtime TTT remedies", provenance)


def reward_sparsification(table: pd.DataFrame, out: str | Path, style: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Open question 3: aggregate fast_1 and correct rate per TTT step with the normalised and
    the sparse fast_1 reward; stars at each run's BoA step (does the optimum move later?)."""
    panels = [("agg_fast_1", "aggregate fast$_1$ (%)", 100.0), ("correct_rate", "correct (%)", 100.0)]
    title = style.get("title") or "Reward sparsification: normalised vs fast$_1$ reward (stars: BoA)"
    _save(_comparison(table, panels, title), out, "testtime reward sparsification", provenance)


#: Figures drawn from CSV tables (and JSON summaries) alone: name -> (function, its table arguments by input
#: name; a name ending in '?' is optional and passed as None when the rule does not give it).
#: The ``figure`` rule script reads the named inputs and calls :func:`render`.
TABLE_FIGURES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "fig4": (fig4, ("table",)),
    "fig5": (fig5, ("table", "selection")),
    "fig6": (fig6, ("table",)),
    "fig1": (fig1, ("table2", "table3", "ttt")),
    "fig7": (fig7, ("per_task", "selection", "table8", "s2_trajectory?", "s2_selection?", "s2_tasks?")),
    "rlvr_curve": (rlvr_curve, ("table",)),
    "deployable_selection": (deployable_selection, ("table",)),
    "ttt_remedies": (ttt_remedies, ("table",)),
    "reward_sparsification": (reward_sparsification, ("table",)),
}


def render(name: str, tables: dict[str, str | Path], out: str | Path, style: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Draw figure ``name`` of :data:`TABLE_FIGURES` from its CSV tables (input name -> path)."""
    if name not in TABLE_FIGURES:
        raise ValueError(f"figure {name!r}: not one of {sorted(TABLE_FIGURES)}")
    draw, names = TABLE_FIGURES[name]
    missing = [n for n in names if not n.endswith("?") and n not in tables]
    if missing:
        raise ValueError(f"figure {name!r}: missing input table(s) {missing}")
    # a name ending in '?' is optional: None when the rule does not give it
    draw(*(_read(tables[n.rstrip("?")]) if n.rstrip("?") in tables else None for n in names), out, style, provenance)


def _read(path: str | Path) -> pd.DataFrame | dict[str, Any]:
    """A CSV table as a DataFrame, a JSON summary as a dict."""
    return json.loads(Path(path).read_text()) if str(path).endswith(".json") else pd.read_csv(path)
