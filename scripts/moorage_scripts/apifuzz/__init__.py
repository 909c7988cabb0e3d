"""scripts/api-fuzz: schemathesis against a running gateway (cli.py), with Moorage's check (hooks.py)."""
