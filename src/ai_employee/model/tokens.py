"""Random parts of names and ids that must not collide but need not be secret.

`secrets` asks the kernel on every call: a syscall, and in a burst that is a hand-off of the GIL
per note, which the other threads make wait. These come from a generator seeded once from the
kernel (and again in a forked child). Secrets proper (the control port's token) use `secrets`.
"""

from __future__ import annotations

import os
import random

_random = random.Random(os.urandom(32))


def _reseed() -> None:
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def random_hex(nbytes: int) -> str:
    """`nbytes` random bytes as 2 * `nbytes` lowercase hex digits."""
    return f"{_random.getrandbits(nbytes * 8):0{nbytes * 2}x}"
