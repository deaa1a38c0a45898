"""A resumable, seeded stream of training batches, sharded across ranks.

Epoch e visits the permutation ``randperm(N, seed + e)``; rank r takes every world_size-th
index of it and cuts its share into batches (the incomplete tail is dropped). The stream's
whole state is (epoch, batch index), so a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = ["BatchStream"]


@dataclass
class BatchStream:
    dataset: Dataset
    batch_size: int  # per rank
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    epoch: int = 0
    index: int = 0  # next batch within the epoch

    def __post_init__(self) -> None:
        if self.batches_per_epoch() < 1:
            raise ValueError(
                f"the dataset has {len(self.dataset)} images: expected at least "
                f"{self.batch_size * self.world_size} for one batch of {self.batch_size} on each of "
                f"{self.world_size} process(es); lower train.batch_size"
            )

    def batches_per_epoch(self) -> int:
        return (len(self.dataset) // self.world_size) // self.batch_size

    def _epoch_batches(self, epoch: int) -> list[Tensor]:
        perm = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + epoch))
        share = perm[self.rank :: self.world_size]
        n = self.batches_per_epoch()
        return list(share[: n * self.batch_size].reshape(n, self.batch_size))

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])

    def __iter__(self) -> Iterator[Tensor]:
        tensor = getattr(self.dataset, "tensor", None)
        while True:
            batches = self._epoch_batches(self.epoch)[self.index :]
            if tensor is not None:
                source = (tensor[idx] for idx in batches)
            else:
                sampler = [b.tolist() for b in batches]
                # the loader's own generator keeps its worker seeds off the global RNG (dropout's stream)
                loader_rng = torch.Generator().manual_seed(self.seed + self.epoch)
                source = iter(DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                                         generator=loader_rng))
            for batch in source:
                self.index += 1
                yield batch
            self.epoch, self.index = self.epoch + 1, 0
