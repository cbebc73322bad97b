"""Our entry points on BasicSR's runner, one job per module:

- ``command_line``: ``train.py`` / ``test.py`` arguments, option file read and checked once, clean exits;
- ``pipelines``: BasicSR's train and test pipelines on those options (folders, log, loaders, model);
- ``loop``: the training loop (exact resume, validation, saves);
- ``training_state``: which state to resume from, and the loop's part of it;
- ``random_states``: Python, NumPy and torch random states, saved as plain data;
- ``experiment_lock``: one live training per experiment folder;
- ``model_contract``: what the runner asks of a model, with defaults for BasicSR's own models;
- ``basicsr_patches``: what we replace in BasicSR (``patch_basicsr()`` for a user's own script).
"""
from uiqa_plugin.runner.basicsr_patches import patch_basicsr
from uiqa_plugin.runner.command_line import run_pipeline
from uiqa_plugin.runner.experiment_lock import ExperimentInUseError, ExperimentLock

__all__ = ['patch_basicsr', 'run_pipeline', 'ExperimentLock', 'ExperimentInUseError']
