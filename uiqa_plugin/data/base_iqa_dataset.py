"""Shared base of the IQA datasets: records -> split -> targets -> view transforms.

A subclass only reads its annotation format in ``load_records()`` (a list of
``table_io.Record``) and names its target columns; everything else is here:

- split selection (a split column, or a seeded random split by ``split_ratios``);
- target normalization (``target_scale`` / ``target_range``) with ``denormalize``;
- a missing-file check at construction (disk and LMDB);
- the transform chain built from ``views:`` (or an explicit ``transforms:`` list);
- ``skip_unreadable``: replace an unreadable sample by another one, with a counting warning.

Common options (BasicSR style):
    name, type, phase ('train' | 'val' | 'test'), dataroot (image folder), meta_file,
    split (a value of the split column, or 'all'), split_ratios ({name: fraction}), split_seed,
    io_backend ({type: disk} | {type: lmdb, db_paths: x.lmdb}), views / transforms,
    resize, use_hflip, use_vflip, mean, std, target_scale, target_range,
    skip_unreadable (false), check_files (true), device_normalize (true).

``device_normalize`` (with ``views:``; an explicit ``transforms:`` list keeps its own steps):
the host does not normalize; a view that is the decoded 8-bit image itself (the ``image``
view without resize, flipped or not) travels as uint8 (4x fewer bytes), the other views as
float32 in [0, 1], and the batch carries ``device_mean`` / ``device_std``. ``IQAModel.feed_data``
scales and normalizes on the device (``DeviceInput``), bit-identical to the host ``Normalize``.
``false``: every view is normalized float32 on the host, as ``api.view_pipeline`` gives it.
"""
import os
import os.path as osp
import warnings

import numpy as np
from torch.utils import data

from uiqa_plugin.data.image_io import ImageReadError
from uiqa_plugin.data.transforms import CLIP_MEAN, CLIP_STD, build_transforms, view_transform_specs
from uiqa_plugin.terminal import printable

PHASES = ('train', 'val', 'test')
#: options every IQA dataset reads (besides ``extra_option_keys`` of each class)
BASE_OPTION_KEYS = ('name', 'type', 'phase', 'dataroot', 'meta_file', 'split', 'split_ratios', 'split_seed',
                    'io_backend', 'views', 'transforms', 'resize', 'use_hflip', 'use_vflip', 'mean', 'std',
                    'target_scale', 'target_range', 'skip_unreadable', 'check_files', 'device_normalize')
#: options BasicSR's runner reads for the data loader
LOADER_OPTION_KEYS = ('batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio', 'prefetch_mode',
                      'pin_memory', 'persistent_workers', 'use_shuffle', 'scale')
SPLIT_ALIASES = {'train': 'training', 'training': 'train', 'val': 'validation', 'validation': 'val',
                 'test': 'testing', 'testing': 'test'}


class TargetNormalizer:
    """normalized = (target - offset) / scale, per target; ``denormalize`` maps predictions back."""

    def __init__(self, offset=0.0, scale=1.0):
        self.offset = np.asarray(offset, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)
        if np.any(self.scale == 0):
            raise ValueError(f'target scale must not be 0 (got {scale})')

    @classmethod
    def from_options(cls, target_scale=None, target_range=None):
        """``target_scale: 100`` (or a list) divides; ``target_range: [lo, hi]`` (or a list of pairs) maps to [0, 1]."""
        if target_scale is not None and target_range is not None:
            raise ValueError('give target_scale or target_range, not both')
        if target_range is not None:
            rng = np.asarray(target_range, dtype=np.float64)
            if rng.shape[-1] != 2:
                raise ValueError(f'target_range must be [min, max] or a list of them, got {target_range}')
            return cls(rng[..., 0], rng[..., 1] - rng[..., 0])
        if target_scale is not None:
            return cls(0.0, target_scale)
        return cls()

    def normalize(self, targets):
        return ((np.asarray(targets, dtype=np.float32) - self.offset) / self.scale).astype(np.float32)

    def denormalize(self, predictions):
        """Predictions in the normalized range -> the annotation's range (numpy, torch or float)."""
        try:
            import torch
            if isinstance(predictions, torch.Tensor):
                scale = torch.as_tensor(self.scale, dtype=predictions.dtype, device=predictions.device)
                offset = torch.as_tensor(self.offset, dtype=predictions.dtype, device=predictions.device)
                return predictions * scale + offset
        except ImportError:  # pragma: no cover
            pass
        return np.asarray(predictions, dtype=np.float32) * self.scale + self.offset

    def __repr__(self):
        return f'TargetNormalizer(offset={self.offset.tolist()}, scale={self.scale.tolist()})'


