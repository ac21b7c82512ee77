"""Flat trust_remote_code files generated from the package's own ``core/``, ``processing/`` and ``modeling/``.

A Hub repo's custom code must be flat files that transformers copies next to each other, follows
only through ``from .module import name`` and imports with nothing but what is installed. So the
exporter takes the package modules an entry module needs (following its relative imports), writes
each under its own file name (names are unique across ``core/``, ``processing/`` and ``modeling/``), rewrites
``from ..core.selector import X`` to ``from .selector import X``, and checks with ``ast``
that every import transformers will try (all imports outside ``try:``) is torch, numpy,
transformers or the standard library. The package stays the one source of truth.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ALLOWED_TOP_LEVEL_PACKAGES",
    "RemoteCodeError",
    "RemoteFile",
    "flatten_modules",
    "import_violations",
    "package_source",
]

PACKAGE = "pixelprune"
# Subpackages whose modules may be shipped as remote code (their folder names in the repo).
REMOTE_SUBPACKAGES: tuple[str, ...] = ("core", "processing", "modeling")
ALLOWED_TOP_LEVEL_PACKAGES: frozenset[str] = frozenset({"torch", "numpy", "transformers"})
"""Non-standard-library packages remote code may import (numpy is a hard dependency of transformers)."""

_IMPORT_HEADER = re.compile(r"^(\s*from\s+)(\.+[\w.]*)(\s+import\b)")


class RemoteCodeError(ValueError):
    """A package module cannot be shipped as trust_remote_code; the message lists every reason."""


@dataclass(frozen=True)
class RemoteFile:
    """One generated flat file: its name in the repo, its text and the package module it came from."""

    name: str
    text: str
    source: str  # e.g. "pixelprune/modeling/qwen3_vl.py"


def package_source(module_path: str) -> Path:
    """The source file of ``"modeling/qwen3_vl.py"`` (a path under the package's subpackages) as
    installed (editable checkout or wheel)."""
    subpackage, _, filename = module_path.partition("/")
    if subpackage not in REMOTE_SUBPACKAGES or not filename.endswith(".py") or "/" in filename:
        raise RemoteCodeError(
            f"{module_path!r} is not a module of {', '.join(p + '/' for p in REMOTE_SUBPACKAGES)} "
            "(expected e.g. 'modeling/qwen3_vl.py')."
        )
    spec = importlib.util.find_spec(f"{PACKAGE}.{subpackage}.{filename[:-3]}")
    if spec is None or spec.origin is None:
        raise RemoteCodeError(f"Cannot find the source of {PACKAGE}.{subpackage}.{filename[:-3]}.")
    return Path(spec.origin)


def _is_skipped_by_transformers(node: ast.AST) -> bool:
    """transformers' ``get_imports`` skips ``try:`` blocks and ``if is_x_available():`` blocks."""
    if isinstance(node, ast.Try):
        return True
    if isinstance(node, ast.If):
        test = node.test
        call = test.operand if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) else test
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
            return call.func.id.startswith("is_") and call.func.id.endswith("_available")
    return False


