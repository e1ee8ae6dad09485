"""Your own data: a folder of images and a folder of masks, matched by file name stem.

Layout: ``root/{split}/images`` and ``root/{split}/masks`` when ``root/{split}/images``
exists, else ``root/images`` and ``root/masks`` (then the whole folder is the split, whatever
its name). Images are ``.jpg .jpeg .png .bmp`` files (any case); masks are PNGs with the
image's stem (``cat1.jpg`` -> ``cat1.png``). Every image needs a mask and every mask an image:
a mismatch stops the conversion before it starts, naming a few of the files. It is a layout
problem (a wrong folder, a wrong extension) rather than one bad sample, so ``skip_bad`` does
not hide it; samples that are bad in themselves (sizes, values, colours) are skipped by it.

Masks without a palette file hold class ids: palette-PNG indices or gray values (an RGB mask
whose pixels are all gray counts as gray), 255 for ignore. With a palette file every mask is
read as colours, and a colour the palette lacks is an error naming the file and the colour.
Transparent mask pixels are an error: what they should be is not ours to guess.

Palette files, one class per entry in class id order:

- text: ``R G B name`` lines (the name is optional and may hold spaces; ``#`` starts a
  comment); one name on several lines maps those colours to one class;
- JSON: ``[[r, g, b], ...]`` or ``{"name": [r, g, b], ...}``.

Entries named ``ignore`` or ``void`` map to the ignore label 255 and are not classes.

Class names come from the palette, or ``class_names`` (a comma-separated string or a list,
which also renames the palette's classes), or ``num_classes`` (``class_0``, ``class_1``, ...).

JPEG and PNG images in RGB are written as they are; other images (BMP, gray, RGBA, palette)
are decoded to RGB arrays, so the records hold what Pillow sees.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from fcn_tf.data.converters.common import WIDE_MODES, join_paths, read_image, split_paths
from fcn_tf.data.records import Sample
from fcn_tf.data.writer import BadSampleError, Converter

__all__ = ["IMAGE_EXTENSIONS", "Folder", "load_palette", "read_mask"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MASK_EXTENSIONS = (".png",)
IGNORE_NAMES = ("ignore", "void")
IGNORE = 255

_SHOWN = 5  # files or colours named in an error message

Colour = tuple[int, int, int]


def _pack(colour: Sequence[int]) -> int:
    return (int(colour[0]) << 16) | (int(colour[1]) << 8) | int(colour[2])


def _unpack(packed: int) -> Colour:
    return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255


def _opaque(array: np.ndarray, path: str) -> np.ndarray:
    """The colour channels of an image array whose last channel is alpha, if fully opaque."""
    if (array[..., -1] != 255).any():
        raise BadSampleError(f"{path}: mask has transparent pixels; give them a class or 255")
    return array[..., :-1]


def _map_colours(rgb: np.ndarray, colours: dict[int, int], path: str) -> np.ndarray:
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8)
    packed |= rgb[..., 2]
    unique, inverse = np.unique(packed, return_inverse=True)
    lut = np.array([colours.get(int(c), -1) for c in unique], np.int64)
    unknown = [_unpack(int(c)) for c in unique[lut < 0]]
    if unknown:
        more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
        shown = ", ".join(str(c) for c in unknown[:_SHOWN])
        raise BadSampleError(f"{path}: colours not in the palette: {shown}{more}")
    return lut[inverse].reshape(rgb.shape[:2]).astype(np.uint8)


def read_mask(path: str, colours: dict[int, int] | None = None) -> np.ndarray:
    """A mask PNG's class ids, uint8 ``[H, W]``; ``colours`` maps packed RGB to class ids.

    Raises :class:`BadSampleError` naming the file when it cannot be read as a mask.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "mask.png")
    >>> Image.fromarray(np.array([[0, 1, 255]], np.uint8)).save(path)
    >>> read_mask(path).tolist()
    [[0, 1, 255]]
    >>> Image.fromarray(np.array([[[255, 0, 0], [0, 0, 0]]], np.uint8)).save(path)
    >>> read_mask(path, {0xFF0000: 1, 0x000000: 0}).tolist()  # red is class 1
    [[1, 0]]
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            if colours is not None and mode not in WIDE_MODES:
                array = np.asarray(image.convert("RGBA"))
            else:
                array = np.asarray(image)
    except Exception as error:
        raise BadSampleError(f"{path}: unreadable mask ({error})") from error
    if colours is not None:
        if mode in WIDE_MODES:
            raise BadSampleError(f"{path}: a {mode} mask has no colours to match the palette")
        return _map_colours(_opaque(array, path), colours, path)
    if mode in ("1", "L", "P"):
        return array.astype(np.uint8)
    if mode in ("LA", "PA"):
        return _opaque(array, path)[..., 0]
    if mode in ("RGB", "RGBA"):
        rgb = _opaque(array, path) if mode == "RGBA" else array
        if (rgb == rgb[..., :1]).all():
            return rgb[..., 0]
        raise BadSampleError(
            f"{path}: colour mask without a palette file; give one (palette=..., --palette) "
            "mapping its colours to classes"
        )
    if mode in WIDE_MODES:
        if array.size and (array.min() < 0 or array.max() > IGNORE):
            raise BadSampleError(f"{path}: mask values up to {array.max()} do not fit 8 bits")
        return array.astype(np.uint8)
    raise BadSampleError(f"{path}: a {mode} image is not an index, gray or RGB mask")


