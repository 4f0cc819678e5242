"""Token partitions of paper section 3.2: which tokens condition (X1) and which move (X2).

Tokens are `[A_1 .. A_M, B_1 .. B_K]`. `A¹, A²` are the two halves of modality A (contiguous, as
in the paper, or even/odd positions, as in the authors' release); likewise for B.
"""

from __future__ import annotations

import numpy as np

MMCA = ("mmca_ab", "mmca_ba")
IMCA = ("imca_1", "imca_2", "imca_3", "imca_4")
PARTITIONS = MMCA + IMCA
IMCA_SPLITS = ("contiguous", "interleave")


def _halves(start: int, count: int, split: str):
    idx = np.arange(start, start + count)
    if split == "contiguous":
        return idx[: count // 2], idx[count // 2:]
    return idx[0::2], idx[1::2]


def partition(kind: str, tokens: tuple[int, int], imca_split: str = "contiguous"):
    """Index arrays `(idx1, idx2)` into `[B, M + K, D]` for partition `kind`.

    MMCA A→B conditions on A and transforms B (B→A the reverse); the four IMCA variants pair
    `([A¹,B¹],[A²,B²])`, `([A¹,B²],[A²,B¹])`, `([A²,B¹],[A¹,B²])`, `([A²,B²],[A¹,B¹])`.
    """
    m, k = tokens
    if kind in MMCA:
        if m != k:
            raise ValueError(
                f"{kind} needs equal token counts per modality, got M={m} and K={k}: make the "
                "encoders emit the same number of tokens (model.tokens_per_modality) or remove "
                "MMCA from flow.block_pattern")
        a, b = np.arange(m), np.arange(m, m + k)
        return (a, b) if kind == "mmca_ab" else (b, a)
    if kind in IMCA:
        if imca_split not in IMCA_SPLITS:
            raise ValueError(f"imca_split must be one of {IMCA_SPLITS}, got {imca_split!r}")
        if m % 2 or k % 2 or m < 2 or k < 2:
            raise ValueError(
                f"{kind} halves each modality, so M and K must be even and ≥ 2; got M={m}, K={k}")
        a1, a2 = _halves(0, m, imca_split)
        b1, b2 = _halves(m, k, imca_split)
        first, second = {"imca_1": ((a1, b1), (a2, b2)), "imca_2": ((a1, b2), (a2, b1)),
                         "imca_3": ((a2, b1), (a1, b2)), "imca_4": ((a2, b2), (a1, b1))}[kind]
        return np.concatenate(first), np.concatenate(second)
    raise ValueError(f"unknown partition {kind!r}; expected one of {PARTITIONS} or 'lica'")
