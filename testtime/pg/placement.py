"""Where the training-side model lives (one device or split over the job's GPUs), gradient
checkpointing, and which of its weights the LoRA adapts.

Sharding (``shard: auto``): the model is loaded with transformers' ``device_map`` and a
``max_memory`` budget per visible GPU that splits it evenly (:func:`even_split`), i.e. naive pipeline (model) parallelism through accelerate's
dispatch hooks: each GPU holds a contiguous block of decoder layers, and activations hop from one
GPU to the next in the forward and back in the backward. One process, no launcher, no extra
dependency, and bit-for-bit the single-device computation (each layer runs the same kernels on
one card), so the update's loss, gradients and the probe's log-probs do not depend on how many
GPUs the job got. Only one GPU computes at a time; that is the price of the simplicity, and it
is small here because a step's time is dominated by sampling (vLLM) and evaluation, not the
update. FSDP or ZeRO-3 would use every GPU at once but need one process per GPU and a launcher
(``accelerate launch``/``torchrun``) inside each job, plus wrapping the hand-written update
(``testtime.pg.policy``) in collective-aware code; see the README (Training on several GPUs).

The job's GPUs are the ones CUDA_VISIBLE_DEVICES shows (``testtime.gpus.gpu_lease`` sets it on a
workstation, SLURM under the cluster profile), so ``cuda:0..n-1`` here are the job's own.
``shard: single`` (or one visible GPU, or ``device: cpu``) puts the whole model on ``device``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

#: Values of the ``shard`` setting of the ``ttt`` and ``rlvr`` config sections.
SHARD_MODES = ("auto", "single")

#: Fraction of each GPU's free memory the weights may take when sharded; the rest is left for
#: activations, the KV cache of sampling, LoRA gradients and Adam state.
WEIGHT_MEMORY_FRACTION = 0.6

#: gpt-oss keeps each layer's experts as fused 3-D parameters (``GptOssExperts.gate_up_proj``,
#: ``(experts, hidden, 2 x intermediate)``; ``down_proj``, ``(experts, intermediate, hidden)``), not
#: ``nn.Linear`` modules, so ``target_modules`` cannot reach them; PEFT (>= 0.17) adapts such
#: parameters through ``target_parameters`` (a rank-r LoRA per expert).
GPT_OSS_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
GPT_OSS_EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def n_visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def shard_plan(device: str, shard: str = "auto", n_gpus: int | None = None) -> dict[str, Any]:
    """How a model for ``device`` is placed: ``{"shard": mode, "sharded": bool, "n_gpus": n}``.

    ``auto`` shards when ``device`` is CUDA and more than one GPU is visible; ``single`` never does.
    """
    if shard not in SHARD_MODES:
        raise ValueError(f"shard: {shard!r} is not one of {SHARD_MODES}")
    on_cuda = str(device).startswith("cuda")
    n = (n_visible_gpus() if n_gpus is None else n_gpus) if on_cuda else 0
    return {"shard": shard, "sharded": shard == "auto" and on_cuda and n > 1, "n_gpus": n}


def load_causal_lm(model_dir: str, dtype: str = "float32", device: str = "cpu", shard: str = "single") -> Any:
    """``AutoModelForCausalLM`` from ``model_dir`` in ``dtype``, on ``device`` or, per
    :func:`shard_plan`, split over every visible GPU (``device_map`` with :func:`even_split` budgets)."""
    import torch
    from transformers import AutoModelForCausalLM

    plan = shard_plan(device, shard)
    torch_dtype = getattr(torch, dtype)
    if not plan["sharded"]:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).to(torch.device(device))
    max_memory = even_split(model_dir, torch_dtype, plan["n_gpus"])
    # "sequential": fill GPU 0 up to its budget, then GPU 1, ... exactly as budgeted; transformers'
    # "auto" and "balanced" both recompute the budgets (get_balanced_memory), see even_split
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype, device_map="sequential", max_memory=max_memory)
    off = {name: where for name, where in model.hf_device_map.items() if not isinstance(where, int)}
    if off:  # accelerate offloads what does not fit to CPU or disk, which would train at a crawl
        raise RuntimeError(f"shard auto: {sorted(off.items())[:5]} did not fit on the {plan['n_gpus']} GPUs")
    return model


def even_split(model_dir: str, torch_dtype: Any, n_gpus: int) -> dict[int, int]:
    """Per-GPU weight budgets that split the model about evenly: its size over the GPUs plus its
    largest unsplittable block (a decoder layer, the embedding or the LM head), capped at
    :data:`WEIGHT_MEMORY_FRACTION` of each card's free memory.

    Not transformers' ``device_map="auto"``/``"balanced"`` (the same in transformers 5: both
    recompute the budgets with ``get_balanced_memory``), whose reserve for the largest layer
    put a random Llama with a 49k vocabulary whole on the last of two H200s, and with these
    budgets offloaded part of it to disk: activations and the vocabulary-wide logits need room
    on every card, and an even split leaves it. The size is read from an empty (meta) model.
    """
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import compute_module_sizes
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=torch_dtype)
    sizes = compute_module_sizes(empty, dtype=torch_dtype)
    no_split = set(getattr(empty, "_no_split_modules", None) or [])
    blocks = [n for n, m in empty.named_modules() if type(m).__name__ in no_split or not list(m.children())]
    share = sizes[""] // n_gpus + max(sizes[n] for n in blocks)
    free = {i: int(torch.cuda.mem_get_info(i)[0] * WEIGHT_MEMORY_FRACTION) for i in range(n_gpus)}
    # the last GPU takes whatever the others' budgets leave, up to its cap, so nothing is offloaded
    return {i: free[i] if i == n_gpus - 1 else min(free[i], share) for i in range(n_gpus)}


def input_device(model: Any) -> Any:
    """The device inputs go to: the input embedding's (the first block of a sharded model)."""
    return model.get_input_embeddings().weight.device


