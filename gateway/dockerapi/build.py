"""Builds: docker build (the classic builder) and docker builder prune.

A thin handler over gateway/services/builds.py; BuildKit's session route is answered in
gateway/dockerapi/system.py (docs/divergences.md#buildkit-session).
"""

from __future__ import annotations

from gateway.context import Context
from gateway.routing import Route
from gateway.services import builds


def build(ctx: Context) -> None:
    builds.build(ctx, ctx.query("dockerfile") or "Dockerfile", ctx.query("remote") or "")


ROUTES = [
    Route("POST", "/build", "ImageBuild", build, streaming=True),
    Route("POST", "/build/prune", "BuildPrune", builds.prune),
]
