"""scripts/nova: a real OpenStack Nova control plane on loopback (the usage is in cli.py).

Modules, lower ones first: common, api, install, state, backends (MariaDB, RabbitMQ),
identity (Keystone), configs, services, then cli (the subcommands); the process records are
../procs.py, shared with scripts/keystone.
"""
