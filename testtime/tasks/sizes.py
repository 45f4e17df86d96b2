"""Reduced ("cpu") problem sizes for the paper's 20 KernelBench level-1 eval tasks.

At full size the v0.1 level-1 problems need up to 8 GiB inputs and 0.1-76 s per reference
forward on a 2-core CPU (evaluator spec §1.5), so a CPU run rewrites each problem's
module-level size constants. Only batch-like / spatial / GEMM dims are scaled; kernel sizes,
strides, dilations, channel counts and the triangular / diagonal / transposed structure are
kept. Every override is a documented deviation: `size_overrides_of` (in `testtime.tasks`)
reports what a suite spec applied.

Targets, measured by `benchmarks/bench_kernelbench_cpu.py`: one reference forward <= 0.5 s
on one CPU thread (mostly 20-200 ms) and inputs + output <= ~256 MB.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping

__all__ = ["CPU_SIZES", "SIZE_VARIANTS", "apply_size_overrides", "size_variant"]

SIZE_VARIANTS = ("full", "cpu")

# problem_id -> {module-level constant: value}, for the KernelBench level-1 v0.1 tree
# (6b1cea2; also valid for the git-HEAD tree). Full sizes are in the comments.
CPU_SIZES: dict[int, dict[str, int]] = {
    # matvec (M,K)@(K,1); full M=2048, K=1048576 (8 GiB). Keeps K/M = 512.
    4: {"M": 256, "K": 131072},
    # A * s; full 65536 x 16384. Keeps the 4:1 aspect.
    5: {"M": 8192, "N": 2048},
    # diag(A) @ B, a square GEMM in v0.1; full N=M=4096.
    12: {"M": 1024, "N": 1024},
    # triu(A @ B), full N=4096.
    14: {"N": 1024},
    # tril(A @ B), full M=4096.
    15: {"M": 1024},
    # A.T @ B.T; full M=2048, K=8192, N=4096. All dims / 4.
    18: {"M": 512, "K": 2048, "N": 1024},
    # elementwise activations on (batch, 393216); full batch 4096. Row length kept.
    28: {"batch_size": 32},
    29: {"batch_size": 32},
    30: {"batch_size": 32},
    32: {"batch_size": 32},
    # RMSNorm over 64 features; full 112 x 64 x 512 x 512.
    36: {"batch_size": 4, "dim1": 256, "dim2": 256},
    # Conv2d 64->128, 3x3; full 8 x 64 x 512 x 1024. Width stays 2x height.
    55: {"batch_size": 1, "height": 128, "width": 256},
    # ConvTranspose2d 64->64, (3,7); full 8 x 64 x 512 x 512.
    65: {"batch_size": 1, "height": 128, "width": 128},
    # ConvTranspose3d 48->24, 3^3; full 8 x 48 x 96^3.
    70: {"batch_size": 1, "depth": 32, "height": 32, "width": 32},
    # Conv1d 64->128, k=3, stride 3, dilation 4; full 64 x 64 x 524280 (length % 3 == 0 kept).
    76: {"batch_size": 4, "length": 32760},
    # depthwise Conv2d 64 ch, 3x3; full 16 x 64 x 512 x 512. Spatial size kept.
    82: {"batch_size": 1, "height": 512, "width": 512},
    # pointwise Conv2d 64->128; full 16 x 64 x 1024 x 1024.
    87: {"batch_size": 1, "height": 256, "width": 256},
    # cumsum over rows of 32768; full batch 32768. Row length (a tuple constant) kept.
    89: {"batch_size": 512},
    # cross_entropy over 4096 classes; full batch 32768.
    95: {"batch_size": 4096},
    # kl_div over rows of 16384; full batch 16384. Row length (a tuple constant) kept.
    98: {"batch_size": 256},
}

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
}
_UNARYOPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _int_value(node: ast.expr) -> int | None:
    """Value of a constant integer expression (`256 * 8`, `2**20`), else None."""
    if isinstance(node, ast.Constant):
        value = node.value
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _int_value(node.left), _int_value(node.right)
        if left is None or right is None:
            return None
        try:
            return _BINOPS[type(node.op)](left, right)
        except (ArithmeticError, ValueError):
            return None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARYOPS:
        operand = _int_value(node.operand)
        return None if operand is None else _UNARYOPS[type(node.op)](operand)
    return None


def _top_level_assigns(tree: ast.Module) -> dict[str, list[ast.Assign]]:
    found: dict[str, list[ast.Assign]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found.setdefault(node.targets[0].id, []).append(node)
    return found


def apply_size_overrides(code: str, overrides: Mapping[str, int]) -> str:
    """Rewrite the top-level assignments `NAME = <int expr>` named in `overrides`.

    Only the value text of each such assignment is replaced (by the decimal literal); every
    other byte of `code`, comments on the same line included, is kept. Raises ValueError if
    a name is not assigned at the top level by a single-target assignment, if its current
    value is not a constant integer expression, or if an override is not an int.
    """
    if not overrides:
        return code
    tree = ast.parse(code)
    assigns = _top_level_assigns(tree)
    # (start line, start col, end line, end col) in UTF-8 byte offsets, 1-based lines.
    edits: list[tuple[int, int, int, int, str]] = []
    for name, value in overrides.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"size override {name}={value!r} is not an int")
        if name not in assigns:
            raise ValueError(f"size override names {name!r}, but the module has no top-level assignment '{name} = ...'")
        for node in assigns[name]:
            if _int_value(node.value) is None:
                raise ValueError(
                    f"size override names {name!r}, but its top-level value "
                    f"{ast.get_source_segment(code, node.value)!r} (line {node.lineno}) is "
                    "not a constant integer expression"
                )
            v = node.value
            assert v.end_lineno is not None and v.end_col_offset is not None
            edits.append((v.lineno, v.col_offset, v.end_lineno, v.end_col_offset, str(value)))

    lines = code.encode("utf-8").splitlines(keepends=True)
    # Apply from the end so earlier offsets stay valid; spans of distinct statements never overlap.
    for start_line, start_col, end_line, end_col, text in sorted(edits, reverse=True):
        head = lines[start_line - 1][:start_col]
        tail = lines[end_line - 1][end_col:]
        lines[start_line - 1 : end_line] = [head + text.encode("utf-8") + tail]
    return b"".join(lines).decode("utf-8")


def size_variant(problem_id: int, code: str, variant: str) -> tuple[str, dict[str, int]]:
    """`(code, overrides applied)` of one level-1 problem at size `variant` ("full" | "cpu").

    "full" returns the code unchanged; "cpu" applies `CPU_SIZES[problem_id]` (ids without an
    entry are returned unchanged with no overrides).
    """
    if variant not in SIZE_VARIANTS:
        raise ValueError(f"unknown size variant {variant!r}; expected one of {SIZE_VARIANTS}")
    if variant == "full":
        return code, {}
    overrides = dict(CPU_SIZES.get(int(problem_id), {}))
    try:
        return apply_size_overrides(code, overrides), overrides
    except ValueError as exc:
        raise ValueError(f"problem {problem_id}: {exc}") from exc
