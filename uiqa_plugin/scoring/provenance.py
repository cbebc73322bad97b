"""What made a table's rows: the model, its weights and options, the preprocessing, the precision.

Recorded beside every score table (``<out>.run.json``) and in every part file, so that
``--resume`` adds rows only from the same computation: another CLIP, other weights, a flipped
``--quick-gelu``, other attributes or prompts, another input pipeline or precision would mix
two models' numbers in one column.
"""
import json
import os
import os.path as osp

from uiqa_plugin.data.transforms import evaluation_transform_specs


def _plain(value):
    """JSON's view of a value (tuples as lists, ...), so that a record read back compares equal."""
    return json.loads(json.dumps(value, default=str))


def describe_model(model, **extra):
    """{name: value} of everything that decides the numbers ``model`` gives for an image file.

    extra: what the caller adds around the model (e.g. ``checkpoint``, ``crop_border``).
    """
    inner = getattr(model, 'metric', model)
    clip = getattr(inner, 'clip', None)
    record = {
        'arch': type(inner).__name__,
        'outputs': list(getattr(model, 'output_names', None) or getattr(inner, 'attribute_names', []) or []),
        'prompts': list(getattr(inner, 'prompts', ()) or ()),
        'clip_model': getattr(clip, 'name', None),
        'clip_weights': getattr(clip, 'source', None),
        'quick_gelu': getattr(clip, 'quick_gelu', None),
        'keep_pos_embed': getattr(inner, 'keep_pos_embed', None),
        'ensemble': getattr(inner, 'ensemble', None),
        'precision': getattr(inner, 'precision', None),
        'preprocessing': evaluation_transform_specs(model),
    }
    for key, value in extra.items():
        record[key] = value
    return _plain(record)


def describe_file(path):
    """A file as a record names it: its real path (``./a`` and ``a`` are one file), size and modification time."""
    if path is None:
        return None
    real = osp.realpath(os.fspath(path))
    try:
        st = os.stat(real)
    except OSError:
        return {'path': real}
    return {'path': real, 'size': st.st_size, 'mtime': int(st.st_mtime)}


def differences(before, now):
    """'key: before vs now' for every key whose value differs between two records (empty: the same)."""
    def short(value):
        text = json.dumps(value)
        return text if len(text) <= 120 else text[:117] + '...'
    return [f'{key}: {short(before.get(key))} vs {short(now.get(key))}'
            for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
