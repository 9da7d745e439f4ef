"""Hugging Face transformers: GPT-2, BERT and ViT classifiers, attention heads and MLP neurons as units.

* ``files.py``    -- model folders (config.json + safetensors): checks without import, the safe load
* ``families.py`` -- per family: weights -> :mod:`modtest.transformer_graph` sublayers, lesion targets
* ``engines.py``  -- the reference lesion engine (forward hooks)
* ``data.py``     -- ``x`` for text models (token ids and attention mask stacked), ``.npz`` layout

The graph (virtual weights through the residual stream) is defined in :mod:`modtest.transformer_graph`
and docs/transformers.md.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from modtest.frameworks.base import ModelAdapter
from modtest.frameworks.transformers.data import token_inputs

__all__ = ["TransformersAdapter", "token_inputs", "is_hf_model"]

#: config keys that say where or how a model was saved, not what it computes (the weights' dtype is hashed)
_VOLATILE = ("transformers_version", "architectures", "dtype", "torch_dtype")


def is_hf_model(obj) -> bool:
    """A Hugging Face ``PreTrainedModel`` (by type names, without importing transformers)."""
    return any(c.__module__.startswith("transformers.") and c.__name__ == "PreTrainedModel"
               for c in type(obj).__mro__)


class TransformersAdapter(ModelAdapter):
    """A Hugging Face classifier (GPT2ForSequenceClassification, BertForSequenceClassification,
    ViTForImageClassification) seen by the core."""

    framework = "transformers"
    layout = "channels_first"
    #: what runs it (the report's versions.backend): transformers' torch models
    backend = "torch"

    def __init__(self, model):
        from modtest.frameworks.transformers.families import family_of

        super().__init__(model.eval())
        self.family = family_of(model)
        if self.family.name == "gpt2" and model.config.pad_token_id is None:
            from modtest.errors import ModelLoadError

            raise ModelLoadError("this GPT2ForSequenceClassification has no pad_token_id in its config; "
                                 "transformers cannot run it on a batch (set config.pad_token_id and save it again)")
        self._spec = None

    @property
    def name(self) -> str:
        return type(self.model).__name__

    @property
    def input_shape(self) -> tuple:
        cfg = self.model.config
        if self.family.text:
            return (2, None)
        return (cfg.num_channels, cfg.image_size, cfg.image_size)

    @property
    def n_classes(self) -> int:
        return int(self.model.config.num_labels)

    def bind_data(self, x) -> None:
        """Check a text model's ``x`` (layout, ids, mask) before it is cast to float32."""
        if self.family.text:
            from modtest.frameworks.transformers.data import check_token_inputs

            cfg = self.model.config
            check_token_inputs(x, cfg.vocab_size, cfg.pad_token_id if self.family.name == "gpt2" else None)

    def compute_fingerprint(self) -> str:
        h = hashlib.sha256()
        cfg = {k: v for k, v in self.model.config.to_dict().items()
               if not k.startswith("_") and k not in _VOLATILE}  # save_pretrained fills these in
        h.update(type(self.model).__name__.encode())
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
        for k, v in self.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def sublayers(self) -> list:
        return self.family.sublayers()

    def graph_spec(self):
        if self._spec is None:
            from modtest.transformer_graph import transformer_spec

            self._spec = transformer_spec(self.sublayers())
        return self._spec

    def unit_layers(self) -> list[str]:
        return self.family.unit_layers()

    def layer_info(self, layer: str) -> dict:
        """``{"unit_kind": "neuron" | "head", "block": b}`` of a unit layer."""
        return self.family.layer_info(layer)

    def lesion_engine(self, x, *, engine="fast", keep_bias=False, batch_size=1024, max_elements=None,
                      cache_bytes=None):
        from modtest.frameworks.transformers.engines import make_engine

        return make_engine(engine, self.family, np.asarray(x), keep_bias=keep_bias, batch_size=batch_size)
