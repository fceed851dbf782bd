"""`warm-transfer`: run the processes, manage the number directory, request and inspect."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import redis

import providers
from shared.config import Settings, get_settings
from shared.phone import InvalidNumber, normalize_e164
from shared.store import Store


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2."""


def _settings() -> Settings:
    """The environment's settings; without REDIS_URL set, the Redis of a `warm-transfer up`
    running on $PORT (or 8000) when there is one, so that commands reach the stack that is up."""
    settings = get_settings()
    if os.environ.get("REDIS_URL"):
        return settings
    try:
        from workers.demo import find_running_stack
    except ImportError:  # the production image leaves the dev tools out
        return settings

    running = find_running_stack(int(os.environ.get("PORT") or 8000))
    if running is None:
        return settings
    print(f"warm-transfer: using the running `up` stack (redis {running.redis_url})",
          file=sys.stderr)
    broker = settings.celery_broker_url if os.environ.get("CELERY_BROKER_URL") \
        else running.celery_broker_url
    home = settings.transfer_home_country or running.transfer_home_country
    sip = settings.transfer_allowed_sip_domains or running.transfer_allowed_sip_domains
    return settings.model_copy(update={"redis_url": running.redis_url,
                                       "celery_broker_url": broker,
                                       "transfer_home_country": home,
                                       "transfer_allowed_sip_domains": sip})


def _store() -> Store:
    return Store.from_settings(_settings())


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.celery_app import app

    argv = ["worker", "-Q", "transfers", "--loglevel", get_settings().log_level,
            *args.celery_args]
    app.worker_main(argv)
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    port = str(args.port or os.environ.get("PORT") or 8000)
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:webhooks.gunicorn_conf",
            "--bind", f"{args.host}:{port}", "--workers", str(args.workers), "webhooks.wsgi:app"]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with gunicorn


def cmd_up(args: argparse.Namespace) -> int:
    from workers.localstack import up

    use_sandbox = True if args.sandbox else (False if args.no_sandbox else None)
    return up(port=args.port, sandbox_port=args.sandbox_port, use_sandbox=use_sandbox)


def cmd_demo(args: argparse.Namespace) -> int:
    from workers.demo import demo

    return demo(port=args.port, only=args.scenario)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from sandbox import Sandbox
    from sandbox.server import ThreadedServer

    sb = Sandbox()
    server = ThreadedServer(sb.app, host=args.host, port=args.port)
    print(f"sandbox listening on http://{args.host}:{server.port}")
    for name, model in sb.models.items():
        # The sandbox's own fake credentials, to point the service at it.
        print(f"  {name}: " + " ".join(f"{k}={v}" for k, v in model.env(
            f"http://{args.host}:{server.port}").items()))
    print("  control API: see the README (PUT /_sandbox/fates/<number>, POST /_sandbox/calls)")
    try:
        server.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sb.stop()
    return 0


def cmd_numbers(args: argparse.Namespace) -> int:
    store = _store()
    if args.action == "list":
        for number_id, number in sorted(store.list_numbers().items()):
            print(f"{number_id}\t{number}")
    elif args.action == "set":
        if not args.number_id or not args.number:
            raise UserError("usage: warm-transfer numbers set ID +E164NUMBER")
        try:
            number = normalize_e164(args.number)
        except InvalidNumber as exc:
            raise UserError(f"{args.number!r}: {exc}") from None
        store.set_number(args.number_id, number)
        print(f"{args.number_id}\t{number}")
    elif args.action == "get":
        if not args.number_id:
            raise UserError("usage: warm-transfer numbers get ID")
        found = store.get_number(args.number_id)
        if found is None:
            raise UserError(f"no outbound number with id {args.number_id!r}")
        print(found)
    elif args.action == "delete":
        if not args.number_id:
            raise UserError("usage: warm-transfer numbers delete ID")
        if not store.delete_number(args.number_id):
            raise UserError(f"no outbound number with id {args.number_id!r}")
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    from shared.client import TransferClient

    try:
        extra = json.loads(args.configurations or "{}")
    except ValueError as exc:
        print(f"--configurations is not JSON: {exc}", file=sys.stderr)
        return 2
    numbers = args.transfer_number
    configurations = {"transfer_number": numbers[0]} if len(numbers) == 1 else {
        "transfer_numbers": numbers}
    request: dict[str, Any] = {
        "lead_id": args.lead_id, "provider": args.provider, "call_id": args.call_id,
        "template": {"configurations": {**configurations, **(
            extra if isinstance(extra, dict) else {})}},
        "lead": {k: v for k, v in (("outbound_number_id", args.outbound_number_id),
                                   ("outbound_number", args.outbound_number)) if v},
    }
    if args.summary:
        request["summary"] = args.summary
    if args.request_id:
        request["request_id"] = args.request_id
    result = TransferClient(_settings()).connect_to_live_agent(request)
    print(json.dumps(result, indent=2))
    return 0 if result["status"] != "error" else 1


