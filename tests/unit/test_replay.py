"""The replay's pieces that need no server (gateway/replay.py): which heads may replay, how a
kept head is cut around the values each replay makes anew, and when an answer is kept."""

import pytest

from gateway import replay

LOCAL = (("127.0.0.1", 2375), False)


@pytest.mark.parametrize(
    "head,replays",
    [
        (b"GET /v1.47/containers/json HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET /containers/json HTTP/1.1\r\nContent-Length: 0\r\n\r\n", True),
        (b"GET /containers/json HTTP/1.1\r\nContent-Length: 2\r\n\r\n", False),  # a body
        (b"GET /containers/json HTTP/1.1\r\ncontent-length:   5\r\n\r\n", False),
        (b"GET /containers/json HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", False),
        (b"GET /containers/json HTTP/1.1\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n", False),
        (b"POST /containers/x/start HTTP/1.1\r\n\r\n", False),
        (b"HEAD /_ping HTTP/1.1\r\n\r\n", False),
        (b"get /containers/json HTTP/1.1\r\n\r\n", False),  # not a method dockerd knows
    ],
)
def test_only_a_get_without_a_body_may_replay(head, replays):
    assert (replay.head_key(LOCAL, head) is not None) is replays
    if replays:
        assert replay.head_key(LOCAL, head) == (LOCAL, head)
        assert replay.head_key((("127.0.0.1", 2376), True), head) != (LOCAL, head)  # another listener


def test_a_kept_head_is_cut_around_its_date_and_request_id():
    head = (
        b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Mon, 07 Dec 2026 08:29:19 GMT\r\n"
        b"Connection: keep-alive\r\ncontent-length: 2\r\nX-Request-Id: abc\r\n\r\n"
    )
    before, between, after = replay._split_head(head)
    assert before.endswith(b"\r\nDate: ") and between.startswith(b"\r\nConnection:")
    assert between.endswith(b"X-Request-Id: ") and after == b"\r\n\r\n"
    assert before + b"Mon, 07 Dec 2026 08:29:19 GMT" + between + b"abc" + after == head
    assert replay._split_head(head.replace(b"Date:", b"Dote:")) is None
    assert replay._split_head(head.replace(b"X-Request-Id:", b"X-Other:")) is None


def test_an_answer_is_kept_from_the_second_time_its_request_comes(monkeypatch):
    replay.clear()
    now = [100.0]
    monkeypatch.setattr(replay.time, "monotonic", lambda: now[0])
    key = (LOCAL, b"GET /containers/json HTTP/1.1\r\n\r\n")
    assert not replay._seen_before(key)
    now[0] += 1
    assert replay._seen_before(key)
    now[0] += replay.SEEN_WITHIN + 1
    assert not replay._seen_before(key)  # too long ago: seen once again
    assert not replay._seen_before((LOCAL, b"GET /other HTTP/1.1\r\n\r\n"))
    replay.clear()


def test_the_date_is_gunicorns():
    from gunicorn import util

    before = util.http_date()
    made = replay._http_date().decode()
    assert made in (before, util.http_date())  # (a second may turn between them)


def test_kept_answers_stay_within_their_entries_and_bytes():
    from gateway.budgeted import Budgeted

    kept: Budgeted[bytes] = Budgeted(3, 10, len)
    for key, value in (("a", b"1234"), ("b", b"1234"), ("c", b"12")):
        kept.keep(key, value)
    assert [kept.get(k) for k in "abc"] == [b"1234", b"1234", b"12"]
    kept.keep("d", b"1")  # a fourth entry: the oldest goes
    assert kept.get("a") is None and kept.get("d") == b"1"
    kept.keep("e", b"123456789")  # 9 bytes: the oldest go until it fits in 10
    assert [kept.get(k) for k in "bcde"] == [None, None, b"1", b"123456789"]
    kept.keep("e", b"12")  # kept again: replaces, counted once
    kept.keep("f", b"12345678")  # 1 + 2 + 8 > 10: d goes
    assert kept.get("d") is None and kept.get("e") == b"12" and kept.get("f") == b"12345678"
    kept.drop("e")
    kept.keep("g", b"12")
    assert kept.get("f") == b"12345678" and kept.get("g") == b"12"
    kept.clear()
    assert kept.get("f") is None
