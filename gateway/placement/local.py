"""The local provider: hosts on this machine.

Without ``[local] boot_command`` it is the hosts whose agents register (the embedded default:
one daemon, one agent) and never grows. With it, the pool boots hosts on demand like Nova
servers, by running the operator's commands (devstack sets them to its own `boot-host`,
`delete-host` and `list-hosts`: a network namespace with its own dockerd and agent each):

    boot_command ...           the bootstrap secret on stdin; $MOORAGE_POOL_MEMBER and
                               $MOORAGE_PROJECT set; prints the new host's UUID as its last line
    delete_command ... UUID    exit 0 once the host is gone (or was never there)
    list_command ...           prints a JSON list of {"id", "member", "created"} (ISO time)
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import subprocess

from gateway.config import LocalSettings, Settings
from gateway.placement.provider import Provider

log = logging.getLogger("moorage.pool.local")


class LocalProvider(Provider):
    name = "local"

    def __init__(self, conf: LocalSettings | None = None, settings: Settings | None = None):
        self.conf = conf or LocalSettings()
        self.can_grow = bool(self.conf.boot_command)
        self.capacity = self.conf.capacity or (settings.placement.capacity if settings else 0)
        self.boot_timeout = self.conf.boot_timeout
        self.empty_grace = self.conf.empty_grace_seconds
        self.max_instances = self.conf.max_hosts if self.can_grow else 0

    def _run(self, argv: list[str], stdin: str = "", env: dict | None = None) -> str:
        try:
            done = subprocess.run(
                argv,
                input=stdin.encode(),
                capture_output=True,
                timeout=self.conf.timeout,
                env={**os.environ, **(env or {})},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"{argv[0]}: {exc}") from exc
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(
                f"{os.path.basename(argv[0])} exited {done.returncode}: {err[-1] if err else ''}"
            )
        return done.stdout.decode(errors="replace")

    def boot(self, member_id: str, secret: str, project: str | None = None) -> str:
        out = self._run(
            list(self.conf.boot_command),
            stdin=secret + "\n",
            env={"MOORAGE_POOL_MEMBER": member_id, "MOORAGE_PROJECT": project or ""},
        )
        lines = out.strip().splitlines()
        if not lines or not lines[-1].strip():
            raise RuntimeError("the boot command printed no host UUID")
        server_id = lines[-1].strip()
        log.info("booted local host %s for pool member %s", server_id, member_id)
        return server_id

    def delete(self, server_id: str) -> bool:
        self._run([*self.conf.delete_command, server_id])
        log.info("deleted local host %s", server_id)
        return True

    def owned_servers(self) -> list[dict]:
        if not self.conf.list_command:
            return []
        rows = json.loads(self._run(list(self.conf.list_command)) or "[]")
        out = []
        for row in rows if isinstance(rows, list) else []:
            created = None
            if row.get("created"):
                created = _dt.datetime.fromisoformat(str(row["created"]).replace("Z", "+00:00")).replace(
                    tzinfo=None
                )
            out.append({"id": str(row.get("id")), "member": row.get("member"), "created": created})
        return out
