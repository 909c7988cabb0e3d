"""bench/soak: many clients for minutes; latency, RSS, fds and greenlets per minute."""
