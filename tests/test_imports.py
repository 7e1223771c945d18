"""The package's import graph: no cycles between modules, and the CLI's fast paths load nothing heavy."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vidtriplane"
HEAVY = ("torch", "cv2", "av")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_time_imports(path: Path, root: Path, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that importing ``path`` imports (module level; not inside functions or
    ``if TYPE_CHECKING``). ``from pkg import sub`` depends on the module ``pkg.sub`` when there is one."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                found.update(subs)
                if len(subs) < len(node.names):
                    found.add(base)

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in modules and m != name}


def find_cycles(package_dir: Path) -> list[list[str]]:
    """Every import-time cycle between the modules under ``package_dir`` (depth-first search)."""
    root = package_dir.parent
    files = {module_name(p, root): p for p in package_dir.rglob("*.py")}
    graph = {name: import_time_imports(path, root, set(files)) for name, path in files.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                walk(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    return cycles


def test_no_import_cycles_between_modules():
    cycles = find_cycles(PACKAGE)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_cycles_and_ignores_lazy_imports(tmp_path):
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkgx.b import x\n")
    (pkg / "b.py").write_text("import pkgx.a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkgx import d\n")
    (pkg / "d.py").write_text("def f():\n    from pkgx import c\n")
    assert find_cycles(pkg) == [["pkgx.a", "pkgx.b", "pkgx.a"]]


def _loaded_after(*args: str, cwd: Path) -> tuple[int, list[str], str]:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from vidtriplane.cli import main\n"
        f"r = CliRunner().invoke(main, {list(args)!r})\n"
        f"print(r.exit_code, ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(r.output, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    code_s, _, loaded = proc.stdout.strip().partition(" ")
    return int(code_s), [m for m in loaded.split(",") if m], proc.stderr


@pytest.mark.parametrize("args", [
    ("--help",),
    ("render", "--help"),
    ("preprocess", "--help"),
    ("render", "in.mp4", "-o", "out.mp4", "--dry-run"),
    ("render", "in.mp4", "-o", "out.mp4", "--pipeline", "aligned", "--set", "render.depth_samples=48", "--dry-run"),
    ("preprocess", "in.mp4", "-o", "out", "--dry-run"),
    ("presets",),
])
def test_help_and_dry_run_load_no_heavy_module(tmp_path, args):
    (tmp_path / "in.mp4").write_bytes(b"not decoded by a dry run")
    code, loaded, output = _loaded_after(*args, cwd=tmp_path)
    assert code == 0, output
    assert loaded == [], f"{args} imported {loaded}"
