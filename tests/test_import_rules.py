"""The house rules: packages are read bottom-up (prompts -> services -> agent -> devtools
-> bench), nothing imports upward, and what ships (prompts, services, agent) imports no
dev tooling. An installed wheel holds only the production packages and starts without
them."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, project_free_env

LAYERS = ("prompts", "services", "agent", "devtools", "bench", "tests")
PRODUCTION = ("prompts", "services", "agent")


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def upward_imports() -> list[str]:
    problems = []
    for rank, package in enumerate(LAYERS):
        for module in _modules(package):
            for imported in _imported_packages(module):
                if LAYERS.index(imported) > rank:
                    problems.append(f"{module.relative_to(REPO)} imports {imported}")
    return problems


def test_no_package_imports_a_package_above_it() -> None:
    assert upward_imports() == []


def test_the_rule_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("from devtools.processes import REPO\nimport bench.loadtest\nimport httpx\n")
    assert _imported_packages(module) == {"devtools", "bench"}


def test_production_packages_import_no_dev_tooling() -> None:
    for package in PRODUCTION:
        for module in _modules(package):
            assert _imported_packages(module) <= set(PRODUCTION), module


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``pip install --no-deps .`` into an empty venv; the dependencies are read from the
    project's venv through PYTHONPATH (site-packages only: no editable finder, no repo)."""
    root = tmp_path_factory.mktemp("wheel")
    venv.create(root / "venv", with_pip=False)
    wheel_dir = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), "."],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools' scratch folder
    (wheel,) = wheel_dir.glob("*.whl")
    site = next((root / "venv" / "lib").glob("python3*/site-packages"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return root / "venv" / "bin" / "python", wheel


@pytest.mark.slow
def test_the_wheel_ships_only_the_production_packages(installed_wheel: tuple[Path, Path]) -> None:
    _, wheel = installed_wheel
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert tops == set(PRODUCTION)


@pytest.mark.slow
def test_the_installed_worker_exits_2_naming_missing_settings(installed_wheel: tuple[Path, Path]) -> None:
    python, _ = installed_wheel
    deps = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    env = project_free_env() | {"PYTHONPATH": str(deps)}
    done = subprocess.run(
        [str(python), "-m", "agent", "start"],
        check=False,
        cwd=python.parent,  # not the repo: nothing unshipped is importable
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        assert name in done.stderr
    assert "devtools" not in done.stderr and "Traceback" not in done.stderr
