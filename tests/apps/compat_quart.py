"""A Quart app with a background task (see compat_lifespan.py)."""

import asyncio

from compat_lifespan import record
from quart import Quart

# Quart: add_background_task; Quart's shutdown awaits these tasks (for up to
# BACKGROUND_TASK_SHUTDOWN_TIMEOUT, 5 s) before it cancels them.

quart_app = Quart(__name__)


async def slow_background_job() -> None:
    await asyncio.sleep(1.0)
    record("background job finished")


@quart_app.route("/schedule")
async def schedule():
    quart_app.add_background_task(slow_background_job)
    return "scheduled"
