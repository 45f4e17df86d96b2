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
