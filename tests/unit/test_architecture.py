"""The package's house rules, read from its source with ``ast``: imports point down the flow,
no module is over 500 lines, and every module opens with a docstring."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "batchfuse"
MAX_LINES = 500

#: Modules still over MAX_LINES, with the line count they may not grow past (empty when done).
TOO_BIG_FOR_NOW: dict[str, int] = {}

#: Stage of a module -> stages it must never import.  A module's stage is its subpackage
#: (``plan``, ``run`` ...), its own name for ``records``/``errors``/``cli``, or ``shared`` for the
#: other top-level leaf modules (input files, images, templates, the model catalog, fault points).
FORBIDDEN: dict[str, set[str]] = {
    "records": {"shared", "plan", "providers", "outputs", "store", "run", "review", "mock", "cli", "batch"},
    "errors": {"shared", "plan", "providers", "outputs", "store", "run", "review", "mock", "cli", "batch"},
    "shared": {"plan", "providers", "outputs", "store", "run", "review", "mock", "cli", "batch"},
    "plan": {"store", "run", "review", "cli", "batch"},
    "providers": {"plan", "outputs", "store", "run", "review", "mock", "cli", "batch"},
    "outputs": {"plan", "providers", "store", "run", "review", "mock", "cli", "batch"},
    "store": {"plan", "providers", "outputs", "run", "review", "mock", "cli", "batch"},
    "run": {"review", "cli"},
    "review": {"run", "cli", "batch"},
    "mock": {"plan", "providers", "outputs", "store", "run", "review", "cli", "batch"},
    "cli": set(),
    #: Batch mode sits beside run/: it uses the stages below and run's recorder and retry rules.
    "batch": {"review", "mock", "cli"},
}
SUBPACKAGES = {"plan", "providers", "outputs", "store", "run", "review", "mock", "batch"}
#: The only modules that may import the batch layer: the composition root (and the command line).
BATCH_IMPORTERS = {"batchfuse.run.job", "batchfuse.cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2:
        return "package"
    if parts[1] in SUBPACKAGES:
        return parts[1]
    if parts[1] in ("records", "errors", "cli") and len(parts) == 2:
        return parts[1]
    return "shared"


def imports(path: Path, name: str | None = None) -> set[str]:
    """Every batchfuse module ``path`` (the module ``name``) imports, at any depth: lazy imports
    count too."""
    found: set[str] = set()
    package = (name or module_name(path)).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "batchfuse"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "batchfuse":
                continue
            for alias in node.names:
                # "from batchfuse.run import logs" imports the module batchfuse.run.logs
                sub = f"{base}.{alias.name}"
                found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists()
                          or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else base)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def violations(modules: list[tuple[str, Path]]) -> list[str]:
    bad = []
    for me, path in modules:
        for target in sorted(imports(path, me)):
            if target == "batchfuse.cli" and me != "batchfuse.cli":
                bad.append(f"{me} imports batchfuse.cli: nothing imports the command line")
            elif stage(target) in FORBIDDEN.get(stage(me), set()):
                bad.append(f"{me} ({stage(me)}) imports {target} ({stage(target)})")
    return bad


def test_imports_point_down_the_flow() -> None:
    assert violations([(module_name(p), p) for p in MODULES]) == []


def test_only_the_composition_root_imports_the_batch_layer() -> None:
    bad = [
        f"{module_name(p)} imports {target}"
        for p in MODULES
        if stage(module_name(p)) != "batch" and module_name(p) not in BATCH_IMPORTERS
        for target in sorted(imports(p))
        if stage(target) == "batch"
    ]
    assert bad == []


def test_a_planted_upward_import_is_caught(tmp_path: Path) -> None:
    """The check above can fail: a plan module importing the store is reported."""
    plant = tmp_path / "planted.py"
    plant.write_text('"""Planted."""\nfrom batchfuse.store.queries import Store\nfrom ..cli import main\n', encoding="utf-8")
    assert violations([("batchfuse.plan.planted", plant)]) == [
        "batchfuse.plan.planted imports batchfuse.cli: nothing imports the command line",
        "batchfuse.plan.planted (plan) imports batchfuse.store.queries (store)",
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_module_is_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    limit = TOO_BIG_FOR_NOW.get(module_name(path), MAX_LINES)
    assert lines <= limit, f"{module_name(path)} has {lines} lines (at most {limit}): split it by job"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_module_opens_with_a_docstring(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc and doc.strip(), f"{module_name(path)} does not open with a docstring saying what it holds"


#: Foreign libraries whose errors are translated in one place, and the stages allowed to use them
#: (the mock is its own aiohttp server; run/wire.py only marks when a request leaves).
LIBRARIES = {"sqlalchemy": {"store"}, "aiohttp": {"providers", "mock"}}
LIBRARY_EXCEPTIONS = {("aiohttp", "batchfuse.run.wire")}
#: The review page's server (``batchfuse review``) is its own aiohttp server, like the mock.
LIBRARY_EXCEPTIONS |= {("aiohttp", f"batchfuse.review.{m}") for m in ("server", "api", "events")}


def test_each_library_is_used_where_its_errors_are_translated() -> None:
    bad = []
    for path in MODULES:
        me = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            )
            for name in names:
                lib = name.split(".")[0]
                if lib in LIBRARIES and stage(me) not in LIBRARIES[lib] and (lib, me) not in LIBRARY_EXCEPTIONS:
                    bad.append(f"{me} imports {lib}")
    assert bad == []


def test_every_subpackage_is_in_the_distribution() -> None:
    """``pip install .`` builds a wheel from pyproject's package list: a subpackage missing there
    (the batch layer was, once) imports in a checkout and fails in every real install."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert on_disk - listed == set(), f"add to [tool.setuptools] packages in pyproject.toml: {sorted(on_disk - listed)}"
