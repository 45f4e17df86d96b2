"""End to end: a real Snakemake run on a tiny config, then the rerun scoping of params."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_repo, job_counts, kill_and_resume, run_snakemake
from testtime.records import read_provenance
from testtime.selection import strategy_names

pytestmark = pytest.mark.slow
TINY = ["--configfile", "config/test/config.yaml"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = copy_repo(tmp_path_factory.mktemp("wf") / "repo")
    out = run_snakemake(["figures/fig4.pdf", "-c2", *TINY], cwd=work)
    assert out.returncode == 0, out.stderr[-4000:]
    return work


def dry(workdir: Path, *extra: str) -> dict[str, int]:
    out = run_snakemake(["figures/fig4.pdf", "-n", *TINY, *extra], cwd=workdir, timeout=120)
    assert out.returncode == 0, out.stderr
    return job_counts(out.stdout)


def override(workdir: Path, text: str) -> list[str]:
    path = workdir / "override.yaml"
    path.write_text(text)
    return ["--configfile", "config/test/config.yaml", str(path)]


def test_outputs_and_records(workdir):
    assert (workdir / "figures/fig4.pdf").read_bytes().startswith(b"%PDF")
    samples = pd.read_parquet(workdir / "results/samples/smollm2-135m/bundled/seed42.parquet")
    assert len(samples) == 2 * 4  # subset_size 2, k 4
    assert {"completion", "token_logprobs", "finish_reason", "lp_sum", "lp_mean", "surprisal"} <= set(samples.columns)
    evals = pd.read_parquet(workdir / "results/evaluations/smollm2-135m/bundled/seed43.parquet")
    assert len(evals) == 8 and evals["error_kind"].isna().eq(evals["correct"]).all()
    table = pd.read_csv(workdir / "results/tables/smollm2-135m/bundled/table3.csv")
    assert list(table["strategy"]) == list(strategy_names())
    assert (table["n_seeds"] == 2).all() and (table["n_tasks"] == 2).all()
    prov = read_provenance(workdir / "results/evaluations/smollm2-135m/bundled/seed43.parquet")
    assert prov["config_hash"] and prov["suite_revision"] and prov["device"] == "cpu" and "torch" in prov["packages"]
    fig_prov = json.loads((workdir / "figures/fig4.pdf.provenance.json").read_text())
    assert fig_prov["upstream"]["model"] == "smollm2-135m"


def test_nothing_to_do_after_a_complete_run(workdir):
    assert dry(workdir) == {}


def test_temperature_reruns_sampling_and_downstream_only(workdir):
    counts = job_counts(
        run_snakemake(["figures/fig4.pdf", "-n", *override(workdir, "sampling:\n  temperature: 0.5\n")], cwd=workdir).stdout
    )
    assert counts == {"sample": 2, "evaluate": 2, "merge_evaluations": 2, "select_samples": 1, "fig4": 1}


def test_selection_setting_reruns_selection_and_figure_only(workdir):
    counts = job_counts(
        run_snakemake(["figures/fig4.pdf", "-n", *override(workdir, "selection:\n  score: lp_sum\n")], cwd=workdir).stdout
    )
    assert counts == {"select_samples": 1, "fig4": 1}


def test_resources_rerun_nothing_but_shards_rerun_evaluation(workdir):
    out = run_snakemake(
        ["figures/fig4.pdf", "-n", *override(workdir, "resources:\n  sampling:\n    threads: 2\n    mem_mb: 9000\n")], cwd=workdir
    )
    assert out.returncode == 0 and job_counts(out.stdout) == {}, out.stderr[-2000:]
    counts = job_counts(
        run_snakemake(
            ["figures/fig4.pdf", "-n", *override(workdir, "resources:\n  evaluation:\n    shards: 2\n")], cwd=workdir
        ).stdout
    )
    assert counts == {"evaluate": 4, "merge_evaluations": 2, "select_samples": 1, "fig4": 1}


def test_figure_style_reruns_the_figure_only(workdir):
    counts = job_counts(
        run_snakemake(["figures/fig4.pdf", "-n", *override(workdir, "figures:\n  fig4:\n    title: hello\n")], cwd=workdir).stdout
    )
    assert counts == {"fig4": 1}


def test_evaluation_setting_keeps_samples(workdir):
    counts = job_counts(
        run_snakemake(["figures/fig4.pdf", "-n", *override(workdir, "evaluation:\n  timing_pairs: 4\n")], cwd=workdir).stdout
    )
    assert counts == {"evaluate": 2, "merge_evaluations": 2, "select_samples": 1, "fig4": 1}


HOSTILE = {
    "segfault": "import ctypes\nctypes.string_at(0)",
    "infinite-loop": "while True:\n    pass",
    "huge-allocation": "return torch.empty(50_000_000_000)",
    "fork-bomb": "import os\nwhile True:\n    os.fork()",
    "exit": "import os\nos._exit(0)",
}


def test_hostile_samples_become_error_records(workdir):
    """Samples written by hand (as a model could write them) go through the real evaluate rule."""
    samples = pd.read_parquet(workdir / "results/samples/smollm2-135m/bundled/seed42.parquet")
    rows = samples.iloc[: len(HOSTILE)].copy()
    rows["seed"] = 99
    rows["sample_index"] = range(len(HOSTILE))
    rows["raw_action"] = list(HOSTILE.values())
    target = workdir / "results/samples/smollm2-135m/bundled/seed99.parquet"
    rows.to_parquet(target)
    out = run_snakemake(
        [
            "results/evaluations/smollm2-135m/bundled/seed99.parquet",
            "-c2",
            *override(workdir, "evaluation:\n  timeout_s: 5\n  candidate_budget_s: 20\n"),
            "--allowed-rules",
            "evaluate",
            "merge_evaluations",
        ],
        cwd=workdir,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = pd.read_parquet(workdir / "results/evaluations/smollm2-135m/bundled/seed99.parquet")
    assert len(records) == len(HOSTILE)
    assert not records["correct"].any()
    kinds = dict(zip(HOSTILE, records["error_kind"]))
    assert kinds["infinite-loop"] == "timeout"
    assert kinds["huge-allocation"] == "oom"
    for name in ("segfault", "fork-bomb", "exit"):
        assert kinds[name] == "forbidden_construct"  # the static screen stops them before they run
    assert (records["wall_s"] < 30).all()


# --------------------------------------------------------------------------------------
# Test-time training: the per-step DAG, a killed run resuming, rerun scoping
# --------------------------------------------------------------------------------------

TTT_TARGETS = ["figures/fig3.pdf", "figures/fig5.pdf", "figures/fig6.pdf"]
RUNS, STEPS = ("main-s42", "main-s43"), 2  # config/test/config.yaml


def step_files(workdir: Path, run: str, step: int) -> list[Path]:
    d = workdir / f"results/ttt/{run}/step{step}"
    return [
        d / "metrics.json",
        d / "rollouts.parquet",
        d / "evaluations.parquet",
        d / "optimizer.pt",
        d / "adapter" / "adapter_model.safetensors",
    ]


@pytest.fixture(scope="module")
def ttt_workdir(workdir) -> dict:
    """Run the TTT targets, kill the whole run during step 2 of main-s42, resume it."""
    started = workdir / "results/logs/ttt_step/main-s42/step2.log"
    finished = [p for s in (0, 1) for p in step_files(workdir, "main-s42", s)]
    resumed = kill_and_resume(workdir, [*TTT_TARGETS, *TINY], started, finished, deadline_s=600)
    by_step = {s: {p: m for p, m in resumed["finished"].items() if p in step_files(workdir, "main-s42", s)} for s in (0, 1)}
    return {"workdir": workdir, "finished": by_step, "plan": resumed["plan"]}


def planned_outputs(plan: str) -> set[str]:
    """Every output path of the jobs a dry run lists."""
    return {p.strip() for line in re.findall(r"^\s*output: (.*)$", plan, re.M) for p in line.split(",")}


def test_killed_ttt_run_resumes_at_the_step_it_was_in(ttt_workdir):
    workdir, planned = ttt_workdir["workdir"], planned_outputs(ttt_workdir["plan"])
    assert "results/ttt/main-s42/step2/metrics.json" in planned  # the step it was in
    for s in (0, 1):
        assert f"results/ttt/main-s42/step{s}/metrics.json" not in planned  # finished steps are not planned
        for path, mtime in ttt_workdir["finished"][s].items():
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    for run in RUNS:
        for s in range(STEPS + 1):
            assert all(p.exists() for p in step_files(workdir, run, s))


def test_ttt_records_and_tables(ttt_workdir):
    workdir = ttt_workdir["workdir"]
    for target in TTT_TARGETS:
        assert (workdir / target).read_bytes().startswith(b"%PDF")
    step1 = workdir / "results/ttt/main-s42/step1"
    rollouts = pd.read_parquet(step1 / "rollouts.parquet")
    evals = pd.read_parquet(step1 / "evaluations.parquet")
    assert len(rollouts) == len(evals) == 2 * 3  # 2 tasks x k 3
    assert {"run", "step", "token_ids", "token_logprobs", "lp_sum", "prompt_hash"} <= set(rollouts.columns)
    assert {"correct", "speedup", "reward", "reward_baseline", "advantage"} <= set(evals.columns)
    metrics = json.loads((step1 / "metrics.json").read_text())
    assert metrics["update"]["n_rollouts"] == 6 and metrics["update"]["max_abs_log_ratio"] < 1e-3  # on-policy
    assert metrics["rollouts_cumulative"] == 12
    prov = read_provenance(step1 / "rollouts.parquet")
    assert prov["deviations_from_paper"]["ttt.k"] == [3, 32] and prov["device"] == "cpu"
    table6 = pd.read_csv(workdir / "results/tables/ttt/table6.csv")
    assert sorted(table6["run"].unique()) == list(RUNS) and table6["step"].max() == STEPS
    sel = pd.read_csv(workdir / "results/tables/ttt/table6_selection.csv")
    assert (sel["boa_fast_1"] >= sel["final_fast_1"]).all()
    table2 = pd.read_csv(workdir / "results/tables/smollm2-135m/bundled/table2.csv")
    assert table2["k"].tolist() == [1, 2, 4]  # k above the 4 samples per task are skipped
    # the probe at step 0 (a zero LoRA) reproduces the sampling records' log-probs
    nll = pd.read_parquet(workdir / "results/probes/main-s42/seed42/nll.parquet")
    samples = pd.read_parquet(workdir / "results/samples/smollm2-135m/bundled/seed42.parquet")
    # on the probed span (probe.span, default code): the samples' log-prob column of that span
    assert set(nll["span"]) == {"code"}
    sampled = samples[["problem_id", "sample_index", "lp_sum_code"]].rename(columns={"lp_sum_code": "lp_sum_sampled"})
    step0 = nll[nll["step"] == 0].merge(sampled, on=["problem_id", "sample_index"])
    assert len(step0) == len(samples) and set(nll["step"]) == set(range(STEPS + 1))
    close = (step0["lp_sum"] - step0["lp_sum_sampled"]).abs() < 1e-3
    assert (close | (step0["lp_sum"].isna() & step0["lp_sum_sampled"].isna())).all()  # NaN: no code in a sample
    probe = pd.read_csv(workdir / "results/tables/probes/main-s42/seed42/probe.csv")
    assert probe["step"].tolist() == list(range(STEPS + 1)) and (probe["bottom_quartile"] == "indicator").all()
    eq = json.loads((workdir / "results/tables/ttt/equivalent_k.json").read_text())
    assert eq["ttt_runs"] == list(RUNS)


def ttt_dry(workdir: Path, text: str | None = None) -> dict[str, int]:
    args = override(workdir, text) if text else TINY
    out = run_snakemake([*TTT_TARGETS, "-n", *args], cwd=workdir, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return job_counts(out.stdout)


def test_nothing_to_do_after_the_ttt_run(ttt_workdir):
    assert ttt_dry(ttt_workdir["workdir"]) == {}


def test_editing_a_module_reached_only_indirectly_reruns_the_ttt_steps(ttt_workdir):
    """testtime/analysis.py reaches the TTT step only through testtime.pg.rewards (fast_1); the
    derived code hash (testtime.codehash) still sees it. (Hand-kept lists once missed it.)"""
    workdir = ttt_workdir["workdir"]
    path = workdir / "testtime/analysis.py"
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        counts = ttt_dry(workdir)
    finally:
        path.write_text(original)
    assert counts.get("ttt_step") == len(RUNS) * (STEPS + 1)
    assert ttt_dry(workdir) == {}  # restored: nothing to do again


def test_learning_rate_reruns_only_ttt_updates_and_their_figures(ttt_workdir):
    counts = ttt_dry(ttt_workdir["workdir"], "ttt:\n  lr: 3.0e-4\n")
    # steps 1..S of both runs (step 0 never updates), the probe, Table 6 and the three figures
    assert counts == {"ttt_step": 2 * STEPS, "probe_score": 1, "probe_analysis": 1, "table6": 1, "fig3": 1, "fig5": 1, "fig6": 1}


def test_probe_quartile_switch_reruns_only_the_probe_analysis_and_fig6(ttt_workdir):
    counts = ttt_dry(ttt_workdir["workdir"], "probe:\n  bottom_quartile: speedup_subset\n")
    assert counts == {"probe_analysis": 1, "fig6": 1}


def test_more_steps_add_steps_only(ttt_workdir):
    counts = ttt_dry(ttt_workdir["workdir"], f"ttt:\n  steps: {STEPS + 1}\n")
    assert counts == {"ttt_step": 2, "probe_score": 1, "probe_analysis": 1, "table6": 1, "fig3": 1, "fig5": 1, "fig6": 1}


def test_tables_4_10_12_and_transfer(ttt_workdir):
    """The other §9.5 experiments through their rules, at one adaptation step each."""
    workdir = ttt_workdir["workdir"]
    args = override(
        workdir,
        "ttt:\n  runs:\n    subset2: {steps: 1}\n    isolated-8: {steps: 1}\n"
        "  experiments:\n    lr_sweep: [main-s42]\n    isolated: [isolated-8]\n",
    )
    targets = [f"results/tables/ttt/{name}.csv" for name in ("table4", "table10", "table12", "transfer")]
    out = run_snakemake([*targets, "figures/fig7.pdf", "-c2", *args], cwd=workdir)
    assert out.returncode == 0, out.stderr[-4000:]
    table4 = pd.read_csv(workdir / "results/tables/ttt/table4.csv")
    assert table4["method"].tolist() == ["Best-of-N (K=4)", "BoA Step 0", "BoA Step 1"]
    assert table4["rollouts"].tolist() == [2 * 4, 2 * 3, 2 * 2 * 3]
    # Figure 7's Subset-2 points come from Table 4's trajectory and selection
    trajectory = pd.read_csv(workdir / "results/tables/ttt/table4_trajectory.csv")
    assert set(trajectory["run"]) == {"subset2"} and sorted(set(trajectory["step"])) == [0, 1]
    assert pd.read_csv(workdir / "results/tables/ttt/table4_selection.csv")["boa_step"].between(0, 1).all()
    assert (workdir / "figures/fig7.pdf").read_bytes().startswith(b"%PDF")
    fig7 = json.loads((workdir / "figures/fig7.pdf.provenance.json").read_text())
    assert fig7["config"]["figures.fig7"]["subset2_run"] == "subset2"
    table10 = pd.read_csv(workdir / "results/tables/ttt/table10.csv")
    assert table10["run"].tolist() == ["main-s42"] and table10["peak_step"].between(0, STEPS).all()
    table12 = pd.read_csv(workdir / "results/tables/ttt/table12.csv")
    assert table12["problem_id"].tolist() == [8] and {"step0", "step1", "boa_step"} <= set(table12.columns)
    transfer = pd.read_csv(workdir / "results/tables/ttt/transfer.csv").set_index("transfer")
    assert set(transfer.index) == {"s1-to-s2", "s2-to-s1"} and (transfer["n_rollouts"] == 2 * 3).all()
    prov = json.loads((workdir / "results/tables/ttt/table12.csv.provenance.json").read_text())
    assert prov["run_facts"]["isolated-8"]["deviations_from_paper"]["ttt.steps"] == [1, 5]
