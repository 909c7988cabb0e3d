"""The metrics directory of prometheus_client's multiprocess mode outlives every worker: a
worker that exits runs `moorage serve`'s cleanup too (it unwinds through the frames it
inherited at the fork), and only the process that made the directory may remove it."""

from __future__ import annotations

import os

import pytest

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


@pytest.mark.parametrize("when", ["before the import", "by prepare_metrics"])
def test_a_forked_worker_counts_in_a_file_of_its_own(tmp_path, when):
    """gateway/metrics.py keeps the PID instead of asking os.getpid() at every increment: a
    worker forked after the master counted still writes its own file, and the master's sum
    holds both; whether the directory was named before gateway.metrics was imported or by
    `moorage serve` (prepare_metrics) after. In a fresh interpreter each: the mode is a
    process's for its life."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import os, sys, types
        from gateway import metrics, server
        if sys.argv[1] == "by prepare_metrics":
            settings = types.SimpleNamespace(gateway=types.SimpleNamespace(metrics_bind="127.0.0.1:1"))
            server.prepare_metrics(settings)
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess
        metrics.REQUESTS.labels("ContainerList", "200").inc()
        child = os.fork()
        if child == 0:
            metrics.REQUESTS.labels("ContainerList", "200").inc()
            metrics.REQUESTS.labels("ContainerInspect", "200").inc()
            os._exit(0)
        os.waitpid(child, 0)
        made = os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        print(sorted(n for n in made if n.startswith("counter_")))
        print(f"counter_{os.getpid()}.db", f"counter_{child}.db")
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("moorage_requests_total"):
                print(line)
        from prometheus_client import values
        print("kept PID:", getattr(values.ValueClass, "_moorage_files", False))
        if sys.argv[1] == "by prepare_metrics":
            server.cleanup_metrics(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if when == "before the import":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", script, when], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    files, own, *totals, kept = out.stdout.splitlines()
    assert kept == "kept PID: True", "the values ask os.getpid() at every increment"
    assert files == str(sorted(own.split())), "each process writes a file named by its own PID"
    assert sorted(totals) == [
        'moorage_requests_total{operation="ContainerInspect",status="200"} 1.0',
        'moorage_requests_total{operation="ContainerList",status="200"} 2.0',
    ]
