"""API keys for multi-user mode from the command line: bootstrap a tenant's first admin key.

    python -m devstack.keys create --tenant acme --user alice --roles admin [--expires-days 90]
    python -m devstack.keys list --tenant acme
    python -m devstack.keys revoke --tenant acme --key-id <key_id>

The key is printed once, on creation; only its SHA-256 is stored. Where the keys table is:
WORKFLOWS_API_KEYS_TABLE if set, else the `ApiKeysTable` resource of the CloudFormation stack
named by --stack (default `workflows-local`, the stack `make run` creates; give your deployed
stack's name for AWS). Against the local stack set AWS_ENDPOINT_URL to its moto server
(http://127.0.0.1:5050 by default); without it, boto3 talks to AWS with your credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from devstack.functions import LAYER

LOCAL_STACK = "workflows-local"
# The API's bound on `expires_in_days` (POST /api-keys): ten years.
MAX_EXPIRES_DAYS = 3650


def _table_name(cloudformation: Any, stack: str) -> str:
    configured = os.environ.get("WORKFLOWS_API_KEYS_TABLE")
    if configured:
        return configured
    resources = cloudformation.describe_stack_resources(StackName=stack, LogicalResourceId="ApiKeysTable")
    return str(resources["StackResources"][0]["PhysicalResourceId"])


def _identifier(kind: str) -> Any:
    """An argparse type: a tenant or user id that matches its pattern (docs/auth.md)."""

    def check(value: str) -> str:
        if str(LAYER) not in sys.path:
            sys.path.insert(0, str(LAYER))
        from workflows.domain.ids import InvalidIdentifier, check_caller_user_id, check_tenant_id

        try:
            return (check_tenant_id if kind == "tenant" else check_caller_user_id)(value)
        except InvalidIdentifier as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return check


def _days(value: str) -> int:
    """An argparse type: a key's lifetime in days, as bounded as the API's `expires_in_days`."""
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number of days") from None
    if not 1 <= days <= MAX_EXPIRES_DAYS:
        raise argparse.ArgumentTypeError(
            f"{days}: a key expires 1 to {MAX_EXPIRES_DAYS} days from now (omit it for never)"
        )
    return days


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack.keys", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", default=os.environ.get("WORKFLOWS_STACK", LOCAL_STACK))
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--tenant", required=True, type=_identifier("tenant"))
    create.add_argument("--user", required=True, type=_identifier("user"))
    create.add_argument("--roles", required=True, help="comma-separated, e.g. admin or viewer,operator")
    create.add_argument(
        "--expires-days", type=_days, default=None, help=f"1 to {MAX_EXPIRES_DAYS}; default: never"
    )
    create.add_argument("--name", default=None, help="a label for humans")
    listing = commands.add_parser("list", help="the tenant's keys (never the keys themselves)")
    listing.add_argument("--tenant", required=True, type=_identifier("tenant"))
    revoke = commands.add_parser("revoke", help="revoke a key by its key_id")
    revoke.add_argument("--tenant", required=True, type=_identifier("tenant"))
    revoke.add_argument("--key-id", required=True)
    return parser


class Unusable(Exception):
    """What stops the tool before it can do anything, said in one line (exit 2)."""


def _unreachable(endpoint: str) -> str | None:
    """Why nothing answers at `endpoint`, or None when something listens there."""
    parts = urlsplit(endpoint)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"AWS_ENDPOINT_URL={endpoint} has no valid port"
    if not parts.hostname:
        return f"AWS_ENDPOINT_URL={endpoint} is not a URL (e.g. http://127.0.0.1:5050)"
    try:
        socket.create_connection((parts.hostname, port), timeout=3).close()
    except OSError as exc:
        return (
            f"nothing answers at AWS_ENDPOINT_URL={endpoint} ({exc.strerror or exc}): is the local stack"
            " running? `make run` serves its emulator on MOTO_PORT (http://127.0.0.1:5050 by default)"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Never probe the instance metadata service from a laptop; real credentials still work.
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        # boto3 would retry a refused connection with backoff for seconds before saying so.
        problem = _unreachable(endpoint) if endpoint else None
        if problem:
            raise Unusable(problem)
        return _run(args, endpoint)
    except Unusable as exc:
        print(f"devstack.keys: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, endpoint: str | None) -> int:
    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    from workflows.errors import DomainError

    where = f"AWS_ENDPOINT_URL={endpoint}" if endpoint else "AWS"
    try:
        return _command(args)
    except NoRegionError:
        raise Unusable(
            "no AWS region: set AWS_DEFAULT_REGION (e.g. us-east-1), or AWS_ENDPOINT_URL for the local"
            " stack (http://127.0.0.1:5050 by default), which implies one"
        ) from None
    except (NoCredentialsError, PartialCredentialsError):
        raise Unusable(
            "no AWS credentials: configure them (aws configure, AWS_PROFILE), or set AWS_ENDPOINT_URL"
            " for the local stack"
        ) from None
    except ConnectionError as exc:
        raise Unusable(f"cannot reach {where}: {exc}") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if exc.operation_name == "DescribeStackResources":
            raise Unusable(
                f"no stack {args.stack!r} at {where} ({error.get('Message') or error.get('Code')}):"
                " start the local stack (`make run`), or name yours with --stack"
            ) from None
        raise Unusable(
            f"{where} refused {exc.operation_name}: {error.get('Code')}: {error.get('Message')}"
        ) from None
    except DomainError as exc:
        raise Unusable(f"{exc.code}: {exc}") from None


def _command(args: argparse.Namespace) -> int:
    from workflows.adapters import aws
    from workflows.adapters.api_keys import ApiKeyRepository
    from workflows.settings import Settings

    table = _table_name(aws.client("cloudformation"), args.stack)
    keys = ApiKeyRepository(aws.client("dynamodb"), table)
    if args.command == "create":
        roles = sorted({r.strip() for r in args.roles.split(",") if r.strip()})
        known = Settings().role_permissions
        unknown = [r for r in roles if r not in known]
        if unknown:
            print(
                f"unknown role(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})", file=sys.stderr
            )
            return 2
        expires = None
        if args.expires_days is not None:
            expires = int((datetime.now(UTC) + timedelta(days=args.expires_days)).timestamp())
        key, record = keys.create(
            args.tenant, args.user, roles, name=args.name, created_by="cli", expires_at=expires
        )
        print(f"key_id:  {record.key_id}", file=sys.stderr)
        print(
            f"tenant:  {record.tenant_id}  user: {record.user_id}  roles: {','.join(record.roles)}",
            file=sys.stderr,
        )
        print("The key is shown only now; store it safely:", file=sys.stderr)
        print(key)
        return 0
    if args.command == "list":
        records, _ = keys.list_for_tenant(args.tenant, limit=200, start=None)
        now = datetime.now(UTC)
        for r in records:
            print(
                json.dumps(
                    {
                        "key_id": r.key_id,
                        "user_id": r.user_id,
                        "roles": list(r.roles),
                        "status": r.state(now),
                        "created_at": r.created_at,
                    }
                )
            )
        return 0
    record = keys.revoke(args.tenant, args.key_id, "cli")
    print(f"revoked {record.key_id} at {record.revoked_at}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
