"""Tenants' secrets in SSM Parameter Store: `<prefix>/<tenant_id>/<NAME>`, SecureString.

Only names (and the hosts each may be sent to) are ever listed; values are read when a webhook
is sent, through Powertools parameters with a cache (`CACHE_SECONDS`), so a warm dispatcher does
not call SSM per step and a changed value applies within that time. Tenant ids and names are
checked against their patterns, so a name cannot reach another tenant's path.

A secret's allowed hosts are stored in its parameter's value, ahead of the value itself
(domain.secret_refs.pack), not in its description or tags: one read gets both, a put changes
both at once, and no role needs `ssm:DescribeParameters` (which cannot be scoped to a path).
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import error_code, translate
from workflows.domain.ids import check_tenant_id
from workflows.domain.secret_refs import (
    SECRET_NAME_PATTERN,
    Secret,
    SecretInfo,
    SecretUnavailable,
    pack,
    unpack,
)
from workflows.errors import NotFound

CACHE_SECONDS = 300
_NAME = re.compile(SECRET_NAME_PATTERN)


class SecretStore:
    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = "/" + prefix.strip("/")
        self._provider: Any = None

    def _path(self, tenant_id: str, name: str) -> str:
        check_tenant_id(tenant_id)
        if not _NAME.fullmatch(name):
            raise NotFound(f"secret '{name[:64]}' not found")
        return f"{self._prefix}/{tenant_id}/{name}"

    def get(self, tenant_id: str, name: str) -> Secret:
        """The secret (cached); SecretUnavailable when it is not set, or transient when SSM
        failed otherwise (throttling, an outage)."""
        if self._provider is None:
            # Imported on first use: most dispatcher invocations never resolve a secret.
            from aws_lambda_powertools.utilities.parameters import SSMProvider

            self._provider = SSMProvider(boto3_client=self._client)
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        try:
            path = self._path(tenant_id, name)
            return unpack(str(self._provider.get(path, decrypt=True, max_age=CACHE_SECONDS)))
        except NotFound as exc:
            raise SecretUnavailable(name) from exc
        except GetParameterError as exc:
            # Powertools wraps every failure; the SSM error it wrapped says which one this was.
            cause = exc.__context__
            missing = isinstance(cause, ClientError) and error_code(cause) == "ParameterNotFound"
            raise SecretUnavailable(name, transient=not missing) from exc

    def put(
        self, tenant_id: str, name: str, value: str, allowed_hosts: tuple[str, ...] | None = None
    ) -> None:
        stored = pack(Secret(value, allowed_hosts))
        try:
            self._client.put_parameter(
                Name=self._path(tenant_id, name), Value=stored, Type="SecureString", Overwrite=True
            )
        except ClientError as exc:
            raise translate(exc) from exc

    def delete(self, tenant_id: str, name: str) -> None:
        try:
            self._client.delete_parameter(Name=self._path(tenant_id, name))
        except ClientError as exc:
            if error_code(exc) == "ParameterNotFound":
                raise NotFound(f"secret '{name}' not found") from exc
            raise translate(exc) from exc

    def listing(self, tenant_id: str) -> list[SecretInfo]:
        """The tenant's secrets by name, sorted, with their allowed hosts; never their values.

        The values are decrypted here (the allowed hosts are stored with them) and dropped."""
        path = f"{self._prefix}/{check_tenant_id(tenant_id)}/"
        found: list[SecretInfo] = []
        params: dict[str, Any] = {"Path": path, "Recursive": False, "WithDecryption": True, "MaxResults": 10}
        try:
            while True:
                response = self._client.get_parameters_by_path(**params)
                for parameter in response.get("Parameters", []):
                    hosts = unpack(str(parameter.get("Value", ""))).allowed_hosts
                    found.append(SecretInfo(str(parameter["Name"]).removeprefix(path), hosts))
                token = response.get("NextToken")
                if not token or len(found) >= 1000:
                    break
                params["NextToken"] = token
        except ClientError as exc:
            raise translate(exc) from exc
        return sorted(found, key=lambda info: info.name)
