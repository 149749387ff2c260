"""The workers as a service of the daemon (`workers` in `status`): healthy while the work has
someone to do it. Unhealthy when Redis cannot be reached, when a worker stopped heartbeating
without leaving (killed), when jobs wait and no worker is up, when a step's lag reaches
`bus.lag_alert`, and for one round when a dead letter arrives. The orchestrator turns a change
into `health.changed` on the bus (and `degraded` in `status`): what a supervisor alerts on."""

from __future__ import annotations

import asyncio

from ai_employee.bus.redis_work import RedisWork
from ai_employee.config import BusSettings
from ai_employee.model.services import HealthReport, Service

#: a worker silent longer than this counts as gone, no longer as just died (status still lists it)
RECENTLY_DIED_SECONDS = 300.0


class WorkersService(Service):
    name = "workers"
    required = False

    def __init__(self, work: RedisWork, settings: BusSettings) -> None:
        super().__init__()
        self.work = work
        self.settings = settings
        self._stopping = asyncio.Event()
        self._dead_seen: int | None = None

    async def run(self) -> None:
        self._stopping.clear()
        self.ready.set()
        await self._stopping.wait()  # the work's own loops run in RedisWork

    async def stop(self) -> None:
        self._stopping.set()

    async def health(self) -> HealthReport:
        status = self.work.status() or {}
        troubles: list[str] = []
        redis = str(status.get("redis", ""))
        if redis != "up":
            troubles.append(f"redis {redis}")
        workers = status.get("workers", [])
        up = [worker for worker in workers if worker.get("up")]
        died = [
            f"{worker['host']}:{worker['pid']}"
            for worker in workers
            if not worker.get("up") and float(worker.get("last_heartbeat", 0)) <= RECENTLY_DIED_SECONDS
        ]
        if died:
            troubles.append(f"worker {', '.join(died)} stopped heartbeating")
        streams = status.get("streams", {})
        waiting = sum(
            int(stream.get("lag", 0)) + int(stream.get("pending", 0)) for stream in streams.values()
        )
        if not up and (waiting or status.get("in_flight")):
            troubles.append(f"no worker is up; {waiting or status.get('in_flight')} jobs wait")
        for step, stream in sorted(streams.items()):
            if int(stream.get("lag", 0)) >= self.settings.lag_alert:
                troubles.append(f"{step} lag {stream['lag']} (bus.lag_alert {self.settings.lag_alert})")
        dead = int((status.get("dead_letters") or {}).get("count", 0))
        if self._dead_seen is not None and dead > self._dead_seen:
            troubles.append(f"{dead - self._dead_seen} new dead letter(s), {dead} in all")
        self._dead_seen = dead
        detail = "; ".join(troubles) or f"{len(up)} worker(s) up"
        return HealthReport(
            healthy=not troubles,
            detail=detail,
            data={"workers_up": len(up), "waiting": waiting, "dead_letters": dead},
        )
