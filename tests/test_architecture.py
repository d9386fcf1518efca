"""The import direction, read from the source with `ast` (lazy imports inside functions count too).

Layers, each importing only those below it:
    prepare            user files -> clip store + datasets; may use violet.data / violet.config, owns nothing of the model
    entry points       train.py, evaluate.py, violet.runtime, violet.report, every `__main__` module
    violet.engine      Trainer, Checkpointer, RunDir: knows the task *protocol*, never violet.tasks
    violet.tasks       composes models and objectives; never the engine
    violet.models, violet.objectives
    violet.data, violet.distributed
    violet.config, violet.metrics
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOW = {"violet.config", "violet.metrics"}
ALLOWED: dict[str, set[str]] = {
    "violet.config": set(),
    "violet.metrics": set(),
    "violet.data": {"violet.config"},
    "violet.distributed": {"violet.config"},
    "violet.models": {"violet.config"},
    "violet.objectives": {"violet.config", "violet.distributed"},
    "violet.tasks": LOW | {"violet.data", "violet.distributed", "violet.models", "violet.objectives"},
    "violet.engine": LOW | {"violet.data", "violet.distributed", "violet.models"},
    "prepare": {"violet.config", "violet.data"},
}
ENTRY_POINTS = {"violet.runtime", "violet.report", "violet.html_report", "violet.api", "violet.windows", "violet.index", "violet.search", "violet.answer", "train", "evaluate"}
TOP_LEVEL = ("violet", "prepare", "train", "evaluate", "benchmarks", "tests")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer a module belongs to: the longest prefix in ALLOWED, or None for entry points."""
    if module == "violet":  # the package itself re-exports the public API, so it sits with the entry points
        return None
    if any(module == entry or module.startswith(entry + ".") for entry in ENTRY_POINTS) or ".__main__" in module:
        return None
    for prefix in sorted(ALLOWED, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    raise AssertionError(f"{module} belongs to no layer: add it to ALLOWED or ENTRY_POINTS in {__file__}")


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of project code in the file, top-level or inside functions."""
    module = module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:  # relative import: resolve against the importing package
                base = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                source = ".".join(base + ([node.module] if node.module else []))
            # `from violet import tasks` imports violet.tasks: judge the full name of what is imported
            names = [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in TOP_LEVEL]
    return found


def layer_sources() -> list[Path]:
    files = sorted((REPO / "violet").rglob("*.py")) + sorted((REPO / "prepare").rglob("*.py"))
    return files + [REPO / "train.py", REPO / "evaluate.py"]


def violations() -> list[str]:
    wrong = []
    for path in layer_sources():
        module = module_name(path)
        layer = layer_of(module)
        for line, imported in project_imports(path):
            target = imported.split(".")[0]
            if target in ("train", "evaluate", "benchmarks", "tests"):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {imported} (an entry point or a test)")
                continue
            if layer is None:  # entry points may import any library layer, never prepare
                if target == "prepare" and module.startswith("violet"):
                    wrong.append(f"{path.relative_to(REPO)}:{line} imports {imported}: violet never imports prepare")
                continue
            imported_layer = layer_of(imported)
            if imported_layer == layer:
                continue
            if imported_layer not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(REPO)}:{line} ({layer}) imports {imported} ({imported_layer})")
    return wrong


def test_imports_run_one_way():
    wrong = violations()
    assert not wrong, "imports against the layer direction:\n" + "\n".join(wrong)


@pytest.mark.parametrize("source, target, allowed", [
    ("violet.engine.trainer", "violet.tasks.base", False),
    ("violet.tasks.retrieval", "violet.engine.trainer", False),
    ("violet.data.datasets", "violet.tasks.base", False),
    ("violet.models.video_vit", "violet.data.video", False),
    ("violet.tasks.retrieval", "violet.objectives.vtm", True),
    ("prepare.extract", "violet.data.clip_store", True),
    ("prepare.extract", "violet.models.presets", False),
])
def test_the_rule_itself(source, target, allowed):
    """The checker must flag the arrows the design forbids (a checker that passes everything proves nothing)."""
    assert (layer_of(target) in ALLOWED[layer_of(source)]) == allowed


def test_violet_never_imports_prepare_even_lazily(tmp_path, monkeypatch):
    planted = REPO / "violet" / "data" / "_planted_for_test.py"
    planted.write_text("def f():\n    from prepare.layout import KINDS\n    return KINDS\n")
    try:
        assert any("_planted_for_test.py:2" in line for line in violations())
    finally:
        planted.unlink()


def test_functions_stay_short():
    """No function in violet/ or the entry points over 70 lines: long ones hide several jobs."""
    long = []
    for path in sorted((REPO / "violet").rglob("*.py")) + [REPO / "train.py", REPO / "evaluate.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 70:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "\n".join(long)
