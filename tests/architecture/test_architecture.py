"""The import structure the code must keep (issue 12), checked statically with :mod:`ast`.

Rules, over every package listed in setup.cfg's ``[options.packages.find] include`` (so a new
package is checked as soon as it is packaged):

* the front ends do not know each other: ``alpaca_server`` imports nothing of ``indi_shim`` and
  ``indi_shim`` nothing of ``alpaca_server``;
* ``driver`` (the device core, simulator included) is the bottom layer: it imports no other package
  of this project (no front end, no composition root, nothing added later);
* the simulator knows no driver: ``driver.simulator`` imports nothing of ``driver`` outside
  ``driver.simulator`` (third-party modules such as ``zwoasi`` are fine);
* no import cycles between the project's modules, within a package or across packages.

Which imports count: module-level ones **and** those inside functions, methods and classes (a
deferred import still couples the modules; it only hides the cycle until run time). The forbidden-
import rules and :func:`test_no_type_only_import_cycles` also count imports under
``if TYPE_CHECKING:``; :func:`test_no_import_cycles` leaves those out (they never run), so a
failure there is a cycle Python really executes, and a failure in the type-only test is a cycle in
the design that the types still show. The implicit import of a parent package (``import a.b``
runs ``a/__init__.py``) is not an edge: every package's ``__init__`` re-exporting its modules would
otherwise be a cycle.

On failure the test prints each offending import with file and line, and each cycle as a chain
``a (a.py:3) -> b (b.py:7) -> a``. The checker itself is tested on a synthetic tree
(:func:`test_checker_reports_cycles_and_forbidden_imports`) so these tests can fail.
"""

from __future__ import annotations

import ast
import configparser
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.servers import REPO

# ----------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class Import:
    """One import statement's effect: ``source`` imports ``target`` at ``path:line``."""

    source: str  #: dotted name of the importing module
    target: str  #: dotted name of the imported module (a project module, or an external name)
    path: Path
    line: int
    type_only: bool  #: under ``if TYPE_CHECKING:``
    deferred: bool  #: inside a function, method or class body

    def where(self, root: Path) -> str:
        """``file:line`` relative to ``root`` when possible."""
        try:
            rel = self.path.relative_to(root)
        except ValueError:
            rel = self.path
        return f"{rel}:{self.line}"


@dataclass(frozen=True)
class Rule:
    """Modules in ``source`` (a package or module name) must not import anything in ``forbidden``,
    except what is in ``allowed``."""

    source: str
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    why: str = ""


def within(name: str, prefix: str) -> bool:
    """Whether dotted ``name`` is ``prefix`` or inside it."""
    return name == prefix or name.startswith(prefix + ".")


def packages_from_setup_cfg(setup_cfg: Path) -> list[str]:
    """Top-level package names in ``[options.packages.find] include`` (``driver.*`` -> ``driver``)."""
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    raw = cfg.get("options.packages.find", "include", fallback="")
    tops = []
    for entry in raw.split():
        top = entry.split(".")[0]
        if top and top not in tops:
            tops.append(top)
    return tops


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under each top-level package in ``root``."""
    modules: dict[str, Path] = {}
    for package in packages:
        base = root / package
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportVisitor(ast.NodeVisitor):
    """Collects (module, names, level, line, type_only, deferred) for every import in a tree."""

    def __init__(self) -> None:
        self.found: list[tuple[str, tuple[str, ...], int, int, bool, bool]] = []
        self._type_only = 0
        self._depth = 0

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if _is_type_checking(node.test):
            self._type_only += 1
            for child in node.body:
                self.visit(child)
            self._type_only -= 1
        else:
            for child in node.body:
                self.visit(child)
        for child in node.orelse:
            self.visit(child)

    def _nested(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _nested  # noqa: N815

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, (), 0, node.lineno, self._type_only > 0, self._depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = tuple(a.name for a in node.names)
        self.found.append((node.module or "", names, node.level, node.lineno, self._type_only > 0, self._depth > 0))


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> list[Import]:
    """Every import in module ``name`` (file ``path``), resolved to dotted targets.

    ``from X import a`` targets ``X.a`` when that is a module of the project, else ``X``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    visitor = _ImportVisitor()
    visitor.visit(tree)
    is_package = path.name == "__init__.py"
    out: list[Import] = []
    for module, names, level, line, type_only, deferred in visitor.found:
        if level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (level - 1)] if level > 1 else base
            module = ".".join([*base, module] if module else base)
        targets = []
        for n in names:
            sub = f"{module}.{n}" if module else n
            targets.append(sub if sub in modules else module)
        if not names:
            targets.append(module)
        for target in dict.fromkeys(targets):
            if target and target != name:
                out.append(Import(name, target, path, line, type_only, deferred))
    return out


