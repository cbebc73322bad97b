"""A small synthetic IQA dataset in KonIQ-10k's format, built from scikit-image's bundled photos.

Each source photo is cropped to ``size`` and saved once clean and once per distortion
type and level. Distortions (severity s = level / levels, in (0, 1]):

    blur        gaussian blur, sigma = 0.5 + 3.5 s  (pixels, at 256 px width; scaled with width)
    noise       additive gaussian noise, std = 0.02 + 0.13 s
    jpeg        JPEG quality round(5 + 40 (1 - s))
    contrast    x -> mean + (x - mean) (1 - 0.8 s)
    brightness  x -> x +- 0.5 s (sign drawn per image)

The MOS-like target (0-100) decreases with the level:

    MOS = clip(90 - 70 s + c + e, 0, 100)

with c ~ U(-4, 4) a per-source offset (some photos are nicer) and e ~ U(-2, 2) per image.
Within one source and distortion the MOS drops by 70 / levels per level, far more than
the jitter, so the order is strict. Vote counts c1..c5 (c_total 100..120 voters) are a
discretized normal around 1 + 4 MOS / 100 on the 1..5 scale; SD is their standard
deviation on that scale (as in KonIQ's file).

Sources are split by content: each photo and all its distorted versions belong to one
set (training / validation / test), so the sets share no content. Everything is
deterministic given ``seed``.
"""
import csv
import io
import os
import os.path as osp
import warnings

import numpy as np
from PIL import Image

from uiqa_plugin.data.image_ops import center_crop, resize

DISTORTIONS = ('blur', 'noise', 'jpeg', 'contrast', 'brightness')
#: photos shipped inside the scikit-image wheel (no download); colour ones first
DEFAULT_SOURCES = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field', 'immunohistochemistry',
                   'motorcycle_left', 'retina', 'camera', 'coins', 'clock', 'moon')
EXTRA_SOURCES = ('brick', 'grass', 'gravel', 'cell', 'page', 'text', 'colorwheel', 'motorcycle_right')
KONIQ_COLUMNS = ('image_name', 'c1', 'c2', 'c3', 'c4', 'c5', 'c_total', 'MOS', 'SD', 'set')
SPLITS = ('training', 'validation', 'test')


def load_source(name):
    """A scikit-image sample photo as RGB float32 (H, W, 3) in [0, 1]."""
    from skimage import data
    if name in ('motorcycle_left', 'motorcycle_right'):
        left, right, _ = data.stereo_motorcycle()
        img = left if name == 'motorcycle_left' else right
    else:
        if not hasattr(data, name):
            raise ValueError(f'scikit-image has no sample image {name!r}')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            img = getattr(data, name)()
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    else:
        img = np.clip(img.astype(np.float32), 0.0, 1.0)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def fit_to_size(img, width, height):
    """Resize (aspect kept) to cover width x height, then centre crop it."""
    h, w = img.shape[:2]
    scale = max(height / h, width / w)
    img = resize(img, (max(height, round(h * scale)), max(width, round(w * scale))), 'bicubic')
    return np.ascontiguousarray(center_crop(img, (height, width), upsample=False))


def _gaussian_blur(img, sigma):
    import cv2
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _jpeg(img, quality):
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format='JPEG', quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'), dtype=np.float32) / 255.0


def distort(img, kind, severity, rng):
    """Apply distortion ``kind`` at ``severity`` in (0, 1] to RGB float (H, W, 3) in [0, 1]."""
    s = float(severity)
    if kind == 'blur':
        out = _gaussian_blur(img, (0.5 + 3.5 * s) * img.shape[1] / 256.0)
    elif kind == 'noise':
        out = img + rng.normal(0.0, 0.02 + 0.13 * s, size=img.shape).astype(np.float32)
    elif kind == 'jpeg':
        out = _jpeg(img, round(5 + 40 * (1 - s)))
    elif kind == 'contrast':
        mean = img.mean(axis=(0, 1), keepdims=True)
        out = mean + (img - mean) * (1.0 - 0.8 * s)
    elif kind == 'brightness':
        out = img + (0.5 * s if rng.random() < 0.5 else -0.5 * s)
    else:
        raise ValueError(f'unknown distortion {kind!r}; choose from {DISTORTIONS}')
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def mos_for(severity, source_offset, jitter):
    """MOS = clip(90 - 70 s + source_offset + jitter, 0, 100)."""
    return float(np.clip(90.0 - 70.0 * severity + source_offset + jitter, 0.0, 100.0))


def votes_for(mos, rng):
    """(c1..c5 counts, SD on the 1..5 scale) of voters around 1 + 4 MOS / 100."""
    total = int(rng.integers(100, 121))
    centre = 1.0 + 4.0 * mos / 100.0
    probs = np.exp(-0.5 * ((np.arange(1, 6) - centre) / 0.7) ** 2)
    counts = np.floor(probs / probs.sum() * total).astype(int)
    counts[int(np.argmax(probs))] += total - counts.sum()
    scores = np.arange(1, 6)
    mean = (counts * scores).sum() / total
    sd = float(np.sqrt((counts * (scores - mean) ** 2).sum() / total))
    return counts, sd


