"""Inputs of Hugging Face classifiers as modtest's one array ``x`` (numpy only).

Text models (GPT-2, BERT) read ``x`` of shape (N, 2, T): ``x[:, 0]`` the token ids, ``x[:, 1]`` the
attention mask (1: a token, 0: padding), built by :func:`token_inputs`. An ``.npz`` file holds
``input_ids`` (N, T) integers, optionally ``attention_mask`` (N, T) of 0/1 (default: all 1), and
``labels`` (N,); for ViT, ``pixel_values`` (N, C, H, W) and ``labels``.
"""
from __future__ import annotations

import numpy as np

from modtest.errors import DataError

__all__ = ["token_inputs", "read_npz_arrays", "check_token_inputs", "HF_KEYS"]

#: the arrays that mark an .npz file in the Hugging Face layout
HF_KEYS = ("input_ids", "pixel_values")


def _integers(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.integer):
        if not (np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise DataError(f"{name} must hold integers (token ids), got dtype {a.dtype} with fractional values")
    return a.astype(np.int64)


def token_inputs(input_ids, attention_mask=None) -> np.ndarray:
    """``x`` (N, 2, T) int64 for a text model from ``input_ids`` (N, T) and ``attention_mask`` (N, T)."""
    ids = _integers(input_ids, "input_ids")
    if ids.ndim != 2:
        raise DataError(f"input_ids has shape {ids.shape}; it must be (N, T): one row of token ids per example")
    if attention_mask is None:
        mask = np.ones_like(ids)
    else:
        mask = _integers(attention_mask, "attention_mask")
        if mask.shape != ids.shape:
            raise DataError(f"attention_mask has shape {mask.shape} but input_ids has shape {ids.shape}")
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise DataError("attention_mask must hold only 0 (padding) and 1 (token)")
    return np.stack([ids, mask], axis=1)


def check_token_inputs(x, vocab_size: int, pad_token_id: int | None = None) -> None:
    """One-line errors for a text model's ``x``: layout, integer ids below ``vocab_size``, a 0/1 mask
    with a token in every row; for GPT-2 (``pad_token_id``) padding must hold the pad token."""
    x = np.asarray(x)
    if x.ndim == 2:
        raise DataError(f"x has shape {x.shape}: a text model reads (N, 2, T), the token ids and the attention "
                        f"mask stacked; pass modtest.frameworks.transformers.token_inputs(input_ids, attention_mask)")
    if x.ndim != 3 or x.shape[1] != 2:
        raise DataError(f"x has shape {x.shape}; a text model reads (N, 2, T): x[:, 0] token ids, x[:, 1] the "
                        f"attention mask (modtest.frameworks.transformers.token_inputs builds it)")
    ids = _integers(x[:, 0], "x[:, 0] (token ids)")
    mask = _integers(x[:, 1], "x[:, 1] (attention mask)")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise DataError(f"token ids must lie in [0, {vocab_size - 1}] (the model's vocabulary), found "
                        f"{int(ids.min())}..{int(ids.max())}")
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise DataError("x[:, 1] (attention mask) must hold only 0 (padding) and 1 (token)")
    if len(mask) and (mask.sum(axis=1) == 0).any():
        raise DataError(f"{int((mask.sum(axis=1) == 0).sum())} example(s) have an all-zero attention mask")
    if pad_token_id is not None and (ids[mask == 0] != pad_token_id).any():
        raise DataError(f"padding (attention_mask 0) must hold the pad token (id {pad_token_id}): a GPT-2 "
                        f"classifier reads the last token that is not the pad token")


def read_npz_arrays(f, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` from an open ``np.load`` archive ``f`` (of file ``name``) in the Hugging Face layout."""
    if "labels" not in f.files:
        raise DataError(f"data file {name} has no array 'labels'; with 'input_ids' or 'pixel_values' it needs "
                        f"'labels' (N,) class indices, found {sorted(f.files)}")
    y = f["labels"]
    if "input_ids" in f.files:
        x = token_inputs(f["input_ids"], f["attention_mask"] if "attention_mask" in f.files else None)
    else:
        x = np.asarray(f["pixel_values"])
        if x.ndim != 4:
            raise DataError(f"pixel_values has shape {x.shape}; it must be (N, C, H, W)")
    return x, y
