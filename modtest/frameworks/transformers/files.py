"""Hugging Face model folders: cheap checks without importing torch, and the safe load.

A folder modtest reads holds ``config.json`` and the weights as ``*.safetensors`` (a format of raw
tensors: reading it runs no code). Without trust, a folder is refused, in one line, when

* its config names remote code (``auto_map``: classes defined in Python files of the folder or of a
  hub repository, which ``trust_remote_code=True`` would import and run), or
* its weights are only pickles (``pytorch_model.bin``, ``*.pt``, ``*.ckpt``: loading one unpickles it,
  which can run any code), or
* its family is not one modtest reads (:data:`FAMILIES`).

The model is then built by its own class (``GPT2ForSequenceClassification``, ...), never an
``Auto`` class, from the local folder only (``local_files_only=True``, ``trust_remote_code=False``,
``use_safetensors=True``). With trust, pickled weights and ``auto_map`` configs are loaded too.
"""
from __future__ import annotations

import json
from pathlib import Path

from modtest.errors import ModelLoadError, UnsafeModelError

__all__ = ["FAMILIES", "is_model_folder", "read_config", "check_folder", "folder_signature", "load_folder",
           "SAVE_HINT"]

#: model_type -> the classifier class modtest reads for it
FAMILIES = {"gpt2": "GPT2ForSequenceClassification", "bert": "BertForSequenceClassification",
            "vit": "ViTForImageClassification"}
SAVE_HINT = "save it with model.save_pretrained(folder) (config.json and model.safetensors)"
_PICKLES = ("pytorch_model.bin", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def _supported() -> str:
    return ", ".join(f"{t} ({c})" for t, c in FAMILIES.items())


def is_model_folder(path) -> bool:
    """Whether ``path`` is a folder holding a ``config.json`` (a Hugging Face model folder)."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def read_config(path) -> dict:
    p = Path(path) / "config.json"
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {p}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{p} is not a JSON object")
    return cfg


def check_folder(path, trust: bool = False) -> dict:
    """The folder's config, after the checks of the module docstring (nothing is imported)."""
    path = Path(path)
    if not is_model_folder(path):
        raise ModelLoadError(f"{path} is not a Hugging Face model folder (no config.json); {SAVE_HINT}")
    cfg = read_config(path)
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list):
        archs = [archs]
    if "auto_map" in cfg and not trust:
        raise UnsafeModelError(f"{path}: config.json names remote code (auto_map: "
                               f"{', '.join(sorted(map(str, cfg['auto_map'])))}), which loading would run; "
                               f"modtest reads it only with --modtest-trust-model (trust=True)")
    if model_type not in FAMILIES:
        raise ModelLoadError(f"{path}: unsupported transformers model type {model_type!r}"
                             f"{' (' + ', '.join(map(str, archs)) + ')' if archs else ''}; modtest reads "
                             f"{_supported()}")
    want = FAMILIES[model_type]
    if archs and want not in archs:
        raise ModelLoadError(f"{path}: architecture {', '.join(map(str, archs))} is not a classifier modtest "
                             f"reads; for model type {model_type!r} it reads {want}")
    if not any(path.glob("*.safetensors")):
        pickles = sorted({p.name for pat in _PICKLES for p in path.glob(pat)})
        if not pickles:
            raise ModelLoadError(f"{path} holds no weights (*.safetensors); {SAVE_HINT}")
        if not trust:
            raise UnsafeModelError(f"{path}: the weights are only pickles ({', '.join(pickles)}), which can run "
                                   f"code when loaded; {SAVE_HINT}, or pass "
                                   f"--modtest-trust-model (trust=True)")
    return cfg


def folder_signature(path):
    """``(input_shape, n_classes)`` from config.json, without importing torch (None if unreadable)."""
    try:
        cfg = check_folder(path, trust=True)
    except ModelLoadError:
        return None
    n = cfg.get("num_labels") or (len(cfg["id2label"]) if isinstance(cfg.get("id2label"), dict) else None)
    if cfg.get("model_type") == "vit":
        size = cfg.get("image_size", 224)
        return (cfg.get("num_channels", 3), size, size), n
    return (2, None), n


def load_folder(path, trust: bool = False):
    """The classifier of a checked folder, in eval mode, its weights read from safetensors (pickles and
    remote code only with ``trust``)."""
    path = Path(path)
    cfg = check_folder(path, trust=trust)
    from modtest.frameworks.transformers.runtime import import_transformers

    transformers = import_transformers()
    safetensors = any(path.glob("*.safetensors"))
    kw = {"local_files_only": True, "use_safetensors": safetensors}
    if "auto_map" in cfg:  # only reached with trust (check_folder)
        auto = getattr(transformers, "AutoModelForImageClassification" if cfg["model_type"] == "vit"
                       else "AutoModelForSequenceClassification")
        model = auto.from_pretrained(str(path), trust_remote_code=True, **kw)
    else:
        cls = getattr(transformers, FAMILIES[cfg["model_type"]])
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar on stderr
        try:
            model = cls.from_pretrained(str(path), trust_remote_code=False, **kw)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelLoadError(f"cannot load {path} as {cls.__name__}: {first}") from None
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
    if type(model).__name__ not in FAMILIES.values():
        raise ModelLoadError(f"{path} loaded as {type(model).__name__}; modtest reads {_supported()}")
    return model.eval()
