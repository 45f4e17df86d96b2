"""Code hashes derived from imports: the files a workflow script runs, found by reading them.

Each rule passes ``code=script_code_hash(script)`` as a param, so editing any library module
its script reaches (directly or through other modules) reruns that rule and nothing else. The
closure is computed with ``ast`` (nothing is imported, so parsing the workflow stays fast and
never loads torch): every ``import testtime...`` / ``from testtime... import x`` anywhere in a
file, function bodies included, plus the ``__init__`` of every package on the way, plus sibling
helper modules of the script's own folder (``from _common import ...``), plus the data files a
module declares it reads (a module-level ``CODE_DATA = ("folder", ...)``, relative to the
module, e.g. the bundled task sources). Over-approximating is
safe (an extra rerun); missing an import is the bug this module exists to prevent.

Imported by ``rules/common.smk`` at parse time: standard library only.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "testtime"


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of module ``dotted`` under ``root``: ``a/b.py`` or ``a/b/__init__.py``."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _declared_data(path: Path, tree: ast.Module) -> list[Path]:
    """Files under the folders a module names in a top-level ``CODE_DATA`` tuple of strings."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CODE_DATA" for t in node.targets):
            folders = [path.parent / ast.literal_eval(node.value)[i] for i in range(len(node.value.elts))]
            return [f for d in folders for f in sorted(d.rglob("*")) if f.is_file() and "__pycache__" not in f.parts]
    return []


def _imported_names(tree: ast.Module) -> set[str]:
    """Dotted names a file imports: ``import a.b`` gives ``a.b``; ``from a import b`` gives
    ``a`` and ``a.b`` (``b`` may be a submodule or an attribute; only files that exist count)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_closure(script: str | Path, root: str | Path) -> list[Path]:
    """The script and every file of package ``testtime`` (under ``root``) or of the script's own
    folder that it reaches through imports, sorted."""
    return list(_closure(Path(script).resolve(), Path(root).resolve()))


@cache
def _closure(script: Path, root: Path) -> tuple[Path, ...]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix != ".py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        todo.extend(_declared_data(path, tree))
        for name in _imported_names(tree):
            parts = name.split(".")
            if parts[0] == PACKAGE:
                # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
                found = [_module_file(root, ".".join(parts[:i])) for i in range(1, len(parts) + 1)]
            else:
                found = [_module_file(script.parent, name)]  # a helper beside the script
            todo.extend(f for f in found if f is not None and f not in seen)
    return tuple(sorted(seen))


def files_hash(paths: list[Path], root: Path) -> str:
    """Content hash of files, each named by its path relative to ``root``."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def script_code_hash(script: str | Path, root: str | Path) -> str:
    """Content hash of a workflow script and of every library file it imports, transitively."""
    root = Path(root).resolve()
    return files_hash(import_closure(script, root), root)
