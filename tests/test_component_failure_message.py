"""A component that dies at start says why in the error itself, not only where its log was.

The defect this pins: CI reported ``kafka: exited before it was healthy (... process 22056 exited)
(log: /tmp/clinops-g-.../kafka.log)``; the state directory went with CI's machine, so the cause
could not be read afterwards. The error now carries the exit status and the last lines of the log.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clinops_lib.exceptions import ComponentError
from clinops_lib.targets.local import supervisor as sup


@pytest.mark.unit
def test_a_component_that_exits_at_start_names_its_status_and_its_last_log_lines(tmp_path: Path) -> None:
    script = ("import sys\n"
              "for i in range(40): print(f'line {i}')\n"
              "print('FATAL Address already in use: bind 127.0.0.1:23205', flush=True)\n"
              "sys.exit(3)\n")
    spec = sup.ProcessSpec("dies", [sys.executable, "-c", script], tmp_path / "dies.log",
                           tmp_path / "dies.pid")
    proc = sup.start(spec)
    try:
        with pytest.raises(ComponentError) as err:
            sup.wait_healthy(proc, lambda: False, 60, "health check at nowhere")
    finally:
        sup.stop(proc, timeout=10)
    message = str(err.value)
    assert "exited before it was healthy" in message and "with status 3" in message, message
    assert "FATAL Address already in use: bind 127.0.0.1:23205" in message, message
    assert "line 39" in message and "line 10\n" not in message, "a tail, not the whole log"
    assert "dies.log" in message


@pytest.mark.unit
def test_the_log_tail_is_bounded_and_empty_or_missing_logs_say_so(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("x" * 200_000 + "\n" + "last line\n")
    tail = sup.log_tail(log)
    assert tail.endswith("last line") and len(tail) < 3100
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert sup.log_tail(empty) == "; its log is empty"
    assert sup.log_tail(tmp_path / "missing.log") == ""
    assert sup.log_tail(None) == ""
