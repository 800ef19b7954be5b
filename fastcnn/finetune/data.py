"""Training data for the `finetune` command: an .npz with arrays x and y, or a folder holding one
subfolder of images per class (decoded with Pillow, the optional `image` extra).

Images are converted to what the model takes: grayscale ("L") for a 1-channel input, RGB
otherwise (then reordered to BGR if asked), resized to (height, width) with bilinear filtering,
scaled to [0, 1], normalised as (pixel - mean) / std per channel, and laid out NCHW or NHWC.
"""
from __future__ import annotations

import os

import numpy as np

from fastcnn.errors import FineTuneError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def load_npz(path: str, x_key: str = "x", y_key: str = "y"):
    """(x, y) from an .npz file with arrays named x_key and y_key (default x and y)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            if x_key not in keys or y_key not in keys:
                raise FineTuneError(f"{path}: expected arrays '{x_key}' and '{y_key}', found {keys}")
            return f[x_key], f[y_key]
    except (OSError, ValueError) as e:
        raise FineTuneError(f"{path}: cannot read as .npz ({e})") from None


def class_order(folders, old_labels):
    """Class names in index order: the model's existing labels first (so a folder named like
    an existing class trains that class), then the other folder names, sorted."""
    names = [str(x) for x in old_labels] if old_labels else []
    names += sorted(f for f in folders if f not in names)
    return names


def image_geometry(input_spec, size, layout):
    """(channels, height, width, layout) for a 4-D image input; size overrides the model's."""
    shape = input_spec.shape
    if len(shape) != 4:
        raise FineTuneError(f"an image folder needs an image model input (N, C, H, W) or "
                            f"(N, H, W, C); input '{input_spec.name}' has shape {list(shape)}")
    layout = layout or input_spec.layout or "NCHW"
    if layout not in ("NCHW", "NHWC"):
        raise FineTuneError(f"layout must be NCHW or NHWC, got {layout!r}")
    c, h, w = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
    if size is not None:
        h, w = size
    if not isinstance(c, int) or c not in (1, 3):
        raise FineTuneError(f"the model input '{input_spec.name}' has {c} channels ({layout}); "
                            f"image folders give 1 (grayscale) or 3 (RGB/BGR)")
    if not isinstance(h, int) or not isinstance(w, int):
        raise FineTuneError(f"the model input has a dynamic image size {list(shape)}; give --size")
    return c, h, w, layout


def _per_channel(values, c, name, default):
    v = np.asarray(default if values is None else values, np.float32).reshape(-1)
    if v.size == 1:
        v = np.repeat(v, c)
    if v.size != c:
        raise FineTuneError(f"--{name} needs 1 or {c} values, got {v.size}")
    if name == "std" and np.any(v == 0):
        raise FineTuneError("--std values must be non-zero")
    return v


def load_image_folder(path, input_spec, old_labels=None, size=None, mean=None, std=None,
                      channel_order="RGB", layout=None):
    """(x, y, class names) from `path`/<class>/<image files>. x is float32 in the model's layout."""
    try:
        from PIL import Image
    except ImportError:
        raise FineTuneError("reading an image folder needs Pillow: pip install 'fastcnn[image]'") from None
    if channel_order not in ("RGB", "BGR"):
        raise FineTuneError(f"channel order must be RGB or BGR, got {channel_order!r}")
    c, h, w, layout = image_geometry(input_spec, size, layout)
    m, s = _per_channel(mean, c, "mean", 0.0), _per_channel(std, c, "std", 1.0)
    folders = sorted(d for d in os.listdir(path)
                     if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    if not folders:
        raise FineTuneError(f"{path}: no class subfolders (expected {path}/<class name>/<images>)")
    names = class_order(folders, old_labels)
    images, labels = [], []
    for folder in folders:
        files = sorted(f for f in os.listdir(os.path.join(path, folder))
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        if not files:
            raise FineTuneError(f"{os.path.join(path, folder)}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        for f in files:
            full = os.path.join(path, folder, f)
            try:
                with Image.open(full) as img:
                    img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
                    arr = np.asarray(img, np.float32) / 255.0
            except (OSError, ValueError) as e:
                raise FineTuneError(f"{full}: cannot decode image ({e})") from None
            arr = arr.reshape(h, w, c)
            if c == 3 and channel_order == "BGR":
                arr = arr[:, :, ::-1]
            arr = (arr - m) / s
            images.append(arr.transpose(2, 0, 1) if layout == "NCHW" else arr)
            labels.append(names.index(folder))
    return np.ascontiguousarray(np.stack(images), np.float32), np.asarray(labels, np.int64), names
