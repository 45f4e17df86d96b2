"""Prompt construction, code extraction and ModelNew assembly (reference-protocol §3)."""

from __future__ import annotations

import ast

import pytest

from testtime.prompting import (
    PAPER_SYSTEM_PROMPT,
    assemble_modelnew_code,
    build_messages,
    candidate_source,
    extract_python_code,
    forward_source,
    render_gpt_oss_no_sysprompt,
)
from testtime.tasks import load_bundled

REF = {t.name: t for t in load_bundled()}["ReLU"].code


def test_paper_prompt_is_verbatim():
    assert PAPER_SYSTEM_PROMPT.startswith("You are an expert GPU kernel engineer.\n\nReasoning effort: high.\n")
    assert PAPER_SYSTEM_PROMPT.endswith("self.ln.eps)\n")
    system, user = build_messages("paper", 19, "ReLU", REF)
    assert system["role"] == "system" and user["role"] == "user"
    assert user["content"].startswith("Task: Optimize the kernel implementation.\n\nProblem ID: 19\nTask Name: ReLU\n")
    assert f'"""\n{REF}\n"""' in user["content"]
    assert user["content"].endswith("- Return only the *body* of ModelNew.forward (no def line, no class, no imports)\n")


def test_compact_prompt_shows_only_forward():
    messages = build_messages("compact", 1, "ReLU", REF)
    assert messages[-1]["content"].startswith("def forward(self, x")
    assert "get_inputs" not in messages[-1]["content"]
    with pytest.raises(ValueError, match="prompt_variant"):
        build_messages("nope", 1, "ReLU", REF)


def test_gpt_oss_rendering_matches_the_cookbook():
    text = render_gpt_oss_no_sysprompt([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text == "<|start|>developer<|message|># Instructions\n\nS\n\n<|end|><|start|>user<|message|>U<|end|><|start|>assistant"


@pytest.mark.parametrize(
    "text, code",
    [
        ("", ""),
        ("return x", "return x"),
        ("Here:\n```python\nreturn torch.relu(x)\n```\nDone", "return torch.relu(x)"),
        ("```Python\nreturn x\n```", "return x"),
        ("\u201cquoted\u201d", '"quoted"'),
        ("```py\nreturn x\n```", "return x"),  # no fence match; the leading ```py run is stripped
    ],
)
def test_extract_python_code(text, code):
    assert extract_python_code(text) == code


def test_assembly_of_body_and_full_sources():
    body = assemble_modelnew_code("return x.clamp(min=0)", REF)
    tree = ast.parse(body)
    cls = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelNew"][0]
    assert ast.unparse(cls.bases[0]) == "Model"
    assert "def forward(self, x: torch.Tensor):\n        return x.clamp(min=0)" in body
    from_def = assemble_modelnew_code("def forward(self, x):\n    # comment\n    y = x.clamp(min=0)\n    return y", REF)
    assert "        y = x.clamp(min=0)\n        return y" in from_def and "comment" not in from_def
    assert assemble_modelnew_code("", REF).rstrip().endswith("pass")
    full = "class ModelNew(nn.Module):\n    def forward(self, x):\n        return x.clamp(min=0)\n"
    assert candidate_source(full, REF, mode="auto").endswith(full)
    assert "class ModelNew(Model)" in candidate_source(full, REF, mode="paper")
    assert "import torch.nn.functional as F" in assemble_modelnew_code("return F.relu(x)", REF)


def test_forward_source_drops_the_rest_of_the_module():
    src = forward_source(REF)
    assert src.startswith("def forward(self, x: torch.Tensor) -> torch.Tensor:")
    assert "class Model" not in src


def test_reference_forward_body_is_the_models_own_forward():
    from testtime.prompting import reference_forward_body

    assert reference_forward_body(REF) == "return torch.relu(x)"
    with pytest.raises(ValueError, match="Model.forward"):
        reference_forward_body("x = 1")


def test_a_python_candidate_file_is_used_as_written():
    from testtime.prompting import read_candidate

    fenced_docstring = 'class ModelNew(nn.Module):\n    """Example:\n    ```python\n    y = ModelNew()(x)\n    ```\n    """\n\n    def forward(self, x):\n        return x.clamp(min=0)\n'
    assert read_candidate(fenced_docstring) == fenced_docstring  # the fence is the docstring's
    assert read_candidate("y = x.clamp(min=0)\nreturn y\n") == "y = x.clamp(min=0)\nreturn y\n"  # a body
    assert read_candidate("Here:\n```python\nreturn torch.relu(x)\n```\nDone") == "return torch.relu(x)"  # a completion


def test_auto_assembly_keeps_the_code_beside_a_top_level_forward():
    from testtime.prompting import candidate_code

    helper = "import torch\n\n\ndef _positive(t):\n    return t.clamp(min=0)\n\n\n@torch.no_grad()\ndef forward(self, x):\n    return _positive(x)\n"
    source = candidate_source(helper, REF, mode="auto")
    compile(source, "candidate", "exec")
    assert "def _positive(t):" in source
    assert "class ModelNew(Model):\n    @torch.no_grad()\n    def forward(self, x):\n        return _positive(x)\n" in source
    assert candidate_code(helper, mode="auto") == helper  # screened as evaluated, helper included
    assert "_positive" not in candidate_source(helper, REF, mode="paper").split("class ModelNew")[0]  # the paper's: body only
    lone = "def forward(self, x):\n    return x.clamp(min=0)\n"
    assert candidate_source(lone, REF, mode="auto") == assemble_modelnew_code(lone, REF)
    no_self = "import torch\n\n\ndef forward(x):\n    return x.clamp(min=0)\n"  # no method as written
    assert candidate_source(no_self, REF, mode="auto") == assemble_modelnew_code(no_self, REF)


def test_future_imports_go_before_the_reference():
    full = "from __future__ import annotations\n\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n    def forward(self, x: Tensor) -> Tensor:\n        return x.clamp(min=0)\n"
    source = candidate_source(full, REF, mode="auto")
    assert source.startswith("from __future__ import annotations\n")
    compile(source, "candidate", "exec")  # else: from __future__ imports must occur at the beginning
    namespace: dict = {}
    exec(compile(source, "candidate", "exec"), namespace)  # annotations postponed: Tensor never looked up
    helper = "from __future__ import annotations\nimport torch\n\n\ndef forward(self, x: Tensor):\n    return x.clamp(min=0)\n"
    compile(candidate_source(helper, REF, mode="auto"), "candidate", "exec")


def test_auto_assembly_imports_math_for_a_body():
    body = "return x.clamp(min=0) * math.sqrt(1.0)"
    assert "import math\n" in candidate_source(body, REF, mode="auto")
    assert "import math" not in candidate_source(body, REF, mode="paper")  # the paper's prefix: torch, nn, F
    assert "import math" not in candidate_source("return x.clamp(min=0)", REF, mode="auto")
