"""What the runner asks of a model beyond BasicSR's interface, with defaults right for any BasicSR model.

A model is BasicSR's (``feed_data``, ``optimize_parameters``, ``validation``, ``save``,
``resume_training``, ``optimizers``/``schedulers``), plus, each optional:

- ``gathers_validation`` (class attribute, default False): the model's ``dist_validation``
  collects the predictions of every rank, so the runner may shard validation and test sets
  across ranks. BasicSR's own models validate on rank 0 alone (``SRModel.dist_validation``),
  so they get the whole set on every rank, and a run gives the numbers (and saved images) of
  one process.
- ``best_metric_results`` (BaseModel's record of the best validation values): the runner saves
  it with its loop state and restores it on resume, so "Best: ... @ iter" carries over.

The runner keeps the rest of what an exact resume needs (the random states of every rank, the
position inside the epoch) in a file of its own beside the model's training state
(``runner.training_state``): a model writes and reads nothing for it.
"""
from copy import deepcopy


def gathers_validation(model_cls):
    """Whether validation sets may be sharded across ranks for models of ``model_cls``."""
    return bool(getattr(model_cls, 'gathers_validation', False))


def best_record(model):
    """The model's best-validation record (a copy), or None when it keeps none."""
    record = getattr(model, 'best_metric_results', None)
    return deepcopy(record) if record else None


def restore_best_record(model, record):
    if record:
        model.best_metric_results = deepcopy(record)
