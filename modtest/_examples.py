"""Where the shipped example model and data live (the default for the CLI and the pytest plugin)."""
from __future__ import annotations

from pathlib import Path

from modtest.errors import ModelLoadError

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_MODEL = EXAMPLES_DIR / "digits_mlp.keras"
EXAMPLE_CNN = EXAMPLES_DIR / "digits_cnn.keras"
EXAMPLE_DATA = EXAMPLES_DIR / "digits_test.npz"


def example_path(path: Path) -> Path:
    """``path`` if it exists, else a one-line error saying how to get the examples."""
    if not path.exists():
        raise ModelLoadError(f"the shipped example {path.name} is not in this installation (it lives in "
                             f"the source checkout's examples/); pass a model path, or run "
                             f"python examples/train_digits.py")
    return path
