"""Provenance attached to every output: config hash, model, task revision, device, versions."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from testtime.config import config_hash

PACKAGES = ("testtime", "torch", "transformers", "numpy", "pandas", "pyarrow", "scipy", "snakemake", "vllm", "peft")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_info(device: str = "cpu") -> dict[str, Any]:
    info: dict[str, Any] = {"device": device, "host_cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


PAPER_CONFIG = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"


def deviations_from_paper(sections: dict[str, Any]) -> dict[str, list[Any]]:
    """``{"sampling.k": [ours, paper's]}`` for every key that differs from config/paper.yaml."""
    import yaml

    paper = yaml.safe_load(PAPER_CONFIG.read_text()) if PAPER_CONFIG.is_file() else {}
    found: dict[str, list[Any]] = {}
    for name, section in sections.items():
        if not isinstance(section, dict) or not isinstance(paper.get(name), dict):
            continue
        for key, value in section.items():
            if key in paper[name] and paper[name][key] != value:
                found[f"{name}.{key}"] = [value, paper[name][key]]
    return found


def build(sections: dict[str, Any], **facts: Any) -> dict[str, Any]:
    """Provenance record: the config sections an output depends on, their hash, and facts."""
    return {
        "config_hash": config_hash(sections),
        "config": sections,
        "deviations_from_paper": deviations_from_paper(sections),
        "packages": package_versions(),
        "python": platform.python_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **facts,
    }


def write_json_atomic(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)
