"""Rewards, advantages and step metrics of the training loops (reference-protocol §4.3, §8,
§9.2): pure functions shared by RLVR and TTT.

* reward: speedup / median(the task's last ``window`` speedups) if correct, else 0 (baseline 1.0
  while the history is empty); the history is updated sample by sample in evaluation order and
  carried across steps (``normalized_rewards``). TTT appends positive speedups only, RLVR every
  correct sample's (``append``);
* advantage: z-score over all rollouts of the step, across tasks (``global``, TTT's TTRL
  choice) or within each task (``group``, GRPO's), std with ddof=1 floored at 1e-6; or the
  group mean-centred reward with no std (``group_mean``, RLVR's, the tinker-cookbook's).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from testtime.analysis import fast_1

MIN_STD = 1e-6
MIN_BASELINE = 1e-6
#: Which correct samples join the reward history: TTT/SDPO positive speedups, RLVR every one.
HISTORY_APPEND = ("positive", "correct")
#: Advantage modes (``ttt.advantage``, ``rlvr.advantage``).
ADVANTAGE_MODES = ("global", "group", "group_mean")
#: What a rollout is rewarded with (``ttt.reward``): the normalised speedup (the paper) or the
#: sparse fast_1 indicator (the paper's open question 3, reward sparsification).
REWARD_MODES = ("normalized", "fast_1")


def normalized_rewards(
    problem_ids: Sequence[int],
    correct: Sequence[bool],
    speedup: Sequence[float],
    history: Mapping[str, Sequence[float]] | None = None,
    window: int = 32,
    bonus: float = 0.0,
    append: str = "positive",
) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:
    """Rewards of §4.3, in the given (evaluation) order.

    For each sample: baseline b = median of the task's history (1.0 when empty); reward 0 if
    incorrect, else ``max(0, speedup / max(b, 1e-6)) + bonus``, after which the speedup joins
    the history (a deque of the last ``window``): only when positive (``append="positive"``,
    TTT/SDPO) or always (``"correct"``, RLVR). Samples of one task see different
    baselines, as in the reference. ``history`` maps ``str(problem_id)`` to past speedups and
    is not modified; the updated history is returned.

    Returns ``(rewards, baselines, new_history)``.
    """
    if window < 1:
        raise ValueError(f"normalized_rewards: window must be >= 1, got {window}")
    if append not in HISTORY_APPEND:
        raise ValueError(f"normalized_rewards: append must be one of {HISTORY_APPEND}, got {append!r}")
    if not len(problem_ids) == len(correct) == len(speedup):
        raise ValueError("normalized_rewards: problem_ids, correct and speedup differ in length")
    hist = {str(k): deque((float(v) for v in vals), maxlen=window) for k, vals in (history or {}).items()}
    rewards = np.zeros(len(problem_ids))
    baselines = np.zeros(len(problem_ids))
    for i, (pid, ok, sp) in enumerate(zip(problem_ids, correct, speedup)):
        h = hist.setdefault(str(pid), deque(maxlen=window))
        b = statistics.median(h) if h else 1.0
        baselines[i] = b
        if ok:
            sp = float(sp)
            rewards[i] = max(0.0, sp / max(b, MIN_BASELINE)) + bonus
            if sp > 0 or append == "correct":
                h.append(sp)
    return rewards, baselines, {k: list(v) for k, v in sorted(hist.items())}


def sparse_rewards(correct: Sequence[bool], speedup: Sequence[float]) -> np.ndarray:
    """The thresholded reward of open question 3: 1.0 when the rollout is correct and faster
    than the reference (its fast_1), else 0.0; ``reward_bonus`` is not added (rewards stay in
    {0, 1})."""
    return fast_1(np.asarray(correct, dtype=bool), np.asarray(speedup, dtype=float)).astype(float)


def advantages(rewards: Sequence[float], groups: Sequence[Any] | None = None, mode: str = "global") -> np.ndarray:
    """Advantages of one step's rewards.

    ``global``: ``(r - mean) / max(std, 1e-6)`` with the sample std (ddof=1) over all rewards
    of the step (the TTT reference code, across tasks); ``group``: the same within each group
    (task), GRPO's group-relative form; ``group_mean``: ``r - mean(group)`` with no std
    normalisation (RLVR, §8: the tinker-cookbook's on-policy advantage). A z-scored set of one
    reward, or of equal rewards, gets advantage 0.
    """
    r = np.asarray(rewards, dtype=float)
    if mode == "global":
        return _zscore(r)
    if mode in ("group", "group_mean"):
        if groups is None or len(groups) != len(r):
            raise ValueError(f"advantages: mode {mode!r} needs one group label per reward")
        out = np.zeros_like(r)
        labels = np.asarray(groups)
        for g in pd.unique(labels):
            idx = labels == g
            out[idx] = _zscore(r[idx]) if mode == "group" else r[idx] - r[idx].mean()
        return out
    raise ValueError(f"ttt.advantage or rlvr.advantage: unknown mode {mode!r}; choose one of {ADVANTAGE_MODES}")


def _zscore(r: np.ndarray) -> np.ndarray:
    if r.size < 2:
        return np.zeros_like(r)
    return (r - r.mean()) / max(float(np.std(r, ddof=1)), MIN_STD)


def step_metrics(records: pd.DataFrame) -> dict[str, Any]:
    """§4.4 metrics of one step's evaluated rollouts (columns problem_id, correct, speedup,
    reward, finish_reason)."""
    fast = fast_1(records["correct"].to_numpy(), records["speedup"].to_numpy())
    frame = records.assign(fast=fast)
    per_task = {}
    for pid, g in frame.groupby("problem_id", sort=True):
        correct = g[g["correct"]]
        per_task[str(int(pid))] = {
            "fast_1": float(g["fast"].mean()),
            "correct_rate": float(g["correct"].mean()),
            "mean_speedup": float(correct["speedup"].mean()) if len(correct) else float("nan"),
            "n": int(len(g)),
        }
    correct = frame[frame["correct"]]
    return {
        "agg_fast_1": float(frame["fast"].mean()),
        "correct_rate": float(frame["correct"].mean()),
        "mean_speedup": float(correct["speedup"].mean()) if len(correct) else float("nan"),
        # the batch mean with 0 for incorrect samples: one reading of Table 5's "Speedup" (§8)
        "mean_speedup_all": float(frame["speedup"].where(frame["correct"], 0.0).mean()),
        "mean_reward": float(frame["reward"].mean()),
        "truncation_rate": float((frame["finish_reason"] == "length").mean()),
        "n_rollouts": int(len(frame)),
        "per_task": per_task,
    }


def score_step(
    rollouts: pd.DataFrame,
    evaluations: pd.DataFrame,
    history: Mapping[str, Sequence[float]] | None,
    run: Mapping[str, Any],
) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """Evaluations with ``reward``, ``reward_baseline`` and ``advantage`` (NaN when the run has
    no ``advantage`` mode: SDPO) added, in evaluation order (task, then sample index), and the
    reward history after this step. ``reward`` is the normalised reward, or with the run's
    ``reward: fast_1`` the sparse {0, 1} one (:func:`sparse_rewards`)."""
    keys = ["problem_id", "sample_index"]
    ev = evaluations.sort_values(keys, kind="mergesort").reset_index(drop=True)
    rewards, baselines, new_history = normalized_rewards(
        ev["problem_id"].tolist(),
        ev["correct"].astype(bool).tolist(),
        ev["speedup"].astype(float).tolist(),
        history,
        window=run["reward_window"],
        bonus=run["reward_bonus"],
        append=run.get("reward_history", "positive"),
    )
    # ttt.reward (absent: the paper's normalised reward). The history and the baselines are kept
    # either way, so a sparse run's records still show what the normalised reward would have been.
    reward_mode = run.get("reward", "normalized")
    if reward_mode == "fast_1":
        rewards = sparse_rewards(ev["correct"].astype(bool).tolist(), ev["speedup"].astype(float).tolist())
    elif reward_mode != "normalized":
        raise ValueError(f"ttt.reward: unknown reward {reward_mode!r}; choose one of {REWARD_MODES}")
    ev["reward"] = rewards
    ev["reward_baseline"] = baselines
    # SDPO logs the reward only (§10.2): its advantages are per token, computed at the update.
    mode = run.get("advantage")
    ev["advantage"] = np.nan if mode is None else advantages(rewards, ev["problem_id"].tolist(), mode)
    return ev, new_history
