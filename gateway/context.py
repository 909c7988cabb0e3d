"""The per-request context handed to every Docker API handler and service."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import falcon

from gateway import instances, jsonbody, versions
from gateway.errors import DockerError
from gateway.routing import Route
from gateway.tenancy import Identity, names, resolve
from gateway.wire import ALL_PROJECTS_HEADER

_UNRESOLVED = object()


@dataclass
class Context:
    gw: Any  # the gateway.app.Gateway serving it (a layer above: not imported)
    req: falcon.Request
    resp: falcon.Response
    route: Route
    params: dict[str, str]
    version: str  # the API version this request speaks (path's, or the advertised maximum)
    identity: Identity | None = None
    # The API versions this request's calls spoke to daemons (gateway/forward.py send): the
    # answer is translated from them to ``version``.
    spoken: list[str] = field(default_factory=list)
    _target: object = field(default=_UNRESOLVED, repr=False)
    _daemon_ref: str = field(default="", repr=False)

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
            and self.settings.identity.admin_view
            and (self.req.get_header(ALL_PROJECTS_HEADER) or "").lower() in ("1", "true", "yes")
        )

    @property
    def settings(self):
        return self.gw.settings

    # -- the route's object (Route.resolves) --------------------------------------------------
    @property
    def ref(self) -> str:
        """What the client typed for the route's object (ID, name, ID prefix)."""
        return self.params.get(self.route.reference, "")

    @property
    def target(self) -> Any:
        """The caller's object the route names: a store row (None for a daemon's predefined
        network), or a 404 in Docker's words if the caller has none by that reference.

        Resolved on first use, so that a handler's policy check comes first: a refused request
        looks nothing up and answers the same whether or not the object exists."""
        return self._resolved()[0]

    @property
    def daemon_path(self) -> str:
        """This request's path with the tenant's reference replaced by its daemon's."""
        return self.route.fill(self._resolved()[1])

    def _resolved(self) -> tuple[Any, str]:
        if self._target is _UNRESOLVED:
            try:
                self._target, self._daemon_ref = resolve.by_kind(self.route.resolves, self.project, self.ref)
            except DockerError as exc:
                if exc.status == 404 and self.route.not_found:
                    message = self.route.not_found.format(ref=self.ref, message=exc.message)
                    raise DockerError(404, message) from exc
                raise
        return self._target, self._daemon_ref

    def daemon_path_for(self, daemon_ref: str) -> str:
        """This route's path naming another daemon object (a project's default bridge)."""
        return self.route.fill(daemon_ref)

    # -- the request ---------------------------------------------------------------------------
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
        if status < 300:
            payload = self.translated(payload)
        text = jsonbody.encode(payload)
        if names_of:
            text = names.text_to_tenant(names_of, text.decode()).encode()
        self.resp.data = text + b"\n"

    def translated(self, payload):
        """A successful answer in the shape of the client's API version: the one place answers
        are translated (gateway/versions), after tenancy has rewritten them."""
        if self.route is None:  # a context made outside a request
            return payload
        return versions.translate_answer(
            self.route.operation,
            self.version,
            self.spoken,
            payload,
            parse_qs(self.req.query_string or "", keep_blank_values=True),
            reference=self.params.get("name", "") or self.ref,
        )

    def refuse_untranslatable(self, body) -> None:
        """The version table's refusals of this request's body, before any work is done for it
        (placement, volumes, image moves): the daemons it may go to are the live ones, and the
        oldest of them is asked. forward.send translates it again for the one it goes to."""
        if body is None or self.route is None:
            return
        daemons = list(instances.live_api_versions(self.settings))
        spoken = versions.for_daemon(self.version, versions.lowest(daemons, self.version))
        if versions.requests_change(self.route.operation, self.version, spoken):
            query = parse_qsl(self.req.query_string or "", keep_blank_values=True)
            versions.translate_request(self.route.operation, self.version, spoken, copy.deepcopy(body), query)
