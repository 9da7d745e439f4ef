"""Per family (GPT-2, BERT, ViT): the weights as :mod:`modtest.transformer_graph` sublayers, the modules a
lesion hooks, and how a batch is fed.

Unit layers are named ``block{b}.attn`` (the block's heads, kind ``head``) and ``block{b}.mlp`` (its MLP
neurons, kind ``neuron``); BERT adds ``pooler`` (the pooler's tanh neurons, kind ``neuron``).

A lesion (zero ablation, as the paper): a neuron's incoming weights *and* bias are zeroed, so its
pre-activation is 0 and its output GELU(0) = 0 (tanh(0) = 0 for BERT's pooler) -- done by a forward hook
that sets those outputs of the first MLP projection to 0 (``keep_bias``: to the bias); a head's output is
zeroed before the output projection (a forward pre-hook zeroing its ``d_head`` slice of the projection's
input), so the head adds nothing to the stream but the projection's bias, shared by all heads, stays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modtest.errors import UnsupportedModelError
from modtest.transformer_graph import Scale, embedding, head_layer, neuron_layer, plain_layer, readout

__all__ = ["Family", "family_of"]


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _heads_in(w: np.ndarray, n_heads: int) -> np.ndarray:
    """(d, H * dh) value map (y = x @ w) -> (H, d, dh)."""
    d, hd = w.shape
    return w.reshape(d, n_heads, hd // n_heads).transpose(1, 0, 2)


def _heads_out(w: np.ndarray, n_heads: int) -> np.ndarray:
    """(H * dh, d) output projection (y = z @ w) -> (H, dh, d)."""
    hd, d = w.shape
    return w.reshape(n_heads, hd // n_heads, d)


@dataclass
class Family:
    """What a lesion engine and the graph need of one family's model."""

    name: str
    model: object
    n_heads: int
    n_blocks: int

    # -- subclasses -------------------------------------------------------------------------------
    def sublayers(self) -> list:
        raise NotImplementedError

    def neuron_module(self, layer: str):
        """The linear layer whose outputs are the neurons' pre-activations."""
        raise NotImplementedError

    def head_module(self, block: int):
        """The attention output projection (its input: the heads' outputs, head h at h*dh:(h+1)*dh)."""
        raise NotImplementedError

    def forward(self, x):
        """Logits of a batch ``x`` (a torch tensor in modtest's layout)."""
        raise NotImplementedError

    text = True

    # -- shared -----------------------------------------------------------------------------------
    has_pooler = False

    def unit_layers(self) -> list[str]:
        """``block{b}.attn``, ``block{b}.mlp`` per block (and ``pooler``), without reading any weight."""
        names = [f"block{b}.{part}" for b in range(self.n_blocks) for part in ("attn", "mlp")]
        return names + (["pooler"] if self.has_pooler else [])

    def layer_info(self, layer: str) -> dict:
        if layer == "pooler":
            return {"unit_kind": "neuron", "block": None}
        head, _, part = layer.partition(".")
        if not head.startswith("block") or part not in ("attn", "mlp"):
            raise UnsupportedModelError(f"no unit layer {layer!r} in this {self.name} model")
        return {"unit_kind": "head" if part == "attn" else "neuron", "block": int(head[5:])}

    def layer_width(self, layer: str) -> int:
        info = self.layer_info(layer)
        if info["unit_kind"] == "head":
            return self.n_heads
        mod = self.neuron_module(layer)
        return int(getattr(mod, "nf", None) or mod.out_features)  # Conv1D (GPT-2) or Linear


