"""Names on the wire: every header, label and path prefix that two parts of Moorage (client,
gateway, agent, the CLI's config files) must spell the same way.

This module imports nothing: the agent and every layer of the gateway may use it.
"""

# -- clients -> gateway: who is asking (Keystone) -----------------------------------------------
TOKEN_HEADER = "X-Auth-Token"
PROJECT_HEADER = "X-Auth-Project-Id"
# The operators' admin view of every project's objects (`moorage login --all-projects`).
ALL_PROJECTS_HEADER = "X-Moorage-All-Projects"
# Client certificates: issued, listed and revoked here (gateway/certapi.py), on every listener.
CERTS_PATH = "/moorage/v1/certs"
# Projects' webhooks for notices (gateway/noticeapi.py), and the headers of each delivery.
NOTICES_PATH = "/moorage/v1/notices"
NOTICE_SIGNATURE_HEADER = "X-Moorage-Signature"  # sha256=HEX: HMAC-SHA256 of the body, the secret
NOTICE_EVENT_HEADER = "X-Moorage-Event"  # the notice's name (instance.create, ...)
NOTICE_DELIVERY_HEADER = "X-Moorage-Delivery"  # the notice's ID: the same on every retry

# -- clients <-> gateway -> agents: one request's ID (gateway/logs.py) ----------------------------
REQUEST_ID_HEADER = "X-Request-Id"

# -- agents <-> gateway ------------------------------------------------------------------------
# The agent's own routes for the gateway (agent/segments.py), answered by the agent, never dockerd.
AGENT_SEGMENTS_PATH = "/_moorage/v1/segments"
AGENTS_PATH = "/moorage/v1/agents"  # the agent API's prefix on the gateway's own listeners
REGISTRATION_SECRET_HEADER = "X-Moorage-Registration-Secret"  # static hosts: the operator's secret
BOOTSTRAP_SECRET_HEADER = "X-Moorage-Bootstrap-Secret"  # pool-booted hosts: a one-time secret
AGENT_SECRET_HEADER = "X-Moorage-Agent-Secret"  # what the gateway presents to an agent
# The tenant socket (gateway/services/tenantsocket.py, agent/sockets.py): the gateway opens and
# closes a container's socket on its agent under this path (agent secret), and the agent sends
# the socket's requests to the gateway with the container's credential in this header.
AGENT_SOCKETS_PATH = "/moorage/v1/agent/sockets"
SOCKET_CREDENTIAL_HEADER = "X-Moorage-Socket-Credential"
TENANT_SOCKET_DIR_FACT = "TenantSocketDir"  # where an agent keeps its sockets (its facts)

# -- labels on daemon objects ------------------------------------------------------------------
PROJECT_LABEL = "org.openstack.moorage.project"  # the project that owns a container, network, ...
PIN_LABEL = "org.openstack.nova.instance"  # a user's pin of a container to one instance
# Marks a daemon's copy of a spanning network with the network's gateway-made ID.
SPAN_LABEL = "org.openstack.moorage.span"
DEFAULT_BRIDGE_LABEL = "org.openstack.moorage.default-bridge"  # a project's own default bridge
