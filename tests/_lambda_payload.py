"""A module-level function for a Lambda layer that leaves a trace when it runs.

Used by the safe-loading tests: if loading a model file ever runs the Lambda's code, the file named
by ``$MODTEST_LAMBDA_MARKER`` appears. Keras cannot serialise closures, hence a module function,
registered so that a trusted load (in a process that imported this module) can find it.
"""
import os

import keras


@keras.saving.register_keras_serializable(package="modtest_tests")
def payload(x):
    marker = os.environ.get("MODTEST_LAMBDA_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write("ran\n")
    return x * 2.0


def lambda_model():
    """8 -> Dense(4) -> Lambda(payload) -> Dense(3) (softmax)."""
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="h"),
                             keras.layers.Lambda(payload, name="lam"),
                             keras.layers.Dense(3, activation="softmax", name="out")])
