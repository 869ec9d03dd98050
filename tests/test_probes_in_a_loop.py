"""Health probes behave the same inside a running event loop (a Jupyter kernel's cell) as outside.

Regression: the Kafka probes called ``asyncio.run``, which raises inside a running loop; the
exception read as "not healthy yet", so every runbook that brought Kafka up timed out after
120 s while every pytest run (no loop) passed.
"""

from __future__ import annotations

import asyncio

import pytest

from clinops_lib.targets.local.components import run_coroutine

pytestmark = pytest.mark.unit


async def _answer(value: int) -> int:
    await asyncio.sleep(0)
    return value


def test_run_coroutine_works_with_and_without_a_running_loop() -> None:
    assert run_coroutine(lambda: _answer(1), 5) == 1

    async def inside_a_cell() -> int:  # what a kernel cell is: synchronous code under a running loop
        return run_coroutine(lambda: _answer(2), 5)

    assert asyncio.run(inside_a_cell()) == 2


def test_run_coroutine_times_out() -> None:
    with pytest.raises(TimeoutError):
        run_coroutine(lambda: asyncio.sleep(5), 0.05)
