"""Vector quantizers held as plain tensors: the encode / decode math of VQ, PQ, OPQ and RQ, and the
pseudo-ordinal sort of their codebooks.

A quantizer maps vectors v of length D to M_q integer codes in [0, K_q) and back:

    product  (VQ, PQ, OPQ)   u = R v (R = I unless OPQ), split u into M_q sub-vectors u_m of length D / M_q,
                             y_m = argmin_k ||u_m - C_m[k]||^2,          v_hat = R^T concat_m C_m[y_m]
    residual (RQ)            r_0 = v, y_m = argmin_k ||r_m - C_m[k]||^2 (beam search keeps the best
                             ``beam_size`` partial code sequences), r_{m+1} = r_m - C_m[y_m],
                             v_hat = sum_m C_m[y_m]

VQ is the product quantizer with M_q = 1. ``codebooks`` is (M_q, K_q, D / M_q) for a product quantizer
and (M_q, K_q, D) for a residual one. Training (k-means, with faiss) lives in `fit_faiss`; nothing here
imports faiss, so a saved codec loads and runs on any device without it.

Pseudo-ordinality (``sort_codebook``): a codebook's words are reordered along their first principal
direction, so that neighbouring indices hold similar words and an index error of 1 changes the patch
little; the sign of the direction is fixed (its largest-magnitude entry is positive) so the order is
deterministic. Relabelling words changes no reconstruction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Quantizer", "Structure", "sort_codebook", "nearest_word"]

_CHUNK_SCORES = 1 << 20  # distance entries (rows x M_q x K_q) computed at once: 4 MiB of float32 (cache-sized)


class Structure(str, enum.Enum):
    PRODUCT = "product"  # sub-vectors quantized independently (VQ: one sub-vector; OPQ: after a rotation)
    RESIDUAL = "residual"  # stages quantize what the previous stages left


def nearest_word(u: Tensor, codebooks: Tensor) -> Tensor:
    """argmin_k ||u_m - C_m[k]||^2 for every row and sub-vector: u (n, M, d), codebooks (M, K, d) -> (n, M)."""
    # ||u - c||^2 = ||u||^2 - 2 u.c + ||c||^2; ||u||^2 is the same for every k; one fused batched matmul
    norms = codebooks.pow(2).sum(-1)[:, None, :]  # (M, 1, K)
    scores = torch.baddbmm(norms, u.transpose(0, 1), codebooks.transpose(1, 2), alpha=-2.0)  # (M, n, K)
    return scores.argmin(-1).T  # (n, M)


def _rows_per_chunk(scores_per_row: int) -> int:
    """Rows whose distance scores fit in one cache-sized chunk (_CHUNK_SCORES entries)."""
    return max(1, _CHUNK_SCORES // max(1, scores_per_row))


@dataclass(frozen=True)
class Quantizer:
    structure: Structure  # product (VQ, PQ, OPQ) or residual (RQ)
    codebooks: Tensor  # (M_q, K_q, D / M_q) product, (M_q, K_q, D) residual; float32
    rotation: Tensor | None = None  # R (D, D), orthonormal, applied before a product quantizer (OPQ); else None
    beam_size: int = 1  # residual only: partial code sequences kept per stage (1 = greedy)

    @property
    def num_codebooks(self) -> int:
        return self.codebooks.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.codebooks.shape[1]

    @property
    def dim(self) -> int:
        """D, the length of the vectors it quantizes."""
        m, _, d = self.codebooks.shape
        return m * d if self.structure is Structure.PRODUCT else d

    def encode(self, v: Tensor) -> Tensor:
        """Codes (n, M_q) int64 in [0, K_q) of vectors v (n, D)."""
        books = self.codebooks.to(v.device, torch.float32)
        v = v.float()
        if self.rotation is not None:
            v = v @ self.rotation.to(v.device, torch.float32).T  # u = R v
        m, k, _ = books.shape
        step = _rows_per_chunk(m * k * (self.beam_size if self.structure is Structure.RESIDUAL else 1))
        encode = self._product_codes if self.structure is Structure.PRODUCT else self._residual_codes
        parts = [encode(v[i : i + step], books) for i in range(0, len(v), step)]
        return torch.cat(parts) if parts else torch.zeros(0, m, dtype=torch.long, device=v.device)

    def decode(self, codes: Tensor) -> Tensor:
        """Vectors (n, D) of codes (n, M_q)."""
        books = self.codebooks.to(codes.device, torch.float32)
        m, k, d = books.shape
        rows = codes + torch.arange(m, device=codes.device) * k  # (n, M_q): rows of the stacked (M_q K_q, d) words
        if self.structure is Structure.RESIDUAL:
            return F.embedding_bag(rows, books.reshape(m * k, d), mode="sum")  # sum of the stage words, (n, D)
        u = books.reshape(m * k, d).index_select(0, rows.reshape(-1)).reshape(len(codes), m * d)  # (n, D)
        return u @ self.rotation.to(u.device, u.dtype) if self.rotation is not None else u  # R^T u

    def decode_weights(self, weights: Tensor) -> Tensor:
        """Vectors (n, D) whose part m is the mix sum_k weights[:, m, k] C_m[k] of codebook m's words: a one-hot
        ``weights`` (n, M_q, K_q) gives `decode` of its codes; a soft one is differentiable in the weights."""
        books = self.codebooks.to(weights.device, weights.dtype)
        return self._assemble(torch.einsum("nmk,mkd->nmd", weights, books))

    def _assemble(self, words: Tensor) -> Tensor:
        """The vectors (n, D) of their words (n, M_q, d): summed (residual) or concatenated and un-rotated."""
        if self.structure is Structure.RESIDUAL:
            return words.sum(1)
        u = words.flatten(1)  # (n, D)
        return u @ self.rotation.to(u.device, u.dtype) if self.rotation is not None else u  # R^T u

    def stage_errors(self, v: Tensor) -> Tensor:
        """Residual quantizers: mean squared error per vector entry after each of the M_q stages, (M_q,) float64."""
        if self.structure is not Structure.RESIDUAL:
            raise ValueError(f"expected a residual quantizer for errors per stage, got a {self.structure.value} one")
        codes, v = self.encode(v), v.float()
        books = self.codebooks.to(v.device, torch.float32)
        words = books[torch.arange(books.shape[0], device=v.device), codes]  # (n, M_q, D)
        return (v[:, None] - words.cumsum(1)).double().pow(2).mean(dim=(0, 2))  # after stages 1 .. M_q

    def sorted(self) -> tuple[Quantizer, Tensor]:
        """The quantizer with every codebook in pseudo-ordinal order, and the relabelling (M_q, K_q): new code
        of old code k in codebook m is ``relabel[m, k]`` (decoding relabelled codes gives the same vectors)."""
        books, relabel = zip(*(sort_codebook(book) for book in self.codebooks), strict=True)
        return Quantizer(self.structure, torch.stack(books), self.rotation, self.beam_size), torch.stack(relabel)

    def _product_codes(self, u: Tensor, books: Tensor) -> Tensor:
        m, _, d = books.shape
        return nearest_word(u.reshape(len(u), m, d), books)

    def _residual_codes(self, v: Tensor, books: Tensor) -> Tensor:
        n, m, k = len(v), books.shape[0], books.shape[1]
        rows = torch.arange(n, device=v.device)[:, None]
        residual = v[:, None]  # (n, B, D), B partial sequences per vector (1 to start)
        error = torch.zeros(n, 1, device=v.device)  # (n, B): ||residual||^2 - ||v||^2 so far
        codes = torch.zeros(n, 1, 0, dtype=torch.long, device=v.device)  # (n, B, stages so far)
        for stage in range(m):
            book = books[stage]  # (K, D)
            # ||r - c||^2 - ||r||^2 = ||c||^2 - 2 r.c, one fused matmul
            step = torch.addmm(book.pow(2).sum(-1), residual.flatten(0, 1), book.T, alpha=-2.0).view(n, -1, k)
            total = (error[..., None] + step).flatten(1)  # (n, B K)
            if self.beam_size == 1:  # greedy: one argmin (topk's sort is the slow part)
                error, best = total.min(dim=1, keepdim=True)
            else:
                error, best = total.topk(min(self.beam_size, total.shape[1]), dim=1, largest=False, sorted=True)
            parent, word = best // k, best % k  # (n, B')
            codes = torch.cat([codes[rows, parent], word[..., None]], dim=-1)
            residual = residual[rows, parent] - book[word]  # (n, B', D)
        return codes[:, 0]  # the sequence of least error


def sort_codebook(codebook: Tensor) -> tuple[Tensor, Tensor]:
    """Words (K, d) sorted by their projection on the first principal direction of the centred words (its
    largest-magnitude entry made positive; stable sort), and relabel (K,): old index k is now relabel[k]."""
    words = codebook.double()
    centred = words - words.mean(0)
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]  # (d,)
    direction = direction * torch.sign(direction[direction.abs().argmax()])
    order = torch.sort(centred @ direction, stable=True).indices  # new position p holds old word order[p]
    relabel = torch.empty_like(order)
    relabel[order] = torch.arange(len(order))
    return codebook[order], relabel
