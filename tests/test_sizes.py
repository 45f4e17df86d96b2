"""Tests for the CPU size variant of the KernelBench level-1 eval tasks (testtime.tasks.sizes)."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest
import torch

from conftest import KB_DATA, L1_HEAD, L1_V01, PAPER_EVAL_IDS
from testtime.tasks import (
    CPU_SIZES,
    Task,
    apply_size_overrides,
    load_bundled,
    load_kernelbench,
    load_suite,
    make_split,
    size_overrides_of,
    size_variant,
)


def exec_module(code: str, name: str = "task") -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(code, f"<{name}>", "exec"), module.__dict__)
    return module


def top_level_assign_lines(code: str) -> dict[str, list[int]]:
    """Name -> 0-based line indices spanned by its top-level single-name assignments."""
    spans: dict[str, list[int]] = {}
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                assert node.end_lineno is not None
                spans.setdefault(target.id, []).extend(range(node.lineno - 1, node.end_lineno))
    return spans


@pytest.fixture(scope="module")
def kb_dir() -> Path:
    if not KB_DATA.is_dir():
        pytest.skip(f"KernelBench data not found at {KB_DATA} (set TESTTIME_KERNELBENCH_DATA)")
    return KB_DATA


@pytest.fixture(scope="module")
def v01(kb_dir: Path) -> dict[int, Task]:
    return {t.problem_id: t for t in load_kernelbench(kb_dir / L1_V01)}


# --- apply_size_overrides on synthetic code ------------------------------------------------

SAMPLE = (
    "import torch  # héllo\n"
    "\n"
    "M = 256 * 8 # 2048\n"
    "N = (\n"
    "    4096\n"
    "    * 2\n"
    ")  # wrapped\n"
    "shape = (N,)\n"
    "A = B = 3\n"
    "def get_inputs():\n"
    "    M = 5\n"
    "    return [torch.rand(M, N)]\n"
)


def test_apply_replaces_only_the_value_text() -> None:
    out = apply_size_overrides(SAMPLE, {"M": 16, "N": 32})
    assert out == (
        "import torch  # héllo\n"
        "\n"
        "M = 16 # 2048\n"
        "N = (\n"
        "    32\n"
        ")  # wrapped\n"
        "shape = (N,)\n"
        "A = B = 3\n"
        "def get_inputs():\n"
        "    M = 5\n"
        "    return [torch.rand(M, N)]\n"
    )
    module = exec_module(out)
    assert (module.M, module.N, module.shape) == (16, 32, (32,))


def test_apply_keeps_non_ascii_and_crlf_bytes() -> None:
    code = "x = 'é'; M = 4  # ü\r\nK = 2\r\n"
    # Column offsets are UTF-8 byte offsets: a non-ASCII character earlier on the line must not
    # shift the replaced span, and line endings are kept as they are.
    assert apply_size_overrides(code, {"M": 7, "K": 9}) == "x = 'é'; M = 7  # ü\r\nK = 9\r\n"


def test_apply_without_overrides_is_identity() -> None:
    assert apply_size_overrides(SAMPLE, {}) is SAMPLE


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"batch_size": 4}, "'batch_size'"),  # not defined at all
        ({"A": 4}, "'A'"),  # chained assignment, not a single-Name target
        ({"shape": 4}, "not a constant integer"),  # tuple value
        ({"M": 4.0}, "not an int"),
        ({"M": True}, "not an int"),
    ],
)
def test_apply_rejects_bad_overrides(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        apply_size_overrides(SAMPLE, overrides)


def test_apply_ignores_assignments_inside_functions() -> None:
    code = "def f():\n    batch_size = 4\n"
    with pytest.raises(ValueError, match="'batch_size'"):
        apply_size_overrides(code, {"batch_size": 1})


def test_size_variant_full_and_unknown() -> None:
    assert size_variant(4, SAMPLE, "full") == (SAMPLE, {})
    assert size_variant(999, SAMPLE, "cpu") == (SAMPLE, {})
    with pytest.raises(ValueError, match="variant"):
        size_variant(4, SAMPLE, "tiny")
    with pytest.raises(ValueError, match="problem 4: .*'K'"):
        size_variant(4, "M = 1\n", "cpu")


def test_cpu_sizes_cover_exactly_the_paper_eval_split() -> None:
    assert sorted(CPU_SIZES) == PAPER_EVAL_IDS == make_split(range(1, 101), seed=42)["eval"]
    for overrides in CPU_SIZES.values():
        assert overrides and all(type(v) is int and v > 0 for v in overrides.values())


# --- real KernelBench data -----------------------------------------------------------------


@pytest.mark.parametrize("tree", [L1_V01, L1_HEAD])
def test_every_override_names_a_top_level_int_constant(kb_dir: Path, tree: str) -> None:
    tasks = {t.problem_id: t for t in load_kernelbench(kb_dir / tree)}
    for pid, overrides in CPU_SIZES.items():
        assigns = top_level_assign_lines(tasks[pid].code)
        missing = set(overrides) - set(assigns)
        assert not missing, f"{tree} problem {pid} lacks {missing}"
        size_variant(pid, tasks[pid].code, "cpu")  # values are constant int expressions


@pytest.mark.parametrize("pid", PAPER_EVAL_IDS)
def test_rewrite_changes_only_the_overridden_lines(v01: dict[int, Task], pid: int) -> None:
    original = v01[pid].code
    code, applied = size_variant(pid, original, "cpu")
    assert applied == CPU_SIZES[pid]
    ast.parse(code)
    old_lines, new_lines = original.splitlines(keepends=True), code.splitlines(keepends=True)
    # Every override in the real files is a one-line assignment, so line counts match.
    assert len(old_lines) == len(new_lines)
    spans = top_level_assign_lines(original)
    expected = sorted(i for name in applied for i in spans[name])
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    assert set(changed) <= set(expected)
    for i in expected:
        name = old_lines[i].split("=", 1)[0].strip()
        assert new_lines[i].startswith(f"{name} = {applied[name]}")
    # The rewritten module's constants take the override values; others are unchanged.
    namespace = exec_module(code, f"kb_{pid}").__dict__
    full = exec_module(original, f"kb_{pid}_full").__dict__
    for name, value in applied.items():
        assert namespace[name] == value
    for name in spans.keys() - applied.keys():  # kernel sizes, channels, strides, row lengths
        if isinstance(full[name], (int, tuple)):
            assert namespace[name] == full[name], name


@pytest.mark.parametrize(
    ("pid", "shape"),
    [(4, (256, 1)), (12, (1024, 1024)), (95, ())],
)
def test_cpu_size_reference_forward(v01: dict[int, Task], pid: int, shape: tuple) -> None:
    code, _ = size_variant(pid, v01[pid].code, "cpu")
    module = exec_module(code, f"kb_{pid}")
    torch.manual_seed(0)
    model = module.Model(*module.get_init_inputs()).eval()
    inputs = module.get_inputs()
    assert sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor)) < 2**28
    with torch.no_grad():
        out = model(*inputs)
    assert tuple(out.shape) == shape
    assert torch.isfinite(out).all()


def test_load_suite_cpu_sizes(kb_dir: Path) -> None:
    path = str(kb_dir / L1_V01)
    full = load_suite({"source": path, "level": 1})
    assert load_suite({"source": path, "level": 1, "sizes": "full"}) == full
    spec = {"source": path, "level": 1, "sizes": "cpu"}
    cpu = load_suite(spec)
    assert [t.problem_id for t in cpu] == [t.problem_id for t in full]
    for before, after in zip(full, cpu):
        code, _ = size_variant(before.problem_id, before.code, "cpu")
        assert after == Task(before.problem_id, before.name, code, before.level, before.suite)
        assert (after.code != before.code) == (before.problem_id in CPU_SIZES)
    assert size_overrides_of(spec) == CPU_SIZES
    assert size_overrides_of({"source": path, "level": 1}) == {}


def test_load_suite_sizes_validation() -> None:
    assert load_suite({"source": "bundled", "sizes": "cpu"}) == load_bundled()
    assert size_overrides_of({"source": "bundled", "sizes": "cpu"}) == {}
    with pytest.raises(ValueError, match="sizes"):
        load_suite({"source": "bundled", "sizes": "small"})
    with pytest.raises(ValueError, match="level 1"):
        size_overrides_of({"source": "x.parquet", "level": 2, "sizes": "cpu"})
