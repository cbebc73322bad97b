"""Feeding image files to a scoring model: decode in workers, batch equal sizes, scale on the device.

The host does only what needs the whole decoded image: decoding, derived views (fragment
mosaic, centre crop), resizes. Plain 8-bit images whose ``image`` view is the decoded image
itself travel as uint8 (a quarter of the bytes of float32) through pinned memory and become
float on the device; CLIP normalization of models that take normalized input happens there
too, with the same float32 operations as the host ``Normalize``. Rows come out in input order
whatever the batching.
"""
import functools
import multiprocessing
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from uiqa_plugin.data.device_input import DeviceInput, converted_inputs
from uiqa_plugin.data.image_io import ImageReadError, decode_pixels, pixels_to_rgb_float, pixels_to_rgb_uint8
from uiqa_plugin.data.image_ops import scaled_size, upsample_to_min
from uiqa_plugin.data.transforms import Normalize, build_transforms, evaluation_transform_specs, view_transform_specs
from uiqa_plugin.scoring.input_limits import MAX_ASPECT, MAX_PIXELS, check_aspect, minimum_input_side


def model_minimum_side(model):
    """Smallest image side the model's CLIP image tower takes; 1 when the model has no CLIP we know."""
    for owner in (model, getattr(model, 'metric', None)):
        clip = getattr(owner, 'clip', None)
        if clip is not None and hasattr(clip, 'encode_image'):
            return minimum_input_side(clip)
    return 1


class ScoreImages(Dataset):
    """Image files -> (index, {view: (3, h, w) uint8 or float32 tensor}, None) or (index, None, error message).

    views: {name: options} as in ``view_transform_specs``; the views come out in [0, 1] (float)
    or [0, 255] (uint8), not normalized. min_side: every view is upscaled (aspect kept, bicubic)
    until both sides reach it. max_aspect: longer / shorter side beyond which an image is refused.
    max_pixels: images with more pixels are refused before decoding (files larger than such an
    image could be are not even read), unless the chain starts by resizing the image: then a
    large JPEG is decoded at the reduced scale that still covers that size.
    Unreadable, empty, refused images and failures at any stage (reading, decoding, conversion,
    transforms, memory) give an error message that names the file, so one bad file costs one
    row, also inside worker processes. prepare: RGB float32 (H, W, 3) in [0, 1] -> the same,
    applied after the plain conversion (alpha composited over white, any bit depth scaled), e.g.
    a border crop and BT.601 luma as BasicSR's metrics read images; a picklable callable, as
    workers receive it. Images are then decoded at full size: a crop counts the file's own pixels.
    """

    def __init__(self, paths, views=None, min_side=1, max_aspect=MAX_ASPECT, specs=None, max_pixels=MAX_PIXELS,
                 prepare=None):
        self.paths = list(paths)
        self.prepare = prepare
        self.min_side = int(min_side)
        self.max_aspect = max_aspect
        self.max_pixels = max_pixels
        if specs is None:
            specs = view_transform_specs(views, train=False, mean=None, std=None)
        collect = next(s for s in specs if s.get('type') == 'Collect')
        self.names = list(collect.get('keys') or ['image'])
        # decoding happens here, normalization on the device (DeviceInput): the host runs the rest
        host = [s for s in specs if s.get('type') not in ('LoadImage', 'Normalize', 'Collect')]
        self.transforms = build_transforms(host, train=False)
        # the image view is the decoded image itself when no transform rewrites it
        self.image_is_decoded = 'image' in self.names and not any(
            'image' in (s.get('keys') or ()) or s.get('name') == 'image' for s in host)
        # a JPEG decoded reduced would hold other pixels than the file's for ``prepare`` to crop
        self.reduce_to = _first_resize(host) if prepare is None else None

    @property
    def max_file_bytes(self):
        """Bytes beyond which a file cannot hold an image within the budget (8 bytes a pixel: 16-bit RGBA, raw)."""
        return None if self.max_pixels is None else int(self.max_pixels) * 8 + (1 << 20)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        try:
            return index, self.load(path), None
        except ImageReadError as exc:
            return index, None, str(exc)
        except MemoryError:
            return index, None, f'{path}: out of memory while preparing this image; not scored'
        except Exception as exc:  # any other failure of one image (a transform, a conversion) costs its row only
            return index, None, f'{path}: cannot prepare the image ({type(exc).__name__}: {exc})'.split('\n')[0]

    def load(self, path):
        try:
            with open(path, 'rb') as f:
                size = os.fstat(f.fileno()).st_size
                if self.max_file_bytes is not None and size > self.max_file_bytes:
                    raise ImageReadError(f'{path}: {size / 1e9:.1f} GB is more than an image within the budget of '
                                         f'{self.max_pixels / 1e6:g} megapixels can take; not read')
                buf = f.read()
        except OSError as exc:
            raise ImageReadError(f'{path}: cannot open file ({exc.strerror or exc})') from exc
        pixels = decode_pixels(buf, name=path, max_pixels=self.max_pixels, reduce_to=self.reduce_to)
        del buf
        height, width = pixels.shape[:2]
        check_aspect(height, width, path, self.max_aspect)
        plain = self.prepare is None and self.image_is_decoded and min(height, width) >= self.min_side
        raw = pixels_to_rgb_uint8(pixels) if plain else None
        if raw is not None:
            raw = torch.from_numpy(np.array(raw.transpose(2, 0, 1), order='C'))  # a writable CHW copy
        if raw is not None and self.names == ['image']:
            return {'image': raw}
        rgb = pixels_to_rgb_float(pixels)
        if self.prepare is not None:
            rgb = self.prepare(rgb)
        sample = {'key': path, 'path': path, 'target': [], 'views': {'image': rgb}}
        views = self.transforms(sample)['views']
        out = {}
        for name in self.names:
            if name == 'image' and raw is not None:
                out[name] = raw
            else:
                view = upsample_to_min(views[name], self.min_side, interpolation='bicubic')
                out[name] = torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1), dtype=np.float32))
        return out


