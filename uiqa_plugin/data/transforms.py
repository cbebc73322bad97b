"""Composable transforms that turn one image into the named views a CLIP predictor sees.

A sample is a dict::

    {'key': str, 'path': str, 'target': float32 array [T], 'views': {name: (H, W, 3) float32 RGB in [0, 1]}}

Each transform is a small class registered in ``TRANSFORM_REGISTRY`` and configured from
a YAML dict (``{type: Fragment, grid: 12, patch: 32}``); ``build_transforms`` turns a
list of such dicts into a ``Compose``. ``Collect`` ends a chain and returns the batchable
dict ``{'image'|'fragments'|'salient': float32 (3, h, w), 'target': float32 [T], 'key', 'path'}``.

The usual order, produced by ``view_transform_specs`` from a ``views:`` option:
load -> (resize) -> flip (one decision for all views) -> derive fragments / salient
patch from the full image -> per-view resize of ``image`` -> normalize -> collect.
Transforms with ``train`` in their signature behave differently in training (random)
and evaluation (deterministic); the builder passes the dataset's phase to them.
"""
import copy
import inspect
import os
import zlib

import numpy as np
import torch
from basicsr.utils import FileClient
from basicsr.utils.registry import Registry

from uiqa_plugin.data.image_io import (ImageReadError, decode_pixels, image_to_tensor, pixels_to_rgb_float,
                                       pixels_to_rgb_uint8)
from uiqa_plugin.data.image_ops import (INTERPOLATIONS, center_crop, fragment_mosaic, image_size, resize,
                                       scaled_size)
from uiqa_plugin.option_rules import Number, OneOf, Size

TRANSFORM_REGISTRY = Registry('transform')

#: longest side a view may be resized or cropped to: every view goes through CLIP's image tower whole,
#: whose memory grows with the pixel count (a 60000 x 60000 view would need tens of GB)
MAX_VIEW_SIDE = 4096
_SIDE_WHY = f'views go through the image tower whole; sides up to {MAX_VIEW_SIDE} pixels'
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIEW_NAMES = ('image', 'fragments', 'salient')


def _view_keys(sample, keys):
    return list(sample['views']) if keys is None else list(keys)


def _set_view(sample, key, value):
    """Replace a view; its exact uint8 copy (``sample['uint8']``, see LoadImage) no longer matches and goes."""
    sample['views'][key] = value
    sample.get('uint8', {}).pop(key, None)


