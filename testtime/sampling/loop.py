"""The Best-of-N sampling loop: K completions per selected task, one record per sample.

Column meanings are documented in docs/records.md (sample records).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from testtime.prompting import build_messages, extract_python_code, prompt_hash
from testtime.sampling import SamplingParams, engine_provenance, make_backend, row_seed, vllm_options
from testtime.sampling.harmony import sample_fields

logger = logging.getLogger(__name__)


def sample_tasks(
    backend: Any,
    tasks: pd.DataFrame,
    sampling: dict[str, Any],
    seed: int,
    suite: str,
) -> pd.DataFrame:
    """K samples for every selected task; one row per sample.

    Each completion is parsed (Harmony channels for gpt-oss; a plain answer otherwise): the code
    to evaluate comes from the final channel only, and log-probs are summed on every scored span
    (``completion``, ``final``, ``code``) so selection and the probe can pick one later.
    """

    def decode_one(ids: list[int]) -> str:
        return backend.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    params = SamplingParams(temperature=sampling["temperature"], max_new_tokens=sampling["max_new_tokens"])
    rows = []
    for task in tasks[tasks["selected"]].itertuples():
        messages = build_messages(sampling["prompt_variant"], task.problem_id, task.name, task.code)
        prompt = backend.render(messages)
        base = row_seed(seed, suite, task.problem_id, 0)
        started = time.monotonic()
        completions = backend.sample(prompt, sampling["k"], base, params)
        logger.info("task %s: %d samples in %.1f s", task.problem_id, len(completions), time.monotonic() - started)
        digest = prompt_hash(prompt)
        for c in completions:
            rows.append(
                {
                    "seed": seed,
                    "problem_id": task.problem_id,
                    "task_name": task.name,
                    "sample_index": c.sample_index,
                    "row_seed": c.row_seed,
                    "prompt_variant": sampling["prompt_variant"],
                    "prompt_hash": digest,
                    "prompt_tokens": c.prompt_tokens,
                    "completion": c.text,
                    "token_ids": c.token_ids,
                    "token_logprobs": c.token_logprobs,
                    "n_tokens": len(c.token_ids),
                    "finish_reason": c.finish_reason,
                    "lp_sum": c.lp_sum,
                    "lp_mean": c.lp_mean,
                    "surprisal": -c.lp_sum,
                    "surprisal_mean": -c.lp_mean,
                    **sample_fields(c.text, c.token_ids, c.token_logprobs, c.finish_reason, decode_one, extract_python_code),
                }
            )
    return pd.DataFrame(rows)


def sample_job(
    sampling: dict[str, Any],
    model: dict[str, Any],
    model_path: str,
    tasks: pd.DataFrame,
    seed: int,
    suite: str,
    adapter: str | None = None,
    gpus: int = 0,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The ``sample`` rule's job: one engine load, then K samples per selected task.

    ``adapter`` is the trained checkpoint's LoRA (``checkpoint.use: trained``). The transformers
    backend merges it into the weights; vLLM hot-loads it with a ``LoRARequest`` (its rank sets
    ``max_lora_rank`` unless ``sampling.vllm.max_lora_rank`` does), so the engine loads the base
    model once and no merged copy is written. ``gpus``: the job's GPUs, vLLM's tensor-parallel
    ranks. Returns the samples and the engine record for their provenance.
    """
    if sampling["backend"] == "vllm":
        options = vllm_options(sampling, model, sampling["device"])
        options["tensor_parallel_size"] = max(1, gpus)
        backend = make_backend("vllm", model_path, adapter_dir=adapter, **options)
    else:
        backend = make_backend(
            sampling["backend"],
            model_path,
            dtype=model["dtype"],
            device=sampling["device"],
            chat_format=model["chat_format"],
            stop_tokens=model["stop_tokens"],
        )
        if adapter:
            from testtime.pg.policy import merge_checkpoint

            merge_checkpoint(backend, adapter)
    engine = engine_provenance(backend, adapter, "merged" if adapter else None)
    logger.info("sampling with %s", engine)
    return sample_tasks(backend, tasks, sampling, seed, suite), engine
