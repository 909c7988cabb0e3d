"""The metrics directory of prometheus_client's multiprocess mode outlives every worker: a
worker that exits runs `moorage serve`'s cleanup too (it unwinds through the frames it
inherited at the fork), and only the process that made the directory may remove it."""

from __future__ import annotations

import os

from gateway import server


def test_a_forked_worker_that_exits_leaves_the_metrics_directory(monkeypatch, tmp_path):
    path = str(tmp_path / "metrics")
    os.mkdir(path)
    # As prepare_metrics records it (not called here: it switches this process's metrics to
    # files for the rest of the test session).
    monkeypatch.setattr(server, "_metrics_owner", os.getpid())
    pid = os.fork()
    if pid == 0:  # a worker, exiting through the master's cleanup
        server.cleanup_metrics(path)
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.path.isdir(path), "a worker's exit removed the directory every worker writes to"
    server.cleanup_metrics(path)
    assert not os.path.exists(path)
