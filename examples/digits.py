"""Digits models for modtest's examples and tests: data, architectures, magnitude pruning.

scikit-learn's ``load_digits`` (8x8 images, 10 classes) ships with the package, so everything here
runs offline. Inputs are (N, 8, 8, 1) in [0, 1] for both the MLP (which flattens) and the CNN.
"""
from __future__ import annotations

import numpy as np


def digits_split(seed: int = 0, test_size: float = 0.3):
    """(x_train, y_train, x_test, y_test), stratified and seeded; x of shape (N, 8, 8, 1)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    return xtr, ytr, xte, yte


def build_mlp(width: int = 256, depth: int = 4, dropout: float = 0.0, input_shape=(8, 8, 1),
              n_classes: int = 10, name: str = "digits_mlp"):
    """The paper's small MLP: ``depth`` hidden ReLU layers of ``width`` (optional dropout after each)."""
    import keras

    layers = [keras.Input(input_shape), keras.layers.Flatten(name="flatten")]
    for i in range(depth):
        layers.append(keras.layers.Dense(width, activation="relu", name=f"dense_{i + 1}"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"dropout_{i + 1}"))
    layers.append(keras.layers.Dense(n_classes, activation="softmax", name="output"))
    return keras.Sequential(layers, name=name)


def build_cnn(filters: int = 32, dense: int = 128, input_shape=(8, 8, 1), n_classes: int = 10,
              name: str = "digits_cnn"):
    """The paper's small CNN (3 conv layers, pooling after the 2nd and 3rd, a dense layer), with
    batch norm after each convolution."""
    import keras

    L = keras.layers
    return keras.Sequential([
        keras.Input(input_shape),
        L.Conv2D(filters, 3, padding="same", use_bias=False, name="conv_1"),
        L.BatchNormalization(momentum=0.9, name="bn_1"), L.ReLU(name="relu_1"),
        L.Conv2D(filters, 3, padding="same", use_bias=False, name="conv_2"),
        L.BatchNormalization(momentum=0.9, name="bn_2"), L.ReLU(name="relu_2"), L.MaxPooling2D(2, name="pool_2"),
        L.Conv2D(filters, 3, padding="same", use_bias=False, name="conv_3"),
        L.BatchNormalization(momentum=0.9, name="bn_3"), L.ReLU(name="relu_3"), L.MaxPooling2D(2, name="pool_3"),
        L.Flatten(name="flatten"),
        L.Dense(dense, activation="relu", name="dense"),
        L.Dense(n_classes, activation="softmax", name="output"),
    ], name=name)


def magnitude_pruning_callback(final_sparsity: float = 0.9, begin_step: int = 0, end_step: int = 100,
                               initial_sparsity: float = 0.0, power: int = 3):
    """Magnitude pruning on a polynomial-decay schedule (Zhu & Gupta 2017) for Keras 3.

    After every training batch, each Dense/Conv kernel keeps only its largest-magnitude weights; the
    kept fraction follows s(t) = s_f + (s_i - s_f) (1 - t/T)^power, as TF Model Optimization did.
    """
    import keras

    class MagnitudePruning(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step = 0

        def sparsity(self) -> float:
            t = min(max(self.step - begin_step, 0) / max(end_step - begin_step, 1), 1.0)
            return final_sparsity + (initial_sparsity - final_sparsity) * (1 - t) ** power

        def prune(self):
            s = self.sparsity()
            for layer in self.model.layers:
                if not hasattr(layer, "kernel") or layer.kernel is None:
                    continue
                w = keras.ops.convert_to_numpy(layer.kernel)
                n_zero = int(round(s * w.size))
                if n_zero == 0:
                    continue
                threshold = np.partition(np.abs(w).ravel(), n_zero - 1)[n_zero - 1]
                layer.kernel.assign(np.where(np.abs(w) <= threshold, 0.0, w).astype(w.dtype))

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step >= begin_step:
                self.prune()

        def on_train_end(self, logs=None):
            self.prune()

    return MagnitudePruning()


def train(model, xtr, ytr, *, epochs: int, batch_size: int, seed: int, callbacks=()):
    """Adam (Keras defaults), sparse categorical cross-entropy, seeded, silent."""
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True,
              callbacks=list(callbacks))
    return model


def train_mlp(xtr, ytr, *, seed: int = 0, epochs: int = 20, prune_epochs: int = 20,
              sparsity: float = 0.9, dropout: float = 0.0, width: int = 256):
    """Train the paper's small MLP, then prune it to ``sparsity`` over ``prune_epochs`` (0: no pruning)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_mlp(width=width, dropout=dropout)
    train(model, xtr, ytr, epochs=epochs, batch_size=128, seed=seed)
    if prune_epochs:
        steps = prune_epochs * int(np.ceil(len(xtr) / 128))
        cb = magnitude_pruning_callback(sparsity, 0, int(steps * 0.8))
        model.fit(xtr, ytr, epochs=prune_epochs, batch_size=128, verbose=0, callbacks=[cb])
    return model


def train_cnn(xtr, ytr, *, seed: int = 0, epochs: int = 15, filters: int = 32):
    """Train the small CNN with batch norm (batch size 64, as the paper's small CNNs)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_cnn(filters=filters)
    return train(model, xtr, ytr, epochs=epochs, batch_size=64, seed=seed)


def accuracy(model, x, y) -> float:
    return float((model.predict(x, verbose=0).argmax(-1) == y).mean())
