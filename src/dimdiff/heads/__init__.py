"""Heads: what a denoiser's network outputs, how it becomes an x0 estimate, and the training loss.

A head is the part of a denoiser that knows the network's output format (`base.Head`). The
regression head reads eps, x0 or v and trains with a weighted squared error; a head with another
output (logits over a codebook, say) plugs in as one more module and one more row of
`build.HEADS`, without touching the trainer, the samplers or the bench.
"""

import enum

from dimdiff.heads.base import Head, LossParts
from dimdiff.heads.categorical import CategoricalHead, CodeChoice
from dimdiff.heads.regression import LossWeighting, RegressionHead, diffusion_loss, loss_weight

__all__ = ["CategoricalHead", "CodeChoice", "Head", "HeadKind", "LossParts", "LossWeighting", "RegressionHead",
           "diffusion_loss", "loss_weight"]  # fmt: skip


class HeadKind(str, enum.Enum):
    REGRESSION = "regression"  # eps, x0 or v (process.parameterization), a weighted squared error
    CATEGORICAL = "categorical"  # logits over a quantized codec's words, cross-entropy
