"""vLLM backend (GPU): the same Completion records as the transformers backend.

Surprisal stays comparable across engines because vLLM's V1 engine reports, with the default
``logprobs_mode="raw_logprobs"``, the log-prob of each sampled token under the raw logits
(pre-temperature, pre-truncation), and includes the stop token in ``token_ids`` and
``logprobs`` (ml-stack §2). ``SamplingParams(n=K, seed=S)`` gives child i the seed S+i, the
same per-sample scheme as :func:`testtime.sampling.row_seed`.

Not exercised in CI (vLLM needs a CUDA GPU and is not installed on the CPU machines).
"""

from __future__ import annotations

from typing import Any

from testtime.prompting import render_prompt
from testtime.sampling import Completion, SamplingParams, stop_token_ids


class VllmBackend:
    name = "vllm"

    def __init__(
        self,
        model_dir: str,
        dtype: str = "bfloat16",
        chat_format: str = "template",
        stop_tokens: list[str] | None = None,
        tensor_parallel_size: int = 1,
        adapter_dir: str | None = None,
        **engine_options: Any,
    ) -> None:
        from vllm import LLM

        self.llm = LLM(
            model=model_dir,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            logprobs_mode="raw_logprobs",  # explicit: surprisal must be the untempered quantity
            enable_lora=adapter_dir is not None,
            max_lora_rank=16,
            **engine_options,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_format = chat_format
        self.stop_ids = stop_token_ids(self.tokenizer, stop_tokens, model_dir)
        self.lora = None
        if adapter_dir is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, adapter_dir)

    def render(self, messages: list[dict[str, str]]) -> str:
        return render_prompt(self.tokenizer, messages, self.chat_format)

    def sample(self, prompt: str, k: int, base_seed: int, params: SamplingParams) -> list[Completion]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        prompt_ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        sp = VSamplingParams(
            n=k,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_tokens=params.max_new_tokens,
            seed=base_seed,
            logprobs=0,
            stop_token_ids=self.stop_ids,
            skip_special_tokens=False,  # harmony markup must survive for parsing
        )
        (request,) = self.llm.generate([TokensPrompt(prompt_token_ids=prompt_ids)], sp, lora_request=self.lora)
        completions = []
        for i, out in enumerate(sorted(request.outputs, key=lambda o: o.index)):
            ids = list(out.token_ids)
            logprobs = [float(step[tok].logprob) for step, tok in zip(out.logprobs, ids)]
            stopped = out.finish_reason == "stop"
            text_ids = ids[:-1] if stopped and ids and ids[-1] in self.stop_ids else ids
            completions.append(
                Completion(
                    sample_index=i,
                    row_seed=base_seed + i,
                    text=self.tokenizer.decode(text_ids, skip_special_tokens=False),
                    token_ids=ids,
                    token_logprobs=logprobs,
                    finish_reason="stop" if stopped else "length",
                    prompt_tokens=len(prompt_ids),
                )
            )
        return completions
