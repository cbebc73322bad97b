"""Every image format ends up as the same RGB float pixels."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from uiqa_plugin.data.image_io import ImageReadError, decode_image, read_image


def encode(img, fmt='PNG', **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rgb_png_round_trip():
    arr = np.random.RandomState(0).randint(0, 256, (5, 7, 3), dtype=np.uint8)
    out = decode_image(encode(Image.fromarray(arr)))
    assert out.dtype == np.float32 and out.shape == (5, 7, 3)
    assert np.allclose(out, arr / 255.0)


def test_grayscale_palette_rgba_and_16bit():
    gray = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    out = decode_image(encode(Image.fromarray(gray, 'L')))
    assert np.allclose(out, np.repeat(gray[:, :, None] / 255.0, 3, axis=2))

    rgb = np.random.RandomState(1).randint(0, 256, (4, 6, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).convert('P', palette=Image.ADAPTIVE, colors=8)
    assert np.allclose(decode_image(encode(pal)), np.asarray(pal.convert('RGB')) / 255.0)

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[0, 0, 3] = 255  # opaque red
    rgba[1, 1, 3] = 0  # fully transparent: white
    out = decode_image(encode(Image.fromarray(rgba, 'RGBA')))
    assert np.allclose(out[0, 0], [1, 0, 0]) and np.allclose(out[1, 1], [1, 1, 1])

    bgr16 = (np.arange(60).reshape(4, 5, 3) * 1000).astype(np.uint16)
    out = decode_image(cv2.imencode('.png', bgr16)[1].tobytes())
    assert np.allclose(out, bgr16[:, :, ::-1] / 65535.0, atol=1e-6)
    gray16 = (np.arange(20).reshape(4, 5) * 3000).astype(np.uint16)
    out = decode_image(cv2.imencode('.png', gray16)[1].tobytes())
    assert np.allclose(out[..., 1], gray16 / 65535.0, atol=1e-6)


def test_exif_orientation_is_applied():
    arr = np.zeros((4, 8, 3), dtype=np.uint8)
    arr[:, :4] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(encode(Image.fromarray(arr), 'JPEG', exif=exif, quality=100))
    assert out.shape == (8, 4, 3)
    assert out[:4].mean() > 0.9 and out[4:].mean() < 0.1  # the white half is now on top


def test_unreadable_files_name_the_file(tmp_path):
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'not an image')
    with pytest.raises(ImageReadError, match='bad.jpg: cannot decode'):
        read_image(bad)
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    with pytest.raises(ImageReadError, match='empty.png: file is empty'):
        read_image(empty)
    with pytest.raises(ImageReadError, match='missing.png: cannot open'):
        read_image(tmp_path / 'missing.png')
