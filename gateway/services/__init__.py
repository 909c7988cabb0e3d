"""The service layer: what a Docker API request does, below the handlers that parse it.

A handler in gateway/dockerapi/ parses the request and calls one function here; that function
owns the orchestration (policy, scope, quotas, placement, the daemon calls through
gateway/forward.py) and reaches the database only through named functions of the store
(gateway/store/queries.py) and the domain modules (gateway/imagemap.py, gateway/instances.py,
...), never through model queries of its own. A service function returns what the handler
answers, or None when it has answered itself: a JSON answer it composed (ctx.answer_json), or
the daemon's own answer relayed as it comes (a stream, a hijack, a decoy's words).
"""
