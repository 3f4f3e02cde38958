"""Every name the documentation points at exists: dotted ``gcc_jax.…`` names and Sphinx-style
roles (``:func:`…```, ``:class:`…```, ``:data:`…```, ``:mod:`…```, ``:attr:`…```,
``:meth:`…```) in the package's source, the configs, the benchmarks, ``docs/*.md`` and
``README.md``.

A dotted ``gcc_jax.a.b.c`` resolves when its longest importable prefix is a module and the rest
are attributes of it. A role's target may also be short, as Sphinx reads it: relative to the
module it is written in (``:func:`batch_loss``` in ``gcc_jax/losses/_generalized.py``), to its
package (which re-exports it), to a class of that module (``:attr:`batch_keys```), or to
``gcc_jax`` (``:class:`models.VGG19Density```); in a script outside the package, to the
script's own top-level names.
A failure names the file, the line and the reference.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTED = sorted(
    [
        *(REPO / "gcc_jax").rglob("*.py"),
        *(REPO / "configs").glob("*.py"),
        *(REPO / "benchmarks").glob("*.py"),
        *REPO.glob("*.py"),
        *(REPO / "docs").glob("*.md"),
        REPO / "README.md",
    ]
)
# gcc_jax.a.b (no trailing dot, no file path: gcc_jax/losses/... is a path, not a name).
_DOTTED = re.compile(r"(?<![\w/.])gcc_jax(?:\.\w+)+")
# Strings that look like names and are data: the format tag of a model directory's model.json
# (gcc_jax.models._checkpoint), which existing model directories carry.
_NOT_NAMES = {"gcc_jax.VGG19Density"}
_ROLE = re.compile(r":(?:data|func|class|mod|attr|meth|exc|obj):`~?([\w.]+)(?:\(\))?`")


def _module_of(path: pathlib.Path) -> str | None:
    """The module a file of the package defines (``None`` outside the package)."""
    relative = path.relative_to(REPO)
    if relative.parts[0] != "gcc_jax" or path.suffix != ".py":
        return None
    parts = relative.with_suffix("").parts
    if parts[-1] == "__main__":  # importing it would run the command: use its package
        parts = parts[:-1]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _resolves(name: str) -> bool:
    """``name`` is an importable module, or an attribute path inside one."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        module_name = ".".join(parts[:end])
        try:
            found = importlib.util.find_spec(module_name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            continue
        if end == len(parts):
            return True
        value = importlib.import_module(module_name)
        *path, last = parts[end:]
        for attribute in path:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        # A dataclass field without a default is no class attribute, but documented as one.
        return hasattr(value, last) or last in getattr(value, "__dataclass_fields__", {})
    return False


@functools.cache
def _top_level_names(path: pathlib.Path) -> frozenset[str]:
    """What a script outside the package defines at its top level (read, not imported)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return frozenset(names)


@functools.cache
def _classes_of(module_name: str) -> tuple[str, ...]:
    module = importlib.import_module(module_name)
    return tuple(
        f"{module_name}.{name}" for name, value in vars(module).items() if inspect.isclass(value)
    )


def _role_resolves(target: str, module_name: str | None, script_names: frozenset[str]) -> bool:
    if target.split(".")[0] in script_names:
        return True
    candidates = [target, f"gcc_jax.{target}"]
    if module_name is not None:
        package = module_name.rpartition(".")[0]  # a private module documents its package's names
        candidates += [f"{module_name}.{target}", f"{package}.{target}"]
        candidates += [f"{cls}.{target}" for cls in _classes_of(module_name)]
    return any(_resolves(candidate) for candidate in candidates)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def unresolved_references(
    text: str, *, where: str, module_name: str | None, script_names: frozenset[str] = frozenset()
) -> list[str]:
    """``"where:line: reference"`` for every reference in ``text`` that names nothing.

    Args:
      text: a file's text.
      where: the file's name in the messages.
      module_name: the package module the file defines, for short role targets (``None``
        outside the package).
      script_names: the top-level names of a script outside the package, for its short role
        targets.
    """
    problems = [
        f"{where}:{_line(text, match.start())}: {match.group(0)}"
        for match in _DOTTED.finditer(text)
        if match.group(0) not in _NOT_NAMES and not _resolves(match.group(0))
    ]
    problems += [
        f"{where}:{_line(text, match.start())}: {match.group(0)}"
        for match in _ROLE.finditer(text)
        if not _role_resolves(match.group(1), module_name, script_names)
    ]
    return problems


@pytest.mark.parametrize("path", DOCUMENTED, ids=lambda path: str(path.relative_to(REPO)))
def test_every_reference_resolves(path):
    module_name = _module_of(path)
    script_names = _top_level_names(path) if module_name is None and path.suffix == ".py" else frozenset()
    problems = unresolved_references(
        path.read_text(encoding="utf-8"), where=str(path.relative_to(REPO)), module_name=module_name,
        script_names=script_names,
    )
    assert not problems, "references to names that do not exist:\n" + "\n".join(problems)


def test_a_wrong_reference_is_reported_with_its_file_and_line():
    text = (
        "fine: :func:`gcc_jax.losses.generalized_loss`, gcc_jax.models.VGG19Density, "
        ":func:`batch_loss`, :attr:`GLHyperParameters.blur`, :class:`models.VGG19Density`.\n"
        "wrong: :data:`VALUE_CONTRACT` and gcc_jax.training.evaluate_records\n"
    )
    found = unresolved_references(text, where="x.py", module_name="gcc_jax.losses._generalized")
    assert found == ["x.py:2: gcc_jax.training.evaluate_records", "x.py:2: :data:`VALUE_CONTRACT`"]
