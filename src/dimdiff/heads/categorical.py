"""The categorical head: on the code grid of a quantized codec, the network outputs logits over each
codebook's K_q words at every position, instead of a continuous estimate.

    output (B, M_q K_q, h, w)  ->  logits l (B, M_q, K_q, h, w)
    p = (1 - gamma_s) softmax(l / temperature) + gamma_s / K_q        per position and codebook
    choice  argmax:  y_hat = argmax_k p        draw: y_hat ~ p (seeded)        mean: z0_hat = sum_k p_k z(k)
    z0_hat = 2 y_hat / (K_q - 1) - 1           (the codes as the latent the process runs on)

Sampling hands z0_hat to the process's DDPM or DDIM step (eps_hat = (z_t - alpha_t z0_hat) / sigma_t is
implicit in it), so the categorical reverse process runs on every sampler. Training:

    loss = CE(l, y; label smoothing)  +  image_loss_weight * mean((D(g) - D(y))^2)
    g = GumbelSoftmax(l, tau_G) (a relaxed one-hot), D(.) = the codec's decode of a word mix

y = the true (sorted) codes of z0. The image term compares the decode of the relaxed draw with the
decode of the true codes, which is differentiable through g; tau_G -> 0 makes D(g) the hard decode of a
draw. Logits cost M_q K_q values per position: (B, M_q K_q, h, w) float32 is 4 B M_q K_q h w bytes.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dimdiff.codecs.quantized import QuantizedCodec, codes_to_unit, unit_to_codes
from dimdiff.heads.base import LossParts
from dimdiff.process.base import DiffusionProcess

__all__ = ["CategoricalHead", "CodeChoice", "code_probabilities"]


class CodeChoice(str, enum.Enum):
    ARGMAX = "argmax"  # the most probable word at each position
    DRAW = "draw"  # a word drawn from the (tempered, smoothed) distribution, seeded by the sampler's generator
    MEAN = "mean"  # the expected latent sum_k p_k z(k) (not a code: the next step rounds nothing)


def code_probabilities(logits: Tensor, temperature: float = 1.0, smoothing: float = 0.0) -> Tensor:
    """p (B, M_q, K_q, h, w) = (1 - smoothing) softmax(logits / temperature) + smoothing / K_q over the words."""
    p = torch.softmax(logits.float() / temperature, dim=2)
    return (1 - smoothing) * p + smoothing / logits.shape[2] if smoothing else p


@dataclass(frozen=True)
class CategoricalHead:
    codec: QuantizedCodec  # fitted: K_q, M_q and the words for the image-space term
    label_smoothing: float = 0.0  # of the cross-entropy
    image_loss_weight: float = 0.0  # weight of the image-space term (0 = cross-entropy only)
    gumbel_temperature: float = 1.0  # tau_G of the Gumbel-softmax relaxation in the image-space term
    choice: CodeChoice = CodeChoice.ARGMAX  # how sampling turns the distribution into z0_hat
    temperature: float = 1.0  # of the softmax when sampling
    smoothing: float = 0.0  # gamma_s: mix of the predicted distribution with the uniform one when sampling
    generator: torch.Generator | None = None  # draws' randomness where the sampler hands the head none

    @property
    def codebook_size(self) -> int:
        return self.codec.options.codebook_size

    def output_shape(self, target_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        m, h, w = target_shape
        return (m * self.codebook_size, h, w)

    def with_sampling(self, sample: Any, generator: torch.Generator | None = None) -> CategoricalHead:
        """This head with a sample config's choice, temperature and smoothing (``sample.code_*``), drawing from
        ``generator`` (the sampling run's: samplers do not pass theirs to the denoiser)."""
        return dataclasses.replace(self, choice=sample.code_choice, temperature=sample.code_temperature,
                                   smoothing=sample.code_smoothing, generator=generator)  # fmt: skip

    def logits(self, output: Tensor) -> Tensor:
        b, c, h, w = output.shape
        return output.reshape(b, c // self.codebook_size, self.codebook_size, h, w)  # (B, M_q, K_q, h, w)

    def x0_estimate(self, process: DiffusionProcess, x_t: Tensor, output: Tensor, t: Tensor, *,
                    generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        p = code_probabilities(self.logits(output), self.temperature, self.smoothing)  # (B, M, K, h, w)
        k = self.codebook_size
        if self.choice is CodeChoice.MEAN:
            return torch.einsum("bmkhw,k->bmhw", p, codes_to_unit(torch.arange(k, device=p.device), k))
        if self.choice is CodeChoice.ARGMAX:
            return codes_to_unit(p.argmax(dim=2), k)
        flat = p.permute(0, 1, 3, 4, 2).reshape(-1, k)  # (B M h w, K)
        y = torch.multinomial(flat, 1, generator=generator or self.generator)  # (B M h w, 1)
        return codes_to_unit(y.reshape(p.shape[0], p.shape[1], *p.shape[3:]), k)

    def loss(self, process: DiffusionProcess, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor,
             output: Tensor) -> tuple[Tensor, LossParts]:  # fmt: skip
        y = unit_to_codes(x0, self.codebook_size)  # (B, M, h, w): the true codes
        logits = self.logits(output)  # (B, M, K, h, w)
        ce = F.cross_entropy(logits.transpose(1, 2), y, label_smoothing=self.label_smoothing)
        parts = {"ce": float(ce.detach())}
        if self.image_loss_weight <= 0:
            return ce, parts
        relaxed = F.gumbel_softmax(logits, tau=self.gumbel_temperature, dim=2)  # (B, M, K, h, w), global RNG
        target = self.codec.images_from_weights(F.one_hot(y, self.codebook_size).movedim(-1, 2).float())
        image_mse = (self.codec.images_from_weights(relaxed) - target).pow(2).mean()
        parts["image_mse"] = float(image_mse.detach())
        return ce + self.image_loss_weight * image_mse, parts
