"""Static pre-screen of candidate code (AST), run in the parent before anything executes.

A ``forward`` rewrite has no use for frames, the garbage collector, ctypes, threads, processes,
files, sockets, global numeric switches or replacing functions of torch; those are how a
candidate games a verifier (evaluator.md §3.3). Rejections name the construct and line.
The screen sees only the candidate's own code, never the (trusted) reference it is joined to.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

ALLOWED_IMPORTS = {"torch", "torch.nn", "torch.nn.functional", "math", "typing", "torch.utils.cpp_extension"}
FORBIDDEN_NAMES = {
    "sys",
    "gc",
    "inspect",
    "ctypes",
    "builtins",
    "os",
    "subprocess",
    "threading",
    "multiprocessing",
    "concurrent",
    "signal",
    "importlib",
    "exec",
    "eval",
    "compile",
    "open",
    "globals",
    "locals",
    "vars",
    "__import__",
    "setattr",
    "delattr",
    "breakpoint",
    "input",
    "time",
    "socket",
    "shutil",
    "pathlib",
    "io",
    "pickle",
    "marshal",
    "weakref",
    "atexit",
    "numpy",
    "np",
    "__builtins__",
}
ROOT_MODULES = {"torch", "F", "nn", "math", "functional"}
ALIASES = {"F": "torch.nn.functional", "nn": "torch.nn"}
FORBIDDEN_TORCH = (
    "torch.cuda.Stream",
    "torch.cuda.stream",
    "torch.cuda.Event",
    "torch.cuda.synchronize",
    "torch.cuda.set_",
    "torch.cuda.current_stream",
    "torch.cuda.default_stream",
    "torch.cuda.graph",
    "torch.backends",
    "torch.set_",
    "torch.use_deterministic_algorithms",
    "torch.load",
    "torch.save",
    "torch.from_file",
    "torch.hub",
    "torch.library",
    "torch.multiprocessing",
    "torch.distributed",
    "torch.compile",
    "torch.jit",
    "torch.Tensor.__",
    "torch.autograd.graph",
)
MUTATING_METHODS = {"append", "extend", "update", "setdefault", "insert", "add", "pop", "popitem", "clear", "remove", "copy_"}
ALLOWED_DUNDERS = {"__init__", "__name__"}


@dataclass(frozen=True)
class Finding:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node


class _Screen(ast.NodeVisitor):
    def __init__(self, allow_compile: bool) -> None:
        self.findings: list[Finding] = []
        self.allow_compile = allow_compile
        self.in_forward = 0
        self.forward_locals: list[set[str]] = []

    def flag(self, node: ast.AST, reason: str) -> None:
        self.findings.append(Finding(getattr(node, "lineno", 0), reason))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in ALLOWED_IMPORTS:
                self.flag(node, f"import of {alias.name}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module not in ALLOWED_IMPORTS and not (module == "torch" and all(a.name in {"nn", "Tensor"} for a in node.names)):
            self.flag(node, f"import from {module or '.'}")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.flag(node, "global statement")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.flag(node, "nonlocal statement")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_NAMES:
            self.flag(node, f"use of {node.id}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("__") and node.attr.endswith("__") and node.attr not in ALLOWED_DUNDERS:
            self.flag(node, f"dunder attribute {node.attr}")
        name = _dotted(node)
        if name:
            head, _, rest = name.partition(".")
            normal = f"{ALIASES[head]}.{rest}" if head in ALIASES and rest else name
            for bad in FORBIDDEN_TORCH:
                if normal.startswith(bad) and not (bad == "torch.compile" and self.allow_compile):
                    self.flag(node, f"use of {bad.rstrip('_.')}")
                    break
            parts = normal.split(".")
            if parts[0] == "torch" and any(p.startswith("_") and not p.startswith("__") for p in parts[1:]):
                self.flag(node, f"private torch API {name}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "getattr":
            attr = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str) and not attr.value.startswith("_")):
                self.flag(node, "getattr with a computed or private name")
        if self.in_forward and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATING_METHODS:
            root = _root(node.func.value)
            if isinstance(root, ast.Name) and root.id not in self.forward_locals[-1]:
                self.flag(node, f"forward mutates {root.id} (state kept across calls)")
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            if _dotted(base) in {"torch.Tensor", "Tensor"}:
                self.flag(node, "tensor subclass")
        self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for default in node.args.defaults + node.args.kw_defaults:
            if isinstance(default, (ast.List, ast.Dict, ast.Set, ast.Call)):
                self.flag(default, "mutable default argument")
        if node.name == "forward":
            self.in_forward += 1
            params = {a.arg for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs} - {"self"}
            assigned = {t.id for n in ast.walk(node) for t in _targets(n) if isinstance(t, ast.Name)}
            self.forward_locals.append(params | assigned)
            self.generic_visit(node)
            self.forward_locals.pop()
            self.in_forward -= 1
        else:
            self.generic_visit(node)

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def _assign(self, node: ast.AST) -> None:
        for target in _targets(node):
            root = _root(target)
            if isinstance(target, (ast.Attribute, ast.Subscript)) and isinstance(root, ast.Name):
                if root.id in ROOT_MODULES or root.id == "Tensor":
                    self.flag(node, f"assignment into module {root.id}")
                elif self.in_forward and root.id not in self.forward_locals[-1] - {"self"}:
                    self.flag(node, f"forward writes {root.id} (state kept across calls)")
        self.generic_visit(node)

    visit_Assign = _assign
    visit_AugAssign = _assign
    visit_AnnAssign = _assign
    visit_Delete = _assign


def _targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        out: list[ast.AST] = []
        for t in node.targets:
            out.extend(t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])
        return out
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return [node.target]
    if isinstance(node, ast.Delete):
        return list(node.targets)
    return []


def parse_candidate(code: str) -> tuple[ast.Module, int]:
    """Parse a full module (defines ``forward`` or ``ModelNew``) or a body-only forward.

    A body is screened as the inside of ``forward``, where it will run.
    """
    tree = ast.parse(code)
    defines = any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in {"forward", "ModelNew"} for n in tree.body)
    if defines:
        return tree, 0
    wrapped = "def forward(self, *args, **kwargs):\n" + "\n".join("    " + line for line in code.splitlines())
    return ast.parse(wrapped), 1


def screen(code: str, allow_compile: bool = False) -> list[Finding]:
    """Findings for candidate code (empty = nothing forbidden). Raises SyntaxError if unparsable."""
    tree, offset = parse_candidate(code)
    visitor = _Screen(allow_compile)
    visitor.visit(tree)
    return [Finding(f.line - offset, f.reason) for f in dict.fromkeys(visitor.findings)]
