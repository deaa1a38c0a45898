"""What a network is to the rest of dimdiff: x_t and t in, an output of the size it is asked for.

    net(x, t, *, out_size=None) -> output    x (B, C_in, h, w); t (B,) float32 in [0, 1];
                                             output (B, C_out, *out_size), contiguous NCHW, or
                                             at the net's one output size for that input when
                                             out_size is None
    net.out_sizes((h, w)) -> ((h', w'), ...) the output sizes it supports for an input of size (h, w);
                                             () where it does not take such an input

A network knows nothing about noise (the denoiser and the head do, `nets.denoiser`). It is told the
size it must output because a process whose dimension changes may ask for an x0 estimate at another
resolution than the state's; the denoiser passes the size the head expects. An out_size or an input
size the net does not support is a ValueError that says what was expected and what was received.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Net", "Size"]

Size = tuple[int, int]  # (height, width)


@runtime_checkable
class Net(Protocol):
    def __call__(self, x: Tensor, t: Tensor, *, out_size: Size | None = None) -> Tensor:
        """The output (B, C_out, *out_size) for x (B, C_in, h, w) at times t (B,)."""
        ...

    def out_sizes(self, in_size: Size) -> tuple[Size, ...]:
        """The output sizes supported for an input of size in_size = (h, w), () if none."""
        ...
