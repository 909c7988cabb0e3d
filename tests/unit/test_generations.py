"""The generations the read cache trusts (gateway/generations.py): one table in a real mapped
file, shared by separate processes (gunicorn's workers, a relay) that map the same file."""

import os
import subprocess
import sys
import time

import pytest

from gateway import generations
from gateway.config import Settings
from gateway.services import readcache

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture
def table(tmp_path):
    path = str(tmp_path / "moorage.db") + generations.SUFFIX
    generations.close()
    generations.open_table(path)
    yield path
    generations.close()


def other_process(table: str, code: str) -> subprocess.Popen:
    """Another Python process that maps the table and runs ``code`` (another worker). A new
    interpreter, not a fork: the unit tests run under gevent's patched fork."""
    script = f"from gateway import generations\ngenerations.open_table({table!r})\n{code}\nprint('ok')\n"
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


def in_process(table: str, code: str) -> None:
    proc = other_process(table, code)
    out, err = proc.communicate(timeout=60)
    assert out.decode().strip().endswith("ok"), err.decode()


def test_no_follower_no_generation(table):
    # no event follower has said it is connected: nothing of the instance may be cached
    assert generations.current("inst-a") is None
    generations.bump("inst-a")
    assert generations.current("inst-a") is None


def test_a_write_in_another_worker_changes_the_generation(table):
    generations.follower_connected("inst-a")
    before = generations.current("inst-a")
    assert before is not None
    assert generations.current("inst-a") == before  # stable while nothing happens
    in_process(table, 'generations.bump("inst-a")')
    after = generations.current("inst-a")
    assert after is not None and after != before


def test_a_new_process_mapping_the_same_file_sees_the_same_values(table):
    generations.follower_connected("inst-a")
    seen = generations.current("inst-a")
    in_process(table, f'assert generations.current("inst-a") == {seen}\ngenerations.bump("inst-a")')
    assert generations.current("inst-a") not in (None, seen)


def test_other_instances_keep_their_generation(table):
    for uuid in ("inst-a", "inst-b"):
        generations.follower_connected(uuid)
    b = generations.current("inst-b")
    generations.bump("inst-a")
    assert generations.current("inst-b") == b


def test_concurrent_writers_never_bring_back_an_old_value(table):
    """Bumps are fresh random values, not counters: a late write of a process that read
    the slot long ago cannot restore a generation some worker cached an answer with."""
    generations.follower_connected("inst-a")
    seen = {generations.current("inst-a")}

    writers = [
        other_process(table, 'for _ in range(100000):\n    generations.bump("inst-a")') for _ in range(3)
    ]
    previous = generations.current("inst-a")
    while any(w.poll() is None for w in writers):
        value = generations.current("inst-a")
        if value != previous and value in seen:
            pytest.fail("a generation came back")
        seen.add(value)
        previous = value
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert out.decode().strip() == "ok", err.decode()
    assert len(seen) > 1
    last = generations.current("inst-a")
    generations.bump("inst-a")
    assert generations.current("inst-a") != last


def test_a_follower_gone_or_silent_turns_the_cache_off(table, monkeypatch):
    generations.follower_connected("inst-a")
    assert generations.current("inst-a") is not None
    generations.follower_gone("inst-a")
    assert generations.current("inst-a") is None
    generations.follower_connected("inst-a")
    # the recorder marks every pass; a mark older than FOLLOWER_FRESH_MS is a dead follower
    later = time.monotonic() + (generations.FOLLOWER_FRESH_MS + 100) / 1000
    monkeypatch.setattr(generations.time, "monotonic", lambda: later)
    assert generations.current("inst-a") is None


def test_a_slot_shared_by_two_instances_caches_only_its_holder(table):
    a = "inst-a"
    offset, _ = generations._slot(a)
    other = next(
        f"inst-{i}" for i in range(10**6) if generations._slot(f"inst-{i}")[0] == offset and f"inst-{i}" != a
    )
    generations.follower_connected(a)
    generations.follower_connected(other)  # refused: the slot is a's while its follower lives
    assert generations.current(a) is not None
    assert generations.current(other) is None
    held = generations.current(a)
    generations.bump(other)  # costs a's cache a miss, never a stale answer
    assert generations.current(a) != held


def test_only_a_sqlite_store_has_a_table(tmp_path):
    assert (
        generations.path_for("sqlite:////var/lib/moorage/moorage.db")
        == "/var/lib/moorage/moorage.db-generations"
    )
    assert generations.path_for("sqlite:///:memory:") == ""
    assert generations.path_for("postgresql://moorage@db/moorage") == ""
    generations.close()
    settings = Settings()
    settings.gateway.database = "postgresql://moorage@db/moorage"
    assert not generations.configure(settings)  # other replicas' writes would go unseen
    settings.gateway.database = f"sqlite:///{tmp_path}/m.db"
    settings.gateway.read_cache = False
    assert not generations.configure(settings)
    settings.gateway.read_cache = True
    try:
        assert generations.configure(settings)
        assert os.path.getsize(f"{tmp_path}/m.db-generations") == generations.SLOTS * generations.SLOT_BYTES
    finally:
        generations.close()


def test_what_is_never_cached():
    assert readcache._sized("all=1&size=1")
    assert readcache._sized("size=true")
    assert not readcache._sized("size=0")
    assert not readcache._sized("all=1&filters=%7B%7D")
    assert readcache._sized("all=1&%73ize=1")  # the key percent-encoded
    assert not readcache._sized("all=1") and not readcache._sized("")
    assert readcache._keepable([{"Id": "x"}])
    assert readcache._keepable({"State": {"Status": "running"}})
    # each probe of a health check appends to its log with no event: never kept
    assert not readcache._keepable({"State": {"Status": "running", "Health": {"Status": "healthy"}}})
