"""Static pre-screen of candidate code (AST), run in the parent before anything executes.

A ``forward`` rewrite has no use for frames, the garbage collector, ctypes, threads, processes,
files, sockets, global numeric switches or replacing functions of torch; those are how a
candidate games a verifier (evaluator.md §3.3). Rejections name the construct and line.
The screen sees only the candidate's own code, never the (trusted) reference it is joined to.

It is a cheap first filter, not the defence: it rejects only what legitimate kernel code has
no use for, and the runtime defences behind it (isolation, integrity checks, fresh inputs,
timed-output checks) hold without it. So names are resolved by scope: a forbidden name the
candidate binds itself (a local ``input``, a parameter ``time``) is its own variable, and a
mutable default argument is rejected only where the function mutates it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from testtime.prompting import parse_untrusted

# Pure-computation modules besides torch: nothing in them reaches the process, files or the harness.
ALLOWED_IMPORTS = {
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "math",
    "typing",
    "torch.utils.cpp_extension",
    "functools",
    "itertools",
    "operator",
    "collections",
    "numbers",
    "dataclasses",
    "enum",
    "abc",
    # harmless beside the above: type hints, init helpers, Parameter, autograd.Function (the path
    # torch.autograd.graph stays forbidden), warning filters (the candidate's own process)
    "__future__",
    "collections.abc",
    "torch.autograd",
    "torch.nn.init",
    "torch.nn.parameter",
    "warnings",
}
# Modules that reach the interpreter, the process or the system (also as attributes of torch:
# torch.os, torch.sys, torch.ctypes, F.np ... exist).
FORBIDDEN_MODULES = {
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
    "glob",
    "platform",
    "_thread",
    "resource",
    "mmap",
    "fcntl",
}
FORBIDDEN_NAMES = FORBIDDEN_MODULES | {
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
    "__builtins__",
}
# Code or names given as strings, looked up or evaluated elsewhere: getattr by a string under
# other names (`operator.attrgetter("sys.modules")(typing)` reached the worker's harness past the
# screen, red team round 4), and what evaluates string annotations (`typing.get_type_hints` and
# `functools.singledispatch` ran `exec` from an annotation `"exec(...) or int"`, round 5)
STRING_LOOKUPS = {
    "attrgetter",
    "methodcaller",
    "get_type_hints",
    "ForwardRef",
    "singledispatch",
    "singledispatchmethod",
    "get_annotations",
    "get_args",  # the ForwardRefs inside a generic alias, whose private _evaluate runs their string
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
        self.forward_scopes: list[int] = []  # index in self.scopes of each enclosing forward's scope
        self.scopes: list[tuple[str, set[str]]] = []  # (module|function|class|comprehension, names it binds)
        self.aliases: dict[str, set[str]] = {}  # name -> the dotted paths imports bind it to, anywhere
        self.modules: dict[str, str] = {}  # module-level name bound (only) to a module -> its path
        self.getattr_calls: set[int] = set()  # ids of the `getattr` names that are called (checked there)

    def visit_Module(self, node: ast.Module) -> None:
        self.aliases = _import_paths(list(ast.walk(node)))
        self.modules = _module_names(node.body)
        self.scopes.append(("module", _bindings(node.body)))
        self.generic_visit(node)
        self.scopes.pop()

    def flag(self, node: ast.AST, reason: str) -> None:
        self.findings.append(Finding(getattr(node, "lineno", 0), reason))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in ALLOWED_IMPORTS:
                self.flag(node, f"import of {alias.name}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module not in ALLOWED_IMPORTS or node.level:
            self.flag(node, f"import from {'.' * node.level}{module}")
        else:
            for alias in node.names:  # `from torch import x` is `torch.x`: judged like that attribute
                if reason := self._forbidden_path(f"{module}.{alias.name}"):
                    self.flag(node, reason)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.flag(node, "global statement")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.flag(node, "nonlocal statement")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "getattr" and id(node) not in self.getattr_calls and not self._user_bound(node.id):
            self.flag(node, "getattr used as a value (its name is then computed where it is called)")
        if node.id in STRING_LOOKUPS and not self._user_bound(node.id):
            self.flag(node, f"use of {node.id} (code or names given as strings)")
        if node.id not in FORBIDDEN_NAMES:
            return
        # Binding such a name makes a variable of the candidate's own (`input = x.contiguous()`);
        # what it can be bound to is screened where the value comes from. Reading it is reading
        # that variable if a scope that Python would look in binds it, else the module/builtin.
        if node.id.startswith("__") or not (isinstance(node.ctx, (ast.Store, ast.Del)) or self._user_bound(node.id)):
            self.flag(node, f"use of {node.id}")

    def _user_bound(self, name: str) -> bool:
        if name in self.scopes[-1][1]:
            return True
        return any(name in bound for kind, bound in self.scopes[:-1] if kind != "class")  # class bodies do not enclose

    def _forbidden_path(self, name: str) -> str | None:
        """Why the dotted path ``name`` (an attribute chain or a from-import) is forbidden, if it is.

        A name that an import binds is also judged as the path it stands for (``import
        torch.autograd as ag`` makes ``ag.graph`` torch.autograd.graph, ``import warnings`` makes
        ``warnings.sys`` sys reached through a module), so allowing a module opens no path."""
        head, _, rest = name.partition(".")
        normals = [f"{ALIASES[head]}.{rest}" if head in ALIASES and rest else name]
        normals += sorted(f"{path}.{rest}" if rest else path for path in self.aliases.get(head, ()))
        for normal in normals:
            for bad in FORBIDDEN_TORCH:
                if normal.startswith(bad) and not (bad == "torch.compile" and self.allow_compile):
                    return f"use of {bad.rstrip('_.')}"
            parts = normal.split(".")
            if getter := next((p for p in parts[1:] if p in STRING_LOOKUPS), None):
                return f"use of {getter} (code or names given as strings)"
            if parts[0] == "torch" and any(p.startswith("_") and not p.startswith("__") for p in parts[1:]):
                return f"private torch API {name}"
            if parts[0] in ROOT_MODULES | {"torch"} or head in self.aliases:  # a module's attributes
                if escape := next((p for p in parts[1:] if p in FORBIDDEN_MODULES), None):
                    return f"module {escape} reached through {parts[0]}"
                if private := next((p for p in parts[1:] if p.startswith("_") and not p.startswith("__")), None):
                    return f"private attribute {private} of module {parts[0]}"  # collections._sys is sys
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("__") and node.attr.endswith("__") and node.attr not in ALLOWED_DUNDERS:
            self.flag(node, f"dunder attribute {node.attr}")
        name = _dotted(node)
        if name and (reason := self._forbidden_path(name)):
            self.flag(node, reason)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "getattr":
            self.getattr_calls.add(id(node.func))
            attr = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str) and not attr.value.startswith("_")):
                self.flag(node, "getattr with a computed or private name")
            elif attr.value in FORBIDDEN_MODULES:
                self.flag(node, f"getattr of module {attr.value}")
        if self.forward_scopes and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATING_METHODS:
            root = _root(node.func.value)
            # `torch.add(a, b)`, `operator.add(a, b)`: a function of a module, not a method of a
            # container kept across calls, whatever its name
            if isinstance(root, ast.Name) and not self._forward_local(root.id) and not self._is_module(node.func.value):
                self.flag(node, f"forward mutates {root.id} (state kept across calls)")
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            if _dotted(base) in {"torch.Tensor", "Tensor"}:
                self.flag(node, "tensor subclass")
        for expr in node.decorator_list + node.bases + node.keywords:  # evaluated in the enclosing scope
            self.visit(expr)
        self.scopes.append(("class", _bindings(node.body)))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        args = node.args
        params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]}
        # A mutable default is state shared by every call: rejected where the function mutates it
        # (a memo), not where it only reads it (`dims=[0, 1]`).
        positional = args.posonlyargs + args.args
        defaults = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
        defaults += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        body = node.body if isinstance(node.body, list) else [node.body]
        bound = params | _bindings(body) | {n for _, names in self.scopes for n in names}  # `dict` rebound is no copy
        for arg, default in defaults:
            literal = isinstance(default, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp))
            if (literal or isinstance(default, ast.Call)) and _mutates_default(body, arg.arg, bound, literal):
                self.flag(default, f"mutable default argument {arg.arg} mutated by the function (state kept across calls)")
        for expr in getattr(node, "decorator_list", []) + args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(expr)  # evaluated in the enclosing scope
        for a in args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]:
            if a.annotation is not None:
                self._annotation(a.annotation)
        if getattr(node, "returns", None) is not None:  # evaluated when the def runs, like the defaults
            self._annotation(node.returns)
        self.scopes.append(("function", params | _bindings(body)))
        is_forward = getattr(node, "name", None) == "forward"
        if is_forward:
            self.forward_scopes.append(len(self.scopes) - 1)
        for stmt in body:
            self.visit(stmt)
        if is_forward:
            self.forward_scopes.pop()
        self.scopes.pop()

    def _annotation(self, expr: ast.expr) -> None:
        """An annotation, screened as code, and so is every string in it: a string annotation is
        code that `typing.get_type_hints` and its kin evaluate (``"exec(...) or int"``). A string
        that does not parse cannot be evaluated either (``Literal["mean"]`` parses, harmlessly)."""
        self.visit(expr)
        self._strings_as_code(expr)

    def _strings_as_code(self, expr: ast.expr) -> None:
        for node in ast.walk(expr):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                try:
                    parsed = parse_untrusted(node.value)
                except SyntaxError:
                    continue
                ast.increment_lineno(parsed, node.lineno - 1)
                for stmt in parsed.body:
                    self.visit(stmt)

    def _is_module(self, node: ast.AST) -> bool:
        """Whether ``node``, used inside a forward, is a module: a name that only imports bind at
        module level (or torch, F, nn, math the reference provides, where the candidate binds no
        such name), or a known submodule of one (``torch.nn.functional``)."""
        name = _dotted(node)
        if name is None:
            return False
        head, _, rest = name.partition(".")
        if any(head in bound for kind, bound in self.scopes[1:] if kind != "class"):
            return False  # a variable of a function around it
        if head in self.modules:
            path = self.modules[head]
        elif head in ROOT_MODULES and head not in self.scopes[0][1]:
            path = ALIASES.get(head, "torch.nn.functional" if head == "functional" else head)
        else:
            return False
        return not rest or f"{path}.{rest}" in ALLOWED_IMPORTS

    def _forward_local(self, name: str) -> bool:
        """Whether ``name``, used inside a forward, is a variable of that call (bound in forward or
        in a function or comprehension nested in it), rather than state that outlives the call:
        module globals, class attributes and ``self``."""
        if name == "self":
            return False
        return any(name in bound for kind, bound in self.scopes[self.forward_scopes[-1] :] if kind != "class")

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        bound = {n.id for gen in node.generators for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
        self.scopes.append(("comprehension", bound))
        self.generic_visit(node)
        self.scopes.pop()

    visit_ListComp = _comprehension
    visit_SetComp = _comprehension
    visit_GeneratorExp = _comprehension
    visit_DictComp = _comprehension

    def _assign(self, node: ast.AST) -> None:
        for target in _targets(node):
            root = _root(target)
            if isinstance(target, (ast.Attribute, ast.Subscript)) and isinstance(root, ast.Name):
                if root.id in ROOT_MODULES or root.id == "Tensor":
                    self.flag(node, f"assignment into module {root.id}")
                elif self.forward_scopes and not self._forward_local(root.id):
                    self.flag(node, f"forward writes {root.id} (state kept across calls)")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._assign(node)
        self._strings_as_code(node.annotation)

    visit_Assign = _assign
    visit_AugAssign = _assign
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


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def _scope_nodes(body: list[ast.stmt]) -> list[ast.AST]:
    """The nodes of a scope's own code: not the insides of the functions, classes and
    comprehensions it defines (their names and decorators are its own)."""
    nodes: list[ast.AST] = []
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stack.extend(getattr(node, "decorator_list", []))
        elif not isinstance(node, (ast.Lambda, *_COMPREHENSIONS)):
            stack.extend(ast.iter_child_nodes(node))
    return nodes


def _import_paths(nodes: list[ast.AST]) -> dict[str, set[str]]:
    """What the names imports bind stand for: ``import a.b`` binds a to ``a``, ``import a.b as c``
    binds c to ``a.b``, ``from a import b as c`` binds c to ``a.b``."""
    paths: dict[str, set[str]] = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                path = a.name if a.asname else a.name.split(".")[0]
                paths.setdefault(a.asname or path, set()).add(path)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if a.name != "*":
                    paths.setdefault(a.asname or a.name, set()).add(f"{node.module}.{a.name}")
    return paths


def _module_names(body: list[ast.stmt]) -> dict[str, str]:
    """Module-level names that only imports bind, each to one module: every ``import`` binds a
    module; ``from a import b`` does where ``a.b`` is an allowed module (``from torch import nn``)."""
    imports = [n for n in _scope_nodes(body) if isinstance(n, (ast.Import, ast.ImportFrom))]
    not_modules = {f"{n.module}.{a.name}" for n in imports if isinstance(n, ast.ImportFrom) for a in n.names} - ALLOWED_IMPORTS
    others = _bindings(body, imports=False)
    return {
        name: next(iter(paths))
        for name, paths in _import_paths(imports).items()
        if len(paths) == 1 and not paths & not_modules and name not in others
    }


def _bindings(body: list[ast.stmt], imports: bool = True) -> set[str]:
    """Names a scope binds (Python's rule: bound anywhere in it means local throughout): targets,
    for/with/except/match names, imports (unless ``imports`` is false), and nested def/class
    names, but not what nested functions or classes bind inside themselves; a walrus in a
    comprehension binds here."""
    names: set[str] = set()
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            stack.extend(getattr(node, "decorator_list", []))
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, _COMPREHENSIONS):
            names.update(n.target.id for n in ast.walk(node) if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name))
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and imports:
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _mutated_names(body: list[ast.stmt]) -> set[str]:
    """Names whose object the code mutates in place: item/attribute stores and deletes, augmented
    assignment (in place on lists, dicts, sets, tensors) and mutating method calls (``append``,
    ``update``, ``add_`` and the other in-place tensor methods)."""
    names: set[str] = set()
    for node in (n for stmt in body for n in ast.walk(stmt)):
        for target in _targets(node):
            root = _root(target)
            if isinstance(root, ast.Name) and (target is not root or isinstance(node, ast.AugAssign)):
                names.add(root.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr in MUTATING_METHODS or (attr.endswith("_") and not attr.startswith("_")):
                root = _root(node.func.value)
                if isinstance(root, ast.Name):
                    names.add(root.id)
    return names


_FRESH_COPIES = {"dict", "list", "set", "sorted"}


def _mutates_default(body: list[ast.stmt], name: str, bound: set[str], literal: bool) -> bool:
    """Whether a function body mutates the object its parameter ``name`` starts as. Once a
    statement of the body itself (run on every call) rebinds ``name`` to a fresh object
    (``options = dict(options)``, ``options = {**options}``, ``x = x.copy()`` of a literal list,
    dict or set default), what follows mutates the copy, not the default; ``dict``, ``list`` ...
    count only where the candidate does not bind those names itself."""
    for i, stmt in enumerate(body):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        value = getattr(stmt, "value", None)
        fresh = isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)) or (
            isinstance(value, ast.Call)
            and (
                (isinstance(value.func, ast.Name) and value.func.id in _FRESH_COPIES - bound)
                or (literal and isinstance(value.func, ast.Attribute) and value.func.attr == "copy" and not value.args)
            )
        )
        if fresh and any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return name in _mutated_names(body[: i + 1])
    return name in _mutated_names(body)


def parse_candidate(code: str) -> tuple[ast.Module, int]:
    """Parse a full module (defines ``forward`` or ``ModelNew``) or a body-only forward.

    A body is screened as the inside of ``forward``, where it will run.
    """
    tree = parse_untrusted(code)
    defines = any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in {"forward", "ModelNew"} for n in tree.body)
    if defines:
        return tree, 0
    wrapped = "def forward(self, *args, **kwargs):\n" + "\n".join("    " + line for line in code.splitlines())
    return parse_untrusted(wrapped), 1


def screen(code: str, allow_compile: bool = False) -> list[Finding]:
    """Findings for candidate code (empty = nothing forbidden). Raises SyntaxError if unparsable
    or nested too deeply to screen."""
    tree, offset = parse_candidate(code)
    visitor = _Screen(allow_compile)
    try:
        visitor.visit(tree)
    except RecursionError:  # the visitor recurses once per level: a sum of 600 terms was enough
        raise SyntaxError("nested too deeply to screen") from None
    return [Finding(f.line - offset, f.reason) for f in dict.fromkeys(visitor.findings)]
