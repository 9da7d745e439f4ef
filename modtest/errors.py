"""One error hierarchy for everything modtest rejects.

Every message is one line that names the problem (file, layer, argument, shape) so that a CI log shows
what to fix without a traceback from deep inside Keras or scikit-learn.
"""


class ModtestError(Exception):
    """Base class of every error modtest raises on purpose."""


class InvalidInput(ModtestError, ValueError):
    """An argument, option value or data array that modtest cannot use."""


class ModelLoadError(ModtestError):
    """A model file that is missing, corrupt, of an unsupported format, or refused as unsafe."""


class UnsafeModelError(ModelLoadError):
    """A model that would run code from the file (Lambda layer, custom objects) without trust=True."""


class BackendMissing(ModtestError):
    """No usable framework: Keras, or the Keras backend it is set to use, is not installed."""


class UnsupportedModelError(ModtestError):
    """A model with a layer type or topology that modtest cannot turn into a graph or lesion."""


class DataError(InvalidInput):
    """Evaluation data that does not fit the model (shape, labels, missing arrays)."""


class NoTestableSubclusters(ModtestError):
    """Every sub-cluster was filtered out by the size limits, so nothing can be tested."""


class CacheError(ModtestError):
    """A cache entry or lock that cannot be used."""


class ReportError(ModtestError):
    """A report or baseline file that is missing, corrupt or of another schema version."""


class StorageError(ReportError):
    """A baseline name or folder that cannot be used, or a missing/corrupt baseline."""


class CompareError(InvalidInput):
    """An unusable comparison rule."""


class ExecutorError(ModtestError):
    """A place to run probe work units that cannot be used (e.g. an unreachable Dask scheduler)."""
