"""Reading py-spy's collapsed stacks (`--format raw`): where a process's busy time goes.

py-spy counts gevent's hub waiting in epoll (`Hub.run` as the leaf), the arbiter's sleep and
idle selectors as samples like any other; they are counted apart here as waiting, and the
percentages are of the remaining (busy) samples.
"""

from __future__ import annotations

import collections

WAITING_LEAVES = (
    "Hub.run ",
    "Arbiter.wait_for_signals ",
    "_PollLikeSelector.select ",
    "sleep (gevent/hub.py",
)


def read_folded(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path) as fh:
        for line in fh:
            frames, _, count = line.rstrip("\n").rpartition(" ")
            if not frames or not count.isdigit():
                continue
            # "process PID:..." frames (with --subprocesses) name the process, not code.
            stacks.append(([f for f in frames.split(";") if not f.startswith("process ")], int(count)))
    return stacks


def summarize(path: str, top: int = 12) -> str:
    stacks = read_folded(path)
    total = sum(n for _, n in stacks)
    busy = [(f, n) for f, n in stacks if f and not f[-1].startswith(WAITING_LEAVES)]
    busy_n = sum(n for _, n in busy)
    inclusive: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    for frames, n in busy:
        for f in set(frames):  # a recursive frame counts once per sample
            inclusive[f] += n
        self_[frames[-1]] += n
    out = [f"{total} samples, {total - busy_n} waiting (gevent hub, selectors, sleeps), {busy_n} busy"]
    if not busy_n:
        return out[0] + "\n"
    out.append("")
    out.append("inclusive (share of busy samples with the frame on the stack):")
    shown = [(f, n) for f, n in inclusive.most_common(top * 3) if not _plumbing(f)][:top]
    out += [f"  {n * 100 / busy_n:5.1f}%  {f}" for f, n in shown]
    out.append("")
    out.append("self (share of busy samples with the frame at the top):")
    out += [f"  {n * 100 / busy_n:5.1f}%  {f}" for f, n in self_.most_common(top)]
    return "\n".join(out) + "\n"


def _plumbing(frame: str) -> bool:
    """Frames every request passes through (process start-up, the greenlet trampoline)."""
    return frame.startswith(
        (
            "<module>",
            "main ",
            "cmd_serve",
            "run (gateway/server.py",
            "BaseApplication.run",
            "Arbiter.",
            "Greenlet.run",
            "Thread.",
            "_handle_and_close_when_done",
            "GeventWorker.handle ",
            "_gevent_worker.<locals>.TLSListenerWorker.handle",
            "AsyncWorker.handle ",
            "AgentProxy.handle ",
        )
    )
