"""The refiner: a small image-space network that removes a patch codec's blocking artefacts after decoding.

    x_refined = x_hat + f(x_hat)        x_hat = the codec's decoded image, f a residual CNN of 3 x 3 convolutions

f's last convolution starts at zero, so an untrained refiner is the identity. It is fitted on
(decode(encode(x)), x) pairs of training images by mean squared error, seeded, after the codebooks; its
weights are part of the codec's state (``refiner.*`` tensors), so they are saved and restored with it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["Refiner", "fit_refiner"]

REFINER_LR = 1e-3  # Adam's step size
REFINER_BATCH = 32  # image pairs per step


class Refiner(nn.Module):
    def __init__(self, channels: int, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1)]
        for _ in range(depth - 2):
            layers += [nn.SiLU(), nn.Conv2d(width, width, 3, padding=1)]
        layers += [nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)  # the identity until trained
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x_hat: Tensor) -> Tensor:
        return x_hat + self.body(x_hat)  # (B, C, H, W)


def fit_refiner(decoded: Tensor, clean: Tensor, *, width: int, depth: int, steps: int, seed: int,
                progress: Callable[[str], None] | None = None) -> Refiner:  # fmt: skip
    """A refiner trained for ``steps`` Adam steps on random batches of the pairs (decoded[i], clean[i])."""
    say = progress or (lambda _: None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        refiner = Refiner(clean.shape[1], width, depth)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=REFINER_LR)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        pick = torch.randint(len(clean), (min(REFINER_BATCH, len(clean)),), generator=generator)
        loss = (refiner(decoded[pick]) - clean[pick]).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % max(1, steps // 4) == 0 or step + 1 == steps:
            say(f"refiner step {step + 1}/{steps}: mse {loss.item():.5f}")
    return refiner.eval().requires_grad_(False)
