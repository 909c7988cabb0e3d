"""scripts/keystone: a real OpenStack Keystone on loopback (the usage is in cli.py).

Modules, lower ones first: common, api, venv, service, then cli (the subcommands); the process
records are ../procs.py, shared with scripts/nova.
"""
