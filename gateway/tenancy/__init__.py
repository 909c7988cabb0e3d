"""Tenancy: who is asking (identity) and what they may see (scope).

Every Docker API request carries ``X-Auth-Token`` and ``X-Auth-Project-Id``, or comes on a TLS
connection with a client certificate the gateway issued (gateway/tenancy/certs.py); an identity
provider turns them into an :class:`Identity` or refuses. The embedded provider reads a
token file (development only); the Keystone provider (gateway/tenancy/keystone.py) validates against
Keystone behind the same interface.
"""

from gateway.config import IdentitySettings
from gateway.tenancy.certs import ClientCertificates, authenticate_request
from gateway.tenancy.identity import (
    EmbeddedIdentity,
    Identity,
    IdentityProvider,
    authenticate,
)
from gateway.wire import PROJECT_LABEL

__all__ = [
    "PROJECT_LABEL",
    "ClientCertificates",
    "EmbeddedIdentity",
    "Identity",
    "IdentityProvider",
    "authenticate",
    "authenticate_request",
    "make_provider",
]


def make_provider(config: IdentitySettings) -> IdentityProvider:
    backend = config.backend
    if backend == "embedded":
        if not config.token_file:
            raise ValueError("[identity] backend = 'embedded' needs token_file")
        return EmbeddedIdentity(config.token_file)
    if backend == "keystone":
        # Imported only when chosen: keystoneauth1 is heavy, and the embedded backend needs none of it.
        from gateway.tenancy.keystone import KeystoneIdentity

        return KeystoneIdentity(config)
    raise ValueError(f"unknown identity backend {backend!r} (available: embedded, keystone)")
