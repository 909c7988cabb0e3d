"""The Bench: both sides, their sessions, the sections (mixins) and the cleanup."""

from __future__ import annotations

import json
import os

import requests

from .client import Side, expect
from .common import BENCH_LABEL, BenchError, say
from .requests_sections import RequestSections
from .stack import gateway_config_path
from .stream_sections import StreamSections


class Bench(RequestSections, StreamSections):
    """One run: both sides' sessions, the rows, and the containers to remove at the end."""

    def __init__(self, env: dict[str, str], profile: dict, mode: str):
        self.env = env
        self.p = profile
        self.mode = mode
        with open(os.path.join(env["DOCKER_CONFIG"], "config.json")) as fh:
            headers = json.load(fh).get("HttpHeaders") or {}
        if not headers.get("X-Auth-Token"):
            raise BenchError(f"{env['DOCKER_CONFIG']}/config.json has no X-Auth-Token header")
        self.config_path = gateway_config_path(env)
        probe = Side("direct", env["MOORAGE_DIRECT_HOST"], {}, "1.41")
        with probe.session() as s:
            api = expect(s.get(probe.base + "/_ping", timeout=10), 200).headers.get("Api-Version", "1.41")
        self.sides = {
            "direct": Side("direct", env["MOORAGE_DIRECT_HOST"], {}, api),
            "moorage": Side("moorage", env["DOCKER_HOST"], headers, api),
        }
        self.sessions = {name: side.session() for name, side in self.sides.items()}
        with self.sessions["moorage"] as s:
            expect(s.get(self.sides["moorage"].url("/_ping"), timeout=10), 200)
        self.rows: list[dict] = []
        self.extra: dict = {}
        self.errors: list[str] = []
        self.created: dict[str, list[str]] = {"direct": [], "moorage": []}

    # Containers the bench keeps for a while are made through the gateway, so both sides can
    # see them (by ID); they are removed at the end, whatever happens.
    def keep(self, cid: str, side: str = "moorage") -> str:
        self.created[side].append(cid)
        return cid

    def cleanup(self) -> None:
        for side_name, ids in self.created.items():
            side, s = self.sides[side_name], self.sessions[side_name]
            for cid in ids:
                try:
                    s.delete(side.url(f"/containers/{cid}"), params={"force": "1", "v": "1"}, timeout=60)
                except requests.RequestException as exc:
                    say(f"could not remove {cid[:12]}: {exc}")
            ids.clear()
        # Anything a failed lifecycle left behind on the daemon, labelled as ours.
        side, s = self.sides["direct"], self.sessions["direct"]
        try:
            flt = json.dumps({"label": [BENCH_LABEL]})
            left = s.get(side.url("/containers/json"), params={"all": "1", "filters": flt}, timeout=60).json()
            for c in left:
                s.delete(side.url(f"/containers/{c['Id']}"), params={"force": "1", "v": "1"}, timeout=60)
        except (requests.RequestException, ValueError) as exc:
            say(f"could not sweep bench containers: {exc}")