def _colour(value: object, where: str) -> Colour:
    """Three 0-255 ints (digit strings from a text file) as a colour, or an error at ``where``."""
    if isinstance(value, list | tuple) and len(value) == 3:
        channels = [int(v) if isinstance(v, str) and v.isdigit() else v for v in value]
        if all(type(v) is int and 0 <= v <= 255 for v in channels):
            return channels[0], channels[1], channels[2]
    raise ValueError(f"{where}: {value!r} is not an R G B colour of 0-255 values")


def load_palette(path: str) -> list[tuple[Colour, str | None]]:
    """A palette file's ``(colour, name)`` entries in order; ``name`` is None when unnamed.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as file:
    ...     _ = file.write("0 0 0 background\\n255 0 0 floor mat  # red\\n255 255 255 void\\n")
    >>> load_palette(file.name)
    [((0, 0, 0), 'background'), ((255, 0, 0), 'floor mat'), ((255, 255, 255), 'void')]
    >>> os.remove(file.name)
    """
    try:
        with open(path) as file:
            text = file.read()
    except OSError as error:
        raise FileNotFoundError(f"{path}: cannot read palette ({error.strerror})") from error
    raw: list[tuple[object, str | None, str]] = []
    if text.lstrip().startswith(("[", "{")):
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: invalid JSON palette ({error})") from error
        if isinstance(content, dict):
            raw = [(colour, str(name), f"{path}: {name!r}") for name, colour in content.items()]
        else:
            raw = [(colour, None, f"{path}: entry {i}") for i, colour in enumerate(content)]
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            parts = line.split("#", 1)[0].split(maxsplit=3)
            if parts:
                name = parts[3].strip() if len(parts) > 3 else None
                raw.append((parts[:3], name, f"{path}:{number}"))
    return [(_colour(colour, where), name) for colour, name, where in raw]


def _names(class_names: str | Sequence[str] | None) -> list[str] | None:
    if class_names is None:
        return None
    names = class_names.split(",") if isinstance(class_names, str) else list(class_names)
    names = [str(name).strip() for name in names]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f"folder: class names must be distinct and non-empty: {class_names!r}")
    return names


def _palette_classes(path: str) -> tuple[dict[int, int], list[str | None]]:
    """Packed colour -> class id (255 for ignore entries), and the classes' names."""
    colours: dict[int, int] = {}
    names: list[str | None] = []
    ids: dict[str, int] = {}
    for colour, name in load_palette(path):
        packed = _pack(colour)
        if packed in colours:
            raise ValueError(f"{path}: colour {colour} is listed twice")
        if name is not None and name.lower() in IGNORE_NAMES:
            colours[packed] = IGNORE
        elif name is not None and name in ids:
            colours[packed] = ids[name]
        else:
            colours[packed] = len(names)
            if name is not None:
                ids[name] = len(names)
            names.append(name)
    if not names:
        raise ValueError(f"{path}: the palette has no classes")
    return colours, names


