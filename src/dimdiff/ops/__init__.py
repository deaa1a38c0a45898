"""Linear operators and image measures: orthonormal pooling, DVDP components and their weighted
sums, linear combinations with per-sample coefficients, complexity."""

from dimdiff.ops.combine import linear_combination
from dimdiff.ops.complexity import complexity_map, complexity_score, gradient_magnitude
from dimdiff.ops.pool import (
    OrthonormalPool,
    component,
    components,
    components_low,
    mix_components,
    pool,
    project,
    project_complement,
    unpool,
)

__all__ = [
    "complexity_map",
    "complexity_score",
    "gradient_magnitude",
    "OrthonormalPool",
    "component",
    "components",
    "components_low",
    "linear_combination",
    "mix_components",
    "pool",
    "project",
    "project_complement",
    "unpool",
]