def end_with_parent(parent_pid, worker_id=None):
    """DataLoader ``worker_init_fn``: the decode worker is killed the moment its parent dies.

    DataLoader's own watchdog notices a dead parent only when it next polls (every 5 s), so a
    killed scoring run would leave workers decoding for seconds; Linux's PR_SET_PDEATHSIG makes the
    kernel send SIGKILL at once. Elsewhere it does nothing. parent_pid: checked after the call, for
    a parent that died before it.
    """
    try:
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def _first_resize(host_specs):
    """(width, height) -> smallest (width, height) to decode, when the chain starts by resizing the image; else None.

    Only then does decoding a large JPEG at a reduced scale lose nothing the chain keeps: views
    derived before a resize (fragments, centre patches) need the full resolution.
    """
    first = host_specs[0] if host_specs else {}
    if first.get('type') != 'Resize' or list(first.get('keys') or ['image']) != ['image']:
        return None
    size, short_side = first.get('size'), first.get('short_side')
    if size is None and short_side is None:
        return None
    return functools.partial(_resize_target, size, short_side)  # picklable: workers receive it


def _resize_target(size, short_side, width, height):
    """(width, height) that ``Resize(size=... | short_side=...)`` gives an image of ``width`` x ``height``."""
    if size is not None:
        out_h, out_w = (size, size) if isinstance(size, int) else size
        return out_w, out_h
    out_h, out_w = scaled_size(height, width, short_side)
    return out_w, out_h


def _out_of_memory(exc):
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)  # CUDA / CPU allocator


