"""transformers backend: a hand-written decode loop with one RNG per sample.

HF ``generate`` draws every row from one global RNG stream, so a sample changes when its batch
changes (ml-stack §3). Here each row owns a ``torch.Generator`` seeded from (seed, task, index)
and samples by Gumbel-max, which is exactly sampling from softmax(logits / T). The raw T=1
log-prob of the chosen token is recorded in the same step, at no extra forward pass.

The prompt is prefilled once and its KV cache repeated K times (all K rows share it), and rows
that have stopped are dropped from the batch.
"""

from __future__ import annotations

import logging

import torch

from testtime.prompting import render_prompt
from testtime.sampling import Completion, SamplingParams, stop_token_ids
from testtime.scoring import cache_argument, cache_of

logger = logging.getLogger(__name__)


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        model_dir: str,
        dtype: str = "float32",
        device: str = "cpu",
        chat_format: str = "template",
        stop_tokens: list[str] | None = None,
        adapter_dir: str | None = None,
        shard: str = "single",
    ) -> None:
        from transformers import AutoTokenizer

        from testtime.pg.placement import describe, input_device, load_causal_lm, shard_plan

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # shard "auto": split over the job's GPUs (testtime.pg.placement); inputs then go to the
        # first one and accelerate's hooks carry activations across
        model = load_causal_lm(model_dir, dtype, device, shard)
        if adapter_dir:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_dir)
        self.model = model.eval()
        self.device = input_device(self.model)
        self.placement = describe(self.model, shard_plan(device, shard))
        # transformers 5.2x renamed past_key_values to cache; older releases only know the former.
        self._cache_arg = cache_argument(self.model)
        self.chat_format = chat_format
        self.stop_ids = stop_token_ids(self.tokenizer, stop_tokens, model_dir)

    def render(self, messages: list[dict[str, str]]) -> str:
        return render_prompt(self.tokenizer, messages, self.chat_format)

    @torch.inference_mode()
    def sample(self, prompt: str, k: int, base_seed: int, params: SamplingParams) -> list[Completion]:
        if params.temperature <= 0:
            raise ValueError("sampling.temperature must be > 0")
        if params.top_k != 0 or params.top_p != 1.0:
            raise ValueError("the transformers backend samples the untruncated distribution (top_k=0, top_p=1)")
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(self.device)
        n_prompt = prompt_ids.shape[1]
        generators = [torch.Generator(device=self.device).manual_seed(base_seed + i) for i in range(k)]
        out = self.model(input_ids=prompt_ids, use_cache=True)
        cache = cache_of(out)
        cache.batch_repeat_interleave(k)
        # .to(self.device): a sharded model's logits come out on its last GPU, the generators live on the first
        logits = out.logits[:, -1, :].float().to(self.device).expand(k, -1)

        tokens: list[list[int]] = [[] for _ in range(k)]
        logprobs: list[list[float]] = [[] for _ in range(k)]
        finish = ["length"] * k
        active = list(range(k))
        stop = torch.tensor(self.stop_ids, device=self.device)
        for step in range(params.max_new_tokens):
            raw_lp = torch.log_softmax(logits, dim=-1)
            noise = torch.stack([torch.rand(logits.shape[-1], generator=generators[r], device=self.device) for r in active])
            gumbel = -torch.log(-torch.log(noise.clamp_min(1e-20)))
            chosen = torch.argmax(logits / params.temperature + gumbel, dim=-1)
            chosen_lp = raw_lp.gather(-1, chosen[:, None]).squeeze(-1)
            done = torch.isin(chosen, stop)
            for j, r in enumerate(active):
                tokens[r].append(int(chosen[j]))
                logprobs[r].append(float(chosen_lp[j]))
                if done[j]:
                    finish[r] = "stop"
            keep = (~done).nonzero().squeeze(-1)
            if keep.numel() == 0 or step == params.max_new_tokens - 1:
                break
            if keep.numel() < len(active):
                cache.batch_select_indices(keep)
                chosen = chosen[keep]
                active = [active[int(j)] for j in keep]
            position = torch.full((len(active), 1), n_prompt + step, device=self.device)
            step_args = {self._cache_arg: cache}
            out = self.model(input_ids=chosen[:, None], position_ids=position, use_cache=True, **step_args)
            cache = cache_of(out)
            logits = out.logits[:, -1, :].float().to(self.device)

        results = []
        for i in range(k):
            ids = tokens[i]
            text_ids = ids[:-1] if finish[i] == "stop" else ids
            results.append(
                Completion(
                    sample_index=i,
                    row_seed=base_seed + i,
                    text=self.tokenizer.decode(text_ids, skip_special_tokens=False),
                    token_ids=ids,
                    token_logprobs=logprobs[i],
                    finish_reason=finish[i],
                    prompt_tokens=n_prompt,
                )
            )
        return results

    @torch.inference_mode()
    def score(self, prompt: str, completions: list[list[int]], chunk: int = 16) -> list[list[float]]:
        """Teacher-forced raw log-probs of given completion token ids (for re-scoring and tests)."""
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        results: list[list[float]] = []
        for start in range(0, len(completions), chunk):
            batch = completions[start : start + chunk]
            width = max(len(c) for c in batch)
            ids = torch.full((len(batch), len(prompt_ids) + width), self.stop_ids[0], device=self.device)
            mask = torch.zeros_like(ids)
            for b, comp in enumerate(batch):
                row = prompt_ids + comp
                ids[b, : len(row)] = torch.tensor(row)
                mask[b, : len(row)] = 1
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, len(prompt_ids) - 1 : -1].float()
            lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, len(prompt_ids) :, None].to(logits.device)).squeeze(-1)
            results.extend(lp[b, : len(comp)].tolist() for b, comp in enumerate(batch))
        return results