def _checked_imports(tree: ast.AST):
    """Yield the import nodes transformers checks (every one outside skipped blocks)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_skipped_by_transformers(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_violations(text: str, filename: str, sibling_modules: set[str] | frozenset[str]) -> list[str]:
    """Why ``text`` is not valid flat remote code (empty list when it is).

    Absolute imports must be torch, numpy, transformers or the standard library; relative imports
    must be ``from .<sibling> import name`` with ``<sibling>`` one of ``sibling_modules``.
    """
    problems = []
    allowed = ALLOWED_TOP_LEVEL_PACKAGES | set(sys.stdlib_module_names)
    for node in sorted(_checked_imports(ast.parse(text, filename=filename)), key=lambda n: n.lineno):
        where = f"{filename}:{node.lineno}"
        if isinstance(node, ast.ImportFrom) and node.level:
            module = node.module or ""
            if node.level != 1 or module not in sibling_modules:
                problems.append(
                    f"{where}: relative import {'.' * node.level}{module} is not a generated sibling "
                    f"(allowed: {', '.join(sorted(sibling_modules))})"
                )
            continue
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            if top not in allowed:
                problems.append(
                    f"{where}: imports {name!r}; remote code may import only "
                    f"{', '.join(sorted(ALLOWED_TOP_LEVEL_PACKAGES))} and the standard library "
                    "(move optional imports inside try:)"
                )
    return problems


def _relative_targets(text: str, module_path: str) -> list[tuple[int, str]]:
    """``(line number, "subpackage/module.py")`` of each relative import of a package module."""
    subpackage = module_path.split("/")[0]
    targets = []
    for node in ast.walk(ast.parse(text, filename=module_path)):
        if not (isinstance(node, ast.ImportFrom) and node.level):
            continue
        parts = (node.module or "").split(".") if node.module else []
        if node.level == 1 and len(parts) == 1:
            target = f"{subpackage}/{parts[0]}.py"
        elif node.level == 2 and len(parts) == 2 and parts[0] in REMOTE_SUBPACKAGES:
            target = f"{parts[0]}/{parts[1]}.py"
        else:
            raise RemoteCodeError(
                f"{PACKAGE}/{module_path}:{node.lineno}: relative import "
                f"{'.' * node.level}{node.module or ''} cannot be flattened (use 'from .module import name' "
                f"or 'from ..{'|'.join(REMOTE_SUBPACKAGES)}.module import name')."
            )
        targets.append((node.lineno, target))
    return targets


def _rewrite_relative_imports(text: str, targets: list[tuple[int, str]]) -> str:
    lines = text.splitlines(keepends=True)
    for lineno, target in targets:
        flat = Path(target).stem
        line, count = _IMPORT_HEADER.subn(rf"\g<1>.{flat}\g<3>", lines[lineno - 1], count=1)
        if count != 1:  # `from` and the module on different lines: transformers would not follow it
            raise RemoteCodeError(f"line {lineno} of {target}'s importer must read 'from <module> import ...'.")
        lines[lineno - 1] = line
    return "".join(lines)


def flatten_modules(entry_modules: list[str], *, version: str | None = None) -> list[RemoteFile]:
    """The flat files for ``entry_modules`` (``"modeling/qwen3_vl.py"``, ...) and every package
    module they import relatively, sorted by name.

    Raises :class:`RemoteCodeError` listing every problem: a relative import that cannot be
    flattened, two modules with the same file name, or an import remote code may not make.
    """
    sources: dict[str, str] = {}
    imports: dict[str, list[tuple[int, str]]] = {}
    pending = list(entry_modules)
    while pending:
        module_path = pending.pop()
        if module_path in sources:
            continue
        text = package_source(module_path).read_text(encoding="utf-8")
        sources[module_path] = text
        imports[module_path] = _relative_targets(text, module_path)
        pending.extend(target for _, target in imports[module_path])

    by_name: dict[str, str] = {}
    for module_path in sources:
        name = Path(module_path).name
        if name in by_name:
            raise RemoteCodeError(
                f"{PACKAGE}/{by_name[name]} and {PACKAGE}/{module_path} would both be flattened to {name}; "
                "module file names must be unique across core/, processing/ and modeling/."
            )
        by_name[name] = module_path

    siblings = frozenset(Path(name).stem for name in by_name)
    files, problems = [], []
    for name, module_path in sorted(by_name.items()):
        text = _rewrite_relative_imports(sources[module_path], imports[module_path])
        problems += import_violations(text, name, siblings)
        made_by = f"pixelprune {version}" if version else PACKAGE
        banner = f"# Generated by `pixelprune export` ({made_by}) from {PACKAGE}/{module_path}. Do not edit.\n"
        files.append(RemoteFile(name=name, text=banner + text, source=f"{PACKAGE}/{module_path}"))
    if problems:
        raise RemoteCodeError("Generated remote code would not load with only transformers installed:\n  " + "\n  ".join(problems))
    return files