def iter_scores(model, paths, batch_size=1, workers=0, min_side=None, max_aspect=MAX_ASPECT, read_ahead=8,
                progress=None, max_pixels=MAX_PIXELS, prepare=None):
    """Score image files; yields (index, scores list or None, error message or None) in input order.

    model: (N, 3, H, W) or {view: (N, 3, H, W)} -> (N, P), in eval mode on its device.
    batch_size: images per forward; only images whose views have equal sizes share a batch.
    workers: decode processes (0: decode in this process). read_ahead: up to batch_size *
    read_ahead decoded images wait for partners of their size before going in smaller batches.
    min_side: smallest image side (default: measured on the model's CLIP). progress: a tqdm bar or None.
    max_pixels: per-image pixel budget (see ``ScoreImages``). A row whose scores are not all finite
    (NaN, inf) is an error for that image, never a score. prepare: see ``ScoreImages``.
    """
    device = next(iter(model.buffers()), torch.empty(0)).device
    if multiprocessing.current_process().daemon:  # e.g. inside a Pool worker: it may not start processes
        workers = 0
    specs = evaluation_transform_specs(model)
    if min_side is None:
        min_side = model_minimum_side(model)
    dataset = ScoreImages(paths, min_side=min_side, max_aspect=max_aspect, specs=specs, max_pixels=max_pixels,
                          prepare=prepare)
    normalize = Normalize(**{k: v for k, v in next((s for s in specs if s.get('type') == 'Normalize'),
                                                   {'mean': None, 'std': None}).items() if k != 'type'})
    to_input = DeviceInput(device, normalize.mean, normalize.std)
    names = dataset.names
    # batch_size=None: samples arrive one by one, in order, and are grouped by size here. About one batch is
    # decoded ahead in all: enough to overlap, little shared memory (/dev/shm is small in containers).
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        pin_memory=device.type == 'cuda',
                        worker_init_fn=functools.partial(end_with_parent, os.getpid()) if workers else None,
                        prefetch_factor=max(2, batch_size // workers) if workers else None)
    window = max(batch_size * read_ahead, 1)
    buckets, pending = {}, 0
    done, next_index = {}, 0

    def run(batch):
        inputs = None
        try:  # the uint8 -> float step on the device allocates 4x the decoded bytes: inside the guard too
            inputs = {v: to_input([sample_views[v] for _, sample_views in batch]) for v in names}
            # caches (text, folded weights) are built outside inference mode, see clip_precision
            with torch.inference_mode(), converted_inputs():
                out = model(inputs if len(names) > 1 else inputs[names[0]]).float().cpu()
        except (RuntimeError, MemoryError) as exc:  # one huge image must not end the run: retry alone, else skip it
            if not (isinstance(exc, MemoryError) or _out_of_memory(exc)):
                raise
            del inputs
            if device.type == 'cuda':
                torch.cuda.empty_cache()
            if len(batch) > 1:
                for item in batch:
                    run([item])
            else:
                index = batch[0][0]
                done[index] = (None, f'{paths[index]}: out of memory on {device} for this image ({exc})'.split('\n')[0])
            return
        for (index, _), row in zip(batch, out):
            if bool(torch.isfinite(row).all()):
                done[index] = (row.tolist(), None)
            else:
                done[index] = (None, f'{paths[index]}: the model gave a non-finite score '
                                     f'({", ".join(f"{v:g}" for v in row.tolist())}); not written as a number')

    def drain():
        nonlocal next_index
        while next_index in done:
            scores, error = done.pop(next_index)
            if progress is not None:
                progress.update(1)
            yield next_index, scores, error
            next_index += 1

    for index, sample, error in loader:
        if sample is None:
            done[index] = (None, error)
        else:
            sample = {v: t.to(device, non_blocking=True) for v, t in sample.items()}
            key = tuple((tuple(t.shape), t.dtype) for t in sample.values())
            bucket = buckets.setdefault(key, [])
            bucket.append((index, sample))
            pending += 1
            if len(bucket) == batch_size:
                run(buckets.pop(key))
                pending -= batch_size
            if pending >= window:  # the oldest rows wait for no one longer: run every partial batch
                for bucket in buckets.values():
                    run(bucket)
                buckets, pending = {}, 0
        yield from drain()
    for bucket in buckets.values():
        run(bucket)
    yield from drain()
