"""scripts/keystone: a real OpenStack Keystone on loopback (the usage is in cli.py).

Modules, lower ones first: common, procs, api, venv, service, then cli (the subcommands).
"""
