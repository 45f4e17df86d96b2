"""A tiny randomly initialised model with SmolLM2's tokenizer and architecture family.

Usage: python scripts/make_tiny_model.py --from results/models/smollm2-135m --out results/gpu/tiny-smollm2

For GPU code-path checks only (TTT update, NLL probe): the lent GPU machine receives at most
64 MiB per call, and the materialised SmolLM2-135M (538 MB fp32, 98 MB as GGUF) does not fit.
The tiny model keeps the real tokenizer, chat template and Llama layout, with 2 layers of width
128 (about 6.5M parameters, 13 MB in bf16); its text is noise, so checks with it compare CPU
and GPU numerics, not sample quality.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="source", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    source, out = Path(args.source), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    config = AutoConfig.from_pretrained(source)
    config.update(
        {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
        }
    )
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.save_pretrained(out)
    meta = json.loads((source / "testtime_model.json").read_text()) if (source / "testtime_model.json").exists() else {}
    meta.update(
        {
            "source": f"tiny random model from {source}",
            "dtype": "float32",
            "n_parameters": sum(p.numel() for p in model.parameters()),
        }
    )
    (out / "testtime_model.json").write_text(json.dumps(meta, indent=2))
    print(f"{out}: {meta['n_parameters']} parameters")


if __name__ == "__main__":
    main()
