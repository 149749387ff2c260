"""`python -m bench.whatsapp_webhook`: how fast the WhatsApp webhook answers Meta, and how fast
the spool turns text deliveries into actions (issue 20: "the answer comes within a second,
whatever the rest of the pipeline is doing").

In one process: the real `ControlServer` with the real `WhatsAppService` behind it, signed
deliveries POSTed over loopback by httpx (sequentially, then from several clients at once).

1. `answer, intake stuck`: the intake never returns (a pipeline under load); every delivery must
   still be answered 200 after its durable spool write. Latency per POST.
2. `drain`: the intake is released (an in-memory sink); time until every spooled delivery is an
   action: the worker's throughput for text messages (no media, no Graph API: replies fail fast
   against a closed port and do not count).

Figures go to docs/performance.md ("WhatsApp webhook").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import structlog

from ai_employee.bus.inprocess import InProcessEventBus
from ai_employee.config import load_settings
from ai_employee.control.server import ControlServer
from ai_employee.model.messages import IncomingMessage
from ai_employee.model.services import ServiceContext
from ai_employee.observability.logging import configure_logging
from ai_employee.observability.metrics import Metrics
from ai_employee.sources.whatsapp import WEBHOOK_PATH, WhatsAppService
from ai_employee.sources.whatsapp_wire import sign
from tests.fakes.common import MemoryStore, NoActions, NoApprovals, ReadyHooks

SECRET = "bench-app-secret"
NUMBER = "4915112345678"


class _Sink:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.refs: set[str] = set()

    async def submit(self, message: IncomingMessage) -> str:
        await self.gate.wait()
        self.refs.add(message.source_ref)
        return f"act-bench-{len(self.refs):06d}"


def _delivery(n: int) -> bytes:
    message = {
        "from": NUMBER,
        "id": f"wamid.bench{n:08d}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": f"Pump {n} on line 2 is leaking oil"},
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550100", "phone_number_id": "1065"},
        "contacts": [{"profile": {"name": "Bench"}, "wa_id": NUMBER}],
        "messages": [message],
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(at(0.99), 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def _post_all(url: str, bodies: list[bytes], clients: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def client() -> None:
        async with httpx.AsyncClient() as http:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                response = await http.post(
                    url, content=body, headers={"X-Hub-Signature-256": sign(SECRET.encode(), body)}
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"answered {response.status_code}: {response.text}")

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - began


async def run(deliveries: int, clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aie-bench-whatsapp-") as folder:
        vault = Path(folder)
        bus = InProcessEventBus()
        await bus.start()
        control = ControlServer(ReadyHooks(), Metrics(process_metrics=False), port=0, token="bench")
        port = await control.start()
        sink = _Sink()
        environ = {
            "WHATSAPP_ACCESS_TOKEN": "bench-token",
            "WHATSAPP_PHONE_NUMBER_ID": "1065",
            "WHATSAPP_APP_SECRET": SECRET,
            "WHATSAPP_VERIFY_TOKEN": "bench-verify",
            "WHATSAPP_ALLOWED_NUMBERS": NUMBER,
            "WHATSAPP_API_BASE_URL": "http://127.0.0.1:9/v27.0",  # nothing listens: replies fail fast
        }
        settings = load_settings(environ=environ, overrides={("services", "max_backoff"): 60.0})
        context = ServiceContext(
            settings=settings,
            bus=bus,
            intake=sink,
            vault_root=vault,
            state=MemoryStore(),
            approvals=NoApprovals(),
            routes=control,
            actions=NoActions(),
        )
        service = WhatsAppService(context, transcriber_factory=lambda: None)
        task = asyncio.create_task(service.run())
        await service.ready.wait()
        url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        results: dict[str, Any] = {"deliveries": deliveries, "clients": clients}
        try:
            sequential, _ = await _post_all(url, [_delivery(n) for n in range(deliveries)], 1)
            results["answer_stuck_sequential"] = _percentiles(sequential)
            concurrent, seconds = await _post_all(
                url, [_delivery(deliveries + n) for n in range(deliveries)], clients
            )
            results["answer_stuck_concurrent"] = {
                **_percentiles(concurrent),
                "deliveries_per_second": round(deliveries / seconds),
            }
            began = time.perf_counter()
            sink.gate.set()
            while len(sink.refs) < 2 * deliveries:
                await asyncio.sleep(0.005)
            drained = time.perf_counter() - began
            results["drain"] = {
                "seconds": round(drained, 2),
                "actions_per_second": round(2 * deliveries / drained),
            }
        finally:
            await service.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await control.stop()
            await bus.close()
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.whatsapp_webhook", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--deliveries", type=int, default=500, help="deliveries per phase (default 500)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent senders in the second phase")
    args = parser.parse_args(argv)
    configure_logging("error", "console")
    structlog.get_logger("bench").info("whatsapp webhook bench")
    print(json.dumps(asyncio.run(run(args.deliveries, args.clients)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
