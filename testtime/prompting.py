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


def parse_untrusted(code: str) -> ast.Module:
    """``ast.parse`` for model-written code: text nested deeper than the parser (MemoryError) or
    the compiler (RecursionError) can take is a SyntaxError like any other unparsable text, never
    an exception that ends the job evaluating it (a red-team candidate of 200,000 nested minus
    signs once ended a CLI call and a whole evaluation job without a record)."""
    try:
        return ast.parse(code)
    except (RecursionError, MemoryError) as exc:
        raise SyntaxError(f"nested too deeply to parse ({type(exc).__name__})") from None


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
        tree = parse_untrusted(code)
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


def read_candidate(text: str) -> str:
    """The code of a candidate file (the CLI): the text as written when it is Python already (a
    module, or a body-only forward), else the paper's extraction (a pasted completion with prose
    or fences). A fence inside valid Python (an example in a docstring) must not replace it."""
    for wrapped in (text, "def forward(self):\n" + textwrap.indent(text, "    ")):
        try:
            parse_untrusted(wrapped)
        except SyntaxError:
            continue
        return text
    return extract_python_code(text)


def _forward_body(action: str) -> str:
    action = action.strip()
    if not action:
        return "pass"
    try:
        tree = parse_untrusted(action)
    except SyntaxError:
        return action
    method = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "forward"), None)
    method = method or _method(action, "ModelNew")
    if method is None:
        return action
    try:
        return "\n".join(ast.unparse(s) for s in method.body)
    except RecursionError:  # unparsing recurses once per level: left as written, for the screen to refuse
        return action


def _forward_args(ref_code: str) -> str:
    method = _method(ref_code, "Model")
    return "self, *args, **kwargs" if method is None else ast.unparse(method.args)


def is_full_modelnew(action: str) -> bool:
    """True when the action is a complete module defining ``class ModelNew`` itself.

    Such sources (e.g. with inline CUDA via ``load_inline``) are evaluated as written; the
    paper's assembler would keep only their ``forward`` body.
    """
    try:
        tree = parse_untrusted(action)
    except SyntaxError:
        return False
    return any(isinstance(n, ast.ClassDef) and n.name == "ModelNew" for n in tree.body)


def _import_prefix(body: str, ref_code: str, auto: bool = False) -> list[str]:
    """The paper's import prefix; ``auto`` also imports math for a body that uses it (the screen
    allows math, and a body has no place for imports of its own in the paper's prompt)."""
    prefix = []
    if "import torch" not in ref_code:
        prefix.append("import torch")
    if "import torch.nn as nn" not in ref_code and "import torch.nn\n" not in ref_code:
        prefix.append("import torch.nn as nn")
    if "F." in body and "import torch.nn.functional as F" not in ref_code:
        prefix.append("import torch.nn.functional as F")
    if auto and re.search(r"\bmath\.", body) and not re.search(r"^import math\s*$", ref_code, re.MULTILINE):
        prefix.append("import math")
    return prefix


def _forward_module(action: str) -> str | None:
    """``auto`` assembly of a module with a top-level ``def forward`` and code beside it (helpers,
    constants, imports): that code as written, then ``class ModelNew(Model)`` holding the forward
    as written (decorators and signature included). The paper's assembly keeps only forward's
    body, so the helpers it calls are gone (NameError). None when there is no such code, or
    when forward's first parameter is not ``self``."""
    try:
        tree = parse_untrusted(action)
    except SyntaxError:
        return None
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "forward"), None)
    if fn is None or not [n for n in tree.body if n is not fn and not _is_docstring(n)]:
        return None
    positional = fn.args.posonlyargs + fn.args.args
    if not positional or positional[0].arg != "self":
        return None  # `def forward(x)` is no method as written: the paper's body transplant
    lines = [line.decode() for line in action.encode().splitlines(keepends=True)]  # Python's line ends only
    start = min([fn.lineno] + [d.lineno for d in fn.decorator_list]) - 1
    method = "".join(lines[start : fn.end_lineno])
    rest = "".join(lines[:start] + lines[fn.end_lineno :])
    return f"{rest.strip()}\n\n\nclass ModelNew(Model):\n{textwrap.indent(method, '    ').rstrip()}\n"


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _hoist_future_imports(source: str) -> str:
    """``source`` with its module-level ``from __future__`` imports moved to the top, where Python
    requires them: the assembled module puts the reference before the candidate's code. Each is
    replaced by ``pass`` where it stood (any statement sharing its line is kept)."""
    try:
        tree = parse_untrusted(source)
    except SyntaxError:
        return source
    futures = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    if not futures:
        return source
    lines = source.encode().splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    data = source.encode()
    for n in reversed(futures):  # col offsets are UTF-8 byte offsets
        data = data[: offsets[n.lineno - 1] + n.col_offset] + b"pass" + data[offsets[n.end_lineno - 1] + n.end_col_offset :]
    header = "".join(dict.fromkeys(ast.unparse(n) + "\n" for n in futures))
    return header + data.decode()


def assemble_modelnew_code(raw_action: str, ref_code: str, auto: bool = False) -> str:
    """The paper's assembly: reference source + ``class ModelNew(Model)`` with the new forward body
    (``auto``: also ``import math`` where the body uses it)."""
    body = _forward_body(raw_action)
    args = _forward_args(ref_code)
    prefix = _import_prefix(body, ref_code, auto)
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
    if mode == "auto" and (is_full_modelnew(raw_action) or _forward_module(raw_action) is not None):
        return raw_action  # evaluated as written (the forward moved into ModelNew): screened whole
    return _forward_body(raw_action) if raw_action.strip() else ""


def candidate_source(raw_action: str, ref_code: str, mode: str = "auto") -> str:
    """Module source to evaluate for a model answer or a user's candidate file.

    ``paper`` always applies the paper's assembly (a full module keeps only its forward body);
    ``auto`` keeps a complete ``ModelNew`` module as written (its own ``__init__``, helpers and
    inline kernels), prefixed with the reference source when it relies on ``Model``, keeps the
    code beside a top-level ``def forward`` (``_forward_module``), and imports math for a body.
    Its ``from __future__`` imports go first, before the reference.
    """
    if mode not in ASSEMBLY_MODES:
        raise ValueError(f"evaluation.assembly: unknown mode {mode!r}; choose one of {ASSEMBLY_MODES}")
    if mode == "auto" and is_full_modelnew(raw_action):
        if "class Model(" in raw_action:
            return raw_action
        return _hoist_future_imports(f"{ref_code.strip()}\n\n{raw_action.strip()}\n")
    if mode == "auto" and (module := _forward_module(raw_action)) is not None:
        prefix = "".join(f"{line}\n" for line in _import_prefix(module, ref_code, auto=True))
        return _hoist_future_imports(f"{prefix}{ref_code.strip()}\n\n{module}")
    return assemble_modelnew_code(raw_action, ref_code, auto=mode == "auto")