class GPT2(Family):
    def _blocks(self):
        return self.model.transformer.h

    def sublayers(self):
        m, d = self.model, self.model.config.n_embd
        out = [embedding(d)]
        for b, blk in enumerate(self._blocks()):
            w_attn = _np(blk.attn.c_attn.weight)  # Conv1D (d, 3d): q, k, v
            out.append(head_layer(f"block{b}.attn", _heads_in(w_attn[:, 2 * d:], self.n_heads),
                                  _heads_out(_np(blk.attn.c_proj.weight), self.n_heads), _np(blk.ln_1.weight),
                                  block=b))
            out.append(neuron_layer(f"block{b}.mlp", _np(blk.mlp.c_fc.weight), _np(blk.mlp.c_proj.weight),
                                    _np(blk.ln_2.weight), block=b))
        out.append(readout("out", _np(m.score.weight).T, _np(m.transformer.ln_f.weight)))
        return out

    def neuron_module(self, layer):
        return self._blocks()[self.layer_info(layer)["block"]].mlp.c_fc

    def head_module(self, block):
        return self._blocks()[block].attn.c_proj

    def forward(self, x):
        ids, mask = x[:, 0].long(), x[:, 1].long()
        return self.model(input_ids=ids, attention_mask=mask).logits


class Bert(Family):
    has_pooler = True

    def _blocks(self):
        return self.model.bert.encoder.layer

    def sublayers(self):
        m = self.model
        out = [embedding(m.config.hidden_size), Scale(_np(m.bert.embeddings.LayerNorm.weight))]
        for b, blk in enumerate(self._blocks()):  # post-LN: the LayerNorms scale the stream
            out.append(head_layer(f"block{b}.attn", _heads_in(_np(blk.attention.self.value.weight).T, self.n_heads),
                                  _heads_out(_np(blk.attention.output.dense.weight).T, self.n_heads), block=b))
            out.append(Scale(_np(blk.attention.output.LayerNorm.weight)))
            out.append(neuron_layer(f"block{b}.mlp", _np(blk.intermediate.dense.weight).T,
                                    _np(blk.output.dense.weight).T, block=b))
            out.append(Scale(_np(blk.output.LayerNorm.weight)))
        out.append(plain_layer("pooler", _np(m.bert.pooler.dense.weight).T))
        out.append(readout("out", _np(m.classifier.weight).T))
        return out

    def neuron_module(self, layer):
        if layer == "pooler":
            return self.model.bert.pooler.dense
        return self._blocks()[self.layer_info(layer)["block"]].intermediate.dense

    def head_module(self, block):
        return self._blocks()[block].attention.output.dense

    def forward(self, x):
        ids, mask = x[:, 0].long(), x[:, 1].long()
        return self.model(input_ids=ids, attention_mask=mask, token_type_ids=ids.new_zeros(ids.shape)).logits


class ViT(Family):
    text = False

    def _blocks(self):
        return self.model.vit.layers

    def sublayers(self):
        m = self.model
        out = [embedding(m.config.hidden_size)]
        for b, blk in enumerate(self._blocks()):
            out.append(head_layer(f"block{b}.attn", _heads_in(_np(blk.attention.v_proj.weight).T, self.n_heads),
                                  _heads_out(_np(blk.attention.o_proj.weight).T, self.n_heads),
                                  _np(blk.layernorm_before.weight), block=b))
            out.append(neuron_layer(f"block{b}.mlp", _np(blk.mlp.fc1.weight).T, _np(blk.mlp.fc2.weight).T,
                                    _np(blk.layernorm_after.weight), block=b))
        out.append(readout("out", _np(m.classifier.weight).T, _np(m.vit.layernorm.weight)))
        return out

    def neuron_module(self, layer):
        return self._blocks()[self.layer_info(layer)["block"]].mlp.fc1

    def head_module(self, block):
        return self._blocks()[block].attention.o_proj

    def forward(self, x):
        return self.model(pixel_values=x.float()).logits


def family_of(model) -> Family:
    """The :class:`Family` of a Hugging Face classifier (by class name; others refused by name)."""
    name = type(model).__name__
    cfg = model.config
    if name == "GPT2ForSequenceClassification":
        return GPT2("gpt2", model, cfg.n_head, cfg.n_layer)
    if name == "BertForSequenceClassification":
        return Bert("bert", model, cfg.num_attention_heads, cfg.num_hidden_layers)
    if name == "ViTForImageClassification":
        return ViT("vit", model, cfg.num_attention_heads, cfg.num_hidden_layers)
    from modtest.frameworks.transformers.files import FAMILIES

    raise UnsupportedModelError(f"unsupported transformers model {name}; modtest reads "
                                f"{', '.join(FAMILIES.values())}")
