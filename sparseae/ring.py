"""The ring of Lipi-AE-S cells: neighbourhoods, selection, lr mutation.

ALGORITHM.md section 5: cell ``c`` of ``N`` sees the centres at ring distance
up to ``r``; an encoder's fitness is its best L1 over the neighbourhood's
decoders; a size-2 tournament picks the pair that trains; the cell's learning
rate takes a Gaussian step after every epoch.
"""

from __future__ import annotations

import numpy as np

#: Bounds of a cell's mutated learning rate.
LR_MIN, LR_MAX = 1e-9, 10.0


def neighbourhood(cell: int, n_cells: int, radius: int) -> np.ndarray:
    """Centre indices of a cell's neighbourhood: itself, then distance 1..r
    left and right (``[c, c-1, c+1, c-2, c+2, ...]`` modulo the ring)."""
    idx = [cell]
    for d in range(1, radius + 1):
        idx += [(cell - d) % n_cells, (cell + d) % n_cells]
    return np.array(idx, np.int64)


def best_case_fitness(losses: np.ndarray) -> np.ndarray:
    """An encoder's fitness: its lowest loss over all decoders (rows = encoders)."""
    return losses.min(axis=1)


def tournament(fitness: np.ndarray, rng: np.random.Generator) -> int:
    """Size-2 tournament with replacement: the lower fitness wins, ties go to the second draw."""
    a, b = rng.integers(0, fitness.shape[0], 2)
    return int(a) if fitness[a] < fitness[b] else int(b)


def mutate_lr(lr: float, sigma: float, rng: np.random.Generator) -> float:
    """``lr + N(0, sigma)`` (drawn from ``rng``: the cell's Generator), clipped to [LR_MIN, LR_MAX]."""
    return float(np.clip(lr + rng.normal(0.0, sigma), LR_MIN, LR_MAX))


def waves(order, n_cells: int, radius: int) -> list:
    """The visiting ``order`` split into waves of cells that can run together.

    Two cells conflict when either's neighbourhood holds the other: one reads
    a centre the other replaces.  A cell's wave is one after the latest wave
    holding an earlier-visited cell it conflicts with (the first wave when
    there is none); each wave lists its cells in visiting order.  Running the
    waves in turn gives every cell the centres it would see in the sequential
    order: each conflicting cell visited before it has finished, each visited
    after it has not started, and no other cell touches what it reads or
    writes.  So with a Generator per cell the results equal the sequential
    visit, bit for bit.
    """
    near = [set(neighbourhood(c, n_cells, radius).tolist()) for c in range(n_cells)]
    level: dict = {}
    out: list = []
    for c in (int(x) for x in order):
        lv = 1 + max((level[a] for a in level if a in near[c] or c in near[a]), default=-1)
        level[c] = lv
        if lv == len(out):
            out.append([])
        out[lv].append(c)
    return out
