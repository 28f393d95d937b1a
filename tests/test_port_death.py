"""A webhook port whose inbox writer thread dies exits 1 (serve then exits non-zero and
systemd restarts it) instead of staying up deaf. The port runs in its own process, as in
serve, with a bug injected into the writer thread."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import httpx

from flowrun.state.database import make_engine
from flowrun.state.migrations import migrate
from tests.conftest import ROOT
from tests.liveserve import free_port, order
from tests.servekit import config, shopify_headers


def _port_with_a_broken_writer(cfg: Any, wake: Any, control: Any, parent: int) -> None:
    """The child's entry: serve's own run_port, its writer thread failing after its first commit."""
    from flowrun.serve import ingest, port

    def bug(self: Any, batch: Any, stored: Any) -> None:
        raise RuntimeError("a bug after the commit")

    ingest.InboxWriter._write_now = lambda self, rows: None  # type: ignore[method-assign]  # the thread writes
    ingest.InboxWriter._done = bug  # type: ignore[method-assign]
    port.run_port(cfg, port.PortPipes(wake, control, []), None, parent)


def test_the_port_process_exits_1_when_its_inbox_writer_dies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    listen = free_port()
    cfg = config(tmp_path, url, ROOT / "flows", port=listen)
    context = multiprocessing.get_context("spawn")
    wake_in, wake_out = context.Pipe(duplex=False)
    peer_in, peer_out = context.Pipe(duplex=False)
    child = context.Process(target=_port_with_a_broken_writer, args=(cfg, wake_out, peer_in, os.getpid()))
    child.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the child coming up, not a delay of flowrun's
            try:
                if httpx.get(f"http://127.0.0.1:{listen}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        body = order(1)
        first = httpx.post(
            f"http://127.0.0.1:{listen}/webhooks/shopify",
            content=body,
            headers=shopify_headers(body, "orders/create", "d-1"),
            timeout=30,
        )
        assert first.status_code == 200  # committed and answered before the bug
        child.join(timeout=60)
        assert child.exitcode == 1
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        for end in (wake_in, wake_out, peer_in, peer_out):
            end.close()
