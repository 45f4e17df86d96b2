"""Training-run settings: one TTT, RLVR or SDPO run's complete settings, resolved from the ``ttt``,
``rlvr`` or ``sdpo`` config section, what each step's outputs depend on, and the checkpoint the rest of the
workflow uses (``checkpoint``).

Imported by ``rules/common.smk`` while Snakemake parses the workflow, so it stays light
(standard library only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: Policy-gradient keys every training loop (TTT, RLVR, SDPO) reads: the LoRA, the optimizer and
#: the reward. Listed once; each loop adds its own.
PG_KEYS: tuple[str, ...] = (
    "model",
    "suite",
    "seed",
    "k",
    "steps",
    "lr",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "skip_zero_advantage",
    "reward_window",
    "reward_bonus",
    "adam_beta1",
    "adam_beta2",
    "adam_eps",
)
#: The switches of the paper's open questions (§6.6) on a TTT run, with the paper's value: the
#: entropy bonus and the KL penalty to the starting policy of the update (open question 1,
#: testtime.pg.policy) and the sparse fast_1 reward (open question 3, testtime.pg.rewards). A
#: run's settings hold them only when they differ from the paper's, so runs that do not use them
#: keep their params, config hashes and finished steps.
OPEN_QUESTION_KEYS: dict[str, Any] = {"entropy_bonus": 0.0, "kl_to_start": 0.0, "reward": "normalized"}
#: Keys a TTT run may set; the rest of its settings come from the ``ttt`` section's defaults.
RUN_KEYS: tuple[str, ...] = (*PG_KEYS, "tasks", "advantage", "init", "init_optimizer", *OPEN_QUESTION_KEYS)
#: Settings shared by every step of every run (device, placement over the job's GPUs, numerics).
SHARED_KEYS: tuple[str, ...] = ("device", "autocast", "shard", "gradient_checkpointing")


def resolve_run(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The complete settings of TTT run ``name``: its own keys over the ``ttt`` defaults.

    ``model`` and ``suite`` default to ``run.model`` / ``run.suite``. Raises ValueError naming
    the config key when the run, its model or its suite is not defined.
    """
    ttt = config["ttt"]
    runs = ttt.get("runs", {})
    if name not in runs:
        raise ValueError(f"config key 'ttt.runs.{name}': no such TTT run (defined: {sorted(runs)})")
    resolved = {key: ttt[key] for key in RUN_KEYS if key in ttt}
    resolved["model"] = config["run"]["model"]
    resolved["suite"] = config["run"]["suite"]
    resolved.update(runs[name])
    resolved.update({key: ttt[key] for key in SHARED_KEYS})
    for key, paper in OPEN_QUESTION_KEYS.items():
        if resolved.get(key, paper) == paper:
            resolved.pop(key, None)
    for registry, key in (("models", "model"), ("suites", "suite")):
        if resolved[key] not in config[registry]:
            raise ValueError(
                f"config key 'ttt.runs.{name}.{key}': {resolved[key]!r} is not defined under '{registry}' "
                f"(defined: {sorted(config[registry])})"
            )
    return resolved


#: Settings only the update reads; step 0 (the starting checkpoint, sampled) does not depend on them.
UPDATE_KEYS: tuple[str, ...] = (
    "lr",
    "adam_beta1",
    "adam_beta2",
    "adam_eps",
    "skip_zero_advantage",
    "entropy_bonus",
    "kl_to_start",
)


def step_settings(run: Mapping[str, Any], step: int | None = None) -> dict[str, Any]:
    """What one step's outputs depend on: never the number of steps (extending a run adds steps
    without rerunning finished ones), and at step 0 none of the update's settings."""
    drop = {"steps", *(UPDATE_KEYS if step == 0 else ())}
    return {key: value for key, value in run.items() if key not in drop}


def step0_owners(config: Mapping[str, Any]) -> dict[str, str]:
    """TTT runs whose step 0 is another run's (``ttt.share_step0``): run -> the first run in
    ``ttt.runs`` with the same step-0 settings (:func:`step_settings` at step 0). A run whose
    settings do not resolve is left to its own step (its error is raised when it is asked for)."""
    if not config["ttt"].get("share_step0", True):
        return {}
    first: dict[str, str] = {}
    owners: dict[str, str] = {}
    for name in config["ttt"].get("runs", {}):
        try:
            key = json.dumps(step_settings(resolve_run(config, name), 0), sort_keys=True, default=str)
        except ValueError:
            continue
        owner = first.setdefault(key, name)
        if owner != name:
            owners[name] = owner
    return owners


# ---------------------------------------------------------------- RLVR (reference-protocol §8)

#: Keys an RLVR run may set; the rest come from the ``rlvr`` section's defaults.
RLVR_RUN_KEYS: tuple[str, ...] = (
    *PG_KEYS,
    "tasks_per_step",
    "epochs",
    "shuffle_seed",
    "save_every",
    "advantage",
    "reward_history",
    "guardrails",
    "guard_kl",
    "guard_reward_drop",
)
#: RLVR settings only the update and its guardrails read (step 0 does not depend on them).
RLVR_UPDATE_KEYS: tuple[str, ...] = (*UPDATE_KEYS, "guardrails", "guard_kl", "guard_reward_drop")


