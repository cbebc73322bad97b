"""Per-image results of a test run: ``<folder>/<set>_metrics.csv``, one row per image, every metric.

BasicSR's validations log averages only; significance tests and failure cases need each image.

- Restoration models (SRModel and every model built like it) call ``calculate_metric(data, opt)``
  once per image and metric, as imported into their own module (``basicsr.models.sr_model``), after
  ``feed_data(batch)`` with the image's ``lq_path``. Around one ``validation`` call,
  ``per_image_metrics`` wraps both for this model only (the instance's ``feed_data``, the
  ``calculate_metric`` name of the modules that define the model's classes) and restores them after.
  Columns: ``name`` (the file name without extension, as BasicSR names saved outputs) and one column
  per ``val.metrics`` label, in their order, at full precision.
- IQA models that compute dataset-level metrics (ours: ``IQAModel``) keep their predictions
  (``val_keys`` / ``val_preds`` / ``val_targets``); the table is then their prediction table
  (``uiqa_plugin.models.prediction_table``).

Only a process that saw images writes (rank 0 of a distributed test). Nothing is written when the
validation fails.
"""
import contextlib
import os.path as osp
import sys

from basicsr.models.base_model import BaseModel

from uiqa_plugin.models.prediction_table import validation_table, write_table

__all__ = ['per_image_metrics', 'per_image_tables_for_test_runs', 'metrics_table_path']


def metrics_table_path(folder, set_name):
    return osp.join(folder, f'{set_name}_metrics.csv')


def _image_name(batch):
    for key in ('lq_path', 'gt_path', 'key', 'path'):
        value = batch.get(key) if isinstance(batch, dict) else None
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, str):
            return osp.splitext(osp.basename(value))[0]
    return None


class _Recorder:
    """Rows of (image name, {metric label: value}) in the order BasicSR computes them."""

    def __init__(self, metric_options):
        self.labels = list(metric_options)
        self._label_of = {id(opt): label for label, opt in metric_options.items()}
        self._options = metric_options
        self.rows = []
        self._name = None

    def image(self, name):
        self._name = name if name is not None else str(len(self.rows))
        self.rows.append([self._name, {}])

    def label(self, opt):
        label = self._label_of.get(id(opt))
        if label is None:  # a model that copied the option dicts: the first entry equal to it
            label = next((k for k, v in self._options.items() if v == opt), None)
        return label

    def value(self, opt, value):
        label = self.label(opt)
        if label is None:
            return
        if not self.rows or label in self.rows[-1][1]:  # a second value for this sample (video frames): a new row
            self.rows.append([f'{self._name}#{len(self.rows)}', {}])
        self.rows[-1][1][label] = float(value)

    def table(self):
        header = ['name'] + self.labels
        rows = [[name] + [repr(values[k]) if k in values else '' for k in self.labels]
                for name, values in self.rows if values]
        return header, rows


def _metric_modules(model):
    """Modules that define the model's classes and hold a ``calculate_metric`` (BasicSR's, imported by name)."""
    found = []
    for cls in type(model).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is not None and callable(getattr(module, 'calculate_metric', None)) and module not in found:
            found.append(module)
    return found


@contextlib.contextmanager
def per_image_metrics(model, dataloader, folder):
    """Around ``model.validation(dataloader, ...)``: write ``<folder>/<set>_metrics.csv`` when it succeeds.

    Yields the path the table will have. The set's name is ``dataloader.dataset.opt['name']``.
    """
    dataset = dataloader.dataset
    set_name = dataset.opt['name'] if isinstance(getattr(dataset, 'opt', None), dict) else 'test'
    path = metrics_table_path(folder, set_name)
    metric_options = (model.opt.get('val') or {}).get('metrics') or {}
    recorder = _Recorder(metric_options)
    had_own_feed = 'feed_data' in vars(model)
    feed_data = model.feed_data

    def recording_feed(data, *args, **kwargs):
        recorder.image(_image_name(data))
        return feed_data(data, *args, **kwargs)

    patched = []
    for module in _metric_modules(model):
        calculate = module.calculate_metric

        def recording_metric(data, opt, *args, _calculate=calculate, **kwargs):
            value = _calculate(data, opt, *args, **kwargs)
            recorder.value(opt, value)
            return value
        patched.append((module, calculate))
        module.calculate_metric = recording_metric
    model.feed_data = recording_feed
    for name in ('val_keys', 'val_preds'):  # set anew by a validation that keeps its predictions
        vars(model).pop(name, None)
    try:
        yield path
    finally:
        for module, calculate in patched:
            module.calculate_metric = calculate
        if had_own_feed:
            model.feed_data = feed_data
        else:
            del model.feed_data
    if hasattr(model, 'val_keys') and hasattr(model, 'val_preds'):
        write_table(path, *validation_table(model, dataset))
    elif any(values for _, values in recorder.rows):
        write_table(path, *recorder.table())


@contextlib.contextmanager
def per_image_tables_for_test_runs():
    """Within the block, every ``validation`` of a BasicSR model writes its per-image table into the run's
    ``path.results_root`` (what ``uiqa_plugin/test.py`` wraps around the test pipeline).

    It wraps ``BaseModel.validation``, which every BasicSR model inherits; a model class that overrides
    ``validation`` itself gets no table this way (a runner can call ``per_image_metrics`` around it).
    """
    validation = BaseModel.validation

    def validation_with_table(self, dataloader, *args, **kwargs):
        folder = self.opt['path'].get('results_root') or self.opt['path'].get('visualization') or '.'
        with per_image_metrics(self, dataloader, folder):
            return validation(self, dataloader, *args, **kwargs)
    BaseModel.validation = validation_with_table
    try:
        yield
    finally:
        BaseModel.validation = validation
