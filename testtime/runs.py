"""Test-time-training run settings: one run's complete settings, resolved from the ``ttt``
config section, and what each step's outputs depend on.

Imported by ``rules/common.smk`` while Snakemake parses the workflow, so it stays light
(standard library only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Keys a run may set; the rest of its settings come from the ``ttt`` section's defaults.
RUN_KEYS: tuple[str, ...] = (
    "model",
    "suite",
    "seed",
    "tasks",
    "k",
    "steps",
    "lr",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "advantage",
    "skip_zero_advantage",
    "reward_window",
    "reward_bonus",
    "adam_beta1",
    "adam_beta2",
    "adam_eps",
)
#: Settings shared by every step of every run (device and numerics).
SHARED_KEYS: tuple[str, ...] = ("device", "autocast")


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
    for registry, key in (("models", "model"), ("suites", "suite")):
        if resolved[key] not in config[registry]:
            raise ValueError(
                f"config key 'ttt.runs.{name}.{key}': {resolved[key]!r} is not defined under '{registry}' "
                f"(defined: {sorted(config[registry])})"
            )
    return resolved


#: Settings only the update reads; step 0 (the starting checkpoint, sampled) does not depend on them.
UPDATE_KEYS: tuple[str, ...] = ("lr", "adam_beta1", "adam_beta2", "adam_eps", "skip_zero_advantage")


def step_settings(run: Mapping[str, Any], step: int | None = None) -> dict[str, Any]:
    """What one step's outputs depend on: never the number of steps (extending a run adds steps
    without rerunning finished ones), and at step 0 none of the update's settings."""
    drop = {"steps", *(UPDATE_KEYS if step == 0 else ())}
    return {key: value for key, value in run.items() if key not in drop}
