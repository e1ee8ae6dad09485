"""One converter per dataset layout; :func:`get_converter` finds one by name.

Modules are imported on demand, so a layout's extra needs (scipy for .mat files) cost nothing
to the others.
"""

from __future__ import annotations

import importlib

from fcn_tf.data.writer import Converter

__all__ = ["CONVERTERS", "get_converter"]

# name -> "module:class" under fcn_tf.data.converters
CONVERTERS = {
    "camvid": "camvid:CamVid",
    "folder": "folder:Folder",
    "nyud": "nyud:NYUDv2",
    "pascal_context": "pascal_context:PascalContext",
    "sbd": "sbd:SBD",
    "siftflow": "siftflow:SIFTFlow",
    "synthetic": "synthetic:Shapes",
    "voc": "voc:VOC",
}


def get_converter(name: str) -> type[Converter]:
    """The converter class registered as ``name``.

    >>> get_converter("camvid").name
    'camvid'
    """
    if name not in CONVERTERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(CONVERTERS)}")
    module, cls = CONVERTERS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
