"""Reading images as RGB float arrays, whatever their file format.

Every code path that reads an image (datasets, LMDB, the command-line tools) goes through
``decode_image`` so that all of them see the same pixels: EXIF orientation applied,
grayscale / palette / RGBA / CMYK / 16-bit converted to 3-channel RGB in [0, 1].
"""
import io
import os

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.gif')


class ImageReadError(ValueError):
    """An image file that cannot be read or decoded; the message names the file."""


def _to_rgb_float(arr):
    """uint8/uint16/float array of HxW, HxWx1, HxWx2 (gray+alpha), HxWx3 or HxWx4 (RGBA) -> HxWx3 float32."""
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif arr.dtype in (np.int32, np.uint32):  # PIL mode 'I' holds 16-bit data in int32
        arr = arr.astype(np.float32) / (65535.0 if arr.max() > 255 else 255.0)
    else:
        arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    channels = arr.shape[2]
    if channels in (2, 4):  # composite over white so that transparent areas look like paper
        alpha = arr[:, :, -1:]
        arr = arr[:, :, :-1] * alpha + (1.0 - alpha)
        channels -= 1
    if channels == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(np.clip(arr, 0.0, 1.0), dtype=np.float32)


def _decode_16bit(buf):
    """cv2 keeps 16-bit depth that PIL truncates; returns None when the image is not 16-bit."""
    arr = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None or arr.dtype != np.uint16:
        return None
    if arr.ndim == 3:
        order = [2, 1, 0, 3][:arr.shape[2]] if arr.shape[2] in (3, 4) else list(range(arr.shape[2]))
        arr = arr[:, :, order]  # BGR(A) -> RGB(A)
    return arr


def _looks_like(buf):
    """A hint at what undecodable bytes are: text (e.g. an HTML error page saved as .jpg) or unknown."""
    head = bytes(buf[:512])
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in '\r\n\t' for c in text):
        return f'it is a text file starting {text[:40].splitlines()[0]!r}'
    return f'unknown file signature {head[:8].hex(" ")}'


class ImageTooLargeError(ImageReadError):
    """An image with more pixels than the caller's budget; refused before its pixels are decoded."""


def _check_budget(img, name, max_pixels, reduce_to):
    """Refuse ``img`` (opened, not decoded) beyond ``max_pixels``, or have a JPEG decoded at a reduced scale.

    reduce_to: (width, height) -> the smallest (width, height) the caller needs, for callers that
    resize the image anyway; a JPEG is then decoded at 1/2, 1/4 or 1/8 scale, as large as needed.
    """
    width, height = img.size
    if max_pixels is None or width * height <= max_pixels:
        return
    if reduce_to is not None and img.format == 'JPEG':
        img.draft(img.mode, tuple(int(v) for v in reduce_to(width, height)))  # the scale keeps at least this size
        if img.size[0] * img.size[1] <= max_pixels:
            return
    raise ImageTooLargeError(f'{name}: {width}x{height} pixels ({width * height / 1e6:.1f} megapixels) is beyond the '
                             f'budget of {max_pixels / 1e6:g} megapixels per image; not decoded (raise the budget, '
                             'e.g. uiqa-score --max-megapixels, if the machine has the memory)')


def decode_pixels(buf, name='<bytes>', max_pixels=None, reduce_to=None):
    """Decode encoded image bytes to the file's own samples, EXIF orientation applied.

    Returns an array (H, W) or (H, W, C) of uint8, uint16, int32 or float32, channels RGB(A)
    or gray(+alpha); ``decode_image`` turns it into RGB float. ``name`` is only used in errors.
    max_pixels: refuse (``ImageTooLargeError``) images with more pixels before decoding them;
    reduce_to: see ``_check_budget`` (large JPEGs decoded reduced instead of refused).
    """
    if not buf:
        raise ImageReadError(f'{name}: file is empty')
    try:
        with Image.open(io.BytesIO(buf)) as img:
            _check_budget(img, name, max_pixels, reduce_to)
            fmt = img.format
            img = ImageOps.exif_transpose(img)
            mode = img.mode
            if mode.startswith('I;16') or mode == 'I' or mode == 'RGB' and fmt in ('PNG', 'TIFF'):
                arr16 = _decode_16bit(buf)
                if arr16 is not None:
                    return arr16
            if mode == 'P':
                img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
            elif mode in ('CMYK', 'YCbCr', 'HSV', 'LAB', '1'):
                img = img.convert('RGB')
            elif mode == 'F':
                return np.asarray(img, dtype=np.float32)
            elif mode.startswith('I;16'):
                img = img.convert('I')
            return np.asarray(img)
    except ImageReadError:
        raise
    except UnidentifiedImageError as exc:  # its message shows an internal BytesIO, not the file
        raise ImageReadError(f'{name}: cannot decode image: no format Pillow reads ({_looks_like(buf)})') from exc
    except Exception as exc:  # PIL raises many kinds of errors for broken files
        raise ImageReadError(f'{name}: cannot decode image ({type(exc).__name__}: {exc})') from exc


def decode_image(buf, name='<bytes>'):
    """Decode encoded image bytes to an RGB float32 array of shape (H, W, 3) in [0, 1].

    ``name`` is only used in error messages.
    """
    return _to_rgb_float(decode_pixels(buf, name))


def pixels_to_rgb_float(pixels):
    """Samples from ``decode_pixels`` -> RGB float32 (H, W, 3) in [0, 1], exactly as ``decode_image``."""
    return _to_rgb_float(pixels)


def pixels_to_rgb_uint8(pixels):
    """Samples from ``decode_pixels`` as RGB uint8 (H, W, 3) when they are plain 8-bit gray or RGB, else None.

    Exact: ``float32(result) / 255`` equals ``decode_image``'s values bit for bit, so 8-bit images
    can travel as uint8 (4x fewer bytes) and be scaled where they are used.
    """
    if pixels.dtype != np.uint8:
        return None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if pixels.shape[2] == 3:
        return np.ascontiguousarray(pixels)
    return None  # alpha: composited over white in float


def read_image(path):
    """Read an image file as RGB float32 (H, W, 3) in [0, 1]; raises ImageReadError naming the file."""
    path = os.fspath(path)
    try:
        with open(path, 'rb') as f:
            buf = f.read()
    except OSError as exc:
        raise ImageReadError(f'{path}: cannot open file ({exc.strerror or exc})') from exc
    return decode_image(buf, name=path)


def is_image_file(path):
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def image_to_tensor(img):
    """(H, W, 3) float array -> torch tensor (3, H, W)."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
