"""Reading images for dataset preparation, with one documented behaviour per kind of bad input.

| input                               | behaviour                                                      |
|-------------------------------------|----------------------------------------------------------------|
| unreadable, truncated, zero bytes,  | ``ImageReadError`` naming the file; the tools skip it and list |
| not an image, symlink loop          | it in their summary                                            |
| header claiming enormous dimensions | ``ImageReadError`` before decoding (limit: ``MAX_PIXELS``)     |
| 16-bit                              | converted to 8-bit (round(v / 257)): BasicSR's loaders read    |
|                                     | 8-bit; noted in the summary                                    |
| RGBA / grey + alpha                 | alpha dropped (training data is RGB); noted                    |
| greyscale                           | kept greyscale (BasicSR's loader expands it to 3 channels)     |
"""
import os

import cv2
import numpy as np
from PIL import Image

from ..utils.fs import atomic_write

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
#: Refuse images above this many pixels before decoding (a 16k x 16k image is 268 M pixels).
MAX_PIXELS = 16384 * 16384


class ImageReadError(ValueError):
    """An image that cannot be used, with the file and the reason."""


def is_image_file(name):
    return name.lower().endswith(IMG_EXTENSIONS)


def list_images(folder):
    """Sorted image file names in ``folder`` (not recursive) and the names of other entries.

    Raises:
        FileNotFoundError: with the folder's name when it does not exist.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'{folder}: not a folder')
    images, others = [], []
    for name in sorted(os.listdir(folder)):
        if name.startswith('.'):
            continue
        full = os.path.join(folder, name)
        (images if is_image_file(name) and not os.path.isdir(full) else others).append(name)
    return images, others


def header_size(path):
    """(width, height) from the file header without decoding, or None if PIL cannot tell."""
    try:
        Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below
        with Image.open(path) as im:
            return im.size
    except Exception:  # not identifiable by PIL: let OpenCV try and report
        return None


def decode_unchanged(path):
    """Decode a file as ``cv2.IMREAD_UNCHANGED`` does (any depth and channel count), after checking
    that it is a non-empty regular file whose header does not claim more than ``MAX_PIXELS``.

    Raises:
        ImageReadError: the file cannot be used; the message names the file.
    """
    try:
        if not os.path.isfile(path):
            raise ImageReadError(f'{path}: not a regular file')
        if os.path.getsize(path) == 0:
            raise ImageReadError(f'{path}: empty file (0 bytes)')
    except OSError as e:  # symlink loops, permissions
        raise ImageReadError(f'{path}: cannot access: {e.strerror or e}') from e
    size = header_size(path)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ImageReadError(f'{path}: header claims {size[0]}x{size[1]} pixels, above the limit of '
                             f'{MAX_PIXELS:,} pixels')
    try:
        data = np.fromfile(path, dtype=np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except (cv2.error, OSError, MemoryError) as e:
        raise ImageReadError(f'{path}: cannot decode: {e}') from e
    if img is None or img.size == 0:
        raise ImageReadError(f'{path}: not a readable image (truncated, corrupt or not an image)')
    return img


def read_image(path, notes=None):
    """Read an image as uint8 BGR (H, W, 3) or greyscale (H, W), converted as the table above says.

    Args:
        path (str): the file.
        notes (list | None): receives human-readable notes about conversions.

    Raises:
        ImageReadError: the file cannot be used; the message names the file.
    """
    notes = notes if notes is not None else []
    img = decode_unchanged(path)
    if img.dtype == np.uint16:
        img = np.clip(np.floor(img.astype(np.float64) / 257.0 + 0.5), 0, 255).astype(np.uint8)
        notes.append(f'{path}: 16-bit converted to 8-bit')
    elif img.dtype != np.uint8:
        raise ImageReadError(f'{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit)')
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
        notes.append(f'{path}: alpha channel dropped')
    elif img.ndim == 3 and img.shape[2] == 2:
        img = img[:, :, 0]
        notes.append(f'{path}: alpha channel dropped')
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return img


def read_bgr(path):
    """Read an image as uint8 BGR (H, W, 3), greyscale expanded, as ``cv2.imread(path, IMREAD_COLOR)`` gives it,
    through :func:`read_image`'s checks.

    Raises:
        ImageReadError: the file cannot be used; the message names the file.
    """
    img = read_image(path)
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def write_png(path, img):
    """Write a PNG atomically (:func:`rlfn_arch.utils.fs.atomic_write`): no partial file is left behind."""
    write_image(path, img)


def exif_orientation(path):
    """The EXIF orientation tag (1-8) of an image file; 1 (as stored) when it has none or it cannot be read."""
    try:
        with Image.open(path) as im:
            value = im.getexif().get(0x0112, 1)
    except Exception:  # not identifiable by PIL, or a broken EXIF block: show the pixels as stored
        return 1
    return value if value in range(1, 9) else 1


def apply_orientation(img, orientation):
    """Turn an (H, W[, C]) array the way EXIF ``orientation`` (1-8) says a viewer shows it."""
    ops = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # mirrored along the main diagonal
        6: lambda a: np.rot90(a, k=-1),  # rotated 90 clockwise to display
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # mirrored along the anti-diagonal
        8: lambda a: np.rot90(a, k=1),  # rotated 90 counter-clockwise to display
    }
    return np.ascontiguousarray(ops[orientation](img)) if orientation in ops else img


def read_unchanged(path):
    """Read an image for upscaling, keeping what it is: (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA
    (grey + alpha becomes BGRA), uint8 or uint16, turned as its EXIF orientation tag says (as viewers show
    it; training data is read as BasicSR reads it, without this).

    Raises:
        ImageReadError: not an image extension, unreadable, or another pixel type; names the file.
    """
    if not path.lower().endswith(IMG_EXTENSIONS):
        raise ImageReadError(f'{path}: not an image file extension ({", ".join(IMG_EXTENSIONS)})')
    img = decode_unchanged(path)  # keeps 16-bit and alpha, unlike the training reader
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f'{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit)')
    if img.ndim == 3 and img.shape[2] == 2:  # grey + alpha -> BGRA
        img = np.dstack([np.repeat(img[:, :, :1], 3, axis=2), img[:, :, 1:]])
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return apply_orientation(img, exif_orientation(path))


def write_image(path, img):
    """Encode ``img`` by the file's extension and write it atomically (folders created as needed)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ok, buf = cv2.imencode(os.path.splitext(path)[1], img)
    if not ok:
        raise OSError(f'cannot encode {path}')
    atomic_write(path, lambda f: f.write(buf.tobytes()))