@TRANSFORM_REGISTRY.register()
class LoadImage:
    """Read the sample's image as RGB float32 (H, W, 3) in [0, 1] into ``views[name]``.

    Reads through basicsr's FileClient: ``io_backend: {type: disk}`` reads ``sample['path']``;
    ``{type: lmdb, db_paths: x.lmdb}`` reads the key ``sample['key']`` (the image name as
    written in the meta file). Bytes are decoded by ``decode_image`` either way, so disk
    and LMDB give identical pixels.

    ``keep_uint8``: a plain 8-bit gray or RGB image is also kept as uint8 (H, W, 3) in
    ``sample['uint8'][name]``; transforms that replace the view drop it (a flip flips it), and
    ``Collect`` outputs it instead of the float view (4x fewer bytes to the device, where
    ``DeviceInput`` scales it to exactly the float values).
    """

    def __init__(self, io_backend=None, name='image', keep_uint8=False):
        self.keep_uint8 = bool(keep_uint8)
        self.io_backend = dict(io_backend or {'type': 'disk'})
        self.backend = self.io_backend.get('type', 'disk')
        self.name = name
        self._client = None
        self._client_pid = None

    def __getstate__(self):  # an open LMDB environment must not travel to another process
        state = self.__dict__.copy()
        state['_client'] = None
        return state

    @property
    def file_client(self):
        # opened lazily, once per process: a forked worker must not reuse the parent's LMDB handle
        if self._client is None or self._client_pid != os.getpid():
            if self._client is not None:
                self._close_inherited()
            opt = copy.deepcopy(self.io_backend)
            opt.pop('type', None)
            self._client = FileClient(self.backend, **opt)
            self._client_pid = os.getpid()
        return self._client

    def _close_inherited(self):
        # a forked worker inherits the parent's LMDB handle; lmdb refuses to open the same database again
        # in that process until the inherited handle is closed (closing it in the child leaves the parent's intact)
        envs = getattr(self._client.client, '_client', None)
        if self.backend == 'lmdb' and isinstance(envs, dict):
            for env in envs.values():
                env.close()
        self._client = None

    def __call__(self, sample):
        if self.backend == 'lmdb':
            key = sample['key']
            where = f"LMDB {self.io_backend.get('db_paths')} key {key!r}"
            try:
                buf = self.file_client.get(key)
            except UnicodeEncodeError as exc:
                raise ImageReadError(f'{where}: LMDB keys must be ASCII') from exc
            if buf is None:
                raise ImageReadError(f'{where}: key not found in the database')
        else:
            where = sample['path']
            try:
                buf = self.file_client.get(where)
            except OSError as exc:
                raise ImageReadError(f'{where}: cannot open file ({exc.strerror or exc})') from exc
        pixels = decode_pixels(bytes(buf), name=where)
        _set_view(sample, self.name, pixels_to_rgb_float(pixels))  # exactly decode_image
        if self.keep_uint8:
            raw = pixels_to_rgb_uint8(pixels)
            if raw is not None:
                sample.setdefault('uint8', {})[self.name] = raw
        return sample

    def __repr__(self):
        return f'LoadImage(backend={self.backend!r})'


@TRANSFORM_REGISTRY.register()
class Resize:
    """Resize views to a fixed ``size`` ([h, w] or int for square) or to ``short_side`` (aspect kept).

    ``interpolation``: 'bicubic' (default) or 'bilinear' (anti-aliased, like torchvision).
    ``keys``: views to resize (default: all views present).
    """

    option_rules = {'size': Size(MAX_VIEW_SIDE, _SIDE_WHY), 'short_side': Number(1, MAX_VIEW_SIDE, integer=True,
                                                                                 why=_SIDE_WHY),
                    'interpolation': OneOf(*INTERPOLATIONS)}

    def __init__(self, size=None, short_side=None, interpolation='bicubic', keys=None):
        if (size is None) == (short_side is None):
            raise ValueError(f'Resize needs exactly one of size or short_side, got size={size}, '
                             f'short_side={short_side}')
        self.size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
        self.short_side = short_side
        self.interpolation = interpolation
        self.keys = keys

    def __call__(self, sample):
        for key in _view_keys(sample, self.keys):
            img = sample['views'][key]
            size = self.size or scaled_size(*image_size(img), self.short_side)
            _set_view(sample, key, resize(img, size, self.interpolation))
        return sample

    def __repr__(self):
        what = f'size={self.size}' if self.size else f'short_side={self.short_side}'
        return f'Resize({what}, {self.interpolation})'


@TRANSFORM_REGISTRY.register()
class RandomFlip:
    """Random horizontal (and optionally vertical) flip with ONE decision shared by all views.

    Only in training; in evaluation it does nothing. Put it before the views are derived
    (or after: the shared decision keeps them consistent either way). The decision is
    recorded in ``sample['flip'] = (hflip, vflip)``.
    """

    def __init__(self, hflip=True, vflip=False, prob=0.5, keys=None, train=True):
        self.hflip, self.vflip, self.prob, self.keys, self.train = hflip, vflip, prob, keys, train

    def __call__(self, sample):
        if not self.train:
            return sample
        do_h = self.hflip and np.random.random() < self.prob
        do_v = self.vflip and np.random.random() < self.prob
        sample['flip'] = (bool(do_h), bool(do_v))
        if do_h or do_v:
            raw = sample.get('uint8', {})
            for key in _view_keys(sample, self.keys):
                for where in (sample['views'], raw) if key in raw else (sample['views'],):
                    img = where[key]
                    if do_h:
                        img = img[:, ::-1]
                    if do_v:
                        img = img[::-1]
                    where[key] = np.ascontiguousarray(img)  # a flip is exact: the uint8 copy stays valid
        return sample

    def __repr__(self):
        return f'RandomFlip(hflip={self.hflip}, vflip={self.vflip}, train={self.train})'


