"""Shared test settings: quiet TensorFlow, thin networks, seeded randomness."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

# Geometry does not depend on channel counts: thin VGG16s check it at a fraction of the cost.
TINY_VGG = {"width": 1 / 32, "fc_units": 8}


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True)
def _dtype_policy():
    # A test that sets up a mixed-precision trainer without fit() (which restores the policy)
    # must not build later tests' models in float16.
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
