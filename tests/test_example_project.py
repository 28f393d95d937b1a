"""The shipped example project passes its own `serve --check` (the systemd unit's pre-start),
with the demo secrets `make serve` exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT
from tests.liveserve import FLOWRUN, free_port


def demo_environment() -> dict[str, str]:
    exported = re.findall(r"^export (\w+) \?= (.+)$", (ROOT / "Makefile").read_text(), flags=re.M)
    return {name: value.strip() for name, value in exported}


def test_the_example_project_passes_its_own_check(tmp_path: Path) -> None:
    text = (ROOT / "examples/flowrun.yaml").read_text()
    # its database lies beside the repository, where the check would create it: one in tmp instead
    text, replaced = re.subn(r"^database: .*$", f"database: sqlite:///{tmp_path / 'state.db'}", text, flags=re.M)
    assert replaced == 1
    text = text.replace("flows: ../flows", f"flows: {ROOT / 'flows'}")
    (tmp_path / "flowrun.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_TOKEN"))}
    result = subprocess.run(
        [FLOWRUN, "serve", "--check", "-c", str(tmp_path / "flowrun.yaml")],
        env={**env, **demo_environment()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error:" not in result.stdout


def test_the_systemd_unit_checks_before_it_starts_and_has_room_for_connections() -> None:
    unit = (ROOT / "examples/systemd/flowrun.service").read_text()
    assert re.search(r"^ExecStartPre=\S+ serve --config \S+ --check$", unit, flags=re.M)
    limit = re.search(r"^LimitNOFILE=(\d+)$", unit, flags=re.M)
    assert limit is not None and int(limit[1]) > 1000 + 64  # limits.max_connections plus files and pipes


def test_the_readme_sample_webhook_reaches_the_example_project(tmp_path: Path) -> None:
    """examples/send-webhook.sh signs as Shopify does, for the example's shop."""
    if not (shutil.which("curl") and shutil.which("openssl")):
        raise AssertionError("the README's set-up needs curl and openssl; install them")
    port = free_port()
    text = (ROOT / "examples/flowrun.yaml").read_text()
    text = re.sub(r"^database: .*$", f"database: sqlite:///{tmp_path / 'state.db'}", text, flags=re.M)
    text = re.sub(r"^listen: .*$", f"listen: {{host: 127.0.0.1, port: {port}}}", text, flags=re.M)
    (tmp_path / "flowrun.yaml").write_text(text.replace("flows: ../flows", f"flows: {ROOT / 'flows'}"))
    env = {**{k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_TOKEN"))}, **demo_environment()}
    serve = subprocess.Popen(
        [FLOWRUN, "serve", "-c", str(tmp_path / "flowrun.yaml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if serve.poll() is not None:
                raise AssertionError(f"serve exited with {serve.returncode}")
            time.sleep(0.05)  # waiting for the process to come up, not for a delay of flowrun's
        sent = subprocess.run(
            [ROOT / "examples/send-webhook.sh", ROOT / "examples/events/shopify/orders/create.json", "orders/create"],
            env={**env, "FLOWRUN_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0 and '"status": "accepted"' in sent.stdout, sent.stdout + sent.stderr
    finally:
        serve.terminate()
        assert serve.wait(timeout=30) == 0
