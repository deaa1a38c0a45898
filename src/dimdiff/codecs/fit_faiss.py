"""Training the quantizers' codebooks with faiss (k-means; OPQ's rotation), returned as a `Quantizer` of plain
tensors. faiss is imported only here and only when a codec is fitted: a fitted codec encodes, decodes and
loads without it. Every fit is seeded; faiss gets float32 (n, D) arrays.

    VQ    faiss.Kmeans: one codebook of K_q words over the whole vector
    PQ    faiss.ProductQuantizer: M_q codebooks, one per sub-vector of length D / M_q
    OPQ   faiss.OPQMatrix learns the rotation R (alternating with PQ training), then PQ on R v
    RQ    faiss.ResidualQuantizer: M_q stages, each trained on the previous stages' residuals
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch

from dimdiff.codecs.quantizer import Quantizer, Structure

__all__ = ["fit_vq", "fit_pq", "fit_opq", "fit_rq"]

Progress = Callable[[str], None]


def _faiss(kind: str) -> ModuleType:
    try:
        import faiss
    except ImportError as e:  # a fitted codec never needs it
        raise RuntimeError(f"fitting a {kind} codec needs faiss, which is not installed: pip install faiss-cpu "
                           f"(loading and using an already fitted codec does not need it)") from e  # fmt: skip
    return faiss


def _codebook_size_bits(codebook_size: int) -> int:
    return int(codebook_size).bit_length() - 1  # K_q = 2^b_q (checked by the options)


def _clustering(cp: object, seed: int, iterations: int) -> None:
    cp.seed, cp.niter, cp.verbose = seed, iterations, False
    cp.min_points_per_centroid = 1  # small training sets are the user's choice, not a warning per codebook


def fit_vq(v: np.ndarray, num_codebooks: int, codebook_size: int, seed: int, iterations: int,
           beam_size: int = 1, progress: Progress | None = None) -> Quantizer:  # fmt: skip
    faiss = _faiss("vq")
    kmeans = faiss.Kmeans(v.shape[1], codebook_size, niter=iterations, seed=seed, verbose=False,
                          min_points_per_centroid=1)  # fmt: skip
    kmeans.train(v)
    return Quantizer(Structure.PRODUCT, torch.from_numpy(kmeans.centroids.copy())[None])


def _product(faiss: ModuleType, d: int, num_codebooks: int, codebook_size: int, seed: int, iterations: int) -> object:
    pq = faiss.ProductQuantizer(d, num_codebooks, _codebook_size_bits(codebook_size))
    _clustering(pq.cp, seed, iterations)
    return pq


def _product_codebooks(faiss: ModuleType, pq: object) -> torch.Tensor:
    return torch.from_numpy(faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub).copy())


def fit_pq(v: np.ndarray, num_codebooks: int, codebook_size: int, seed: int, iterations: int,
           beam_size: int = 1, progress: Progress | None = None) -> Quantizer:  # fmt: skip
    faiss = _faiss("pq")
    pq = _product(faiss, v.shape[1], num_codebooks, codebook_size, seed, iterations)
    pq.train(v)
    return Quantizer(Structure.PRODUCT, _product_codebooks(faiss, pq))


def fit_opq(v: np.ndarray, num_codebooks: int, codebook_size: int, seed: int, iterations: int,
            beam_size: int = 1, progress: Progress | None = None) -> Quantizer:  # fmt: skip
    faiss = _faiss("opq")
    d = v.shape[1]
    opq = faiss.OPQMatrix(d, num_codebooks)
    inner = _product(faiss, d, num_codebooks, codebook_size, seed, iterations)
    opq.pq, opq.verbose = inner, False  # the alternating training's PQ has the codec's K_q and seed
    opq.train(v)
    rotation = faiss.vector_to_array(opq.A).reshape(d, d)  # u = R v
    if progress is not None:
        progress("opq: rotation learned; fitting the codebooks on the rotated vectors")
    pq = _product(faiss, d, num_codebooks, codebook_size, seed, iterations)
    pq.train(np.ascontiguousarray(v @ rotation.T, dtype=np.float32))
    return Quantizer(Structure.PRODUCT, _product_codebooks(faiss, pq), torch.from_numpy(rotation.copy()))


def fit_rq(v: np.ndarray, num_codebooks: int, codebook_size: int, seed: int, iterations: int,
           beam_size: int = 1, progress: Progress | None = None) -> Quantizer:  # fmt: skip
    faiss = _faiss("rq")
    d = v.shape[1]
    rq = faiss.ResidualQuantizer(d, num_codebooks, _codebook_size_bits(codebook_size))
    _clustering(rq.cp, seed, iterations)
    rq.max_beam_size, rq.verbose = beam_size, False
    rq.train_type = faiss.ResidualQuantizer.Train_default  # plain stage-wise k-means, no codebook refinement
    rq.train(v)
    books = faiss.vector_to_array(rq.codebooks).reshape(num_codebooks, codebook_size, d)
    return Quantizer(Structure.RESIDUAL, torch.from_numpy(books.copy()), beam_size=beam_size)
