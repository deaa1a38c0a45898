"""Linear operators and image measures: orthonormal pooling, DVDP components, complexity."""

from dimdiff.ops.complexity import complexity_map, complexity_score, gradient_magnitude
from dimdiff.ops.pool import (
    OrthonormalPool,
    component,
    components,
    components_low,
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
    "pool",
    "project",
    "project_complement",
    "unpool",
]
