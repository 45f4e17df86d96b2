"""NLL over-sharpening probe (reference-protocol §11, D4): fixed Best-of-N samples re-scored
under every checkpoint of a TTT run, and how NLL tracks speedup step by step.

Scores are raw temperature-1 log-probs of the recorded completion tokens (stop token included)
after the recorded prompt: the definition of the sampling records' ``lp_sum`` (testtime.sampling),
so at step 0 (a zero LoRA) the probe reproduces them. NLL = -lp_sum.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)

#: Readings of "bottom quartile" (D4): B1 indicator over all samples, B2 within the lowest
#: speedup quarter, B3 within the lowest NLL quarter.
BOTTOM_QUARTILE = ("indicator", "speedup_subset", "nll_subset")


def rescore(
    backend: Any,
    samples: pd.DataFrame,
    prompts: Mapping[int, str],
    adapters: Mapping[int, str],
    chunk: int = 64,
    autocast: str = "none",
    span: str = "completion",
) -> pd.DataFrame:
    """One row per (step, sample): ``lp_sum``, ``lp_mean``, ``n_tokens``, ``nll`` under the
    checkpoint of each step, summed over the sample's ``span`` tokens (``completion``, ``final``
    or ``code``, as recorded at sampling: reference-protocol §5.3, §11). The whole completion is
    always teacher-forced; the span only chooses which tokens' log-probs are summed. A sample
    with no token in the span (no code extracted) gets NaN.

    The base model is loaded once (``backend``). With the transformers backend every adapter
    is loaded into it by name (PEFT) and activated in turn; with a vLLM backend (built with LoRA
    enabled, ``testtime.sampling.rollout_engine``) each step's adapter is hot-loaded per request
    (``LoRARequest``) and the log-probs are vLLM's ``prompt_logprobs``. Each task's prompt is
    checked against the hash recorded at sampling.
    """
    from testtime.prompting import prompt_hash
    from testtime.sampling.harmony import record_span_mask, span_logprob

    for pid, g in samples.groupby("problem_id"):
        if set(g["prompt_hash"]) != {prompt_hash(prompts[int(pid)])}:
            raise ValueError(f"task {pid}: the samples were drawn from a different prompt than the one rendered now")
    steps = sorted(adapters)
    score = (
        _vllm_scorer(backend, prompts, adapters)
        if backend.name == "vllm"
        else _peft_scorer(backend, prompts, adapters, chunk, autocast)
    )
    ordered = samples.sort_values(["problem_id", "sample_index"], kind="mergesort")
    rows = []
    for s in steps:
        started = time.monotonic()
        for pid, g in ordered.groupby("problem_id", sort=True):
            comps = [list(map(int, t)) for t in g["token_ids"]]
            lps = score(s, int(pid), comps)
            for record, lp in zip(g.to_dict("records"), lps):
                mask = record_span_mask(record, span) if span != "completion" else [True] * len(lp)
                total, n = span_logprob(lp, mask)
                rows.append(
                    {
                        "step": s,
                        "problem_id": int(pid),
                        "sample_index": int(record["sample_index"]),
                        "span": span,
                        "lp_sum": total if n else float("nan"),
                        "lp_mean": total / n if n else float("nan"),
                        "n_tokens": n,
                        "nll": -total if n else float("nan"),
                    }
                )
        logger.info("step %d: %d samples re-scored in %.1f s", s, len(ordered), time.monotonic() - started)
    return pd.DataFrame(rows)


def probe_engine(
    model_path: str,
    model: Mapping[str, Any],
    run: Mapping[str, Any],
    threads: int,
    adapters: Mapping[int, str],
    merged: str | None = None,
) -> Any:
    """The probe job's one engine: vLLM when ``run["backend"]`` (the rule's ``sampling.backend``)
    is ``vllm``, LoRA enabled for the largest rank among the steps' ``adapters``; else the
    transformers backend, with ``merged`` (a trained checkpoint under the run's fresh LoRA)
    folded into its weights."""
    from testtime.sampling import training_backend, vllm_adapter_engine

    if run.get("backend", "transformers") == "vllm":
        return vllm_adapter_engine(run, model_path, model, run["device"], threads, 0, list(adapters.values()), merged)
    backend = training_backend(model_path, model, run["device"], threads, run["shard"])
    if merged:
        from testtime.pg.policy import merge_checkpoint

        merge_checkpoint(backend, merged)
    return backend


def engine_record(backend: Any, adapters: Mapping[int, str], merged: str | None = None) -> dict[str, Any]:
    """The probe's provenance ``engine``: which engine scored, and how each step's adapter was
    applied (``lora_request`` per vLLM call, ``peft`` layers activated by name)."""
    from testtime.sampling import engine_provenance

    record = engine_provenance(backend, merged, "merged" if merged else None)
    applied = "lora_request" if backend.name == "vllm" else "peft"
    return {**record, "step_adapters": [str(adapters[s]) for s in sorted(adapters)], "step_adapters_applied": applied}


def _peft_scorer(backend: Any, prompts: Mapping[int, str], adapters: Mapping[int, str], chunk: int, autocast: str) -> Any:
    """``score(step, task, completions)`` under the transformers backend's model, every step's
    adapter loaded by name (PEFT) and activated when its step is scored."""
    from peft import PeftModel

    from testtime.scoring import score_completions

    steps = sorted(adapters)
    peft = PeftModel.from_pretrained(backend.model, str(adapters[steps[0]]), adapter_name=f"step{steps[0]}")
    for s in steps[1:]:
        peft.load_adapter(str(adapters[s]), adapter_name=f"step{s}")
    model = peft.get_base_model()
    model.eval()
    pad = int(backend.stop_ids[0])
    prompt_ids = {pid: backend.tokenizer(p, add_special_tokens=False).input_ids for pid, p in prompts.items()}

    def score(step: int, pid: int, comps: list[list[int]]) -> list[list[float]]:
        peft.set_adapter(f"step{step}")
        return score_completions(model, prompt_ids[pid], comps, pad, chunk=chunk, autocast=autocast)

    return score


def _vllm_scorer(backend: Any, prompts: Mapping[int, str], adapters: Mapping[int, str]) -> Any:
    """``score(step, task, completions)`` through the vLLM engine, the step's adapter in a
    ``LoRARequest`` of each call (the engine keeps its adapter cache; nothing is merged)."""

    def score(step: int, pid: int, comps: list[list[int]]) -> list[list[float]]:
        return backend.score(prompts[pid], comps, adapter_dir=str(adapters[step]))

    return score


def spearman(x: Any, y: Any) -> tuple[float, float, int]:
    """``scipy.stats.spearmanr`` (p from the t-approximation); NaN when undefined (n < 3 or a
    constant input)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = int(x.size)
    if n < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan"), float("nan"), n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue), n


def bottom_quartile_rho(nll: Any, speedup: Any, reading: str = "indicator") -> tuple[float, float, int]:
    """The "bottom quartile" ρ under one reading of D4 (see :data:`BOTTOM_QUARTILE`).

    P25 is numpy's default (linear) percentile; "bottom" includes ties at P25.
    """
    nll, speedup = np.asarray(nll, dtype=float), np.asarray(speedup, dtype=float)
    if reading == "indicator":
        return spearman(nll, (speedup <= np.percentile(speedup, 25)).astype(float))
    if reading == "speedup_subset":
        low = speedup <= np.percentile(speedup, 25)
        return spearman(nll[low], speedup[low])
    if reading == "nll_subset":
        low = nll <= np.percentile(nll, 25)
        return spearman(nll[low], speedup[low])
    raise ValueError(f"probe.bottom_quartile: unknown reading {reading!r}; choose one of {BOTTOM_QUARTILE}")


def probe_statistics(scores: pd.DataFrame, evaluations: pd.DataFrame, reading: str = "indicator") -> pd.DataFrame:
    """Per step: ρ(NLL, speedup) over all samples with p, the bottom-quartile ρ of ``reading``,
    ρ(log-prob, speedup) = -ρ (the other sign convention, D4), and mean/median NLL.

    ``evaluations`` supplies ``speedup`` (0 for incorrect samples, which are included, §11) per
    (problem_id, sample_index); a sample without a verdict is an error.
    """
    if reading not in BOTTOM_QUARTILE:
        raise ValueError(f"probe.bottom_quartile: unknown reading {reading!r}; choose one of {BOTTOM_QUARTILE}")
    keys = ["problem_id", "sample_index"]
    ev = evaluations[keys + ["speedup"]]
    joined = scores.merge(ev, on=keys, how="left", validate="many_to_one")
    if joined["speedup"].isna().any():
        raise ValueError("probe: some re-scored samples have no evaluation record")
    rows = []
    for step, g in joined.groupby("step", sort=True):
        scored = g["nll"].notna()  # a sample with no token in the probed span has no NLL
        g = g[scored]
        rho, p, n = spearman(g["nll"], g["speedup"])
        rho_q, p_q, n_q = bottom_quartile_rho(g["nll"].to_numpy(), g["speedup"].to_numpy(), reading)
        rows.append(
            {
                "step": int(step),
                "n": n,
                "rho": rho,
                "p": p,
                "rho_logprob": -rho,
                "bottom_quartile": reading,
                "rho_bottom_quartile": rho_q,
                "p_bottom_quartile": p_q,
                "n_bottom_quartile": n_q,
                "mean_nll": float(g["nll"].mean()),
                "median_nll": float(g["nll"].median()),
                "n_without_span": int((~scored).sum()),
            }
        )
    return pd.DataFrame(rows)
