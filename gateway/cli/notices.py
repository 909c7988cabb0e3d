"""Webhooks for notices from the command line: `moorage notices`.

moorage notices subscribe URL [--event instance.create ...] --host "$DOCKER_HOST"
    a webhook for your project (authenticated as the docker CLI is: DOCKER_CONFIG's headers, or
    DOCKER_CERT_PATH's certificate); prints its ID and its secret, which is shown this once:
    each delivery carries X-Moorage-Signature: sha256=HMAC-SHA256(secret, body)
moorage notices list --host URL
    your project's webhooks (with how many notices wait for each)
moorage notices unsubscribe ID --host URL
    remove one (and what waits for it)
moorage notices list [--project ID]
    the operator's: every project's, from the store (settings file as for `moorage quota`)

Notices: instance.create and instance.delete by default (an instance booted or deleted for the
project); also container.create, container.start, container.die, container.destroy.
docs/notifications.md describes the body and how to check the signature.
"""

from __future__ import annotations

import argparse
import json
import sys

from gateway.cli.certs import _answer, through_gateway
from gateway.wire import NOTICES_PATH

TIMEOUT = 30


def _say(msg: str) -> None:
    print(f"moorage: {msg}", file=sys.stderr, flush=True)


def _print(rows: list[dict], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    columns = ["id", "url", "events", "waiting", "created"]
    shown = [
        {c: ",".join(r[c]) if isinstance(r.get(c), list) else str(r.get(c, "")) for c in columns}
        for r in rows
    ]
    widths = {c: max([len(c)] + [len(r[c]) for r in shown]) for c in columns}
    print("   ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in shown:
        print("   ".join(row[c].ljust(widths[c]) for c in columns).rstrip())


def _through_gateway(args) -> int:
    def calls(session, url, verify):
        if args.action == "subscribe":
            body = {"url": args.target, "events": args.event or None}
            return _answer(session.post(url, json=body, timeout=TIMEOUT, verify=verify))
        if args.action == "list":
            return _answer(session.get(url, timeout=TIMEOUT, verify=verify))
        return [_answer(session.delete(f"{url}/{args.target}", timeout=TIMEOUT, verify=verify))]

    code, answer = through_gateway(args.host, NOTICES_PATH, calls)
    if code != 0:
        return code
    if args.action == "subscribe":
        assert isinstance(answer, dict)
        if args.format == "json":
            print(json.dumps(answer, indent=2))
        else:
            print(f"id:     {answer['id']}\nevents: {','.join(answer['events'])}\nsecret: {answer['secret']}")
            _say("keep the secret: it is not shown again; each delivery's X-Moorage-Signature is its HMAC")
        return 0
    _print(answer if isinstance(answer, list) else [], args.format)
    return 0


def cmd_notices(args, settings_of) -> int:
    if args.action in ("subscribe", "unsubscribe") and not args.target:
        _say(f"notices {args.action} needs a {'URL' if args.action == 'subscribe' else 'webhook ID'}")
        return 2
    if args.host:
        return _through_gateway(args)
    if args.action == "subscribe":
        _say("notices subscribe is a project's: give --host (the gateway's address) and your credentials")
        return 2
    from gateway import store
    from gateway.errors import DockerError
    from gateway.notifications import webhooks

    store.init(settings_of(args).gateway.database)
    if args.action == "list":
        _print(webhooks.listing(args.project), args.format)
        return 0
    try:
        row = webhooks.unsubscribe(args.target, args.project)
    except DockerError as exc:
        _say(exc.message)
        return 1
    _print([row], args.format)
    return 0


def add_parser(subparsers, settings_of) -> None:
    p = subparsers.add_parser(
        "notices",
        help="webhooks told of instances booted or deleted for your project: subscribe, list, unsubscribe",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["subscribe", "list", "unsubscribe"])
    p.add_argument("target", nargs="?", metavar="URL|ID", help="subscribe: the URL; unsubscribe: the ID")
    p.add_argument(
        "--event",
        action="append",
        metavar="NOTICE",
        help="subscribe: a notice to hear (repeat; default instance.create and instance.delete)",
    )
    p.add_argument(
        "--host", metavar="URL", help='through the gateway at URL, as a user (e.g. "$DOCKER_HOST")'
    )
    p.add_argument("--project", metavar="PROJECT_ID", help="operator: only this project's")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=lambda args: cmd_notices(args, settings_of))
