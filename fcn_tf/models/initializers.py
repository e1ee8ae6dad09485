"""Bilinear interpolation as the initial kernel of a transposed convolution (paper section 3.3)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["BilinearUpsampling", "bilinear_filter"]


def bilinear_filter(size: int) -> Any:
    """The 1-D bilinear filter of the reference nets' ``upsample_filt``, as a tensor.

    >>> [float(v) for v in bilinear_filter(4)]
    [0.25, 0.75, 0.75, 0.25]
    >>> [float(v) for v in bilinear_filter(3)]
    [0.5, 1.0, 0.5]
    """
    factor = (size + 1) // 2
    # Even sizes sit between pixels, odd sizes on one: this is what makes 2f-wide kernels
    # interpolate cells centred between output pixels and (2f-1)-wide ones cells on pixels.
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1.0 - ops.abs(ops.arange(size, dtype="float32") - center) / factor


@keras.saving.register_keras_serializable(package="fcn_tf")
class BilinearUpsampling(keras.initializers.Initializer):
    """Kernel ``[k, k, C, C]`` of a ``Conv2DTranspose`` that upsamples each channel bilinearly.

    Channel ``c`` only feeds channel ``c`` (a diagonal kernel), as in the reference surgery.

    >>> kernel = BilinearUpsampling()((4, 4, 2, 2))
    >>> tuple(kernel.shape), float(kernel[1, 2, 0, 0]), float(kernel[1, 2, 0, 1])
    ((4, 4, 2, 2), 0.5625, 0.0)
    """

    def __call__(self, shape, dtype=None):
        kh, kw, out_channels, in_channels = shape
        if out_channels != in_channels:
            raise ValueError(
                f"bilinear upsampling keeps channels: got {in_channels} in, {out_channels} out"
            )
        plane = ops.outer(bilinear_filter(kh), bilinear_filter(kw))
        eye = ops.eye(out_channels, dtype="float32")
        kernel = plane[:, :, None, None] * eye[None, None, :, :]
        return ops.cast(kernel, dtype or keras.config.floatx())

    def get_config(self) -> dict:
        return {}
