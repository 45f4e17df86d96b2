"""SDPO end to end (real model, real evaluator, real Snakemake): Table 9 built in a fresh copy,
the step records, rerun scoping, and Figure 4's DAG never reaching it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_repo, dry_counts, run_snakemake
from testtime.records import read_parquet, read_provenance

pytestmark = pytest.mark.slow
TINY = ["--configfile", "config/test/config.yaml"]
TABLE = "results/tables/smollm2-135m/bundled/sdpo/table9.csv"
STEP_DIR = "results/sdpo/smollm2-135m/bundled/{}/seed42/step{}"
VARIANTS = ("feedback", "prompt_only")


@pytest.fixture(scope="module")
def sdpo_workdir(tmp_path_factory) -> Path:
    workdir = copy_repo(tmp_path_factory.mktemp("sdpo") / "repo")
    out = run_snakemake([TABLE, "-c2", *TINY], cwd=workdir)
    assert out.returncode == 0, out.stderr[-4000:]
    return workdir


def dry(workdir: Path, target: str = TABLE, extra: str = "") -> dict[str, int]:
    return dry_counts(workdir, [target, *TINY], extra)


def metrics(workdir: Path, variant: str, step: int) -> dict:
    return json.loads((workdir / STEP_DIR.format(variant, step) / "metrics.json").read_text())


def test_table9(sdpo_workdir):
    table = pd.read_csv(sdpo_workdir / TABLE, dtype={"seed": str})
    assert table[["variant", "seed"]].values.tolist() == [
        ["feedback", "42"],
        ["prompt_only", "42"],
        ["feedback", "mean"],
        ["prompt_only", "mean"],
    ]
    assert ((table["fast_1"] >= 0) & (table["fast_1"] <= 1)).all() and (table["final_step"] == 1).all()
    for variant in VARIANTS:
        row = table[(table["variant"] == variant) & (table["seed"] == "42")].iloc[0]
        assert row["fast_1"] == metrics(sdpo_workdir, variant, 1)["agg_fast_1"]
        assert row["fast_1_step0"] == metrics(sdpo_workdir, variant, 0)["agg_fast_1"]
    assert table["paper_fast_1"].tolist()[:2] == pytest.approx([57 / 160, 62 / 160])
    prov = json.loads((sdpo_workdir / f"{TABLE}.provenance.json").read_text())
    assert prov["deviations_from_paper"]["sdpo.k"] == [2, 32]
    assert set(prov["run_facts"]) == {"feedback-seed42", "prompt_only-seed42"}


def test_sdpo_steps_update_with_per_token_teacher_advantages(sdpo_workdir):
    import torch
    from safetensors.torch import load_file

    step0 = {v: read_parquet(sdpo_workdir / STEP_DIR.format(v, 0) / "rollouts.parquet") for v in VARIANTS}
    # one sample stream for both variants: they start from the same rollouts
    assert step0["feedback"]["token_ids"].map(list).tolist() == step0["prompt_only"]["token_ids"].map(list).tolist()
    n_tasks = step0["feedback"]["problem_id"].nunique()
    for variant in VARIANTS:
        update = metrics(sdpo_workdir, variant, 1)["update"]
        assert not update["skipped"] and update["n_rollouts"] == len(step0[variant]) == 2 * n_tasks
        assert update["advantage_abs_mean"] > 0 and update["teacher_prompt_tokens"] > 0
        assert sum(update["feedback_status"].values()) == len(step0[variant])
        a0 = load_file(sdpo_workdir / STEP_DIR.format(variant, 0) / "adapter/adapter_model.safetensors")
        a1 = load_file(sdpo_workdir / STEP_DIR.format(variant, 1) / "adapter/adapter_model.safetensors")
        assert all(torch.count_nonzero(a0[k]) == 0 for k in a0 if "lora_B" in k)  # θ_0 = the model
        assert any(not torch.equal(a0[k], a1[k]) for k in a0 if "lora_B" in k)  # the update moved it
        evaluations = read_parquet(sdpo_workdir / STEP_DIR.format(variant, 1) / "evaluations.parquet")
        assert evaluations["advantage"].isna().all() and {"reward", "run", "step"} <= set(evaluations.columns)
        prov = read_provenance(sdpo_workdir / STEP_DIR.format(variant, 1) / "rollouts.parquet")
        assert prov["config"]["sdpo"]["variant"] == variant and prov["config"]["sdpo"]["beta"] == 1.0
        assert prov["deviations_from_paper"]["sdpo.lr"] == [1.0e-4, 1.0e-5]
        assert prov["checkpoint"] == {"use": "base", "model": "smollm2-135m", "lora": "fresh", "adam": "fresh"}
    # one teacher context for all rollouts of a task without feedback; per verdict with it
    assert metrics(sdpo_workdir, "prompt_only", 1)["update"]["teacher_logprob_calls"] == n_tasks
    step0_settings = read_provenance(sdpo_workdir / STEP_DIR.format("feedback", 0) / "rollouts.parquet")["config"]["sdpo"]
    assert "beta" not in step0_settings and "lr" not in step0_settings  # step 0 never updates


def test_nothing_to_do_after_table9(sdpo_workdir):
    assert dry(sdpo_workdir) == {}


def test_beta_reruns_the_updates_only(sdpo_workdir):
    counts = dry(sdpo_workdir, extra="sdpo:\n  k: 2\n  seeds: [42]\n  beta: 0.5\n")
    assert counts == {"sdpo_step": 2, "sdpo_table9": 1}  # step 1 of each variant; step 0 keeps


def test_figure4_never_plans_sdpo(clean_repo):
    counts = dry(clean_repo, target="figures/fig4.pdf")
    assert counts and not any(rule.startswith("sdpo") for rule in counts)
