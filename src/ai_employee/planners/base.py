"""The planner interface shared by `template`, `claude` and `openai`.

Planners only write plans: none of them has a way to change anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from ai_employee.model.plans import PlanProposal, PlanRequest


class Planner(ABC):
    name: ClassVar[str]
    #: True: `plan_local` is cheap and CPU-only, so the pipeline may plan inline during intake.
    local: ClassVar[bool] = False

    @abstractmethod
    async def plan(self, request: PlanRequest) -> PlanProposal: ...

    def plan_local(self, request: PlanRequest) -> PlanProposal:
        raise NotImplementedError(f"planner {self.name} is not local")

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients."""