@TRANSFORM_REGISTRY.register()
class Fragment:
    """Grid mini-patch mosaic of view ``source`` into view ``name`` (see ``fragment_mosaic``).

    Training: a random offset in [0, H // grid - patch) inside each cell.
    Evaluation: deterministic. ``eval_offsets='centre'`` (default) takes the centre of each
    cell; ``'seeded'`` draws random-looking offsets from a generator seeded by the CRC32 of
    the image key, so the same image always gets the same mosaic, in any process.
    """

    option_rules = {'grid': Number(1, 64, integer=True, why='cells per side of the mosaic'),
                    'patch': Number(1, 512, integer=True, why='pixels per side of each cell patch'),
                    'eval_offsets': OneOf('centre', 'center', 'seeded')}

    def __init__(self, grid=12, patch=32, source='image', name='fragments', eval_offsets='centre', train=True):
        if eval_offsets not in ('centre', 'center', 'seeded'):
            raise ValueError(f"Fragment eval_offsets must be 'centre' or 'seeded', got {eval_offsets!r}")
        self.grid, self.patch, self.source, self.name = grid, patch, source, name
        self.eval_offsets, self.train = eval_offsets, train

    def __call__(self, sample):
        if self.train:
            rng = np.random
        elif self.eval_offsets == 'seeded':
            rng = np.random.default_rng(zlib.crc32(str(sample['key']).encode('utf-8')))
        else:
            rng = None
        _set_view(sample, self.name, fragment_mosaic(sample['views'][self.source], self.grid, self.patch, rng=rng))
        return sample

    def __repr__(self):
        return f'Fragment(grid={self.grid}, patch={self.patch}, train={self.train})'


@TRANSFORM_REGISTRY.register()
class CenterCrop:
    """Centre crop of ``size`` (int or [h, w]) of view ``source`` into view ``name``.

    Images smaller than the crop are upsampled bilinearly first (aspect kept).
    """

    option_rules = {'size': Size(MAX_VIEW_SIDE, _SIDE_WHY)}

    def __init__(self, size=448, source='image', name='salient'):
        self.size, self.source, self.name = size, source, name

    def __call__(self, sample):
        _set_view(sample, self.name, np.ascontiguousarray(center_crop(sample['views'][self.source], self.size)))
        return sample

    def __repr__(self):
        return f'CenterCrop({self.size}, {self.source!r} -> {self.name!r})'


@TRANSFORM_REGISTRY.register()
class Normalize:
    """(x - mean) / std per channel; CLIP's mean and std by default.

    Images are already in [0, 1] after loading, so ``mean: null`` leaves them there
    (rescale only). ``keys``: views to normalize (default: all).
    """

    def __init__(self, mean=CLIP_MEAN, std=CLIP_STD, keys=None):
        if (mean is None) != (std is None):
            raise ValueError('Normalize needs both mean and std, or neither')
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)
        self.keys = keys

    def __call__(self, sample):
        if self.mean is None:
            return sample
        mean = torch.from_numpy(self.mean)[:, None, None]
        inv_std = torch.from_numpy(1.0 / self.std)[:, None, None]
        for key in _view_keys(sample, self.keys):
            # per-channel math on a CHW copy is ~3x faster than numpy broadcasting over a trailing axis of 3;
            # the result is handed back as an HWC view of CHW memory, which Collect turns into a tensor without a copy
            chw = torch.from_numpy(np.ascontiguousarray(sample['views'][key], dtype=np.float32)).permute(2, 0, 1)
            chw = chw.contiguous() if not chw.is_contiguous() else chw.clone()
            _set_view(sample, key, chw.sub_(mean).mul_(inv_std).numpy().transpose(1, 2, 0))
        return sample

    def __repr__(self):
        return f'Normalize(mean={self.mean}, std={self.std})'


