"""The paper's weight graph for transformers: MLP neurons and attention heads as units (numpy only).

The units are the hidden neurons of each block's MLP (kind ``"neuron"``) and the attention heads of
each block (kind ``"head"``). They talk to each other through the residual stream, so two units are
connected by their *virtual weight*: what the writer puts into the stream, as the reader reads it.
See docs/transformers.md for the definition, its choices and how it reduces to the paper's graph.

Every unit layer has a *write* tensor ``(n, p, d)`` (unit ``u`` writes the ``p x d`` matrix
``write[u]`` into the ``d``-dimensional stream) and a *read* tensor ``(n, d, q)``; the edge between
writer ``u`` and a later reader ``v`` is the Frobenius norm ``||write[u] diag(s) read[v]||_F``,
``s`` being the product of the (post-)LayerNorm gains the stream passed through between the two.

* a neuron ``j`` reads ``g * W_in[:, j]`` (``g``: the gain of the LayerNorm before its MLP) and
  writes ``W_out[j, :]``: ``p = q = 1`` and neuron -> neuron edges are ``|W_out[i] . (g * W_in[:, j])|``;
* a head ``h`` is linear in its value path, so its whole OV circuit ``M_h = diag(g) W_V^h W_O^h``
  (``d x d``) is both its read and its write; ``M_h`` has rank ``d_head``, so it is stored as factors
  with the same norms (``||X M_h||_F = ||X A_h D_h||_F``, ``||M_h Y||_F = ||C_h^T W_O^h Y||_F``) and
  a graph of GPT-2-small size is a handful of matrix products.

This module imports no framework: the adapters read the weights into :class:`Sublayer` lists.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modtest.errors import InvalidInput
from modtest.graph import EdgeBlock, GraphSpec

__all__ = ["Sublayer", "Scale", "neuron_layer", "head_layer", "plain_layer", "embedding", "readout",
           "virtual_weights", "transformer_spec", "gpt2_sublayers", "UNIT_KINDS"]

UNIT_KINDS = ("neuron", "head")


@dataclass
class Sublayer:
    """One unit layer as the stream sees it.

    ``read`` (n, d, q) or None (an input layer reads nothing); ``write`` (n, p, d') or None (an output
    layer writes nothing). ``residual=False``: the layer's output *replaces* the stream (a plain
    layer, no skip connection: later layers see only its writes, in a stream of width ``d'``).
    ``kind`` is ``"neuron"``, ``"head"``, ``"input"`` or ``"output"``; ``block`` the block index.
    """

    name: str
    kind: str
    read: np.ndarray | None
    write: np.ndarray | None
    residual: bool = True
    block: int | None = None

    @property
    def size(self) -> int:
        return int((self.read if self.read is not None else self.write).shape[0])


@dataclass
class Scale:
    """A LayerNorm *in* the stream (post-LN, BERT): everything written so far is multiplied by
    ``gain`` (d,) before any later unit reads it. Mean-centering and 1/sigma are not folded in."""

    gain: np.ndarray


def _f64(a, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != ndim:
        raise InvalidInput(f"{name} must be a {ndim}-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidInput(f"{name} holds NaN or infinite values")
    return a


def _gain(gain, d: int, name: str) -> np.ndarray:
    if gain is None:
        return np.ones(d)
    g = _f64(gain, name, 1)
    if g.shape != (d,):
        raise InvalidInput(f"{name} has shape {g.shape}, expected ({d},)")
    return g


def neuron_layer(name: str, w_in, w_out, ln_gain=None, *, block: int | None = None,
                 residual: bool = True) -> Sublayer:
    """An MLP's hidden neurons: ``w_in`` (d, m) reads the stream (after a LayerNorm of gain
    ``ln_gain``, folded into the reads), ``w_out`` (m, d') writes it."""
    w_in = _f64(w_in, f"{name}: w_in", 2)
    w_out = _f64(w_out, f"{name}: w_out", 2)
    d, m = w_in.shape
    if w_out.shape[0] != m:
        raise InvalidInput(f"{name}: w_in has {m} neurons (shape {w_in.shape}) but w_out has "
                           f"{w_out.shape[0]} rows (shape {w_out.shape})")
    g = _gain(ln_gain, d, f"{name}: ln_gain")
    read = (g[:, None] * w_in).T[:, :, None]  # (m, d, 1)
    return Sublayer(name, "neuron", read, w_out[:, None, :], residual, block)


def _psd_sqrt(gram: np.ndarray) -> np.ndarray:
    """``F`` with ``F F^T = gram`` (symmetric PSD, by eigendecomposition: a zero head is fine)."""
    vals, vecs = np.linalg.eigh(gram)
    return vecs * np.sqrt(np.clip(vals, 0.0, None))[None, :]


def head_layer(name: str, w_v, w_o, ln_gain=None, *, block: int | None = None) -> Sublayer:
    """A block's attention heads: ``w_v`` (H, d, d_head) the value maps, ``w_o`` (H, d_head, d) the
    head's rows of the output projection, ``ln_gain`` the LayerNorm before the attention. Head h's OV
    circuit is ``M_h = diag(g) w_v[h] w_o[h]``; the layer stores factors of it with the same norms:
    read ``A_h D_h`` (d, d_head) with ``D_h D_h^T = w_o[h] w_o[h]^T``, write ``C_h^T w_o[h]`` with
    ``C_h C_h^T = A_h^T A_h``, where ``A_h = diag(g) w_v[h]``."""
    w_v = _f64(w_v, f"{name}: w_v", 3)
    w_o = _f64(w_o, f"{name}: w_o", 3)
    n_heads, d, dh = w_v.shape
    if w_o.shape[:2] != (n_heads, dh):
        raise InvalidInput(f"{name}: w_v has shape {w_v.shape} (heads, d, d_head) but w_o has shape "
                           f"{w_o.shape}, expected ({n_heads}, {dh}, d)")
    g = _gain(ln_gain, d, f"{name}: ln_gain")
    a = g[None, :, None] * w_v  # (H, d, dh)
    read = np.einsum("hdk,hkl->hdl", a, np.stack([_psd_sqrt(o @ o.T) for o in w_o]))
    write = np.einsum("hkl,hld->hkd", np.stack([_psd_sqrt(x.T @ x).T for x in a]), w_o)
    return Sublayer(name, "head", read, write, True, block)


def plain_layer(name: str, kernel, *, block: int | None = None) -> Sublayer:
    """A dense layer without a skip connection (``kernel`` (d_in, d_out)): its neurons read the
    kernel's columns and their outputs *are* the next stream (identity writes, ``residual=False``)."""
    kernel = _f64(kernel, f"{name}: kernel", 2)
    return neuron_layer(name, kernel, np.eye(kernel.shape[1]), block=block, residual=False)


def embedding(d: int, name: str = "embed") -> Sublayer:
    """The input layer: the ``d`` dimensions of the stream the embedding writes (token plus position
    embeddings, or patch embeddings), one unit each (identity writes)."""
    return Sublayer(name, "input", None, np.eye(int(d))[:, None, :], True, None)


def readout(name: str, w, ln_gain=None) -> Sublayer:
    """The output layer: the classes, class ``c`` reading ``g * w[:, c]`` (``w`` (d, n_classes),
    ``ln_gain`` the final LayerNorm's gain)."""
    w = _f64(w, f"{name}: w", 2)
    g = _gain(ln_gain, w.shape[0], f"{name}: ln_gain")
    return Sublayer(name, "output", (g[:, None] * w).T[:, :, None], None, True, None)


def _pair_norms(write: np.ndarray, s: np.ndarray, read: np.ndarray) -> np.ndarray:
    """(n_u, n_v): ``||write[u] diag(s) read[v]||_F`` for every pair."""
    n_u, p, d = write.shape
    n_v, d2, q = read.shape
    if d != d2:
        raise InvalidInput(f"a writer of stream width {d} meets a reader of width {d2}")
    x = (write * s[None, None, :]).reshape(n_u * p, d)
    y = read.transpose(1, 0, 2).reshape(d, n_v * q)
    prod = x @ y
    if p == 1 and q == 1:
        return np.abs(prod)
    return np.sqrt(np.einsum("apbq,apbq->ab", prod.reshape(n_u, p, n_v, q), prod.reshape(n_u, p, n_v, q)))


def virtual_weights(sublayers) -> dict[tuple[str, str], np.ndarray]:
    """Every ``(writer, reader)`` pair of layers that the stream connects, with its (n_w, n_r) matrix
    of virtual weights; ``sublayers`` lists :class:`Sublayer` and :class:`Scale` in model order."""
    stream: list[list] = []  # [layer, cumulative scale (d,)]
    out: dict[tuple[str, str], np.ndarray] = {}
    names = set()
    for item in sublayers:
        if isinstance(item, Scale):
            g = _f64(item.gain, "Scale gain", 1)
            for entry in stream:
                if entry[1].shape != g.shape:
                    raise InvalidInput(f"a LayerNorm of width {g.shape[0]} in a stream of width {entry[1].shape[0]}")
                entry[1] = entry[1] * g
            continue
        if item.name in names:
            raise InvalidInput(f"two layers are named {item.name!r}")
        names.add(item.name)
        if item.read is not None:
            for writer, s in stream:
                out[(writer.name, item.name)] = _pair_norms(writer.write, s, item.read)
        if item.write is not None:
            if not item.residual:
                stream = []
            stream.append([item, np.ones(item.write.shape[2])])
    return out


def transformer_spec(sublayers, kind: str = "transformer") -> GraphSpec:
    """The :class:`~modtest.graph.GraphSpec` of the virtual-weight graph of ``sublayers``: the
    virtual weights of every writer into a reader are rows of that reader's kernel (one edge block
    per writer), so :func:`modtest.graph.graph_from_spec` builds the paper's adjacency from them."""
    layers = [s for s in sublayers if isinstance(s, Sublayer)]
    pairs = virtual_weights(sublayers)
    roles = ["input" if s.kind == "input" else "output" if s.kind == "output" else "hidden" for s in layers]
    kernels, blocks = {}, []
    for s in layers:
        producers = [(w, m) for (w, r), m in pairs.items() if r == s.name]
        if not producers:
            continue
        kernels[s.name] = np.vstack([m for _, m in producers])
        offset, total = 0, kernels[s.name].shape[0]
        for w, m in producers:
            cmap = -np.ones(total, dtype=np.int64)
            cmap[offset:offset + len(m)] = np.arange(len(m))
            blocks.append(EdgeBlock(w, s.name, cmap))
            offset += len(m)
    return GraphSpec(kind, [s.name for s in layers], [s.size for s in layers], roles, kernels,
                     {s.name: np.ones(s.size) for s in layers}, blocks)


def gpt2_sublayers(blocks, w_score, ln_f_gain=None, d: int | None = None) -> list:
    """The sublayers of a pre-LN transformer (GPT-2, ViT) from per-block weights.

    ``blocks`` is a list of dicts with ``w_v`` (H, d, d_head), ``w_o`` (H, d_head, d), ``ln1`` (d,)
    (may be absent: a block without attention), ``w_in`` (d, m), ``w_out`` (m, d), ``ln2`` (d,);
    ``w_score`` (d, n_classes) reads the stream after the final LayerNorm of gain ``ln_f_gain``.
    Layers are named ``block{b}.attn`` (heads) and ``block{b}.mlp`` (neurons)."""
    w_score = np.asarray(w_score)
    d = int(w_score.shape[0] if d is None else d)
    out = [embedding(d)]
    for b, blk in enumerate(blocks):
        if blk.get("w_v") is not None:
            out.append(head_layer(f"block{b}.attn", blk["w_v"], blk["w_o"], blk.get("ln1"), block=b))
        if blk.get("w_in") is not None:
            out.append(neuron_layer(f"block{b}.mlp", blk["w_in"], blk["w_out"], blk.get("ln2"), block=b))
    out.append(readout("out", w_score, ln_f_gain))
    return out
