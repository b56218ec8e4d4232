"""The code's layering rules, checked on the source: short functions, the task layer below inference and
training, the corpus generator out of inference, no private names across modules, the CLI imported by nothing."""

import ast
from pathlib import Path

import pytest

import unisono

ROOT = Path(unisono.__file__).parent
SOURCES = sorted(ROOT.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every import in ``path``, relative imports resolved."""
    out = []
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base) if node.level else node.module
            out.append((module, [a.name for a in node.names], node.lineno))
    return out


def test_no_function_is_over_100_lines():
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 100:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long


@pytest.mark.parametrize("module, allowed", [
    ("tasks.py", {"unisono.errors", "unisono.fileio", "unisono.vocab", "unisono.audio"}),
    ("vocab.py", {"unisono.errors", "unisono.fileio"}),
])
def test_the_task_layer_imports_only_the_floors_below_it(module, allowed):
    used = {m for m, _, _ in _imports(ROOT / module) if m.startswith("unisono")}
    assert used <= allowed, used - allowed


def test_inference_does_not_import_the_corpus_generator():
    paths = [*(ROOT / "inference").glob("*.py"), ROOT / "reasoning.py"]
    bad = [(p.name, m) for p in paths for m, _, _ in _imports(p) if m.startswith("unisono.data.synth")]
    assert not bad, bad


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for path in SOURCES:
        for module, names, line in _imports(path):
            if not module.startswith("unisono"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in module.split(".") if p.startswith("_")]
            if private and module != _module_name(path):
                bad.append(f"{path.relative_to(ROOT)}:{line} {module} {private}")
    assert not bad, bad


def test_nothing_outside_the_cli_imports_it():
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in SOURCES if p.parent.name != "cli" and p.name != "__main__.py"
           for m, _, line in _imports(p) if m == "unisono.cli" or m.startswith("unisono.cli.")]
    assert not bad, bad
