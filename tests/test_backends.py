"""The networks are keras.ops only: a model saved under TensorFlow runs the same under JAX/torch."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import TINY_VGG
from helpers import images, randomize

from fcn_tf.models import build_fcn

RUN_SAVED_MODELS = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    import fcn_tf  # registers the custom layers
    x = np.load(sys.argv[1])
    for path in sys.argv[2:]:
        model = keras.saving.load_model(path, safe_mode=True)
        np.save(path + ".npy", keras.ops.convert_to_numpy(model(x, training=False)))
    print(keras.backend.backend())
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_saved_models_run_identically_on_other_backend(backend, tmp_path, rng):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"Keras backend {backend!r} is not installed")
    x = images(rng, 2, 45, 61, 3)
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for stride, geometry in [(8, "caffe"), (16, "same")]:
        model = build_fcn(3, stride, geometry=geometry, backbone_options=TINY_VGG)
        randomize(model, rng)
        path = str(tmp_path / f"fcn{stride}s_{geometry}.keras")
        model.save(path)
        expected[path] = keras.ops.convert_to_numpy(model(x, training=False))
    result = subprocess.run(
        [sys.executable, "-c", RUN_SAVED_MODELS, str(tmp_path / "x.npy"), *expected],
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == backend
    for path, want in expected.items():
        atol = 1e-5 * np.abs(want).max()
        np.testing.assert_allclose(np.load(path + ".npy"), want, rtol=1e-5, atol=atol)