def all_imports(root: Path, packages: Iterable[str]) -> tuple[dict[str, Path], list[Import]]:
    """The project's modules and every import they make."""
    modules = find_modules(root, packages)
    edges = [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]
    return modules, edges


def forbidden_imports(edges: Iterable[Import], rules: Sequence[Rule], root: Path) -> list[str]:
    """One line per import that breaks a rule."""
    problems = []
    for imp in edges:
        for rule in rules:
            if not within(imp.source, rule.source):
                continue
            if any(within(imp.target, f) for f in rule.forbidden) and not any(
                    within(imp.target, a) for a in rule.allowed):
                kind = " (under TYPE_CHECKING)" if imp.type_only else " (inside a function)" if imp.deferred else ""
                problems.append(f"{imp.source} ({imp.where(root)}) -> {imp.target}{kind}: {rule.why}")
    return problems


def _strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on long chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(sorted(component))
    return result


def import_cycles(modules: Mapping[str, Path], edges: Iterable[Import], root: Path,
                  include_type_only: bool) -> list[str]:
    """One line per group of modules that import each other, with one concrete cycle as a chain."""
    first: dict[tuple[str, str], Import] = {}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in edges:
        if imp.target in modules and (include_type_only or not imp.type_only):
            graph[imp.source].add(imp.target)
            first.setdefault((imp.source, imp.target), imp)
    lines = []
    for component in _strongly_connected(graph):
        if len(component) < 2:
            continue
        members = set(component)
        start = component[0]
        # Shortest way back to start inside the component: a readable chain.
        paths = {start: [start]}
        queue = [start]
        chain: list[str] = []
        while queue and not chain:
            node = queue.pop(0)
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    chain = [*paths[node], start]
                    break
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    queue.append(nxt)
        hops = []
        for a, b in zip(chain, chain[1:]):
            imp = first[(a, b)]
            kind = ", TYPE_CHECKING" if imp.type_only else ", in a function" if imp.deferred else ""
            hops.append(f"{a} ({imp.where(root)}{kind})")
        lines.append(f"cycle among {', '.join(component)}: {' -> '.join(hops)} -> {start}")
    return lines


# ----------------------------------------------------------------------------- the project's rules


PACKAGES = packages_from_setup_cfg(REPO / "setup.cfg")


def project_rules(packages: Sequence[str]) -> list[Rule]:
    """The layering rules of this project (see the module docstring)."""
    return [
        Rule("alpaca_server", ("indi_shim",), why="a front end must not import the other front end"),
        Rule("indi_shim", ("alpaca_server",), why="a front end must not import the other front end"),
        Rule("driver", tuple(p for p in packages if p != "driver"),
             why="the device core imports no front end, no composition root, no other package of ours"),
        Rule("driver.simulator", ("driver",), allowed=("driver.simulator",),
             why="the simulator stands in for the SDK and knows no driver"),
    ]


class Project(tuple):
    """(modules, imports) of the project, with a short repr (pytest prints fixture values on failure)."""

    def __repr__(self) -> str:
        return f"<{len(self[0])} modules, {len(self[1])} imports>"


@pytest.fixture(scope="module")
def project() -> Project:
    """Modules and imports of the packages setup.cfg lists."""
    return Project(all_imports(REPO, PACKAGES))


def test_setup_cfg_lists_the_known_packages() -> None:
    """The discovery the rules rely on finds the packages named in them."""
    for name in ("driver", "alpaca_server", "indi_shim"):
        assert name in PACKAGES, f"{name} missing from setup.cfg [options.packages.find] include: {PACKAGES}"


