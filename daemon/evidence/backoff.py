"""How long a job waits after a round in which no provider delivered (DESIGN rule 2).

``base`` * 2^(tries-1), capped at ``cap``, then a random point in its upper half ("equal
jitter"): a thousand jobs that failed together do not all come back together, and the wait
never drops below half, so the pressure on a struggling provider still falls.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Past this many doublings every wait is the cap anyway; the bound keeps the power finite.
_MAX_DOUBLINGS = 40


@dataclass(frozen=True)
class Backoff:
    """One kind's retry settings: the first wait, and the longest it doubles up to."""

    base: float
    cap: float

    def seconds(self, tries: int, rng: random.Random) -> float:
        """The wait after the ``tries``-th failed round."""
        return backoff_seconds(tries, base=self.base, cap=self.cap, rng=rng)


def backoff_seconds(tries: int, *, base: float, cap: float, rng: random.Random) -> float:
    """The wait after the ``tries``-th failed round: base * 2^(tries-1), capped, then a random
    point in its upper half."""
    delay = min(cap, base * 2.0 ** min(max(tries - 1, 0), _MAX_DOUBLINGS))
    return delay / 2 + rng.uniform(0, delay / 2)