class Folder(Converter):
    """Images and masks from ``root`` (see the module's description for the layout).

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> for name, mode in [("images/cat.jpg", "RGB"), ("masks/cat.png", "L")]:
    ...     os.makedirs(os.path.join(root, os.path.dirname(name)))
    ...     Image.new(mode, (4, 3), 1).save(os.path.join(root, name))
    >>> folder = Folder(root, "train", class_names="background,cat")
    >>> [os.path.relpath(path, root) for path in split_paths(folder.keys()[0])]
    ['images/cat.jpg', 'masks/cat.png']
    >>> folder.class_names, folder.load(folder.keys()[0]).label.tolist()[0]
    (('background', 'cat'), [1, 1, 1, 1])
    """

    name = "folder"

    def __init__(
        self,
        root: str,
        split: str,
        num_classes: int | None = None,
        class_names: str | Sequence[str] | None = None,
        palette: str | None = None,
    ):
        self.root = root
        self.split = split
        self.palette = palette
        self.colours: dict[int, int] | None = None
        names = _names(class_names)
        if palette is not None:
            self.colours, palette_names = _palette_classes(palette)
            if names is not None and len(names) != len(palette_names):
                raise ValueError(
                    f"folder: {len(names)} class names for the {len(palette_names)} classes "
                    f"of {palette}"
                )
            if names is None:
                names = [n or f"class_{i}" for i, n in enumerate(palette_names)]
        elif names is None:
            if num_classes is None:
                raise ValueError("folder: give num_classes, class_names or a palette file")
            names = [f"class_{i}" for i in range(num_classes)]
        if num_classes is not None and num_classes != len(names):
            raise ValueError(f"folder: num_classes={num_classes} but {len(names)} classes named")
        if not 1 <= len(names) <= IGNORE:
            raise ValueError(f"folder: {len(names)} classes; 1 to 255 fit (255 is ignore)")
        self.class_names = tuple(names)

    def folders(self) -> tuple[str, str]:
        """The images and masks folders of the split."""
        base = os.path.join(self.root, self.split)
        if not os.path.isdir(os.path.join(base, "images")):
            base = self.root
        images, masks = os.path.join(base, "images"), os.path.join(base, "masks")
        for folder in (images, masks):
            if not os.path.isdir(folder):
                raise FileNotFoundError(
                    f"folder: no {folder} (layout: root/images and root/masks, or "
                    f"root/{self.split}/images and root/{self.split}/masks)"
                )
        return images, masks

    def keys(self) -> list[str]:
        images_dir, masks_dir = self.folders()
        images = _by_stem(images_dir, IMAGE_EXTENSIONS)
        masks = _by_stem(masks_dir, MASK_EXTENSIONS)
        if not images:
            raise ValueError(f"folder: no {'/'.join(IMAGE_EXTENSIONS)} images in {images_dir}")
        problems = []
        no_mask = [images[stem] for stem in sorted(images.keys() - masks.keys())]
        if no_mask:
            problems.append(
                f"{len(no_mask)} images in {images_dir} have no mask (a PNG of the same stem) "
                f"in {masks_dir}: {_few(no_mask)}"
            )
        no_image = [masks[stem] for stem in sorted(masks.keys() - images.keys())]
        if no_image:
            problems.append(
                f"{len(no_image)} masks in {masks_dir} have no image "
                f"({' '.join(IMAGE_EXTENSIONS)}) in {images_dir}: {_few(no_image)}"
            )
        if problems:
            raise ValueError("folder: " + "; ".join(problems))
        return [
            join_paths(os.path.join(images_dir, images[stem]), os.path.join(masks_dir, masks[stem]))
            for stem in sorted(images)
        ]

    def load(self, key: str) -> Sample:
        image_path, mask_path = split_paths(key)
        label = read_mask(mask_path, self.colours)
        return Sample(
            os.path.basename(image_path),
            read_image(image_path),
            label,
            origin=f"{image_path} (mask {mask_path})",
        )


def _few(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _by_stem(folder: str, extensions: tuple[str, ...]) -> dict[str, str]:
    """Stem -> file name of the folder's files with those extensions; one file per stem."""
    found: dict[str, list[str]] = {}
    for entry in sorted(os.listdir(folder)):
        stem, extension = os.path.splitext(entry)
        if (
            extension.lower() in extensions
            and not entry.startswith(".")
            and os.path.isfile(os.path.join(folder, entry))
        ):
            found.setdefault(stem, []).append(entry)
    clashes = [" and ".join(files) for files in found.values() if len(files) > 1]
    if clashes:
        raise ValueError(f"folder: files in {folder} share a stem: {_few(clashes)}")
    return {stem: files[0] for stem, files in found.items()}
