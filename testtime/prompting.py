"""Prompts, chat rendering, code extraction and ``ModelNew`` assembly (reference-protocol §3).

The paper's prompt (``paper``) is the default for every model. Named variants exist for models
that cannot follow it; the variant name is recorded in every sample record.
"""

from __future__ import annotations

import ast
import hashlib
import re
import textwrap
from typing import Any

PAPER_SYSTEM_PROMPT = (
    "You are an expert GPU kernel engineer.\n"
    "\n"
    "Reasoning effort: high.\n"
    "\n"
    "Think step-by-step internally, but do not reveal your reasoning.\n"
    "You must return only valid Python code.\n"
    "- No markdown, no backticks, no analysis, no explanations, no extra text.\n"
    "- Do not call tools or mention tools.\n"
    "- Output only the body of ModelNew.forward (no def line, no class, no imports).\n"
    "- The body must be functionally equivalent to Model.forward but faster.\n"
    "- If you cannot safely improve, output: pass\n"
    "- If you use symbols like torch, nn, or F, assume imports are provided.\n"
    "\n"
    "Few-shot examples (body-only):\n"
    "Example 1 (Conv2d module):\n"
    "Output:\n"
    "return torch.nn.functional.conv2d(x, self.conv2d.weight, self.conv2d.bias, self.conv2d.stride, "
    "self.conv2d.padding, self.conv2d.dilation, self.conv2d.groups)\n"
    "\n"
    "Example 2 (Linear module):\n"
    "Output:\n"
    "return torch.nn.functional.linear(x, self.linear.weight, self.linear.bias)\n"
    "\n"
    "Example 3 (LayerNorm module):\n"
    "Output:\n"
    "return torch.nn.functional.layer_norm(x, self.ln.normalized_shape, self.ln.weight, self.ln.bias, "
    "self.ln.eps)\n"
)


def paper_user_prompt(problem_id: int, name: str, code: str) -> str:
    return (
        "Task: Optimize the kernel implementation.\n"
        "\n"
        f"Problem ID: {problem_id}\n"
        f"Task Name: {name}\n"
        "\n"
        "Reference Model:\n"
        '"""\n'
        f"{code}\n"
        '"""\n'
        "\n"
        "Requirements:\n"
        "- Same input/output semantics as Model.forward\n"
        "- Return only the *body* of ModelNew.forward (no def line, no class, no imports)\n"
    )


# A small instruct model answers the paper's prompt with prose and whole programs; this variant
# shows the reference forward alone and asks for one line, with one worked user/assistant turn.
# It keeps the task semantics (same reference, body-only answer) and is recorded when used.
_COMPACT_SYSTEM_PROMPT = (
    "You rewrite PyTorch forward methods to be faster. "
    "Answer with one line of Python: the new body of forward, starting with return."
)
_COMPACT_EXAMPLE_USER = "def forward(self, x: torch.Tensor) -> torch.Tensor:\n    return torch.sigmoid(x) * x\n"
_COMPACT_EXAMPLE_ANSWER = "return torch.nn.functional.silu(x)"


def _method(code: str, cls: str, name: str = "forward") -> ast.FunctionDef | None:
    """``cls.name`` as an AST node, or None when the code does not parse or lacks it."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    return item
    return None


def reference_forward_body(code: str) -> str:
    """Body of ``Model.forward``: the reference-equivalent candidate (benchmarks, validation)."""
    method = _method(code, "Model")
    if method is None:
        raise ValueError("the problem defines no Model.forward")
    return "\n".join(ast.unparse(s) for s in method.body)


def forward_source(code: str) -> str:
    """Source of ``Model.forward`` in a KernelBench module (the whole code if not found)."""
    method = _method(code, "Model")
    return code if method is None else ast.unparse(_without_docstring(method)) + "\n"


def _without_docstring(fn: ast.FunctionDef) -> ast.FunctionDef:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        if isinstance(body[0].value.value, str) and len(body) > 1:
            fn = ast.FunctionDef(**{**fn.__dict__, "body": body[1:]})
    return fn


PROMPT_VARIANTS = ("paper", "compact")


def build_messages(variant: str, problem_id: int, name: str, code: str) -> list[dict[str, str]]:
    """Chat messages for one task under a named prompt variant."""
    if variant == "paper":
        return [
            {"role": "system", "content": PAPER_SYSTEM_PROMPT},
            {"role": "user", "content": paper_user_prompt(problem_id, name, code)},
        ]
    if variant == "compact":
        return [
            {"role": "system", "content": _COMPACT_SYSTEM_PROMPT},
            {"role": "user", "content": _COMPACT_EXAMPLE_USER},
            {"role": "assistant", "content": _COMPACT_EXAMPLE_ANSWER},
            {"role": "user", "content": forward_source(code)},
        ]
    raise ValueError(f"sampling.prompt_variant: unknown variant {variant!r}; choose one of {PROMPT_VARIANTS}")


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], chat_format: str = "template") -> str:
    """Render messages into the prompt string, ending at the assistant turn.

    ``template`` uses the model's own chat template; gpt-oss needs the cookbook's
    ``gpt_oss_no_sysprompt`` rendering instead of its HF template (reference-protocol §3.2).
    """
    if chat_format == "gpt_oss_no_sysprompt":
        return render_gpt_oss_no_sysprompt(messages)
    if chat_format != "template":
        raise ValueError(f"models.*.chat_format: unknown format {chat_format!r}")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_gpt_oss_no_sysprompt(messages: list[dict[str, str]]) -> str:
    """The paper's renderer: system → developer ``# Instructions``, no BOS, no default system."""
    parts = []
    for m in messages:
        role = "developer" if m["role"] == "system" else m["role"]
        content = f"# Instructions\n\n{m['content']}\n\n" if m["role"] == "system" else m["content"]
        parts.append(f"<|start|>{role}<|message|>{content}<|end|>")
    return "".join(parts) + "<|start|>assistant"