def placement(model: Any) -> dict[str, Any]:
    """What the provenance records: the devices holding parameters and how many each holds."""
    counts = Counter(str(p.device) for p in model.parameters())
    device_map = getattr(model, "hf_device_map", None)
    return {
        "devices": sorted(counts),
        "sharded": len(counts) > 1,
        "parameters_per_device": {d: int(sum(p.numel() for p in model.parameters() if str(p.device) == d)) for d in counts},
        "modules_per_device": dict(Counter(str(v) for v in device_map.values())) if device_map else None,
    }


def enable_checkpointing(model: Any) -> None:
    """Recompute each decoder layer's activations in the backward instead of storing them.

    transformers checkpoints a layer only while that layer is in training mode, and the update
    runs the model in eval mode so that no dropout fires. So the flag is set on the decoder
    layers themselves and not on their children: the layer checkpoints, every dropout inside it
    stays off. ``use_reentrant=False`` because the inputs of the first layer need no gradient
    (only the LoRA weights do). Checkpointing drops the KV cache, so the update scores rows as
    whole sequences then (``testtime.scoring.sequence_logprobs``).
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.eval()
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.training = True


def is_checkpointing(model: Any) -> bool:
    """Whether a backward through ``model`` would replay its layers (see :func:`enable_checkpointing`)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return any(isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing and m.training for m in model.modules())


def lora_targets(model: Any, targets: str | Sequence[str]) -> dict[str, Any]:
    """PEFT ``LoraConfig`` arguments for ``targets`` (the config's ``lora_targets``) on ``model``.

    ``all-linear`` on gpt-oss is its attention projections plus the experts' fused parameters
    (``target_parameters``; PEFT's ``all-linear`` alone would see attention only, since the
    router and experts are not ``nn.Linear``). On other models ``all-linear`` is PEFT's own.
    A list names modules, or 3-D parameters (``mlp.experts.gate_up_proj``), which go to
    ``target_parameters``. Returns ``{"target_modules": ..., "target_parameters": [...]}``.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if isinstance(targets, str):
        if targets == "all-linear" and model_type == "gpt_oss":
            return {"target_modules": list(GPT_OSS_ATTENTION), "target_parameters": list(GPT_OSS_EXPERTS)}
        return {"target_modules": targets, "target_parameters": []}
    fused = {name for name, p in model.named_parameters() if p.dim() == 3}
    params = [t for t in targets if any(name == t or name.endswith("." + t) for name in fused)]
    modules = [t for t in targets if t not in params]
    return {"target_modules": modules, "target_parameters": params}


def adapter_targets(peft_model: Any) -> dict[str, Any]:
    """The target set the adapter actually got, for its provenance: the configured
    ``target_modules``/``target_parameters`` and the trainable tensors, parameters and count of
    adapted sites, split into modules and fused parameters."""
    config = peft_model.peft_config[peft_model.active_adapter]
    trainable = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    on_experts = [(n, p) for n, p in trainable if ".experts." in n]
    modules = config.target_modules
    if isinstance(modules, (set, list)):  # PEFT expands all-linear into full paths: their leaf names
        modules = sorted({m.split(".")[-1] for m in modules})
    return {
        "target_modules": modules,
        "target_parameters": sorted(config.target_parameters or []),
        "trainable_tensors": len(trainable),
        "trainable_parameters": int(sum(p.numel() for _, p in trainable)),
        "expert_tensors": len(on_experts),
        "expert_parameters": int(sum(p.numel() for _, p in on_experts)),
    }


def describe(model: Any, plan: Mapping[str, Any]) -> dict[str, Any]:
    """``plan`` (from :func:`shard_plan`) with the model's actual placement."""
    return {**dict(plan), **placement(model)}
