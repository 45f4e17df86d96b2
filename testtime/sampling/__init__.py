"""Sampling backends: K completions per task with raw (temperature-1) log-probabilities.

Every backend returns the same :class:`Completion` records, so surprisal means the same thing
whichever engine drew the sample (ml-stack §2): the sum over completion tokens, stop token
included, of log p(token) under the untempered, untruncated model distribution.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    max_new_tokens: int
    top_k: int = 0  # 0 = no truncation (the paper sets only the temperature)
    top_p: float = 1.0


@dataclass
class Completion:
    sample_index: int
    row_seed: int
    text: str
    token_ids: list[int]
    token_logprobs: list[float]  # raw T=1 log-prob of each completion token, stop token included
    finish_reason: str  # "stop" (a stop token was sampled) or "length"
    prompt_tokens: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def lp_sum(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def lp_mean(self) -> float:
        return self.lp_sum / max(1, len(self.token_logprobs))


def row_seed(seed: int, suite: str, problem_id: int, sample_index: int) -> int:
    """Seed of one sample, a function of (seed, task, index) only, never of batch layout.

    A 48-bit slice of sha256 plus the index, the same scheme vLLM's ``SamplingParams(n=K,
    seed=S)`` applies to its children (child i gets S+i).
    """
    digest = hashlib.sha256(f"{seed}:{suite}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:6], "big") + sample_index


def stop_token_ids(tokenizer: Any, stop_tokens: list[str] | None, where: str) -> list[int]:
    """EOS plus the configured stop tokens, each checked to be a single token of the model."""
    ids = {tokenizer.eos_token_id}
    for tok in stop_tokens or []:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"models.*.stop_tokens: {tok!r} is not a token of {where}")
        ids.add(tid)
    return sorted(i for i in ids if i is not None)


class Backend(Protocol):
    """What a sampling engine must provide (transformers now, vLLM on GPUs later)."""

    name: str

    def render(self, messages: list[dict[str, str]]) -> str: ...

    def sample(self, prompt: str, k: int, base_seed: int, params: SamplingParams) -> list[Completion]:
        """Draw k completions of ``prompt``; completion i uses seed ``base_seed + i``."""
        ...


def make_backend(name: str, model_dir: str, **options) -> Backend:
    if name == "transformers":
        from testtime.sampling.hf import TransformersBackend

        return TransformersBackend(model_dir, **options)
    if name == "vllm":
        from testtime.sampling.vllm_backend import VllmBackend

        return VllmBackend(model_dir, **options)
    raise ValueError(f"sampling.backend: unknown backend {name!r}; choose 'transformers' or 'vllm'")


def training_backend(model_path: str, model: dict[str, Any], device: str, threads: int, shard: str = "single") -> Backend:
    """The transformers backend the training-side jobs (TTT steps, transfers, the probe) load:
    the model's dtype, chat format and stop tokens, on ``device``, with ``threads`` CPU threads;
    ``shard: auto`` splits it over the job's GPUs (testtime.pg.placement)."""
    import torch

    torch.set_num_threads(threads)
    return make_backend(
        "transformers",
        model_path,
        dtype=model["dtype"],
        device=device,
        chat_format=model["chat_format"],
        stop_tokens=model["stop_tokens"],
        shard=shard,
    )


def vllm_adapter_engine(
    sampling: Mapping[str, Any],
    model_path: str,
    model: Mapping[str, Any],
    device: str,
    threads: int,
    lora_rank: int,
    adapters: Sequence[Any] = (),
    merged: Any = None,
) -> Backend:
    """The vLLM engine of a job that samples or scores saved adapters (a transfer, the probe).

    Refuses ``merged`` (a run's fresh LoRA on a trained checkpoint): vLLM serves one LoRA on the
    weights it loaded, so the run's LoRA cannot sit on a merged one."""
    if merged:
        raise NotImplementedError(
            "sampling.backend: vllm cannot serve a fresh LoRA on a trained checkpoint (ttt.init: fresh); "
            "use ttt.init: checkpoint or the transformers backend"
        )
    import torch

    torch.set_num_threads(threads)
    return rollout_engine(sampling, model_path, model, device, lora_rank, adapters)


def engine_provenance(backend: Any, adapter: Any = None, applied: str | None = None) -> dict[str, Any]:
    """Which engine, and which adapter, produced a job's records (their provenance ``engine``).

    A vLLM backend reports its own (the adapter of its current ``LoRARequest``); for the
    transformers backend the caller says which adapter its model holds and how it got there
    (``merged`` into the weights, ``peft`` layers).
    """
    if hasattr(backend, "provenance"):
        return backend.provenance()
    return {"engine": backend.name, "adapter": str(adapter) if adapter else None, "adapter_applied": applied}


def vllm_options(sampling: Mapping[str, Any], model: Mapping[str, Any], device: str) -> dict[str, Any]:
    """``VllmBackend`` options of a job: the model's dtype, chat format and stop tokens, the
    job's device, and ``sampling.vllm`` (engine settings such as ``kv_cache_gib``)."""
    return {
        "dtype": model["dtype"],
        "device": device,
        "chat_format": model["chat_format"],
        "stop_tokens": model["stop_tokens"],
        **dict(sampling.get("vllm") or {}),
    }


def rollout_engine(
    sampling: Mapping[str, Any],
    model_path: str,
    model: Mapping[str, Any],
    device: str,
    lora_rank: int,
    adapters: Sequence[Any] = (),
) -> Backend | None:
    """The engine that samples a training job's rollouts (TTT, RLVR) or re-scores the probe's
    samples under each step's adapter, chosen by ``sampling.backend``.

    None for ``transformers``: the training model itself samples (its LoRA merged for decoding)
    and scores. For ``vllm``: one engine per job, LoRA enabled, into which each step's adapter
    is hot-loaded per request (``LoRARequest``); ``max_lora_rank`` is ``sampling.vllm.max_lora_rank``
    or the largest of the run's ``lora_rank`` and the ranks of ``adapters`` (a trained checkpoint's
    LoRA the run continues), rounded up to a rank vLLM accepts. The training model stays the
    transformers one: vLLM only samples and scores, it never computes a gradient.
    """
    name = sampling.get("backend", "transformers")
    if name == "transformers":
        return None
    if name != "vllm":
        raise ValueError(f"sampling.backend: unknown backend {name!r}; choose 'transformers' or 'vllm'")
    from testtime.sampling.vllm_backend import engine_lora_rank
    from testtime.sampling.vllm_backend import lora_rank as rank_of

    options = vllm_options(sampling, model, device)
    rank = max([int(lora_rank), *(rank_of(a) for a in adapters if a)])
    options["max_lora_rank"] = options.get("max_lora_rank") or engine_lora_rank(rank)
    return make_backend("vllm", model_path, enable_lora=True, **options)
