"""Config validation: defaults filled, unknown keys and wrong types named by their key path."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from conftest import ROOT, run_snakemake
from testtime.config import ConfigError, canonical, config_hash, validate


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def test_embedded_default_validates_and_gets_defaults():
    config = validate(load("config.yaml"))
    assert config["evaluation"]["assembly"] == "paper"  # filled from the schema
    assert config["models"]["smollm2-135m"]["chat_format"] == "template"
    assert config["suites"]["bundled"]["train_fraction"] == 0.8


def test_paper_config_validates_with_the_papers_settings():
    config = validate(load("paper.yaml"))
    expected = {"k": 64, "temperature": 0.25, "max_new_tokens": 1024, "prompt_variant": "paper"}
    assert {k: config["sampling"][k] for k in expected} == expected
    assert config["run"]["seeds"] == [42, 43]
    assert config["suites"]["kernelbench-l1-v01"]["split_seed"] == 42


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["sampling"].update(temperatur=0.5), "sampling.temperatur"),
        (lambda c: c["sampling"].update(k="many"), "sampling.k"),
        (lambda c: c.update(extra=1), "extra"),
        (lambda c: c["models"]["smollm2-135m"].update(dtype="int3"), "models.smollm2-135m.dtype"),
        (lambda c: c["run"].update(model="missing"), "run.model"),
    ],
)
def test_bad_configs_name_the_key(edit, key):
    config = copy.deepcopy(load("config.yaml"))
    edit(config)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        validate(config)


def test_canonical_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": [1, {"d": 2, "c": 3}]}) == config_hash({"b": [1, {"c": 3, "d": 2}], "a": 1})
    assert list(canonical({"b": 1, "a": 2})) == ["a", "b"]


@pytest.mark.parametrize(
    "override, key",
    [("sampling:\n  temperatur: 0.5\n", "sampling.temperatur"), ("evaluation:\n  timeout_s: soon\n", "evaluation.timeout_s")],
)
def test_snakemake_stops_before_any_job(tmp_path, override, key, clean_repo):
    bad = tmp_path / "bad.yaml"
    bad.write_text(override)
    out = run_snakemake(["figures/fig4.pdf", "-n", "--configfile", str(bad)], cwd=clean_repo, timeout=120)
    assert out.returncode != 0
    assert key in out.stderr + out.stdout
    assert "Job stats" not in out.stdout


def test_paper_config_plans_its_dag(clean_repo):
    out = run_snakemake(["figures/fig4.pdf", "-n", "--configfile", "config/paper.yaml"], cwd=clean_repo, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sample" in out.stdout and "evaluate" in out.stdout
    assert "materialize_model" not in out.stdout  # the paper's checkpoint is used in place


def test_lint_is_clean(clean_repo):
    out = run_snakemake(["--lint"], cwd=clean_repo, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_one_gpu_config_validates_and_plans_figure_4_through_the_retrieve_rules(clean_repo):
    config = load("config.yaml")
    with open(ROOT / "config" / "gpu.yaml") as f:
        overlay = yaml.safe_load(f)
    from snakemake.utils import update_config

    update_config(config, overlay)
    validated = validate(config)
    assert validated["models"]["gpt-oss-20b"]["chat_format"] == "gpt_oss_no_sysprompt"
    assert all(validated["resources"][s]["gpus"] == 1 for s in ("sampling", "evaluation", "training", "probes"))
    out = run_snakemake(["figures/fig4.pdf", "-n", "--configfile", "config/gpu.yaml"], cwd=clean_repo, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    for rule in ("retrieve_model", "retrieve_suite", "sample", "evaluate", "fig4"):
        assert re.search(rf"^{rule}\s+\d+\s*$", out.stdout, re.M), rule
