"""The shape of the house (issue 31), checked so it stays easy to walk as it grows: few modules at
the top, no import circles, short functions, imports at the top of modules, commands that start
without the engine, and every package installed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.conftest import REPO

PACKAGE = REPO / "maml_cli"
OPTIONAL = ("wandb", "mlflow", "matplotlib", "submitit", "optuna", "tensorboardX", "tensorflow_datasets", "psutil")
HEAVY = ("jax", "flax", "orbax", "optax", "scipy", "PIL", "tensorflow", "tqdm", "matplotlib")


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def functions(tree: ast.Module):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def imported(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module or ""]


def test_at_most_eight_modules_at_the_top_level():
    top = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 8, sorted(top)


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{name}.{f.name} ({f.end_lineno - f.lineno + 1} lines)"
        for name, tree in modules().items()
        for f in functions(tree)
        if f.end_lineno - f.lineno + 1 > 80
    ]
    assert not long, long


def test_imports_sit_at_the_top_of_modules():
    """At most 25 imports of required modules inside functions: those that keep JAX out of the
    commands' start-up, and the lazy names of ``maml_cli/__init__``. Optional dependencies are
    imported where they are used."""
    inside = [
        f"{name}:{node.lineno} {target}"
        for name, tree in modules().items()
        for f in functions(tree)
        for node in ast.walk(f)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for target in imported(node)
        if target.split(".")[0] not in OPTIONAL
    ]
    assert len(inside) <= 25, "\n".join(inside)


def test_no_module_imports_another_that_imports_it_back():
    trees = modules()
    graph = {name: set() for name in trees}
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("maml_cli"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    graph[name].add(full if full in trees else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in trees)
    packages = {n for n, t in trees.items() if (PACKAGE / Path(*n.split(".")[1:]) / "__init__.py").is_file()}
    graph = {n: {m for m in targets if m in trees and m not in packages} for n, targets in graph.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            for nxt in graph.get(current, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    circles = sorted(n for n in graph if n not in packages and reaches(n, n))
    assert not circles, circles


@pytest.mark.parametrize("command", ["train", "evaluate", "adapt", "report", "entry"])
def test_a_command_starts_without_the_engine(command):
    """--help and the checks of a command line answer in under a second: JAX, Flax, Orbax and SciPy
    are imported after them, in one place per command."""
    code = (
        f"import sys, maml_cli.commands.{command}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_package_is_installed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    assert packages - {"maml_cli.configs"} <= listed, sorted(packages - listed)


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((REPO / folder).glob("*.py"))]


def test_no_test_changes_sys_path_and_nothing_imports_a_private_name():
    """Tests import the scripts as ``scripts.NAME``; what a script or test needs of another module
    is that module's public name."""
    for path in python_files("tests", "scripts"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if path.parent.name == "tests" and isinstance(node, ast.Attribute) and node.attr == "path":
                assert not (isinstance(node.value, ast.Name) and node.value.id == "sys"), f"{path.name}: sys.path"
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{path.name}:{node.lineno} imports {private} from {node.module}"
