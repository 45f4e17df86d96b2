"""End to end: a real Snakemake run on a tiny config, then the rerun scoping of params."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, run_snakemake
from testtime.analysis import STRATEGIES
from testtime.records import read_provenance

pytestmark = pytest.mark.slow
TINY = ["--configfile", "config/test/config.yaml"]


def job_counts(stdout: str) -> dict[str, int]:
    """Per-rule counts from the 'Job stats' table of a dry run ({} when nothing is to be done)."""
    if "Job stats" not in stdout:
        return {}
    table = stdout.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wf") / "repo"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns("results", ".snakemake", ".pytest_cache", ".git", "figures", "__pycache__"))
    (work / "figures").mkdir()
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
    assert list(table["strategy"]) == list(STRATEGIES)
    assert (table["n_seeds"] == 2).all() and (table["n_tasks"] == 2).all()
    prov = read_provenance(workdir / "results/evaluations/smollm2-135m/bundled/seed43.parquet")
    assert prov["config_hash"] and prov["suite_revision"] and prov["device"] == "cpu" and "torch" in prov["packages"]
    fig_prov = json.loads((workdir / "figures/fig4.pdf.provenance.json").read_text())
    assert fig_prov["upstream"]["model"] == "smollm2-135m"


def test_nothing_to_do_after_a_complete_run(workdir):
    assert dry(workdir) == {}


def test_temperature_reruns_sampling_and_downstream_only(workdir):
    counts = job_counts(run_snakemake(["figures/fig4.pdf", "-n", *override(workdir, "sampling:\n  temperature: 0.5\n")], cwd=workdir).stdout)
    assert counts == {"sample": 2, "evaluate": 2, "merge_evaluations": 2, "select_samples": 1, "fig4": 1}


def test_selection_setting_reruns_selection_and_figure_only(workdir):
    counts = job_counts(run_snakemake(["figures/fig4.pdf", "-n", *override(workdir, "selection:\n  score: lp_sum\n")], cwd=workdir).stdout)
    assert counts == {"select_samples": 1, "fig4": 1}


def test_resources_rerun_nothing_but_shards_rerun_evaluation(workdir):
    out = run_snakemake(["figures/fig4.pdf", "-n", *override(workdir, "resources:\n  sampling:\n    threads: 2\n    mem_mb: 9000\n")], cwd=workdir)
    assert out.returncode == 0 and job_counts(out.stdout) == {}, out.stderr[-2000:]
    counts = job_counts(run_snakemake(["figures/fig4.pdf", "-n", *override(workdir, "resources:\n  evaluation:\n    shards: 2\n")], cwd=workdir).stdout)
    assert counts == {"evaluate": 4, "merge_evaluations": 2, "select_samples": 1, "fig4": 1}


def test_figure_style_reruns_the_figure_only(workdir):
    counts = job_counts(run_snakemake(["figures/fig4.pdf", "-n", *override(workdir, "figures:\n  fig4:\n    title: hello\n")], cwd=workdir).stdout)
    assert counts == {"fig4": 1}


def test_evaluation_setting_keeps_samples(workdir):
    counts = job_counts(run_snakemake(["figures/fig4.pdf", "-n", *override(workdir, "evaluation:\n  timing_pairs: 4\n")], cwd=workdir).stdout)
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
        ["results/evaluations/smollm2-135m/bundled/seed99.parquet", "-c2", *override(workdir, "evaluation:\n  timeout_s: 5\n  candidate_budget_s: 20\n"),
         "--allowed-rules", "evaluate", "merge_evaluations"],
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
