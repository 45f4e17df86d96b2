"""TTT tables (Tables 4, 6, 10, 12 and cross-subset transfer) from per-step metrics.

Pure functions: per-step ``metrics.json`` dicts (testtime.ttt.run_step) and records in,
DataFrames out. Percentages stay fractions in [0, 1]; figures and readers scale them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from testtime import analysis


def trajectory(run: str, metrics: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run's trajectory: ``(aggregate rows per step, per-task rows per step)``."""
    ordered = sorted(metrics, key=lambda m: m["step"])
    if [m["step"] for m in ordered] != list(range(len(ordered))):
        raise ValueError(f"run {run}: steps {[m['step'] for m in ordered]} are not 0..S")
    agg, per_task = [], []
    for m in ordered:
        seed = m.get("provenance", {}).get("seed")
        agg.append(
            {
                "run": run,
                "seed": seed,
                "step": m["step"],
                "rollouts": m["rollouts_cumulative"],
                "agg_fast_1": m["agg_fast_1"],
                "correct_rate": m["correct_rate"],
                "mean_speedup": m["mean_speedup"],
                "mean_reward": m["mean_reward"],
                "truncation_rate": m["truncation_rate"],
                "update_skipped": bool(m.get("update", {}).get("skipped", False)),
                "grad_norm": m.get("update", {}).get("grad_norm", float("nan")),
            }
        )
        for pid, t in sorted(m["per_task"].items(), key=lambda kv: int(kv[0])):
            per_task.append(
                {"run": run, "step": m["step"], "problem_id": int(pid), "fast_1": t["fast_1"], "correct_rate": t["correct_rate"]}
            )
    return pd.DataFrame(agg), pd.DataFrame(per_task, columns=["run", "step", "problem_id", "fast_1", "correct_rate"])


def selection(agg: pd.DataFrame, per_task: pd.DataFrame, patience: int = 1) -> pd.DataFrame:
    """Per run: Best-of-Adaptation, early stopping (patience P), fixed final step, per-task oracle.

    The BoA value is the selection score itself (in-batch validation, D21: optimistic).
    """
    rows = []
    for run, g in agg.groupby("run", sort=False):
        g = g.sort_values("step")
        scores = g["agg_fast_1"].to_numpy()
        boa = analysis.boa_select(scores)
        stop = analysis.early_stop_select(scores, patience=patience)
        tasks = per_task[per_task["run"] == run]
        oracle = float(tasks.groupby("problem_id")["fast_1"].max().mean()) if len(tasks) else float("nan")
        rows.append(
            {
                "run": run,
                "seed": g["seed"].iloc[0],
                "steps": int(g["step"].max()),
                "boa_step": boa,
                "boa_fast_1": float(scores[boa]),
                "boa_correct_rate": float(g["correct_rate"].iloc[boa]),
                "early_stop_step": stop,
                "early_stop_fast_1": float(scores[stop]),
                "final_step": int(g["step"].iloc[-1]),
                "final_fast_1": float(scores[-1]),
                "oracle_fast_1": oracle,
            }
        )
    return pd.DataFrame(rows)


def summary(sel: pd.DataFrame) -> dict[str, Any]:
    """Mean ± std (ddof=1) of the BoA value over runs (the paper's '30.6 ± 11.3%')."""
    values = sel["boa_fast_1"].to_numpy(dtype=float)
    return {
        "n_runs": int(values.size),
        "runs": list(sel["run"]),
        "boa_fast_1_mean": float(values.mean()) if values.size else float("nan"),
        "boa_fast_1_std": float(np.std(values, ddof=1)) if values.size > 1 else float("nan"),
        "boa_correct_rate_mean": float(sel["boa_correct_rate"].mean()) if values.size else float("nan"),
    }


