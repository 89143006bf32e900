"""Arrows only run down the tree: every import in src/kenning is checked against the layers.

The layers, bottom to top, as ARCHITECTURE.md draws them. A module may import its own
package and any package of a lower layer, never one of its own layer or above. Imports
inside functions and under ``TYPE_CHECKING`` count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "kenning"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "settings", "principal"),  # exceptions, the settings, who is calling
    ("media",),  # kinds, sniffing, safe bounded decoding: used by all
    ("observability", "hosts", "periodic"),  # cross-cutting helpers any layer above may use
    ("stores",),
    ("queue",),
    ("pipeline",),
    ("inference",),
    ("processors",),
    ("ingest",),
    ("services",),
    ("container",),  # wires one process together; the API and the CLI build it
    ("api", "demo"),  # demo: the corpus fetcher `kenning demo` drives
    ("cli",),  # `kenning serve` runs the API app
)
"""Top-level packages and modules of ``kenning``, lowest layer first."""

EXCEPTIONS: dict[tuple[str, str], str] = {}
"""Upward imports that exist today, by (importing module, imported top-level name), with
why. Remove an entry when its import goes; the test fails on a stale one."""

RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _top(module: str) -> str | None:
    """The top-level name under ``kenning`` that ``module`` belongs to (None: kenning)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "kenning" and len(parts) > 1 else None


def _imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every ``kenning...`` module ``path`` imports, with its line number."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from kenning import media` names a package
                if target == "kenning" and _is_module(alias.name):
                    yield f"kenning.{alias.name}", node.lineno


def _is_module(name: str) -> bool:
    return (PACKAGE / name / "__init__.py").exists() or (PACKAGE / f"{name}.py").exists()


def _upward_imports() -> Iterator[tuple[str, str, str]]:
    """(importing module, imported top-level name, where) for every import up the tree."""
    for module, path in _modules():
        own = _top(module)
        if own is None:
            continue
        for target, line in _imported(module, path):
            theirs = _top(target)
            if theirs is None or theirs == own:
                continue
            if RANK[theirs] >= RANK[own]:
                yield module, theirs, f"{path.relative_to(SRC)}:{line} imports {target}"


def test_every_top_level_package_has_a_layer() -> None:
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert names == set(RANK), "place every package and module of kenning in LAYERS"


def test_imports_only_run_down_the_tree() -> None:
    upward = [(m, t, where) for m, t, where in _upward_imports() if (m, t) not in EXCEPTIONS]
    assert upward == [], "\n".join(where for _, _, where in upward)


def test_every_exception_is_still_needed() -> None:
    present = {(m, t) for m, t, _ in _upward_imports()}
    assert set(EXCEPTIONS) <= present, f"stale: {sorted(set(EXCEPTIONS) - present)}"


@pytest.mark.parametrize("package", ["media", "processors"])
def test_named_arrows(package: str) -> None:
    # The two rules this layering was introduced for, spelled out.
    forbidden = {"media": set(RANK) - {"errors", "settings", "media"}, "processors": {"ingest"}}
    found = {
        (module, target)
        for module, path in _modules()
        if _top(module) == package
        for target, _ in _imported(module, path)
        if _top(target) in forbidden[package]
    }
    assert found == set()


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    # Guard against a checker that passes because it parses nothing.
    module = tmp_path / "decode.py"
    module.write_text("from kenning.ingest.validate import open_image\nimport kenning.api\n")
    found = [t for t, _ in _imported("kenning.processors.image.decode", module)]
    assert found == ["kenning.ingest.validate", "kenning.api"]
    assert sum(1 for _ in _modules()) > 100
