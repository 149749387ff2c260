"""The planner interface shared by `template`, `claude` and `openai`.

Planners only write plans: none of them has a way to change anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from ai_employee.model.plans import PlanProposal, PlanRequest

if TYPE_CHECKING:  # the renderer helper imports this module: no pydantic there (decision 0007)
    from ai_employee.model.services import LinkStatus


class Planner(ABC):
    name: ClassVar[str]
    #: True: `plan_local` is cheap and CPU-only, so the pipeline may plan inline during intake.
    local: ClassVar[bool] = False

    @abstractmethod
    async def plan(self, request: PlanRequest) -> PlanProposal: ...

    def plan_local(self, request: PlanRequest) -> PlanProposal:
        raise NotImplementedError(f"planner {self.name} is not local")

    def link(self) -> LinkStatus | None:
        """How the model API stood at the last call (`degraded` with the reason when it could not
        be reached); None for a planner with no API, or before its first call. Planners do not
        retry on their own: the next message is the next attempt."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients."""
