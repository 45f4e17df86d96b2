"""Teacher-forced raw (temperature-1) log-probs of completions, prompt prefilled once per task.

The definition is the sampling records' (testtime.sampling): for completion token t, log p(t)
= log_softmax(logits) at its position, in fp32, untempered and untruncated, stop token
included. ``TransformersBackend.score`` computes the same numbers by running prompt and
completion together for every row; here the prompt runs once and its KV cache is shared by all
K rows, which is K times less prompt compute. Used with gradients by the TTT update (the
gradient flows through the shared prompt cache too, so it is the exact gradient of the summed
log-probs) and without by the NLL probe. tests/test_ttt.py checks both against the sampler's
recorded log-probs and against ``TransformersBackend.score``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch


def cache_argument(model: Any) -> str:
    """Name of the KV-cache keyword of ``model.forward`` (``cache`` in newer transformers)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(output: Any) -> Any:
    """The KV cache an output carries (``cache`` in newer transformers)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _right_padded(completions: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``completions`` as one right-padded id matrix, and the mask of its real tokens."""
    k, width = len(completions), max(len(c) for c in completions)
    ids = torch.full((k, width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((k, width), dtype=torch.bool, device=device)
    for row, comp in enumerate(completions):
        ids[row, : len(comp)] = torch.tensor(list(comp), dtype=torch.long)
        mask[row, : len(comp)] = True
    return ids, mask


def completion_logprobs(
    model: Any,
    prompt_ids: Sequence[int],
    completions: Sequence[Sequence[int]],
    pad_id: int,
    autocast: str = "none",
    with_entropy: bool = False,
) -> Any:
    """Per-token raw log-probs of ``completions`` after one shared prompt.

    ``model`` is a causal LM (a transformers model; PEFT-injected LoRA layers apply, as they
    live inside its modules). Returns ``(logprobs, mask)``, both ``(len(completions), width)``
    where width is the longest completion; padded positions have mask 0 and log-prob 0.
    Gradients flow when called outside ``torch.no_grad``. Rows are right-padded and attention
    is causal, so a real token never attends to padding and no attention mask is needed.
    ``with_entropy``: also return each position's entropy (``(logprobs, mask, entropy)``), the
    update's entropy bonus (``ttt.entropy_bonus``).
    """
    if not completions or any(len(c) == 0 for c in completions):
        raise ValueError("completion_logprobs: every completion needs at least one token")
    device = model.get_input_embeddings().weight.device  # the first GPU of a sharded model
    k = len(completions)
    ids, mask = _right_padded(completions, pad_id, device)
    width = ids.shape[1]
    prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if autocast == "bf16" else nullcontext()
    with amp:
        out = model(input_ids=prompt, use_cache=True)
        first = out.logits[:, -1, :].float().expand(k, -1)  # predicts every row's first token
        parts = [first[:, None, :]]
        if width > 1:
            cache = cache_of(out)
            cache.batch_repeat_interleave(k)
            n_prompt = prompt.shape[1]
            positions = torch.arange(n_prompt, n_prompt + width - 1, device=device).expand(k, -1)
            rest = model(input_ids=ids[:, :-1], position_ids=positions, use_cache=True, **{cache_argument(model): cache})
            parts.append(rest.logits.float())
    logits = torch.cat(parts, dim=1)
    return _token_logprobs(logits, ids, mask, device, with_entropy)


def _token_logprobs(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, device: Any, with_entropy: bool) -> Any:
    """``(logprobs, mask)`` of ``target`` under ``logits``, and with ``with_entropy`` the entropy
    of each position's full distribution, ``-Σ_v p_v log p_v`` (nats; 0 on padding) as a third
    element. On a model split over GPUs (testtime.pg.placement) the logits come out on the last
    GPU: the vocabulary-wide tensors stay there and only per-token values come back."""
    log_p = torch.log_softmax(logits, dim=-1)
    lp = log_p.gather(-1, target.to(logits.device)[:, :, None]).squeeze(-1).to(device)
    if not with_entropy:
        return lp.masked_fill(~mask, 0.0), mask
    entropy = -(log_p.exp() * log_p).sum(-1).to(device)
    return lp.masked_fill(~mask, 0.0), mask, entropy.masked_fill(~mask, 0.0)


def sequence_logprobs(
    model: Any,
    prompt_ids: Sequence[int],
    completions: Sequence[Sequence[int]],
    pad_id: int,
    autocast: str = "none",
    with_entropy: bool = False,
) -> Any:
    """:func:`completion_logprobs` without the shared prompt cache: every row runs prompt and
    completion as one sequence. The same numbers (up to float summation order) for K times the
    prompt's compute; what the update uses under gradient checkpointing, which replays each
    layer in the backward and so cannot keep a cache that the layer writes
    (testtime.pg.placement.enable_checkpointing).
    """
    if not completions or any(len(c) == 0 for c in completions):
        raise ValueError("sequence_logprobs: every completion needs at least one token")
    device = model.get_input_embeddings().weight.device
    n_prompt = len(prompt_ids)
    completion_ids, mask = _right_padded(completions, pad_id, device)
    width = completion_ids.shape[1]
    prompt = torch.tensor(list(prompt_ids), dtype=torch.long, device=device).expand(len(completions), -1)
    ids = torch.cat([prompt, completion_ids], dim=1)
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if autocast == "bf16" else nullcontext()
    with amp:
        # right padding under causal attention: no real token attends to padding, as above
        logits = model(input_ids=ids[:, :-1], use_cache=False, logits_to_keep=width).logits.float()
    return _token_logprobs(logits, ids[:, n_prompt:], mask, device, with_entropy)


@torch.no_grad()
def score_completions(
    model: Any,
    prompt_ids: Sequence[int],
    completions: Sequence[Sequence[int]],
    pad_id: int,
    chunk: int = 16,
    autocast: str = "none",
) -> list[list[float]]:
    """Raw log-probs of each completion's tokens (lists of floats), ``chunk`` rows at a time.

    Identical completions are scored once (a model at low temperature repeats itself: the
    embedded default's 256 Best-of-N samples hold 25 distinct ones), and rows are batched in
    length order so little compute goes to padding.
    """
    unique = sorted({tuple(int(t) for t in c) for c in completions}, key=len)
    scored: dict[tuple[int, ...], list[float]] = {}
    for start in range(0, len(unique), chunk):
        batch = unique[start : start + chunk]
        lp, _ = completion_logprobs(model, prompt_ids, batch, pad_id, autocast=autocast)
        scored.update((comp, lp[row, : len(comp)].tolist()) for row, comp in enumerate(batch))
    return [list(scored[tuple(int(t) for t in c)]) for c in completions]


def merge_duplicates(
    completions: Sequence[Sequence[int]],
    sampler_logprobs: Sequence[Sequence[float]],
    advantages: Sequence[float | Sequence[float]],
) -> tuple[list[tuple[int, ...]], list[list[float]], list[float | list[float]], list[int]]:
    """Identical completions of one prompt merged for the policy-gradient loss.

    Σ_i A_i Σ_t exp(log p(x_t) - q_i,t) over copies of one sequence x equals (Σ_i A_i) times one
    copy's term, up to the float noise between the copies' recorded sampler log-probs (~1e-6;
    the first copy's are kept); per-token advantages (SDPO) add token by token, for the same
    reason. Returns (unique completions in length order, their sampler log-probs, summed
    advantages, copy counts).
    """
    merged: dict[tuple[int, ...], list] = {}
    for comp, q, a in zip(completions, sampler_logprobs, advantages):
        key = tuple(int(t) for t in comp)
        a = np.asarray(a, dtype=float)
        if key in merged:
            merged[key][1] = merged[key][1] + a
            merged[key][2] += 1
        else:
            merged[key] = [list(map(float, q)), a, 1]
    keys = sorted(merged, key=len)
    return keys, [merged[k][0] for k in keys], [merged[k][1].tolist() for k in keys], [merged[k][2] for k in keys]