def test_every_python_package_is_listed_in_setup_cfg() -> None:
    """A package left out of setup.cfg would be neither installed nor checked here."""
    ignored = {"tests", "bench", "scripts", "docs", "packaging", "build", "dist"}
    on_disk = sorted(p.name for p in REPO.iterdir()
                     if p.is_dir() and p.name not in ignored and not p.name.startswith(".")
                     and "." not in p.name and any(p.glob("*.py")))
    missing = [name for name in on_disk if name not in PACKAGES]
    assert not missing, (f"Python packages not in setup.cfg [options.packages.find] include (so not installed "
                         f"and not checked by this test): {missing}")


def test_forbidden_imports(project: tuple[dict[str, Path], list[Import]]) -> None:
    """Front ends do not import each other; driver imports nothing of ours; the simulator no driver."""
    _, edges = project
    problems = forbidden_imports(edges, project_rules(PACKAGES), REPO)
    assert not problems, "forbidden imports:\n  " + "\n  ".join(problems)


def test_no_import_cycles(project: tuple[dict[str, Path], list[Import]]) -> None:
    """No cycle among the imports that run (module level and inside functions)."""
    modules, edges = project
    cycles = import_cycles(modules, edges, REPO, include_type_only=False)
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_no_type_only_import_cycles(project: tuple[dict[str, Path], list[Import]]) -> None:
    """No cycle even counting ``if TYPE_CHECKING:`` imports (issue 12 counts those too)."""
    modules, edges = project
    cycles = import_cycles(modules, edges, REPO, include_type_only=True)
    assert not cycles, "import cycles (counting TYPE_CHECKING imports):\n  " + "\n  ".join(cycles)


# ----------------------------------------------------------------------------- the checker's own test


def _write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_reports_cycles_and_forbidden_imports(tmp_path: Path) -> None:
    """A tiny tree with a runtime cycle, a deferred cycle, a type-only cycle and forbidden imports:
    every one is reported, with its chain, and the clean parts are not."""
    _write(tmp_path, {
        "setup.cfg": "[options.packages.find]\ninclude =\n    core\n    core.*\n    fa\n    fa.*\n    fb\n",
        "core/__init__.py": "from .a import A\n",
        "core/a.py": "from . import b\nA = 1\n",
        "core/b.py": "def f():\n    from core.a import A\n    return A\n",  # deferred: a -> b -> a
        "core/sim/__init__.py": "",
        "core/sim/x.py": "import zwoasi\nfrom ..a import A\n",  # the simulator importing the core
        "core/sim/y.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .z import Z\n",
        "core/sim/z.py": "from .y import *\nZ = 0\n",  # type-only cycle y -> z -> y
        "fa/__init__.py": "",
        "fa/m.py": "import fb.n\nimport core\n",  # fa imports the other front end (and the core: fine)
        "fb/__init__.py": "",
        "fb/n.py": "import os\n",
        "core/clean.py": "import json\nfrom .sim import x\n",  # core -> sim is allowed
    })
    packages = packages_from_setup_cfg(tmp_path / "setup.cfg")
    assert packages == ["core", "fa", "fb"]
    modules, edges = all_imports(tmp_path, packages)
    assert "core.sim.x" in modules and "core" in modules

    runtime = import_cycles(modules, edges, tmp_path, include_type_only=False)
    assert len(runtime) == 1, runtime
    assert "core.a (core/a.py:1) -> core.b (core/b.py:2, in a function) -> core.a" in runtime[0]

    typed = import_cycles(modules, edges, tmp_path, include_type_only=True)
    assert len(typed) == 2, typed
    assert any("core.sim.y (core/sim/y.py:3, TYPE_CHECKING) -> core.sim.z (core/sim/z.py:1) -> core.sim.y" in c
               for c in typed), typed

    rules = [Rule("fa", ("fb",), why="front ends apart"), Rule("fb", ("fa",), why="front ends apart"),
             Rule("core", ("fa", "fb"), why="core is the bottom"),
             Rule("core.sim", ("core",), allowed=("core.sim",), why="simulator knows no core")]
    problems = forbidden_imports(edges, rules, tmp_path)
    assert any(p.startswith("fa.m (fa/m.py:1) -> fb.n") for p in problems), problems
    assert any(p.startswith("core.sim.x (core/sim/x.py:2) -> core.a") for p in problems), problems
    assert len(problems) == 2, problems  # zwoasi, fa -> core, core -> core.sim and json are all fine
