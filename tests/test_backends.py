"""The networks are keras.ops only: a model saved under TensorFlow runs the same under JAX (and
torch, where installed: the dev extra leaves it out, its CUDA wheel is several GB)."""

import importlib.util
import os
import textwrap

import keras
import numpy as np
import pytest
from conftest import TINY_VGG
from helpers import images, randomize, run_python

from fcn_tf.models import build_fcn

RUN_SAVED_MODELS = textwrap.dedent(
    """
    import os
    import keras
    import numpy as np
    import fcn_tf  # registers the custom layers
    first, *paths = os.environ["ARGS"].split(os.pathsep)
    x = np.load(first)
    for path in paths:
        model = keras.saving.load_model(path, safe_mode=True)
        np.save(path + ".npy", keras.ops.convert_to_numpy(model(x, training=False)))
    # Training on this backend too: the loss and the metric are keras.ops only.
    model = keras.saving.load_model(paths[0], safe_mode=True)
    labels = (np.arange(x[..., 0].size).reshape(x.shape[:3]) % 4).astype("int32")
    labels[:, :3] = 255
    model.compile(
        keras.optimizers.SGD(1e-6),
        fcn_tf.SegmentationCrossEntropy(),
        metrics=[fcn_tf.MeanIU(3)],
        jit_compile=True,
    )
    logs = model.fit(x, labels, batch_size=2, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0]) and 0.0 <= logs["mean_iu"][0] <= 1.0, logs
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
    paths = [str(tmp_path / "x.npy"), *expected]
    stdout = run_python(
        RUN_SAVED_MODELS, env={"KERAS_BACKEND": backend, "ARGS": os.pathsep.join(paths)}
    )
    assert stdout.split()[-1] == backend
    for path, want in expected.items():
        atol = 1e-5 * np.abs(want).max()
        np.testing.assert_allclose(np.load(path + ".npy"), want, rtol=1e-5, atol=atol)