def table4(
    bon: pd.DataFrame, agg: pd.DataFrame, per_task: pd.DataFrame, steps: Sequence[int], k_bon: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 4: Best-of-N sample-level fast_1 on Subset 2 against the TTT run's steps.

    ``bon`` holds the Best-of-N evaluation records of one seed (correct, speedup, problem_id).
    Returns ``(table, per_task)``; 'BoA Step s' is the aggregate fast_1 of step s, as in the
    paper (step 1 is below step 0 there, so it is not a max over steps).
    """
    fast = analysis.fast_1(bon["correct"].to_numpy(), bon["speedup"].to_numpy())
    base = float(fast.mean())
    n_tasks = int(bon["problem_id"].nunique())
    rows = [{"method": f"Best-of-N (K={k_bon})", "rollouts": int(len(bon)), "agg_fast_1": base, "delta": 0.0}]
    missing = [s for s in steps if s not in set(agg["step"])]
    if missing:
        raise ValueError(
            f"ttt.experiments.subset2.steps: steps {missing} are beyond the run's last step {int(agg['step'].max())}"
        )
    for s in steps:
        row = agg[agg["step"] == s].iloc[0]
        rows.append(
            {
                "method": f"BoA Step {s}",
                "rollouts": int(row["rollouts"]),
                "agg_fast_1": float(row["agg_fast_1"]),
                "delta": float(row["agg_fast_1"]) - base,
            }
        )
    bon_task = bon.assign(fast=fast).groupby("problem_id")["fast"].mean().rename("bon_fast_1")
    wide = per_task[per_task["step"].isin(steps)].pivot(index="problem_id", columns="step", values="fast_1")
    wide.columns = [f"step{s}_fast_1" for s in wide.columns]
    tasks = pd.concat([bon_task, wide], axis=1).reset_index().rename(columns={"index": "problem_id"})
    if len(tasks) != n_tasks:
        raise ValueError("table 4: the TTT run and the Best-of-N samples cover different tasks")
    return pd.DataFrame(rows), tasks


def lr_pattern(scores: Sequence[float]) -> str:
    """Table 10's 'Pattern' column, as a rule: where the peak is and what follows it."""
    arr = np.asarray(scores, dtype=float)
    peak = analysis.boa_select(arr)
    if peak == 0:
        return "No improvement"
    if peak == arr.size - 1:
        return "Improves to the last step"
    return "Early peak, regression" if peak == 1 else "Peak then regress"


def table10(agg: pd.DataFrame, lrs: Mapping[str, float]) -> pd.DataFrame:
    """Table 10: per learning rate, the peak (BoA) step, its fast_1, the trajectory, the pattern."""
    rows = []
    for run, lr in lrs.items():
        g = agg[agg["run"] == run].sort_values("step")
        scores = g["agg_fast_1"].to_numpy()
        peak = analysis.boa_select(scores)
        rows.append(
            {
                "run": run,
                "lr": lr,
                "peak_step": peak,
                "boa_fast_1": float(scores[peak]),
                "trajectory": " ".join(f"{100 * v:.1f}" for v in scores),
                "pattern": lr_pattern(scores),
            }
        )
    return pd.DataFrame(rows).sort_values("lr", ascending=False, kind="mergesort").reset_index(drop=True)


def table12(per_task: pd.DataFrame, runs: Sequence[str]) -> pd.DataFrame:
    """Table 12: one isolated run per task; fast_1 per step and its BoA step."""
    rows = []
    for run in runs:
        g = per_task[per_task["run"] == run].sort_values("step")
        if g["problem_id"].nunique() != 1:
            raise ValueError(f"ttt.experiments.isolated: run {run!r} adapts on {g['problem_id'].nunique()} tasks, not one")
        scores = g["fast_1"].to_numpy()
        row = {"run": run, "problem_id": int(g["problem_id"].iloc[0])}
        row.update({f"step{int(s)}": float(v) for s, v in zip(g["step"], scores)})
        row["boa_step"] = analysis.boa_select(scores)
        rows.append(row)
    return pd.DataFrame(rows)


def transfer_table(
    transfers: Mapping[str, Mapping[str, Any]],
    baselines: Mapping[str, Mapping[str, Any]],
    sources: Mapping[str, Mapping[str, Any]],
) -> pd.DataFrame:
    """Cross-subset transfer: the adapted checkpoint on the other subset against that subset's
    unadapted step 0 and against the source checkpoint on its own tasks."""
    rows = []
    for name, m in transfers.items():
        base = baselines[name]
        rows.append(
            {
                "transfer": name,
                "source": m["source"],
                "source_step": m["source_step"],
                "target": m["target"],
                "transfer_fast_1": m["agg_fast_1"],
                "transfer_correct_rate": m["correct_rate"],
                "unadapted_fast_1": base["agg_fast_1"],
                "delta": m["agg_fast_1"] - base["agg_fast_1"],
                "source_own_fast_1": sources[name]["agg_fast_1"],
                "n_rollouts": m["n_rollouts"],
            }
        )
    return pd.DataFrame(rows)


def equivalent_k(table2: pd.DataFrame, target: float) -> float:
    """TTT's equivalent Best-of-N budget (§7): (1-p)^K formula below K=1, log2-linear inside."""
    if not math.isfinite(target):
        return float("nan")
    return analysis.interpolated_equivalent_k(table2["k"].tolist(), table2["pass_at_k"].tolist(), target)


def equivalent_k_facts(table2: pd.DataFrame, ttt_summary: Mapping[str, Any]) -> dict[str, Any]:
    """Figure 3's facts: the TTT BoA mean of Table 6's summary against Table 2's curve."""
    target = ttt_summary["boa_fast_1_mean"]
    return {
        "ttt_boa_fast_1_mean": target,
        "ttt_boa_fast_1_std": ttt_summary["boa_fast_1_std"],
        "ttt_runs": ttt_summary["runs"],
        "bon_pass_at_1": float(table2.loc[table2["k"] == 1, "pass_at_k"].iloc[0]),
        "equivalent_k": equivalent_k(table2, target),
        "note": "TTT BoA is a sample-level aggregate over the main runs (whose task sets may differ, D1/D18); "
        "the curve is Best-of-N pass@k on the Best-of-N suite",
    }


# --------------------------------------------------------------------------------------
# The paper's open questions 1 and 3 (§6.6): TTT variants side by side
# --------------------------------------------------------------------------------------

#: The run switches the comparisons show, with the paper's values (testtime.runs.OPEN_QUESTION_KEYS).
SWITCHES: dict[str, Any] = {"entropy_bonus": 0.0, "kl_to_start": 0.0, "reward": "normalized"}
#: The update's diagnostics of the regularised runs (testtime.pg.policy): per rollout token under θ_{s-1}.
UPDATE_DIAGNOSTICS = ("entropy_mean", "kl_to_start_mean")
PROBE_COLUMNS = ("rho", "p", "rho_bottom_quartile", "p_bottom_quartile", "mean_nll")


def run_switches(metrics: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run, its open-question switches as its step records' provenance holds them (a run's
    settings carry a switch only when it differs from the paper's value)."""
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        ttt = m.get("provenance", {}).get("config", {}).get("ttt", {})
        out[m["run"]] = {key: ttt.get(key, paper) for key, paper in SWITCHES.items()}
    return out


def variant_label(switches: Mapping[str, Any]) -> str:
    """A run's variant in words: 'paper' or the switches it sets."""
    parts = [f"{key} {value}" for key, value in switches.items() if value != SWITCHES[key]]
    return ", ".join(parts) if parts else "paper"


def compare_runs(
    agg: pd.DataFrame,
    per_task: pd.DataFrame,
    metrics: Sequence[Mapping[str, Any]],
    runs: Sequence[str],
    patience: int = 1,
    probes: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """TTT variants side by side, one row per run and step in ``runs`` order: the run's switches
    and ``variant``, the Table 6 trajectory (aggregate fast_1, correct rate, mean speedup, mean
    reward), the update's regulariser diagnostics where it had them, ``boa`` (the step is the
    run's best-of-adaptation step) and, with ``probes`` (run -> its probe table), the NLL
    probe's ρ(NLL, speedup) overall and in the bottom quartile and the mean NLL of the fixed
    Best-of-N samples under that step's checkpoint. Facts: per run its variant, BoA step and
    value, early-stop and final fast_1, and (probes) the mean NLL at step 0 and the last step."""
    missing = [r for r in runs if r not in set(agg["run"])]
    if missing:
        raise ValueError(f"compare_runs: no step records of run(s) {missing}")
    switches = run_switches(metrics)
    sel = selection(agg, per_task, patience=patience).set_index("run")
    updates = {(m["run"], m["step"]): m.get("update", {}) for m in metrics}
    rows, facts = [], {}
    for run in runs:
        g = agg[agg["run"] == run].sort_values("step")
        boa = int(sel.loc[run, "boa_step"])
        probe = probes.get(run) if probes else None
        if probe is not None and sorted(probe["step"]) != g["step"].tolist():
            raise ValueError(f"compare_runs: the probe of run {run!r} covers steps {sorted(probe['step'])}, not the run's")
        by_step = probe.set_index("step") if probe is not None else None
        for r in g.itertuples():
            row = {
                "run": run,
                "variant": variant_label(switches[run]),
                **switches[run],
                "step": int(r.step),
                "rollouts": int(r.rollouts),
                "agg_fast_1": float(r.agg_fast_1),
                "correct_rate": float(r.correct_rate),
                "mean_speedup": float(r.mean_speedup),
                "mean_reward": float(r.mean_reward),
                "boa": int(r.step) == boa,
            }
            update = updates.get((run, int(r.step)), {})
            row.update({key: float(update.get(key, float("nan"))) for key in UPDATE_DIAGNOSTICS})
            if by_step is not None:
                row.update({key: float(by_step.loc[int(r.step), key]) for key in PROBE_COLUMNS})
            rows.append(row)
        facts[run] = {
            "variant": variant_label(switches[run]),
            **switches[run],
            "boa_step": boa,
            "boa_fast_1": float(sel.loc[run, "boa_fast_1"]),
            "early_stop_step": int(sel.loc[run, "early_stop_step"]),
            "final_fast_1": float(sel.loc[run, "final_fast_1"]),
        }
        if by_step is not None:
            facts[run].update(
                mean_nll_step0=float(by_step["mean_nll"].iloc[0]), mean_nll_last=float(by_step["mean_nll"].iloc[-1])
            )
    return pd.DataFrame(rows), {"runs": facts}


# --------------------------------------------------------------------------------------
# TTT tables by name: what the table rules build from their inputs
# --------------------------------------------------------------------------------------


def load_runs(metrics: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, list[str], dict[str, Any]]:
    """Trajectories of every run among the ``metrics.json`` dicts (grouped by run name), their
    upstream config hashes, and per run its steps, seed, suite and deviations from the paper."""
    from testtime.provenance import deviations_from_paper

    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for m in metrics:
        by_run.setdefault(m["run"], []).append(m)
    aggs, tasks = zip(*(trajectory(run, ms) for run, ms in by_run.items()))
    upstream = [m["provenance"]["config_hash"] for ms in by_run.values() for m in ms]
    runs = {}
    for run, ms in by_run.items():
        last = max(ms, key=lambda m: m["step"])
        steps = int(last["step"])
        deviations = {**deviations_from_paper({"ttt": {"steps": steps}}), **last["provenance"].get("deviations_from_paper", {})}
        runs[run] = {
            "steps": steps,
            "seed": last["provenance"].get("seed"),
            "suite": last["provenance"].get("suite"),
            "deviations_from_paper": deviations,
        }
    return pd.concat(aggs, ignore_index=True), pd.concat(tasks, ignore_index=True), upstream, runs


def _table6(agg, per_task, spec, **_):  # noqa: ANN001, ANN202
    sel = selection(agg, per_task, patience=spec["patience"])
    return {"table": agg, "per_task": per_task, "selection": sel}, summary(sel)


def _table4(agg, per_task, spec, bon, **_):  # noqa: ANN001, ANN202
    table, per = table4(bon, agg, per_task, spec["steps"], k_bon=int(bon.groupby("problem_id").size().max()))
    # the whole trajectory per task and the run's BoA step: Figure 7's Subset-2 points
    return {"table": table, "per_task": per, "trajectory": per_task, "selection": selection(agg, per_task)}, {}


def _table10(agg, per_task, spec, **_):  # noqa: ANN001, ANN202
    return {"table": table10(agg, spec["lrs"])}, {}


def _table12(agg, per_task, spec, **_):  # noqa: ANN001, ANN202
    return {"table": table12(per_task, spec["runs"])}, {}


def _transfer(agg, per_task, spec, metrics, transfers, **_):  # noqa: ANN001, ANN202
    steps = {(m["run"], m["step"]): m for m in metrics}
    baselines = {n: steps[(s["target"], 0)] for n, s in spec["transfers"].items()}
    sources = {n: steps[(s["source"], s["step"])] for n, s in spec["transfers"].items()}
    return {"table": transfer_table({t["transfer"]: t for t in transfers}, baselines, sources)}, {}


def _compare(agg, per_task, spec, metrics, probes, **_):  # noqa: ANN001, ANN202
    table, facts = compare_runs(agg, per_task, metrics, spec["runs"], spec["patience"], probes or None)
    return {"table": table}, facts


#: table name -> builder(agg, per_task, spec, metrics=..., bon=..., transfers=..., probes=...)
#: returning ({output name: DataFrame}, summary facts). The table rules name their table in
#: ``params``. ``remedies`` (open question 1, with the NLL probe of every run) and
#: ``reward_sparsification`` (open question 3) compare TTT variants.
TTT_TABLES = {
    "table6": _table6,
    "table4": _table4,
    "table10": _table10,
    "table12": _table12,
    "transfer": _transfer,
    "remedies": _compare,
    "reward_sparsification": _compare,
}


def build_ttt_table(
    name: str,
    metrics: Sequence[Mapping[str, Any]],
    spec: Mapping[str, Any],
    bon: pd.DataFrame | None = None,
    transfers: Sequence[Mapping[str, Any]] = (),
    probes: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any], list[str], dict[str, Any]]:
    """TTT table ``name`` from its runs' step metrics (and Table 4's Best-of-N records, the
    transfer metrics, or the runs' probe tables by run): ``(frames by output name, summary
    facts, upstream hashes, run facts)``."""
    if name not in TTT_TABLES:
        raise ValueError(f"TTT table {name!r}: not one of {sorted(TTT_TABLES)}")
    agg, per_task, upstream, runs = load_runs(metrics)
    frames, facts = TTT_TABLES[name](agg, per_task, spec, metrics=metrics, bon=bon, transfers=transfers, probes=probes)
    return frames, facts, upstream, runs
