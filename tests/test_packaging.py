"""pyproject.toml: the dependencies match the requirements.txt lock, and a built wheel works on its own."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    found = [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]
    return {canonicalize_name(requirement.name): requirement for requirement in found}


def test_dependencies_cover_the_lock_and_admit_its_versions():
    lock = _requirements((REPO / "requirements.txt").read_text().splitlines())
    runtime = _requirements(PROJECT["dependencies"])
    test_extra = _requirements(PROJECT["optional-dependencies"]["test"])
    declared = runtime | test_extra
    assert set(lock) == set(declared), "requirements.txt and pyproject.toml name different packages"
    for name, locked in lock.items():
        assert str(declared[name].specifier).startswith(">="), f"{name}: pyproject.toml gives lower bounds, not pins"
        for pin in locked.specifier:  # `torch==2.14.1` must satisfy `torch>=2.14`
            assert declared[name].specifier.contains(pin.version, prereleases=True), f"{name} {pin.version}"
    assert "pytest" not in runtime, "pytest is a test dependency, not a runtime one"


def test_console_scripts_point_at_functions():
    for script, target in PROJECT["scripts"].items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), script


def _source_copy(target: Path) -> Path:
    """What an sdist would hold, copied so that building leaves no build/ or egg-info in the working tree."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, target / name)
    for package in ("violet", "prepare"):
        shutil.copytree(REPO / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    source = _source_copy(root / "src")
    # No isolation and no index: the venv's setuptools builds it, nothing is downloaded.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", "-q", str(source), "-w", str(root / "dist")],
                   check=True, cwd=root, timeout=120)
    (built,) = (root / "dist").glob("violet-*.whl")
    return built


def test_wheel_holds_the_packages_and_the_vocab_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "violet/assets/bert_uncased_vocab.txt" in names
    for module in ("violet/__init__.py", "violet/config/__main__.py", "violet/config/sections.py",
                   "prepare/__main__.py", "prepare/convert/__init__.py"):
        assert module in names, module
    tops = {name.split("/")[0] for name in names}
    assert tops == {"violet", "prepare", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_unpacked_wheel_imports_and_tokenizes_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("import violet, prepare, violet.config, prepare.convert\n"
             "from violet.data.text import load_tokenizer\n"
             "print(violet.__file__); print(prepare.__file__); print(len(load_tokenizer('')))\n")
    # Only the wheel on the path: -P keeps the working directory off sys.path, PYTHONPATH is replaced, and the
    # venv's site-packages (torch, transformers, ...) come from the interpreter itself.
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-P", "-c", probe], cwd=elsewhere, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    violet_file, prepare_file, vocab = result.stdout.split()
    assert Path(violet_file).is_relative_to(site) and Path(prepare_file).is_relative_to(site)
    assert int(vocab) == 30522  # the bundled BERT uncased vocabulary, read from inside the unpacked wheel
