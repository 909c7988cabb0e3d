"""scripts/devstack: a complete Moorage stack on this machine (the usage is in cli.py).

One module per job, lower ones first: common (constants, errors, running commands), procs
(process records), endpoints (HTTP to daemons and gateways), state (the Stack: names, state.json,
the lock, spawning), network (bridge, namespaces, veths), busybox (the offline image), daemons
(registry, dockerd), identity (embedded or Keystone tenants), pg (the stack's PostgreSQL),
novaconf (Nova and the gateway's nova provider settings), gateways, agents, envfile, novawatch
(the --nova watcher), then the subcommands: up, hosts, down, and cli (argument parsing).
"""
