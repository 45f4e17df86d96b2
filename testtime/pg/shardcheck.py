"""The training side split over GPUs against one GPU: the same RLVR-style and TTT-style LoRA
updates and the same NLL-probe pass on a model placed whole on ``cuda:0`` and on one split over
every visible GPU (testtime.pg.placement), from the same rollouts. Run by
``scripts/gpu_validation.py --sections sharded`` and tests/test_gpu.py; needs two CUDA devices.

The rollouts are drawn once, by the single-GPU model, so both placements train and score on
the same tokens. Adam's first step moves each weight by about ±lr whatever the gradient's size,
so the check uses a large learning rate (1e-3) and two RLVR steps (the second moves the LoRA's
A matrices, which get no gradient while B = 0): a weight difference is then read against
changes of 1e-3, not hidden under them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LORA = {"seed": 42, "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_targets": "all-linear"}
RLVR = {**LORA, "lr": 1e-3, "adam_beta1": 0.9, "adam_beta2": 0.95, "adam_eps": 1e-8, "skip_zero_advantage": False}
TTT = {**RLVR, "adam_eps": 1e-12}
PROMPTS = {1: "def forward(x):\n    return torch.relu(x)\n", 2: "class ModelNew(nn.Module):\n"}


def _lora(policy: Any) -> dict[str, Any]:
    return {n: p.detach().float().cpu() for n, p in policy.peft.named_parameters() if p.requires_grad}


def _max_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    assert a.keys() == b.keys(), "the two placements built different adapters"
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def _rollouts(backend: Any, k: int, max_new_tokens: int) -> tuple[list[dict[str, Any]], Any]:
    """K rollouts per prompt with group-centred (RLVR) advantages, and the samples table the
    probe re-scores."""
    import numpy as np
    import pandas as pd

    from testtime.prompting import prompt_hash
    from testtime.sampling import SamplingParams

    batch, rows = [], []
    for pid, prompt in PROMPTS.items():
        drawn = backend.sample(prompt, k, 1000 * pid, SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens))
        # rewards from a fixed pattern: real rollouts of a random model all fail, so their
        # advantages would be 0 and the update a no-op
        # (not centred: rollouts of one length with centred advantages give a loss of exactly 0)
        reward = np.linspace(-0.5, 1.0, k) * (1 if pid % 2 else -1)
        batch.append(
            {
                "problem_id": pid,
                "prompt_ids": backend.tokenizer(prompt, add_special_tokens=False).input_ids,
                "completions": [c.token_ids for c in drawn],
                "sampler_logprobs": [c.token_logprobs for c in drawn],
                "advantages": reward.tolist(),
            }
        )
        rows += [
            {"problem_id": pid, "sample_index": c.sample_index, "token_ids": c.token_ids, "prompt_hash": prompt_hash(prompt)}
            for c in drawn
        ]
    return batch, pd.DataFrame(rows)


def run_placement(
    model_dir: str | Path,
    shard: str,
    batch: list[dict[str, Any]],
    samples: Any,
    out: Path,
    dtype: str = "float32",
    autocast: str = "none",
    checkpointing: bool = False,
    device: str = "cuda",
) -> dict[str, Any]:
    """Two RLVR-style steps, one TTT-style step from a fresh LoRA and the probe's re-scoring of
    ``samples`` under both adapters, with the model placed per ``shard`` (``single``: cuda:0)."""
    from testtime.pg.policy import LoraPolicy
    from testtime.probes import rescore
    from testtime.sampling.hf import TransformersBackend

    def backend() -> Any:
        return TransformersBackend(str(model_dir), dtype=dtype, device=device, shard=shard)

    result: dict[str, Any] = {}
    started = time.monotonic()
    b = backend()
    result["placement"] = b.placement
    rlvr = LoraPolicy(b, {**RLVR, "autocast": autocast, "gradient_checkpointing": checkpointing})
    result["targets"] = rlvr.targets
    result["rlvr"] = [rlvr.update(batch, chunk=4, kl_post=True) for _ in range(2)]
    result["rlvr_lora"] = _lora(rlvr)
    rlvr.save(out / "rlvr", out / "rlvr.pt")
    b = backend()
    ttt = LoraPolicy(b, {**TTT, "autocast": autocast, "gradient_checkpointing": checkpointing})
    result["ttt"] = ttt.update(batch, chunk=4)
    result["ttt_lora"] = _lora(ttt)
    ttt.save(out / "ttt", out / "ttt.pt")
    scores = rescore(backend(), samples, PROMPTS, {0: out / "rlvr", 1: out / "ttt"}, chunk=4, autocast=autocast)
    result["probe"] = scores.sort_values(["step", "problem_id", "sample_index"])["lp_sum"].to_numpy()
    result["seconds"] = time.monotonic() - started
    return result


def compare(model_dir: str | Path, k: int = 4, max_new_tokens: int = 24, **kwargs: Any) -> dict[str, Any]:
    """The single-GPU and the split run of :func:`run_placement` (``kwargs``: dtype, autocast,
    device, checkpointing, the same for both; on CPU or one GPU "split" is a second whole copy), and their largest differences."""
    import numpy as np

    from testtime.sampling.hf import TransformersBackend

    device = kwargs.get("device", "cuda")
    drawer = TransformersBackend(str(model_dir), dtype=kwargs.get("dtype", "float32"), device=device, shard="single")
    batch, samples = _rollouts(drawer, k, max_new_tokens)
    del drawer
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "single").mkdir()
        (Path(tmp) / "split").mkdir()
        single = run_placement(model_dir, "single", batch, samples, Path(tmp) / "single", **kwargs)
        split = run_placement(model_dir, "auto", batch, samples, Path(tmp) / "split", **kwargs)
    rows = {
        "rlvr_loss": max(abs(a["loss"] - b["loss"]) for a, b in zip(single["rlvr"], split["rlvr"])),
        "rlvr_grad_norm": max(abs(a["grad_norm"] - b["grad_norm"]) for a, b in zip(single["rlvr"], split["rlvr"])),
        "rlvr_kl_post": max(abs(a["kl_post"] - b["kl_post"]) for a, b in zip(single["rlvr"], split["rlvr"])),
        "rlvr_lora": _max_diff(single["rlvr_lora"], split["rlvr_lora"]),
        "ttt_loss": abs(single["ttt"]["loss"] - split["ttt"]["loss"]),
        "ttt_grad_norm": abs(single["ttt"]["grad_norm"] - split["ttt"]["grad_norm"]),
        "ttt_lora": _max_diff(single["ttt_lora"], split["ttt_lora"]),
        "probe_lp_sum": float(np.nanmax(np.abs(single["probe"] - split["probe"]))),
    }
    return {"single": single, "split": split, "max_diff": rows}
