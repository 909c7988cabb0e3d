"""The per-request context handed to every Docker API handler."""

from __future__ import annotations

import json
from dataclasses import dataclass

import falcon

from gateway.routing import Route
from gateway.tenancy import Identity, names
from gateway.wire import ALL_PROJECTS_HEADER


@dataclass
class Context:
    gw: object  # gateway.app.Gateway
    req: falcon.Request
    resp: falcon.Response
    route: Route
    params: dict[str, str]
    version: str  # the API version this request speaks (path's, or the advertised maximum)
    identity: Identity | None = None

    @property
    def project(self) -> str:
        return self.identity.project_id if self.identity else ""

    @property
    def all_projects(self) -> bool:
        """The operators' admin view: lists show every project's objects, with their project.

        Only for admin-role identities, only where the operator enabled it ([identity]
        admin_view), and only when asked (``moorage login --all-projects`` sets the header)."""
        return bool(
            self.identity
            and self.identity.is_admin
            and self.settings.identity.get("admin_view")
            and (self.req.get_header(ALL_PROJECTS_HEADER) or "").lower() in ("1", "true", "yes")
        )

    @property
    def settings(self):
        return self.gw.settings

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.req.get_param(name, default=default)

    def answer_json(self, payload, status: int = 200, *, names_of: str = "") -> None:
        """A JSON answer the gateway composed, encoded as dockerd encodes (compact, newline).

        ``names_of``: a project whose daemon names are turned back into its own in the encoded
        text, which is scope.strip_names at the cost of one str.replace (the names' suffix holds
        no character JSON escapes or delimits, so it occurs in the text exactly where it occurs
        in a string or key): for large answers such as a merged list."""
        self.resp.status = status
        self.resp.content_type = "application/json"
        text = json.dumps(payload, separators=(",", ":"))
        if names_of:
            text = names.text_to_tenant(names_of, text)
        self.resp.data = text.encode() + b"\n"
