"""The seven pruning-probability schedules p(t) (ALGORITHM.md section 4).

``t`` is the epoch index from 0, ``T`` the final epoch and ``n`` the
neighbourhood size, all passed explicitly.  With ``T <= 0`` (a one-epoch
coevolution run) the run is taken as finished (t/T = 1) instead of dividing by
zero as the reference does.
"""

from __future__ import annotations

import math

from sparseae.errors import ConfigError


def _progress(t: int, T: int) -> float:
    return 1.0 if T <= 0 else t / T


def fixed(p0, t, T, n=1):
    return p0


def increase(p0, t, T, n=1):
    return p0 * _progress(t, T)


def decrease(p0, t, T, n=1):
    # starts at 1, not p0: the reference's behaviour, kept in both profiles
    return 1.0 - p0 * _progress(t, T)


def population(p0, t, T, n=1):
    return p0 * _progress(t, T) / n


def exponential(p0, t, T, n=1):
    return p0 * (1.0 - math.exp(-2.0 * _progress(t, T)))


def final_n(p0, t, T, n=1):
    return p0 if t >= 0.75 * T else 0.0


def prune_after(p0, t, T, n=1):
    return p0 if t >= T else 0.0


SCHEDULES = {
    "fixed": fixed,
    "increase": increase,
    "decrease": decrease,
    "population": population,
    "exponential": exponential,
    "final_n": final_n,
    "prune_after": prune_after,
}


def probability(name: str, p0: float, t: int, T: int, n: int = 1) -> float:
    """p(t) of schedule ``name``."""
    try:
        fn = SCHEDULES[name]
    except KeyError:
        raise ConfigError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {name!r}") from None
    return fn(p0, t, T, n)