@TRANSFORM_REGISTRY.register()
class Collect:
    """End of a chain: views -> float32 (3, h, w) tensors under their names, plus target/key/path.

    ``keys``: views to output, in this order (default: all views present). A view that still
    has its exact uint8 copy (``LoadImage(keep_uint8=True)``) comes out as that uint8 (3, h, w).
    ``device_mean`` / ``device_std``: the normalization left to the device (``DeviceInput``), output
    as float32 [3] under those names; the views are then in [0, 1] (float) or [0, 255] (uint8).
    """

    def __init__(self, keys=None, device_mean=None, device_std=None):
        if (device_mean is None) != (device_std is None):
            raise ValueError('Collect needs both device_mean and device_std, or neither')
        self.keys = keys
        self.device_mean = None if device_mean is None else np.asarray(device_mean, np.float32).reshape(3)
        self.device_std = None if device_std is None else np.asarray(device_std, np.float32).reshape(3)

    def __call__(self, sample):
        out = {}
        raw = sample.get('uint8', {})
        for key in _view_keys(sample, self.keys):
            if key not in sample['views']:
                raise KeyError(f"Collect: view {key!r} was not produced; views present: {list(sample['views'])}")
            if key in raw:
                out[key] = torch.from_numpy(np.array(raw[key].transpose(2, 0, 1), order='C'))  # a writable CHW copy
            else:
                out[key] = image_to_tensor(np.asarray(sample['views'][key], dtype=np.float32))
        out['target'] = torch.as_tensor(np.asarray(sample['target'], dtype=np.float32).reshape(-1))
        out['key'] = sample['key']
        out['path'] = sample['path']
        if self.device_mean is not None:
            out['device_mean'] = torch.from_numpy(self.device_mean.copy())
            out['device_std'] = torch.from_numpy(self.device_std.copy())
        return out

    def __repr__(self):
        return f'Collect({self.keys})'


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, sample):
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self):
        return 'Compose(\n' + ''.join(f'  {t!r},\n' for t in self.transforms) + ')'


def build_transform(opt, train=False):
    """Build one transform from ``{type: Name, **kwargs}``; ``train`` goes to phase-aware ones."""
    opt = dict(opt)
    name = opt.pop('type', None)
    if name not in TRANSFORM_REGISTRY:
        raise KeyError(f'Unknown transform type {name!r} in {opt}; registered: {sorted(TRANSFORM_REGISTRY.keys())}')
    cls = TRANSFORM_REGISTRY.get(name)
    params = inspect.signature(cls.__init__).parameters
    if 'train' in params:
        opt.setdefault('train', train)
    unknown = [k for k in opt if k not in params]
    if unknown:
        allowed = [k for k in params if k != 'self']
        raise TypeError(f'Transform {name}: unknown option(s) {unknown}; allowed: {allowed}')
    return cls(**opt)


def build_transforms(specs, train=False):
    """List of transform option dicts -> Compose."""
    return Compose([build_transform(spec, train) for spec in specs])


def normalize_views_option(views):
    """``views:`` as a dict {name: options}; accepts a list of names or a single name."""
    if views is None:
        views = {'image': {}}
    elif isinstance(views, str):
        views = {views: {}}
    elif isinstance(views, (list, tuple)):
        views = {v: {} for v in views}
    views = {k: dict(v or {}) for k, v in views.items()}
    unknown = [k for k in views if k not in VIEW_NAMES]
    if unknown or not views:
        raise ValueError(f'views: unknown view name(s) {unknown}; use some of {list(VIEW_NAMES)}')
    return views


