"""The distribution a shop installs: flowrun-store, whose command and import are `flowrun`.
A wheel built from this tree installs into a clean venv and runs; `flowrun init`'s CI
snippet installs flowrun-store pinned, or the shop's own copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from flowrun import __version__
from tests.conftest import ROOT


def test_the_distribution_is_flowrun_store_with_the_flowrun_command() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "flowrun-store"  # `flowrun` on PyPI is an unrelated 2021 project
    assert project["version"] == __version__
    assert project["scripts"] == {"flowrun": "flowrun.cli:run"}
    assert any(d.startswith("prometheus-client") for d in project["dependencies"])


def test_a_built_wheel_installs_into_a_clean_venv_and_runs_flowrun_help(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "flowrun", source / "flowrun", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            tmp_path / "dist",
            source,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    assert wheel.name.startswith(f"flowrun_store-{__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "flowrun/cli/__init__.py" in names and not any(n.startswith("tests/") for n in names)
    assert "Name: flowrun-store" in metadata and "Requires-Dist: prometheus-client" in metadata

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # the dependencies are the ones this test's environment already has (no network needed)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(site) / "deps-of-the-test.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    helped = subprocess.run([venv / "bin" / "flowrun", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "Store automation flows" in helped.stdout and "serve" in helped.stdout
    where = subprocess.run(
        [python, "-c", "import flowrun; print(flowrun.__file__)"], capture_output=True, text=True, env=env, cwd=tmp_path
    ).stdout.strip()
    assert where.startswith(str(venv)), where  # the wheel's flowrun, not this checkout's


def test_init_writes_a_ci_snippet_that_installs_flowrun_store_pinned_or_the_shops_copy(tmp_path: Path) -> None:
    from flowrun.scaffold import scaffold

    scaffold(tmp_path / "pinned")
    snippet = (tmp_path / "pinned/.github/workflows/flows.yml").read_text()
    assert f'pip install "flowrun-store=={__version__}"' in snippet
    assert "pip install flowrun\n" not in snippet
    scaffold(tmp_path / "own", "git+https://github.com/knit-and-co/flowrun@v0.1.0")
    own = (tmp_path / "own/.github/workflows/flows.yml").read_text()
    assert 'pip install "flowrun-store @ git+https://github.com/knit-and-co/flowrun@v0.1.0"' in own
