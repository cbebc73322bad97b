"""The per-image prediction table of an IQA validation or test: one row per image, columns named by what they hold.

Columns: ``key`` (the image name as the dataset lists it), ``pred_<output>`` for each output of
the network (its attribute names, ``score`` for a regression head), ``pred_<output>_original_scale``
(the prediction mapped back to the annotation's range when the dataset normalizes its ratings),
and with ratings ``target_<name>`` (the rating as the model was trained against it, normalized)
and ``target_<name>_original_scale`` (the rating as the annotation file writes it), ``<name>``
being the dataset's target name (``MOS``...). Values are written with 6 decimals.
"""
import csv

import numpy as np

from uiqa_plugin.checkpoint_io import write_atomically


def output_column_names(net, count):
    """Names of the ``count`` output columns of ``net``: its ``output_names`` or attribute names when they
    fit, ``score`` for a single output that regresses several attributes, else the column index."""
    for names in (getattr(net, 'output_names', None), getattr(net, 'attribute_names', None)):
        if names is not None and len(names) == count:
            return [str(n) for n in names]
    return ['score'] if count == 1 else [str(i) for i in range(count)]


def prediction_table(keys, preds, pred_names, targets=None, target_names=None, denormalize=None):
    """(header, rows) of the table; preds (N, T) and targets (N, T) arrays or tensors, rows as lists of strings.

    denormalize: the dataset's map from normalized values to the annotation's range (or None).
    """
    preds = np.asarray(preds, dtype=np.float64).reshape(len(keys), -1)
    header = ['key'] + [f'pred_{n}' for n in pred_names]
    blocks = [preds]
    if denormalize is not None:
        header += [f'pred_{n}_original_scale' for n in pred_names]
        blocks.append(np.asarray(denormalize(preds.astype(np.float32)), dtype=np.float64).reshape(preds.shape))
    if targets is not None:
        targets = np.asarray(targets, dtype=np.float64).reshape(len(keys), -1)
        target_names = list(target_names or [])
        if len(target_names) != targets.shape[1]:
            target_names = [str(i) for i in range(targets.shape[1])]
        header += [f'target_{n}' for n in target_names]
        blocks.append(targets)
        if denormalize is not None:
            header += [f'target_{n}_original_scale' for n in target_names]
            blocks.append(np.asarray(denormalize(targets.astype(np.float32)), dtype=np.float64).reshape(targets.shape))
    values = np.concatenate(blocks, axis=1) if keys else np.empty((0, len(header) - 1))
    rows = [[key] + [f'{v:.6f}' for v in row] for key, row in zip(keys, values)]
    return header, rows


def write_table(path, header, rows):
    """Write a CSV table (UTF-8), creating its folder; atomically, so a kill never leaves half a table."""
    def write(f):
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return write_atomically(path, write, 'w', newline='', encoding='utf-8')


def validation_table(model, dataset):
    """(header, rows) of the last validation of an IQAModel-like ``model`` (``val_keys``, ``val_preds``,
    ``val_targets``) on ``dataset`` (its ``target_names`` and ``denormalize`` when it has them)."""
    net = model.get_bare_model(model.net_g) if hasattr(model, 'get_bare_model') else getattr(model, 'net_g', None)
    preds = model.val_preds
    return prediction_table(model.val_keys, preds, output_column_names(net, preds.shape[1]),
                            targets=model.val_targets, target_names=getattr(dataset, 'target_names', None),
                            denormalize=getattr(dataset, 'denormalize', None))