def view_transform_specs(views=None, train=False, io_backend=None, resize=None, use_hflip=True, use_vflip=False,
                         mean=CLIP_MEAN, std=CLIP_STD, on_device=False):
    """Expand the ``views:`` shorthand into the full list of transform dicts.

    Args:
        views: {'image': {size|short_side, interpolation}, 'fragments': {grid, patch, eval_offsets},
            'salient': {size}}; a list of names means default options. Default: image only.
        train: training chain (random flip, random fragment offsets) or evaluation chain.
        io_backend: basicsr io_backend dict for LoadImage.
        resize: optional {size|short_side, interpolation} applied to the loaded image before
            any view is derived (e.g. SPAQ's shorter side 512).
        use_hflip / use_vflip: flips in training (one decision per sample for all views).
        mean / std: normalization of every view (null: keep [0, 1]).
        on_device: leave the scaling and normalization to the device (``DeviceInput``): a view
            that is the decoded 8-bit image itself comes out as uint8, the others in [0, 1], and
            ``Collect`` adds ``device_mean`` / ``device_std`` (when normalizing) for the device.
    """
    views = normalize_views_option(views)
    specs = [{'type': 'LoadImage', 'io_backend': io_backend}]
    if on_device:
        specs[0]['keep_uint8'] = True
    if resize:
        specs.append({'type': 'Resize', 'keys': ['image'], **resize})
    if train and (use_hflip or use_vflip):
        specs.append({'type': 'RandomFlip', 'hflip': use_hflip, 'vflip': use_vflip})
    # derived views come from the full-resolution image, before the image view is resized
    if 'fragments' in views:
        specs.append({'type': 'Fragment', 'source': 'image', 'name': 'fragments', **views['fragments']})
    if 'salient' in views:
        specs.append({'type': 'CenterCrop', 'source': 'image', 'name': 'salient', **views['salient']})
    if views.get('image'):
        specs.append({'type': 'Resize', 'keys': ['image'], **views['image']})
    names = list(views)
    if on_device:
        collect = {'type': 'Collect', 'keys': names}
        if mean is not None:
            collect.update(device_mean=mean, device_std=std)
        specs.append(collect)
        return specs
    specs.append({'type': 'Normalize', 'mean': mean, 'std': std, 'keys': names})
    specs.append({'type': 'Collect', 'keys': names})
    return specs


def evaluation_transform_specs(model):
    """The evaluation transform chain (a list of transform dicts) that turns an image file into ``model``'s views.

    For a trained model, the preprocessing stored in its checkpoint (the validation dataset's
    ``resize``, ``views``, ``mean``/``std`` or explicit ``transforms``), read from disk; else the
    model's views with CLIP's normalization when it expects normalized input. The chain starts
    with ``LoadImage`` and ends with ``Normalize`` (possibly a no-op) and ``Collect``.
    """
    inner = getattr(model, 'metric', model)  # uiqa-profile's scorer wraps a metric
    pre = getattr(model, 'preprocessing', None) or getattr(inner, 'preprocessing', None)
    names = list(getattr(model, 'views', None) or getattr(inner, 'views', None) or ['image'])
    if pre and pre.get('transforms'):
        specs = [dict(s) for s in pre['transforms']]
        if specs[0].get('type') != 'LoadImage':
            specs.insert(0, {'type': 'LoadImage'})
        if specs[-1].get('type') != 'Collect':
            specs.append({'type': 'Collect'})
        for spec in specs:
            if spec.get('type') == 'LoadImage':
                spec['io_backend'] = None  # files on disk, whatever the training read from
        return specs
    if pre:
        return view_transform_specs(pre.get('views') or names, train=False, resize=pre.get('resize'),
                                    mean=pre.get('mean'), std=pre.get('std'))
    views = getattr(model, 'view_options', None) or getattr(inner, 'view_options', None) or names
    normalized = getattr(model, 'input_normalized', getattr(inner, 'input_normalized', False))
    return view_transform_specs(views, train=False, mean=CLIP_MEAN if normalized else None,
                                std=CLIP_STD if normalized else None)


def view_pipeline(model):
    """The evaluation transform (a callable on samples) that turns an image file into the views ``model`` takes."""
    return build_transforms(evaluation_transform_specs(model), train=False)
