"""The folder tree is the architecture: imports point one way, downwards, and no two modules import each other.
Every import counts, function-local ones included (an AST walk over every module of every package).

    cli ──► eval ──► export ──► calib ──► runtime ──► adafv.errors, .positions, .answer (torch-free leaves)
             │          │         └─────────────► adafv (the method)
             └──► serve, ros ┴──► runtime
    adafv (the method) imports only itself and the data packages (assets, checkpoints).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"adafv": "adafv", "export": "adafv.export", "runtime": "adafv.runtime", "calib": "adafv.calib",
           "eval": "adafv.eval", "serve": "adafv.serve", "ros": "adafv.ros", "cli": "adafv.cli",
           "assets": "adafv.assets", "checkpoints": "adafv.checkpoints"}  # fmt: skip
# what each package may import of ours (besides itself); "adafv.errors" etc. are single modules of the method
ALLOWED = {
    "adafv": {"adafv.assets", "adafv.checkpoints"},
    "adafv.runtime": {"adafv.errors", "adafv.positions", "adafv.answer"},
    "adafv.serve": {"adafv.runtime", "adafv.errors", "adafv"},
    "adafv.ros": {"adafv.runtime", "adafv.errors", "adafv.assets"},
    "adafv.calib": {"adafv.runtime", "adafv.errors", "adafv.datafile"},
    "adafv.export": {"adafv", "adafv.runtime", "adafv.calib", "adafv.assets", "adafv.checkpoints"},
    "adafv.eval": {"adafv", "adafv.runtime", "adafv.calib", "adafv.export", "adafv.assets", "adafv.checkpoints"},
    "adafv.cli": {"adafv", "adafv.runtime", "adafv.calib", "adafv.export", "adafv.eval", "adafv.serve",
                  "adafv.ros", "adafv.assets"},
    "adafv.assets": set(),
    "adafv.checkpoints": set(),
}
PACKAGES = sorted(ALLOWED, key=len, reverse=True)  # the longest prefix first: adafv.runtime before adafv


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """Every module of ours `name` imports, wherever the import statement is."""
    ours = set(modules())
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = {f"{module}.{a.name}" for a in node.names} & ours  # `from . import methods`
            found |= submodules
            if len(submodules) < len(node.names):  # some name is an attribute of `module` itself
                found.add(module)
    return {m for m in found if m in ours and m != name}


def package_of(module: str) -> str:
    for package in PACKAGES:
        if package == "adafv":
            if module == "adafv" or module.split(".")[1] not in {p.split(".")[1] for p in PACKAGES if p != "adafv"}:
                return "adafv"
        elif module == package or module.startswith(package + "."):
            return package
    raise AssertionError(module)


GRAPH = {name: imports(name, path) for name, path in modules().items()}


def test_packages_import_only_downwards():
    offenders = []
    for name, targets in GRAPH.items():
        package = package_of(name)
        for target in targets:
            other = package_of(target)
            if other == package:
                continue
            allowed = ALLOWED[package]
            if other in allowed or target in allowed or (other == "adafv" and "adafv" in allowed):
                continue
            offenders.append(f"{name} -> {target}")
    assert offenders == [], "imports pointing up or sideways:\n  " + "\n  ".join(sorted(offenders))


def test_no_two_modules_import_each_other():
    """No cycle in the module graph (a circle hidden by function-local imports is still a circle)."""
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(GRAPH.get(node, ())):
            if target not in GRAPH:
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import cycles:\n  " + "\n  ".join(cycles)


@pytest.mark.parametrize("name", ["adafv.runtime.pipeline", "adafv.calib.int8", "adafv.serve.cluster"])
def test_the_walk_sees_function_local_imports(name):
    """The rule is only as good as the walk: it must see imports inside functions."""
    path = modules()[name]
    local = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("adafv")):
                    local.add(inner)
    assert local, f"{name} has no function-local import of ours: pick another module for this check"
    assert GRAPH[name], name
