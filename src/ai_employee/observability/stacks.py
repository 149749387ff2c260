"""`kill -USR1 PID`: what a daemon or worker is waiting on, written to its standard error.

A process that does not stop, or stops making progress, is diagnosed without a debugger: every
thread's stack (faulthandler) and every asyncio task's coroutine stack, which is where an `await`
that never returns shows. The dump runs at the loop's next turn: a loop blocked for good does not
answer (systemd's watchdog is for that case)."""

from __future__ import annotations

import asyncio
import faulthandler
import io
import signal
import sys


def install_stack_dump(loop: asyncio.AbstractEventLoop) -> None:
    """SIGUSR1 dumps the threads and the loop's tasks."""
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)


def dump_tasks() -> None:
    sys.stderr.write("--- stack dump (SIGUSR1): threads ---\n")
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(), key=lambda task: task.get_name())
    out.write(f"--- stack dump (SIGUSR1): {len(tasks)} asyncio tasks ---\n")
    for task in tasks:
        out.write(f"task {task.get_name()}:\n")
        task.print_stack(limit=12, file=out)
    sys.stderr.write(out.getvalue())
    sys.stderr.flush()
