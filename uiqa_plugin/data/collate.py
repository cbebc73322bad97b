"""Batching samples of named views, with a clear error when image sizes differ."""
import torch
from torch.utils.data import default_collate


def collate_views(batch):
    """Collate a list of dataset samples like torch's ``default_collate``.

    Tensors of equal shape are stacked ([B, 3, h, w] views, [B, T] targets); a view that is uint8
    in some samples and float32 in others becomes float32 in [0, 1] for all of them; strings
    ('key', 'path') become lists. When one key holds tensors of different shapes (e.g.
    the full ``image`` view of photos of different sizes) it raises a ValueError naming
    the view, the image keys and their sizes, and the fixes.
    """
    if not batch:
        raise ValueError('collate_views: empty batch')
    first = batch[0]
    if not isinstance(first, dict):
        return default_collate(batch)
    keys = list(first)
    for i, sample in enumerate(batch):
        if list(sample) != keys:
            raise ValueError(f'collate_views: sample {i} has keys {list(sample)} but sample 0 has {keys}')
    out = {}
    for key in keys:
        values = [s[key] for s in batch]
        if isinstance(values[0], torch.Tensor):
            shapes = [tuple(v.shape) for v in values]
            if len(set(shapes)) > 1:
                raise ValueError(_size_mismatch_message(key, batch, shapes))
            if len({v.dtype for v in values}) > 1:
                # uint8 views (8-bit images) batched with float ones (16-bit, alpha): all float in [0, 1], exactly
                # the host's values (float32(x) / 255); stacking would promote uint8 to float without the scaling
                values = [v.float().div_(255) if v.dtype == torch.uint8 else v for v in values]
            out[key] = torch.stack(values, 0)
        elif isinstance(values[0], str):
            out[key] = values
        else:
            out[key] = default_collate(values)
    return out


def _size_mismatch_message(view, batch, shapes):
    names = [s.get('key', f'#{i}') for i, s in enumerate(batch)]
    groups = {}
    for name, shape in zip(names, shapes):
        groups.setdefault(shape, []).append(name)
    listing = '; '.join(f"{'x'.join(map(str, shape[-2:] if len(shape) > 1 else shape))}: "
                        f"{', '.join(map(str, group[:3]))}{' ...' if len(group) > 3 else ''}"
                        for shape, group in groups.items())
    if view == 'target':
        return (f'collate_views: targets have different lengths within the batch ({listing}); '
                'do not mix datasets with different target columns in one batch')
    return (f'collate_views: view {view!r} has different sizes within the batch ({listing}). '
            f'Fixes: give the view a fixed size (views: {{{view}: {{size: [H, W]}}}} or a dataset '
            f'resize: {{size: [H, W]}}), use batch_size_per_gpu: 1, or group images of equal size.')