def to_uint8(img):
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def split_sources(sources, split_counts, rng):
    """Assign whole sources to the splits: dict source -> split name (disjoint by construction)."""
    if sum(split_counts) != len(sources):
        raise ValueError(f'split_counts {tuple(split_counts)} must add up to the {len(sources)} sources')
    order = [sources[i] for i in rng.permutation(len(sources))]
    assignment, start = {}, 0
    for split, count in zip(SPLITS, split_counts):
        for name in order[start:start + count]:
            assignment[name] = split
        start += count
    return assignment


def default_split_counts(n):
    """About 2/3 training, 1/6 validation, 1/6 test, at least one source in each."""
    if n < 3:
        raise ValueError(f'need at least 3 sources (one per split), got {n}')
    val = test = max(1, round(n / 6))
    return (n - val - test, val, test)


def image_folder_name(size):
    """The image subfolder for (width, height) images: ``'256x192'``."""
    return f'{int(size[0])}x{int(size[1])}'


#: the default image size (width, height) and the image folder of the default demo dataset
DEMO_SIZE = (256, 192)
DEMO_IMAGE_FOLDER = image_folder_name(DEMO_SIZE)


def make_demo_dataset(out_dir='datasets/demo', size=DEMO_SIZE, levels=3, distortions=DISTORTIONS,
                      sources=DEFAULT_SOURCES, split_counts=None, seed=0, image_folder=None,
                      image_format='jpg', jpeg_quality=95, progress=True):
    """Build the demo dataset; returns a summary dict.

    Args:
        out_dir: output folder; gets ``koniq10k_distributions_sets.csv`` and ``image_folder/``.
        size: (width, height) of every image.
        image_folder: name of the image subfolder; default ``WxH`` of ``size`` (``256x192``), named
            for what it holds as KonIQ names its ``1024x768/``.
        levels: distortion levels per type (severity s = level / levels).
        distortions: subset of DISTORTIONS.
        sources: scikit-image sample names; each is one content.
        split_counts: sources per (training, validation, test); default about 2/3, 1/6, 1/6.
        seed: makes everything (split, noise, MOS jitter, votes) reproducible.
        image_format: 'jpg' (quality ``jpeg_quality``, like KonIQ) or 'png' (lossless).
    Returns:
        {'csv': path, 'image_dir': path, 'num_images': int, 'splits': {split: [sources]}}.
    """
    width, height = int(size[0]), int(size[1])
    sources = list(sources)
    if len(set(sources)) != len(sources):
        raise ValueError(f'sources must be distinct, got {sources}')
    unknown = [d for d in distortions if d not in DISTORTIONS]
    if unknown:
        raise ValueError(f'unknown distortion(s) {unknown}; choose from {DISTORTIONS}')
    if image_format not in ('jpg', 'png'):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    rng = np.random.default_rng(seed)
    assignment = split_sources(sources, split_counts or default_split_counts(len(sources)), rng)
    image_dir = osp.join(out_dir, image_folder or image_folder_name((width, height)))
    os.makedirs(image_dir, exist_ok=True)

    jobs = []
    for src in sources:
        jobs.append((src, 'ref', 0))
        jobs.extend((src, kind, level) for kind in distortions for level in range(1, levels + 1))
    try:
        from tqdm import tqdm
        iterator = tqdm(jobs, desc='demo dataset', unit='img', disable=not progress)
    except ImportError:  # pragma: no cover
        iterator = jobs

    rows, clean = [], {}
    offsets = {src: float(rng.uniform(-4, 4)) for src in sources}
    for src, kind, level in iterator:
        if src not in clean:
            clean[src] = fit_to_size(load_source(src), width, height)
        severity = level / levels
        img = clean[src] if kind == 'ref' else distort(clean[src], kind, severity, rng)
        name = f'{src}_{kind}.{image_format}' if kind == 'ref' else f'{src}_{kind}{level}.{image_format}'
        save_kwargs = {'quality': int(jpeg_quality)} if image_format == 'jpg' else {}
        Image.fromarray(to_uint8(img)).save(osp.join(image_dir, name), **save_kwargs)
        mos = mos_for(severity if kind != 'ref' else 0.0, offsets[src], float(rng.uniform(-2, 2)))
        counts, sd = votes_for(mos, rng)
        rows.append([name, *counts.tolist(), int(counts.sum()), f'{mos:.4f}', f'{sd:.4f}', assignment[src]])

    csv_path = osp.join(out_dir, 'koniq10k_distributions_sets.csv')
    with open(csv_path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(KONIQ_COLUMNS)
        writer.writerows(rows)
    splits = {s: sorted(src for src, sp in assignment.items() if sp == s) for s in SPLITS}
    return {'csv': csv_path, 'image_dir': image_dir, 'num_images': len(rows), 'splits': splits}
