"""The papermill engine ``clinops``: papermill's nbclient engine plus an orderly interruption.

Why an engine of our own (papermill's engine registry is the seam for this): a signal to
``clinops run`` must never leave a half-done runbook behind. Python's default handlers kill
the runner at once (SIGTERM, SIGHUP) or raise KeyboardInterrupt wherever it happens to be
(SIGINT), and the kernel — started in a session of its own, so a terminal's Ctrl-C never
reaches it — then dies with its parent in the middle of a cell: a drill's canary keeps its
share of live traffic and no bundle says what happened. Here:

1. :class:`Interruption` (a context manager around the execution) turns SIGTERM, SIGINT and
   SIGHUP into a request: it remembers the first signal and the cell that was running, and
   interrupts the kernel (SIGINT to the kernel process, i.e. ``KeyboardInterrupt`` inside
   the cell), so the cell's own clean-up runs — a drill's abort path puts all traffic back on
   stable and stops the canary. Further signals only repeat that the abort is under way.
2. The engine's client checks the request before every cell: no cell starts after a signal,
   even when the interrupted cell swallowed the KeyboardInterrupt.
3. When the kernel does not finish the interrupted cell within ``grace_s``, it is killed.

The runner then seals a FAILED bundle saying "interrupted by signal N at cell K" and exits
128 + N.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

__all__ = ["ENGINE_NAME", "HANDLED_SIGNALS", "Interruption", "register"]

ENGINE_NAME = "clinops"
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class Interruption:
    """The state of one execution: which cell runs, whether (and by which signal) to stop."""

    grace_s: float = 120.0
    signum: int | None = None
    cell_index: int | None = None  # index in the executed notebook (the injected cell included)
    cells_started: int = 0
    _client: Any = field(default=None, repr=False)
    _killer: threading.Timer | None = field(default=None, repr=False)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    # called by the engine's client
    def attach(self, client: Any) -> None:
        self._client = client

    def cell_starts(self, index: int) -> bool:
        """Record the running cell; False when a signal came and no further cell may start."""
        if self.requested:
            return False
        self.cell_index = index
        self.cells_started += 1
        return True

    # signal handling
    def _kernel_process(self) -> Any:
        km = getattr(self._client, "km", None)
        provisioner = getattr(km, "provisioner", None)
        return getattr(provisioner, "process", None)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested:
            print(f"clinops: signal {signum} again: the abort is under way (kernel killed after "
                  f"{self.grace_s:.0f}s at the latest)", flush=True)
            return
        self.signum = signum
        where = f"cell {self.cell_index}" if self.cell_index is not None else "start-up"
        print(f"clinops: signal {signum} at {where}: interrupting the kernel, then sealing the evidence",
              flush=True)
        proc = self._kernel_process()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # KeyboardInterrupt in the cell: its clean-up runs
            self._killer = threading.Timer(self.grace_s, self._kill_kernel)
            self._killer.daemon = True
            self._killer.start()

    def _kill_kernel(self) -> None:
        proc = self._kernel_process()
        if proc is not None and proc.poll() is None:
            print(f"clinops: the kernel did not stop within {self.grace_s:.0f}s of the interrupt; killing it",
                  flush=True)
            proc.kill()

    @contextmanager
    def handling_signals(self) -> Iterator[Interruption]:
        """Install the handlers (main thread only) for the duration of the block, then restore."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in HANDLED_SIGNALS}
        try:
            yield self
        finally:
            if self._killer is not None:
                self._killer.cancel()
            for s, h in previous.items():
                signal.signal(s, h)

    def wait_for_kernel_exit(self, timeout: float = 10.0) -> None:
        """After execution: the kernel process must be gone (it is killed when it lingers)."""
        proc = self._kernel_process()
        if proc is None:
            return
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()


def register(interruption: Interruption) -> str:
    """Register the engine for this execution; returns the engine name to pass to papermill."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines

    class _Client(PapermillNotebookClient):  # type: ignore[misc]
        def papermill_execute_cells(self) -> None:
            from nbclient.exceptions import CellExecutionError

            interruption.attach(self)
            for index, cell in enumerate(self.nb.cells):
                if not interruption.cell_starts(index):
                    break
                try:
                    self.nb_man.cell_start(cell, index)
                    self.execute_cell(cell, index)
                except CellExecutionError as ex:
                    self.nb_man.cell_exception(self.nb.cells[index], cell_index=index, exception=ex)
                    break
                finally:
                    self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)

    class _Engine(NBClientEngine):  # type: ignore[misc]
        """papermill's NBClientEngine.execute_managed_notebook, with :class:`_Client`."""

        @classmethod
        def execute_managed_notebook(
            cls,
            nb_man: Any,
            kernel_name: str,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: int = 60,
            execution_timeout: int | None = None,
            **kwargs: Any,
        ) -> Any:
            from papermill.log import logger
            from papermill.utils import merge_kwargs, remove_args

            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs,
                timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logger,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            return _Client(nb_man, **final_kwargs).execute()

    papermill_engines.register(ENGINE_NAME, _Engine)
    return ENGINE_NAME
