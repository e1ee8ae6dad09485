"""The bilinear initializer against the reference formula and against numpy interpolation."""

import keras
import numpy as np
import pytest

from fcn_tf.models import BilinearUpsampling, build_fcn


def upsample_filt(size: int) -> np.ndarray:
    """The reference surgery's upsample_filt, written from its formula."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


@pytest.mark.parametrize("size", [4, 16, 32, 64, 3, 63])
def test_kernel_equals_reference_formula_on_the_diagonal(size):
    classes = 3
    kernel = np.asarray(BilinearUpsampling()((size, size, classes, classes), "float32"))
    for i in range(classes):
        for j in range(classes):
            expected = upsample_filt(size) if i == j else np.zeros((size, size))
            np.testing.assert_allclose(kernel[:, :, i, j], expected, atol=1e-7)


def test_refuses_changing_channel_count():
    with pytest.raises(ValueError, match="keeps channels"):
        BilinearUpsampling()((4, 4, 2, 3))


def test_serializable():
    config = keras.initializers.serialize(BilinearUpsampling())
    assert isinstance(keras.initializers.deserialize(config), BilinearUpsampling)


def smooth(rows: int, cols: int) -> np.ndarray:
    r, c = np.mgrid[:rows, :cols].astype("float64")
    return np.sin(0.3 * r) + np.cos(0.2 * c) + 0.05 * r * c


def numpy_bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear interpolation at fractional coordinates: np.interp along columns, then rows."""
    along_cols = np.stack([np.interp(cols, np.arange(image.shape[1]), row) for row in image])
    return np.stack([np.interp(rows, np.arange(image.shape[0]), col) for col in along_cols.T]).T


@pytest.mark.parametrize("factor", [2, 8])
def test_frozen_upsampler_is_bilinear_interpolation(factor):
    size = 2 * factor
    layer = keras.layers.Conv2DTranspose(
        2,
        size,
        strides=factor,
        use_bias=False,
        kernel_initializer=BilinearUpsampling(),
        trainable=False,
    )
    image = smooth(9, 11)
    x = np.stack([image, 2 * image], axis=-1)[None].astype("float32")
    y = np.asarray(layer(x))[0]
    # Output pixel u sits at input coordinate (u - (size - 1) / 2) / factor (the deconvolution's
    # coordinate map); the interior is where that coordinate lies inside the input grid.
    rows = (np.arange(y.shape[0]) - (size - 1) / 2) / factor
    cols = (np.arange(y.shape[1]) - (size - 1) / 2) / factor
    inside_r = (rows >= 0) & (rows <= image.shape[0] - 1)
    inside_c = (cols >= 0) & (cols <= image.shape[1] - 1)
    expected = numpy_bilinear(image, rows[inside_r], cols[inside_c])
    np.testing.assert_allclose(y[np.ix_(inside_r, inside_c)][..., 0], expected, atol=1e-5)
    np.testing.assert_allclose(y[np.ix_(inside_r, inside_c)][..., 1], 2 * expected, atol=1e-5)
    assert inside_r.sum() == factor * (image.shape[0] - 1)  # half-pixel centres: none on the edge


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_model_upsamplers_bilinear_final_frozen(stride):
    model = build_fcn(4, stride, backbone_options={"width": 1 / 32, "fc_units": 8})
    deconvs = [x for x in model.layers if isinstance(x, keras.layers.Conv2DTranspose)]
    assert len(deconvs) == {32: 1, 16: 2, 8: 3}[stride]
    for layer in deconvs:
        size = layer.kernel_size[0]
        assert not layer.use_bias
        np.testing.assert_allclose(np.asarray(layer.kernel)[:, :, 1, 1], upsample_filt(size))
    assert [layer.trainable for layer in deconvs] == [True] * (len(deconvs) - 1) + [False]
    trainable = {v.path.split("/")[0] for v in model.trainable_variables}
    assert deconvs[-1].name not in trainable