def prompt_hash(prompt: str) -> str:
    """The short hash of a rendered prompt that every sample record carries (``prompt_hash``), so
    a TTT update can check it trains on the prompt the rollouts were drawn from."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def task_prompts(backend: Any, tasks: Any, prompt_variant: str) -> dict[int, str]:
    """Rendered prompt of every selected task (``tasks`` a frame with ``selected``, ``problem_id``,
    ``name``, ``code``), exactly as the sampling loop renders it."""
    return {
        int(t.problem_id): backend.render(build_messages(prompt_variant, t.problem_id, t.name, t.code))
        for t in tasks[tasks["selected"]].itertuples()
    }


_FENCE = re.compile(r"```(?:python)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def extract_python_code(text: str) -> str:
    """The paper's ``extract_python_code``: first ```python fence, else the whole text."""
    if not text:
        return ""
    text = text.translate(_QUOTES)
    match = _FENCE.search(text)
    code = match.group(1) if match else text
    code = code.strip()
    code = re.sub(r"^```[A-Za-z]*", "", code)
    code = re.sub(r"`+$", "", code)
    return code.strip()


def _forward_body(action: str) -> str:
    action = action.strip()
    if not action:
        return "pass"
    try:
        tree = ast.parse(action)
    except SyntaxError:
        return action
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "forward":
            return "\n".join(ast.unparse(s) for s in node.body)
    method = _method(action, "ModelNew")
    return action if method is None else "\n".join(ast.unparse(s) for s in method.body)


def _forward_args(ref_code: str) -> str:
    method = _method(ref_code, "Model")
    return "self, *args, **kwargs" if method is None else ast.unparse(method.args)


def is_full_modelnew(action: str) -> bool:
    """True when the action is a complete module defining ``class ModelNew`` itself.

    Such sources (e.g. with inline CUDA via ``load_inline``) are evaluated as written; the
    paper's assembler would keep only their ``forward`` body.
    """
    try:
        tree = ast.parse(action)
    except SyntaxError:
        return False
    return any(isinstance(n, ast.ClassDef) and n.name == "ModelNew" for n in tree.body)


def assemble_modelnew_code(raw_action: str, ref_code: str) -> str:
    """The paper's assembly: reference source + ``class ModelNew(Model)`` with the new forward body."""
    body = _forward_body(raw_action)
    args = _forward_args(ref_code)
    prefix = []
    if "import torch" not in ref_code:
        prefix.append("import torch")
    if "import torch.nn as nn" not in ref_code and "import torch.nn\n" not in ref_code:
        prefix.append("import torch.nn as nn")
    if "F." in body and "import torch.nn.functional as F" not in ref_code:
        prefix.append("import torch.nn.functional as F")
    indented = textwrap.indent(body, " " * 8)
    if not indented.strip():
        indented = " " * 8 + "pass"
    head = "\n".join(prefix) + "\n" if prefix else ""
    return f"{head}{ref_code.strip()}\n\nclass ModelNew(Model):\n    def forward({args}):\n{indented}\n"


ASSEMBLY_MODES = ("paper", "auto")


def candidate_code(raw_action: str, mode: str = "auto") -> str:
    """The part of the evaluated module the candidate wrote: what the static screen inspects.

    The reference source it is joined to is trusted and never screened.
    """
    if mode == "auto" and is_full_modelnew(raw_action):
        return raw_action
    return _forward_body(raw_action) if raw_action.strip() else ""


def candidate_source(raw_action: str, ref_code: str, mode: str = "auto") -> str:
    """Module source to evaluate for a model answer or a user's candidate file.

    ``paper`` always applies the paper's assembly (a full module keeps only its forward body);
    ``auto`` keeps a complete ``ModelNew`` module as written (its own ``__init__``, helpers and
    inline kernels), prefixed with the reference source when it relies on ``Model``.
    """
    if mode not in ASSEMBLY_MODES:
        raise ValueError(f"evaluation.assembly: unknown mode {mode!r}; choose one of {ASSEMBLY_MODES}")
    if mode == "auto" and is_full_modelnew(raw_action):
        if "class Model(" in raw_action:
            return raw_action
        return f"{ref_code.strip()}\n\n{raw_action.strip()}\n"
    return assemble_modelnew_code(raw_action, ref_code)