class BaseIQADataset(data.Dataset):
    """Images with (optional) quality targets, returned as named views.

    ``__getitem__`` returns {'image' | 'fragments' | 'salient': (3, h, w), 'target':
    float32 [T] (normalized), 'key': str, 'path': str}; with ``device_normalize`` (default) the
    views are uint8 or float32 in [0, 1] and 'device_mean' / 'device_std' (float32 [3]) come along
    when normalizing (``DeviceInput.from_batch`` turns a batch into the model's input); without
    it the views are normalized float32. ``self.target_names`` names the T targets;
    ``self.denormalize(pred)`` maps predictions back to the annotation's range.
    """

    #: default target normalization of the format (e.g. 100 for MOS on 0-100)
    default_target_scale = None
    default_target_range = None

    #: options a subclass reads besides BASE_OPTION_KEYS
    extra_option_keys = ()

    @classmethod
    def accepted_options(cls):
        return set(BASE_OPTION_KEYS) | set(LOADER_OPTION_KEYS) | set(cls.extra_option_keys)

    @classmethod
    def unknown_options(cls, opt):
        """Messages for option keys this dataset does not read (typos would otherwise be ignored)."""
        import difflib
        accepted = cls.accepted_options()
        out = []
        for key in opt:
            if key not in accepted:
                close = difflib.get_close_matches(key, sorted(accepted), n=1)
                out.append(f'{cls.__name__} has no option {key!r}' + (f" (did you mean {close[0]!r}?)" if close else ''))
        return out

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.name = opt.get('name', type(self).__name__)
        unknown = self.unknown_options(opt)
        if unknown:
            raise ValueError(f'{self.name}: ' + '; '.join(unknown))
        self.phase = opt.get('phase', 'test')
        if self.phase not in PHASES:
            raise ValueError(f'{self.name}: phase must be one of {PHASES}, got {self.phase!r}')
        self.train = self.phase == 'train'
        self.dataroot = osp.expanduser(opt['dataroot']) if opt.get('dataroot') else ''
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        if self.io_backend_opt.get('type', 'disk') == 'lmdb' and not self.io_backend_opt.get('db_paths'):
            raise ValueError(f'{self.name}: io_backend type lmdb needs db_paths (the .lmdb folder)')
        self.skip_unreadable = bool(opt.get('skip_unreadable', False))
        self.num_skipped = 0

        records, self.target_names = self.load_records()
        records = self.select_split(records)
        self.normalizer = self.build_normalizer()
        self.samples = [self.make_sample(r) for r in records]
        self.warn_outside_dataroot()
        if opt.get('check_files', True):
            self.check_files()
        if not self.samples:
            raise ValueError(f'{self.name}: no images left after removing the missing ones')
        self.transform = self.build_pipeline()

    # --- to override -------------------------------------------------------------------------

    def load_records(self):
        """Return (records: list[Record], target_names: list[str])."""
        raise NotImplementedError

    # --- construction ------------------------------------------------------------------------

    @property
    def meta_file(self):
        return osp.expanduser(self.opt['meta_file']) if self.opt.get('meta_file') else None

    def require_meta_file(self, default_names=()):
        """The meta_file option, or the first of ``default_names`` found in dataroot or its parent."""
        if self.meta_file:
            return self.meta_file
        for folder in (self.dataroot, osp.dirname(osp.normpath(self.dataroot)) if self.dataroot else None):
            for name in default_names:
                if folder and osp.isfile(osp.join(folder, name)):
                    return osp.join(folder, name)
        raise ValueError(f'{self.name}: option meta_file is required (looked for {list(default_names)} '
                         f'in dataroot {self.dataroot!r} and its parent)')

    def select_split(self, records):
        """Keep the records of ``opt['split']``: from the split column, or from a seeded random split."""
        split = self.opt.get('split')
        where = self.meta_file or self.dataroot
        if split is None or split == 'all':
            return records
        present = sorted({r.split for r in records if r.split is not None})
        if present:
            wanted = split if split in present else SPLIT_ALIASES.get(split, split)
            chosen = [r for r in records if r.split == wanted]
            if not chosen:
                raise ValueError(f'{self.name}: split {split!r} is empty in {where}; splits present: {present}')
            return chosen
        ratios = self.opt.get('split_ratios')
        if not ratios:
            raise ValueError(f"{self.name}: {where} has no split column, so split {split!r} needs "
                             "split_ratios (e.g. {training: 0.8, test: 0.2}) or split: all")
        return self.random_split(records, split, ratios, self.opt.get('split_seed', 0))

    def random_split(self, records, split, ratios, seed):
        """Seeded permutation cut by the cumulative ``ratios``; the same seed gives the same split."""
        ratios = dict(ratios)
        if split not in ratios:
            wanted = SPLIT_ALIASES.get(split, split)
            if wanted not in ratios:
                raise ValueError(f'{self.name}: split {split!r} is not among split_ratios {list(ratios)}')
            split = wanted
        total = float(sum(ratios.values()))
        order = np.random.default_rng(seed).permutation(len(records))
        bounds = np.round(np.cumsum([0.0] + [v / total for v in ratios.values()]) * len(records)).astype(int)
        idx = list(ratios).index(split)
        chosen = [records[i] for i in sorted(order[bounds[idx]:bounds[idx + 1]])]
        if not chosen:
            raise ValueError(f'{self.name}: split {split!r} of {len(records)} images with ratios {ratios} is empty')
        return chosen

    def build_normalizer(self):
        scale, rng = self.opt.get('target_scale'), self.opt.get('target_range')
        if scale is None and rng is None:
            scale, rng = self.default_target_scale, self.default_target_range
        return TargetNormalizer.from_options(scale, rng)

    def make_sample(self, record):
        path = osp.join(self.dataroot, record.name) if self.dataroot else record.name
        return {'key': record.name, 'path': path, 'target': self.normalizer.normalize(record.targets)}

    def warn_outside_dataroot(self):
        """Say when image names (absolute, or with '..') lead out of dataroot: read from there, but never silently."""
        if not self.dataroot or self.io_backend_opt.get('type', 'disk') == 'lmdb':
            return
        root = osp.realpath(self.dataroot)
        outside = [s['key'] for s in self.samples if osp.commonpath([root, osp.realpath(s['path'])]) != root]
        if outside:
            shown = ', '.join(repr(printable(k)) for k in outside[:3]) + (', ...' if len(outside) > 3 else '')
            source = self.meta_file or 'the annotations'
            warnings.warn(printable(f'{self.name}: {len(outside)} image name(s) in {source} '
                                    f'lead outside dataroot {self.dataroot!r} and are read from there: {shown}'),
                          stacklevel=2)

    def check_files(self):
        """Find missing images up front: error listing them, or drop them with one warning when skipping."""
        if self.io_backend_opt.get('type', 'disk') == 'lmdb':
            missing = self._missing_lmdb_keys()
            where = f"LMDB {self.io_backend_opt['db_paths']}"
        else:
            missing = [s['key'] for s in self.samples if not osp.isfile(s['path'])]
            where = f'dataroot {self.dataroot!r}'
        if not missing:
            return
        shown = ', '.join(repr(m) for m in missing[:5]) + (', ...' if len(missing) > 5 else '')
        message = printable(f'{self.name}: {len(missing)} of {len(self.samples)} images are missing in {where}: '
                            f'{shown}')
        if not self.skip_unreadable:
            raise FileNotFoundError(message + ' (set skip_unreadable: true to skip them)')
        warnings.warn(message + '; skipping them (skip_unreadable: true)', stacklevel=2)
        lost = set(missing)
        self.samples = [s for s in self.samples if s['key'] not in lost]

    def _missing_lmdb_keys(self):
        import lmdb
        db_paths = self.io_backend_opt['db_paths']
        db_path = db_paths[0] if isinstance(db_paths, (list, tuple)) else db_paths
        if not osp.isdir(db_path):
            raise FileNotFoundError(f'{self.name}: LMDB folder not found: {db_path}')
        missing = []
        env = lmdb.open(db_path, readonly=True, lock=False, readahead=False)
        try:
            with env.begin(write=False) as txn:
                cursor = txn.cursor()
                for s in self.samples:
                    try:
                        found = cursor.set_key(s['key'].encode('ascii'))
                    except UnicodeEncodeError:
                        found = False
                    if not found:
                        missing.append(s['key'])
        finally:
            env.close()
        return missing

    def build_pipeline(self):
        opt = self.opt
        specs = opt.get('transforms')
        if specs is None:
            specs = view_transform_specs(
                views=opt.get('views'), train=self.train, io_backend=self.io_backend_opt, resize=opt.get('resize'),
                use_hflip=opt.get('use_hflip', True), use_vflip=opt.get('use_vflip', False),
                mean=opt.get('mean', CLIP_MEAN), std=opt.get('std', CLIP_STD),
                on_device=bool(opt.get('device_normalize', True)))
        else:
            specs = [dict(s) for s in specs]
            if not specs or specs[0].get('type') != 'LoadImage':
                specs.insert(0, {'type': 'LoadImage', 'io_backend': self.io_backend_opt})
            if specs[-1].get('type') != 'Collect':
                specs.append({'type': 'Collect'})
        return build_transforms(specs, train=self.train)

    # --- access ------------------------------------------------------------------------------

    def denormalize(self, predictions):
        """Map normalized predictions (e.g. MOS/100) back to the annotation's range."""
        return self.normalizer.denormalize(predictions)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        attempts = min(len(self.samples), 100)
        for _ in range(attempts):
            sample = self.samples[index]
            try:
                return self.transform({'key': sample['key'], 'path': sample['path'],
                                       'target': sample['target'], 'views': {}})
            except ImageReadError as exc:
                if not self.skip_unreadable:
                    raise ImageReadError(f'{self.name}: sample {index}: {exc} '
                                         '(set skip_unreadable: true to skip unreadable images)') from exc
                self._count_skipped(exc)
                # another sample: random in training, the next one in evaluation
                index = np.random.randint(len(self.samples)) if self.train else (index + 1) % len(self.samples)
        raise ImageReadError(f'{self.name}: {attempts} unreadable images in a row (last at index {index}); '
                             'check dataroot / io_backend')

    def _count_skipped(self, exc):
        self.num_skipped += 1
        n = self.num_skipped
        if n in (1, 10, 100) or n % 1000 == 0:  # one warning per order of magnitude: counts without flooding
            warnings.warn(f'{self.name}: skipped {n} unreadable image(s) so far in process {os.getpid()} '
                          f'(latest: {exc})', stacklevel=3)

    def __repr__(self):
        return (f'{type(self).__name__}(name={self.name!r}, phase={self.phase!r}, {len(self)} images, '
                f'targets={self.target_names})')


__all__ = ['BaseIQADataset', 'TargetNormalizer']
