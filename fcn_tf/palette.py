"""Colours for label maps: each dataset's own palette, and colourising class ids.

>>> colorize(np.array([[0, 1], [255, 2]]), palette_for(["background", "aeroplane"]))[1, 0]
array([224, 224, 192], dtype=uint8)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fcn_tf.data.converters import camvid, voc

__all__ = ["colorize", "palette_for"]


def palette_for(class_names: Sequence[str]) -> np.ndarray:
    """A ``[256, 3]`` uint8 palette: CamVid's colours for CamVid's classes, else VOC's map
    (which every id up to 255, the ignore label included, has a distinct colour in).

    >>> palette_for(camvid.CLASS_NAMES)[3].tolist()  # road
    [128, 64, 128]
    """
    colours = np.asarray(voc.voc_palette(), np.uint8)
    if tuple(class_names) == tuple(camvid.CLASS_NAMES):
        colours[: len(camvid.PALETTE)] = camvid.PALETTE
    return colours


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class ids ``[H, W]`` to an RGB picture ``[H, W, 3]`` uint8. Ids beyond the palette
    (models of over 256 classes) wrap around it, as in the legends of
    :func:`fcn_tf.evaluation.pictures.legend_picture`.

    >>> colours = palette_for([])
    >>> (colorize(np.array([[300]]), colours) == colours[300 % 256]).all()
    np.True_
    """
    return palette[np.asarray(label).astype(np.intp) % len(palette)]
