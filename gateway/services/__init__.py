"""Services: the orchestration behind each Docker API handler.

A handler (gateway/dockerapi/) parses the request, calls one service function and answers. The
service owns the order of the work (policy, then scope, quotas, placement, and the daemon calls
through gateway/forward.py) and reaches the database only through named functions of the
domain modules and gateway/store/.
"""
