"""Tenancy: who is asking (identity) and what they may see (scope).

Every Docker API request carries ``X-Auth-Token`` and ``X-Auth-Project-Id``; an identity
provider turns them into an :class:`Identity` or refuses. The embedded provider reads a
token file (development only); the Keystone provider (gateway/tenancy/keystone.py) validates against
Keystone behind the same interface.
"""

from gateway.tenancy.identity import (
    EmbeddedIdentity,
    Identity,
    IdentityProvider,
    authenticate,
    make_provider,
)
from gateway.wire import PROJECT_LABEL

__all__ = [
    "PROJECT_LABEL",
    "EmbeddedIdentity",
    "Identity",
    "IdentityProvider",
    "authenticate",
    "make_provider",
]