def resolve_rlvr_run(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The complete settings of RLVR run ``name``: its own keys over the ``rlvr`` defaults;
    ``model``/``suite`` default to ``run.model``/``run.suite``. ValueError names the key."""
    rlvr = config["rlvr"]
    runs = rlvr.get("runs", {})
    if name not in runs:
        raise ValueError(f"config key 'rlvr.runs.{name}': no such RLVR run (defined: {sorted(runs)})")
    resolved = {key: rlvr[key] for key in RLVR_RUN_KEYS if key in rlvr}
    resolved["model"] = config["run"]["model"]
    resolved["suite"] = config["run"]["suite"]
    resolved.update(runs[name] or {})
    resolved.update({key: rlvr[key] for key in SHARED_KEYS})
    for registry, key in (("models", "model"), ("suites", "suite")):
        if resolved[key] not in config[registry]:
            raise ValueError(
                f"config key 'rlvr.runs.{name}.{key}': {resolved[key]!r} is not defined under '{registry}' "
                f"(defined: {sorted(config[registry])})"
            )
    return resolved


def rlvr_step_settings(run: Mapping[str, Any], step: int) -> dict[str, Any]:
    """What one RLVR step's outputs depend on: not the number of steps nor which steps Table 5
    lists, and at step 0 none of the update's settings."""
    drop = {"steps", "save_every", *(RLVR_UPDATE_KEYS if step == 0 else ())}
    return {key: value for key, value in run.items() if key not in drop}


def checkpoint_steps(run: Mapping[str, Any]) -> list[int]:
    """The steps Table 5 lists: every ``save_every``-th step and the final one."""
    steps = list(range(run["save_every"], run["steps"] + 1, run["save_every"]))
    return steps if steps and steps[-1] == run["steps"] else [*steps, run["steps"]]


# ---------------------------------------------------------------- SDPO (reference-protocol §10)

#: SDPO's own keys (testtime.sdpo): β, the teacher context's switches and the student term.
SDPO_KEYS: tuple[str, ...] = ("beta", "include_success_solution", "student_logprobs", "feedback_runtime_unit")
#: SDPO settings only the update reads (step 0 does not depend on them).
SDPO_UPDATE_KEYS: tuple[str, ...] = (*UPDATE_KEYS, *SDPO_KEYS)


def resolve_sdpo_run(config: Mapping[str, Any], model: str, suite: str, variant: str, seed: int) -> dict[str, Any]:
    """The settings of the SDPO run of one variant and seed on ``model`` and ``suite`` (all from
    its path): the ``sdpo`` section's policy-gradient and SDPO keys. ValueError names the key."""
    sdpo = config["sdpo"]
    for registry, name in (("models", model), ("suites", suite)):
        if name not in config[registry]:
            raise ValueError(
                f"SDPO: {registry[:-1]} {name!r} is not defined under '{registry}' (defined: {sorted(config[registry])})"
            )
    if variant not in sdpo["variants"]:
        raise ValueError(f"config key 'sdpo.variants': variant {variant!r} is not configured ({sdpo['variants']})")
    resolved = {key: sdpo[key] for key in (*PG_KEYS, *SDPO_KEYS) if key in sdpo}
    resolved.update(model=model, suite=suite, seed=int(seed), variant=variant)
    resolved.update({key: sdpo[key] for key in SHARED_KEYS})
    return resolved


def sdpo_step_settings(run: Mapping[str, Any], step: int) -> dict[str, Any]:
    """What one SDPO step's outputs depend on: not the number of steps, and at step 0 none of
    the update's settings (β and the teacher switches included)."""
    drop = {"steps", *(SDPO_UPDATE_KEYS if step == 0 else ())}
    return {key: value for key, value in run.items() if key not in drop}


def sdpo_seed_suite(config: Mapping[str, Any], suite: str, seed: int) -> str:
    """The suite seed ``seed`` of Table 9 on ``suite`` adapts on: ``sdpo.seed_suites`` (D1: the
    first eval tasks of split 43/44 for seeds 43/44), else ``suite`` itself."""
    return {str(k): v for k, v in config["sdpo"]["seed_suites"].items()}.get(str(seed), suite)


# ---------------------------------------------------------------- the checkpoint the workflow uses

CHECKPOINT_USES: tuple[str, ...] = ("base", "trained", "fetched")


def resolve_checkpoint(config: Mapping[str, Any]) -> dict[str, Any]:
    """The policy Best-of-N, TTT and the probe start from (config ``checkpoint``), as recorded in
    their provenance: ``base`` (``run.model`` as it is), ``fetched`` (``run.model`` is a fetched
    trained checkpoint, hf: source) or ``trained`` (the adapter of RLVR run ``rlvr_run`` at
    ``step``, null = its last, on ``run.model``). ``adapter_step`` is set for ``trained``."""
    spec = config["checkpoint"]
    use, model = spec["use"], config["run"]["model"]
    out: dict[str, Any] = {"use": use, "model": model}
    if use == "base":
        return out
    if use == "fetched":
        source = config["models"][model]["source"]
        if not str(source).startswith("hf:"):
            raise ValueError(
                f"config key 'checkpoint.use': 'fetched' needs run.model ({model!r}) to have an hf: source, got {source!r}"
            )
        return {**out, "source": source}
    if use != "trained":
        raise ValueError(f"config key 'checkpoint.use': {use!r} is not one of {CHECKPOINT_USES}")
    run = resolve_rlvr_run(config, spec["rlvr_run"])
    if run["model"] != model:
        raise ValueError(
            f"config key 'checkpoint.rlvr_run': RLVR run {spec['rlvr_run']!r} trains {run['model']!r}, "
            f"but run.model is {model!r}; the adapter applies to the model it was trained on"
        )
    step = run["steps"] if spec["step"] is None else spec["step"]
    if not 0 <= step <= run["steps"]:
        raise ValueError(
            f"config key 'checkpoint.step': {step} is outside RLVR run {spec['rlvr_run']!r}'s steps 0..{run['steps']}"
        )
    return {**out, "rlvr_run": spec["rlvr_run"], "adapter_step": step}
