"""What the routes get: the API function's services, typed (the composition root builds them).

`services` is the one dependency: the services `create_app` was given by the composition root
(tests may also override it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Protocol

from fastapi import Depends, Request

if TYPE_CHECKING:  # annotations only: a route imports the services it calls itself
    from workflows.clock import Clock
    from workflows.services.access import SubmissionQuotas
    from workflows.services.approvals import ApprovalInbox
    from workflows.services.artifacts import ArtifactService
    from workflows.services.control import ControlService
    from workflows.services.corpus import CorpusService
    from workflows.services.definitions import DefinitionService
    from workflows.services.deliveries import DeliveryOperations
    from workflows.services.identity import Identity
    from workflows.services.keys import KeyService
    from workflows.services.queries import RunQueries
    from workflows.services.runs import RunService
    from workflows.services.schedules import ScheduleService
    from workflows.services.secrets import SecretService
    from workflows.services.signals import SignalService
    from workflows.settings import Settings
    from workflows.steps.registry import StepRegistry


class ApiServices(Protocol):
    """Everything a route may call (workflows.roots.parts.Parts builds each on first use)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def registry(self) -> StepRegistry: ...

    @property
    def identity(self) -> Identity: ...

    @property
    def submission_quotas(self) -> SubmissionQuotas: ...

    @property
    def run_service(self) -> RunService: ...

    @property
    def definition_service(self) -> DefinitionService: ...

    @property
    def schedule_service(self) -> ScheduleService: ...

    @property
    def queries(self) -> RunQueries: ...

    @property
    def control_service(self) -> ControlService: ...

    @property
    def approval_inbox(self) -> ApprovalInbox: ...

    @property
    def artifact_service(self) -> ArtifactService: ...

    @property
    def corpus_service(self) -> CorpusService: ...

    @property
    def key_service(self) -> KeyService: ...

    @property
    def secret_service(self) -> SecretService: ...

    @property
    def deliveries(self) -> DeliveryOperations: ...

    @property
    def signal_service(self) -> SignalService: ...


async def services(request: Request) -> ApiServices:
    """What the composition root gave `create_app` (tests may override this dependency).

    Async and read from the app's state, not installed as a dependency override: FastAPI
    analyses an override's signature again on every request, and runs a sync dependency in a
    worker thread; this is in every route's path, so both were paid several times per request.
    """
    return provided(request)


def provided(request: Request) -> ApiServices:
    override = request.app.dependency_overrides.get(services)
    if override is not None:
        return override()  # type: ignore[no-any-return]
    provide = getattr(request.app.state, "services", None)
    if provide is None:
        raise RuntimeError("the API's services are given by its composition root")
    return provide()  # type: ignore[no-any-return]


Services = Annotated[ApiServices, Depends(services)]
