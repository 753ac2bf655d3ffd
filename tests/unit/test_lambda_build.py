"""The deployed build ships bytecode: every function and the layer are built by
layers/shared/sam/ (template.yaml: `BuildMethod: makefile`), which compiles what it ships for the
runtime's Python, unchecked-hash so the runtime loads it as it is. A function's build runs here as
sam build runs it (its own rule on a copy of its folder); the layer's, which installs the pinned
wheels, runs with `make build` (it checks the whole output with check_bytecode.py)."""

from __future__ import annotations

import importlib.util
import os
import platform
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from devstack.provision import load_sam_template

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_BUILD = ROOT / "layers" / "shared" / "sam"
# Every value the template's Architecture parameter allows needs its Makefile.
ARCHITECTURES = load_sam_template()["Parameters"]["Architecture"]["AllowedValues"]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_bytecode", LAMBDA_BUILD / "check_bytecode.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _built_resources() -> dict[str, dict]:
    resources = load_sam_template()["Resources"]
    kinds = ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
    return {name: r for name, r in resources.items() if r["Type"] in kinds}


def _make(
    arch: str, target: str, cwd: Path, artifacts: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    """sam build's call: the architecture's Makefile, in the code's folder, ARTIFACTS_DIR set
    (and this interpreter, a Python 3.11, for python3.11)."""
    return subprocess.run(
        ["make", *options, "--makefile", str(LAMBDA_BUILD / arch / "Makefile"), target],
        cwd=cwd,
        env={**os.environ, "ARTIFACTS_DIR": str(artifacts), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_function_and_the_layer_are_built_by_the_makefile_of_their_architecture() -> None:
    # Given every built resource of the template
    for name, resource in _built_resources().items():
        metadata = resource.get("Metadata", {})
        # Then each is built by the Makefile of the architecture it is built for
        assert metadata.get("BuildMethod") == "makefile", name
        assert metadata.get("ContextPath") == {"Fn::Sub": "layers/shared/sam/${Architecture}"}, name


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_has_a_rule_for_every_built_resource(arch: str, tmp_path: Path) -> None:
    for name in _built_resources():
        # When make only says what it would run (-n)
        done = _make(arch, f"build-{name}", tmp_path, tmp_path / "out", "-n")
        # Then there is a rule, and it compiles what it ships
        assert done.returncode == 0, done.stderr
        assert "--invalidation-mode unchecked-hash" in done.stdout, name


def test_a_function_build_ships_unchecked_hash_bytecode_of_its_code(tmp_path: Path) -> None:
    # Given a copy of a function's folder with stale bytecode of the working tree in it
    source = tmp_path / "src"
    shutil.copytree(ROOT / "functions" / "dispatcher", source, ignore=shutil.ignore_patterns("__pycache__"))
    py_compile.compile(str(source / "app.py"))  # timestamp bytecode, as a test run leaves it
    artifacts = tmp_path / "out"
    arch = "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"
    # When sam build's rule runs in it
    done = _make(arch, "build-DispatcherFunction", source, artifacts)
    # Then the function ships its code and requirements file with bytecode the runtime loads as is
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in artifacts.iterdir()) == ["__pycache__", "app.py", "requirements.txt"]
    checked, problems = _checker().problems(artifacts)
    assert (checked, problems) == (1, [])


def test_the_check_names_missing_timestamp_and_stale_bytecode(tmp_path: Path) -> None:
    # Given three modules: no bytecode, timestamp bytecode, bytecode of an older source
    (tmp_path / "missing.py").write_text("A = 1\n")
    (tmp_path / "timestamp.py").write_text("B = 2\n")
    py_compile.compile(str(tmp_path / "timestamp.py"))
    stale = tmp_path / "stale.py"
    stale.write_text("C = 3\n")
    py_compile.compile(str(stale), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    stale.write_text("C = 4\n")
    # When the build's check reads the folder
    checked, problems = _checker().problems(tmp_path)
    # Then it names each
    assert checked == 3
    assert [line.split(":")[0] for line in problems] == ["missing.py", "stale.py", "timestamp.py"]
