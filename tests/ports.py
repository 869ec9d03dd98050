"""Port blocks handed out by the test harness, never hand-picked.

Why: the local target puts every component on ``PortMap(base)`` (base .. base+39 with the
platform's services), and tests used to pick a "block" each (22000, 23000, ...) by hand. Two
test sessions side by side (pytest-xdist workers, a second developer, CI next to a developer)
then fought over the same ports, and a new test had to find an unused number by reading all
the others. Here a block is taken only when

* no other process holds it: an exclusive ``flock`` on ``$TMPDIR/clinops-test-ports/<base>.lock``
  for as long as this process lives (the kernel drops it when the process dies, so a crashed
  session leaks nothing), and
* every port in it is free now: each is bound once on 127.0.0.1 (a process listening on
  0.0.0.0 or on loopback makes that bind fail).

Blocks lie below Linux's ephemeral range (32768+), so an outgoing connection's source port can
never take a port between the check and the component's start. The block of PortMap's default
base (17000, a developer's plain ``clinops up``) is never handed out.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from clinops_lib.config import PortMap

__all__ = ["BLOCK_SIZE", "PortAllocator", "PortBlock", "port_is_free"]

BLOCK_SIZE = 100
_FIRST_BASE = 10_000
_LAST_BASE = 32_000  # the block 32000-32099 ends below the ephemeral range (32768)
_RESERVED_BASES = frozenset({PortMap().base})


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``port`` (bound once on 127.0.0.1, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


@dataclass
class PortBlock:
    """``BLOCK_SIZE`` consecutive loopback ports owned by this process until it exits."""

    base: int
    size: int = BLOCK_SIZE
    _next: int = field(default=0, repr=False)

    @property
    def ports(self) -> range:
        return range(self.base, self.base + self.size)

    def portmap(self) -> PortMap:
        """The local target's layout on this block (uses base .. base+39)."""
        return PortMap(self.base)

    def port(self) -> int:
        """One more single port from the top of the block (for a test's own small servers)."""
        self._next += 1
        if self._next > self.size // 2:
            raise RuntimeError(f"port block {self.base}: more than {self.size // 2} single ports taken")
        return self.base + self.size - self._next


class PortAllocator:
    """Hands out free, exclusively locked port blocks to one test process."""

    def __init__(self, lock_dir: Path | None = None, seed: int | None = None) -> None:
        self._lock_dir = lock_dir or Path(tempfile.gettempdir()) / "clinops-test-ports"
        self._lock_dir.mkdir(mode=0o777, parents=True, exist_ok=True)
        self._held: dict[int, IO[bytes]] = {}
        bases = [b for b in range(_FIRST_BASE, _LAST_BASE + 1, BLOCK_SIZE) if b not in _RESERVED_BASES]
        # start at a different place per process: parallel sessions rarely try the same lock first
        start = random.Random(seed if seed is not None else os.getpid()).randrange(len(bases))
        self._candidates = bases[start:] + bases[:start]

    def block(self) -> PortBlock:
        """A block no other process holds and nothing listens on; raises when none is left."""
        while self._candidates:
            base = self._candidates.pop(0)
            lock = open(self._lock_dir / f"{base}.lock", "ab")  # noqa: SIM115 - held until exit
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            if all(port_is_free(p) for p in range(base, base + BLOCK_SIZE)):
                self._held[base] = lock
                return PortBlock(base)
            lock.close()  # something listens there: leave the block to whoever owns it
        raise RuntimeError(f"no free port block of {BLOCK_SIZE} between {_FIRST_BASE} and {_LAST_BASE}")

    def release(self, block: PortBlock) -> None:
        """Give a block back (to other processes; this one never hands a base out twice)."""
        lock = self._held.pop(block.base, None)
        if lock is not None:
            lock.close()

    def release_all(self) -> None:
        for lock in self._held.values():
            lock.close()
        self._held.clear()