def cmd_status(args: argparse.Namespace) -> int:
    report = _store().lead_report(args.lead_id)
    if report is None:
        raise UserError(f"no transfer recorded for lead {args.lead_id!r}")
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warm-transfer",
        description="Warm transfer of live voice-AI calls to human agents. Configuration "
                    "comes from the environment (see the README).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="run the whole system locally",
                       description="Start Redis (REDIS_URL if it answers, else an embedded "
                                   "redis-server), the provider sandbox (when no provider "
                                   "credentials are set), the webhook app and a worker. "
                                   "Ctrl-C stops everything.")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)),
                   help="webhook app port (default $PORT or 8000)")
    p.add_argument("--sandbox-port", type=int, default=0, help="sandbox port (default: free)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--sandbox", action="store_true", help="always use the sandbox")
    group.add_argument("--no-sandbox", action="store_true", help="never use the sandbox")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("demo", help="watch transfers happen against the sandbox",
                       description="Run one transfer per provider, success and failure, "
                                   "printing each transfer's timeline as it happens: on the "
                                   "`warm-transfer up` running on the port when there is one "
                                   "(its console shows them), else on a whole system of its "
                                   "own with the provider sandbox.")
    p.add_argument("--port", type=int, default=8000, help="webhook app port (default 8000)")
    p.add_argument("--scenario", type=int, action="append", metavar="N",
                   help="run only scenario N, numbered as the demo prints them (repeatable)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sandbox", help="run the provider sandbox on its own",
                       description="Serve the fake APIs of every registered provider with "
                                   "their control API, for developing a platform without phones.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8010, help="port (default 8010)")
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("worker", help="run a Celery worker on the transfers queue",
                       description="Run a Celery worker consuming the `transfers` queue. "
                                   "Extra arguments go to `celery worker`.")
    p.add_argument("celery_args", nargs=argparse.REMAINDER,
                   help="extra `celery worker` arguments, e.g. --concurrency 4")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("web", help="serve the webhook app with gunicorn",
                       description="Serve the webhook app (provider callbacks, /transfers, "
                                   "health) with gunicorn.")
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="port (default $PORT or 8000)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    p.set_defaults(func=cmd_web)

    p = sub.add_parser("numbers", help="manage the outbound number directory",
                       description="Manage the directory that maps lead.outbound_number_id "
                                   "to an E.164 caller number (kept in Redis).")
    p.add_argument("action", choices=["list", "set", "get", "delete"])
    p.add_argument("number_id", nargs="?", help="the outbound_number_id")
    p.add_argument("number", nargs="?", help="the E.164 number (for set)")
    p.set_defaults(func=cmd_numbers)

    p = sub.add_parser("request", help="request a transfer from the shell",
                       description="Validate and enqueue a transfer, as the agent's tool "
                                   "handler would; prints the tool result.")
    p.add_argument("--lead-id", required=True)
    p.add_argument("--provider", required=True, help=", ".join(providers.names()))
    p.add_argument("--call-id", required=True, help="the customer's live call id")
    p.add_argument("--transfer-number", required=True, action="append",
                   help="the human agent, E.164; repeat it for fallback destinations")
    p.add_argument("--configurations", metavar="JSON",
                   help='more template configurations, e.g. \'{"screening": true}\'')
    p.add_argument("--outbound-number", help="caller id shown to the human, E.164")
    p.add_argument("--outbound-number-id", help="or its id in the number directory")
    p.add_argument("--summary", help="what the human should know")
    p.add_argument("--request-id", help="idempotency key")
    p.set_defaults(func=cmd_request)

    p = sub.add_parser("status", help="show a lead's transfer status and timeline",
                       description="Show the lead's latest transfer: status and timeline.")
    p.add_argument("lead_id")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"warm-transfer: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"warm-transfer: cannot reach Redis at {get_settings().redis_url}: {exc}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
