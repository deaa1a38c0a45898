"""Linear combinations of image batches with per-sample coefficients.

Every process formula (a forward draw, a prediction target, an x0 estimate, a reverse step) is
a linear combination sum_m w_m x_m of batches x_m (B, ...) whose coefficients w_m are float64
numbers or (B,) vectors computed from the schedule. Writing them this way puts the arithmetic
on images in one place, so that two processes with the same coefficients give bit-identical
results, and lets a process with per-component coefficients (DVDP) combine whole images once
per level instead of splitting every input into its components (`pool.mix_components`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["batch_coefficient", "linear_combination", "is_zero", "Term"]

Term = tuple[Tensor, Tensor]  # (x of shape (B, ...), coefficient of shape (), (B,) or x's rank)


def batch_coefficient(c: Tensor, x: Tensor) -> Tensor:
    """A coefficient of shape () or (B,) -> broadcastable against x (B, ...), in x's dtype; one of x's rank
    (a coefficient per direction, e.g. (B, 1, h, w)) is taken as it is."""
    if c.ndim == 0:
        return c.to(x.dtype)
    if c.ndim == x.ndim:
        if torch.broadcast_shapes(c.shape, x.shape) != x.shape:
            raise ValueError(f"expected a coefficient that broadcasts to the batch's shape {tuple(x.shape)}, got "
                             f"{tuple(c.shape)}")  # fmt: skip
        return c.to(x.dtype)
    return c.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def is_zero(c: Tensor) -> bool:
    return not bool(c.any())


def linear_combination(terms: Sequence[Term]) -> Tensor:
    """sum_m w_m x_m, in the order given; a term whose coefficient is exactly 0 is skipped and one
    whose coefficient is exactly 1 is added without multiplying (both exact in floating point)."""
    if not terms:
        raise ValueError("expected at least one (tensor, coefficient) term, got none")
    shapes = {tuple(x.shape) for x, _ in terms}
    if len(shapes) > 1:  # never broadcast one batch against another of a different shape
        raise ValueError(f"expected terms of one shape, got shapes {sorted(shapes)}")
    total: Tensor | None = None
    for x, w in terms:
        if is_zero(w):
            continue
        part = x if bool((w == 1).all()) else batch_coefficient(w, x) * x
        total = part if total is None else total + part
    if total is None:  # every coefficient is 0
        x, w = terms[0]
        return batch_coefficient(w, x) * x
    return total
