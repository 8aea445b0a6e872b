"""Background tasks that cannot die silently: one that raises is logged with its traceback and
started again after a back-off; while it is down, `problems()` names it (for /healthz and the
heartbeat)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from execution_service.domain.backoff import Backoff

logger = logging.getLogger(__name__)
HEALTHY_AFTER_SECONDS = 30.0  # a task that ran this long without failing starts over at 1


class TaskSupervisor:
    def __init__(self, backoff_base: float = 0.5, backoff_cap: float = 30.0) -> None:
        self._backoff = Backoff(backoff_base, backoff_cap)
        self._tasks: dict[str, asyncio.Task] = {}
        # name -> why it is down; replaced whole, never mutated: the metrics thread reads it
        self.down: dict[str, str] = {}
        self.restarts: dict[str, int] = {}

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task:
        task = asyncio.create_task(self._keep(name, run), name=name)
        self._tasks[name] = task
        return task

    def problems(self) -> list[str]:
        return [f"task {name} down: {why}" for name, why in sorted(self.down.items())]

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever it was, the task comes back
                if loop.time() - started >= HEALTHY_AFTER_SECONDS:
                    failures = 0
                failures += 1
                wait = self._backoff.after(failures)
                self.down = {**self.down, name: f"{type(e).__name__}: {e}"}
                self.restarts = {**self.restarts, name: self.restarts.get(name, 0) + 1}
                logger.exception("Background task %s failed; restarting in %.1fs", name, wait)
                await asyncio.sleep(wait)
                self.down = {key: why for key, why in self.down.items() if key != name}
                logger.info("Background task %s restarted", name)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
