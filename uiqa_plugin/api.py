"""The Python entry points: build a scoring model, score image files.

    >>> import uiqa_plugin
    >>> metric = uiqa_plugin.create_metric('quality,look,feel')          # RN50 + OpenAI weights
    >>> result = uiqa_plugin.score_paths(metric, ['photos/'], batch_size=4)
    >>> result.rows[0]   # {'path': 'photos/a.jpg', 'quality': 0.71, 'brightness': 0.55, ...}
"""
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from uiqa_plugin.clip_precision import check_precision
from uiqa_plugin.checkpoint_format import missing_clip_message, missing_clip_paths, read_checkpoint
from uiqa_plugin.data.image_io import ImageReadError
from uiqa_plugin.data.transforms import build_transforms, evaluation_transform_specs, view_pipeline  # noqa: F401
from uiqa_plugin.devices import default_device  # noqa: F401 (public API)
from uiqa_plugin.scoring import default_workers
from uiqa_plugin.scoring.input_limits import MAX_ASPECT, MAX_PIXELS
from uiqa_plugin.scoring.loader import iter_scores, model_minimum_side
from uiqa_plugin.scoring.paths import collect_image_paths  # noqa: F401 (public API)
from uiqa_plugin.scoring.table import write_table


def create_metric(attributes='quality', clip_model='RN50', clip_pretrained='openai', device=None, precision='fp32',
                  data_range=1.0, **kwargs):
    """A ready-to-call zero-shot CLIP-IQA model in eval mode on ``device``.

    attributes: names, presets or ``"positive|negative"`` pairs (see ``uiqa_plugin.prompts``).
    The returned module maps RGB images (N, 3, H, W) to (N, P) scores in [0, 1];
    ``metric.attribute_names`` names the columns. Images are uint8 in [0, 255] (scaled exactly as a
    file is) or float in [0, data_range] (default 1.0; beyond it by more than 1/255 of it: refused);
    images smaller than the CLIP image tower takes are upscaled as ``uiqa-score`` does
    (``uiqa_plugin.metrics.image_input``). precision: 'fp32' (default, the reference numbers),
    'bf16' (fast on GPUs and on CPUs with bf16 units) or 'fp16' (CUDA only); see ``uiqa_plugin.clip_precision``.
    Other keyword arguments go to ``CLIPIQA``.
    """
    from uiqa_plugin.archs.clipiqa_arch import CLIPIQA  # lazy: importing open_clip takes seconds
    # lazy: importing uiqa_plugin.metrics registers calculate_clipiqa, which builds its models here
    from uiqa_plugin.metrics.image_input import ImageInputContract
    contract = ImageInputContract(data_range)  # a bad data_range fails here, before CLIP loads
    check_precision(precision, device or default_device())  # fp16 on a CPU fails here, before CLIP loads
    metric = CLIPIQA(attributes=attributes, clip_model=clip_model, clip_pretrained=clip_pretrained,
                     precision=precision, **kwargs)
    metric.register_forward_pre_hook(contract)
    return metric.to(device or default_device()).eval()


def load_trained_model(checkpoint, device=None, clip_model=None, clip_pretrained=None, quick_gelu=None,
                       trust=False, precision=None):
    """A trained model (CLIP-IQA+, CLIP-UIQA) from one of our checkpoints, in eval mode.

    The checkpoint carries the arch options (``network_g``, with absolute CLIP paths) and the
    preprocessing it was validated with (``view_pipeline`` rebuilds it). CLIP itself is loaded
    as usual, from ``clip_model`` / ``clip_pretrained`` when given (e.g. a local weight file),
    else from the names stored in the checkpoint. The weights are the averaged ones
    (``params_ema``) when the run kept an average, as its validation used them.

    trust: allow files that need code to load (a checkpoint that needs full unpickling, a CLIP
    TorchScript archive with code that runs on load); never the default.
    quick_gelu, precision: override what the checkpoint recorded (None: keep it).
    Raises ``checkpoint_io.CheckpointReadError`` (a ValueError) for unreadable, refused or
    non-finite weights, ValueError for other problems; each message names the file and the key.
    """
    from basicsr.utils.registry import ARCH_REGISTRY  # lazy: importing basicsr loads all its archs and models
    from uiqa_plugin.clip.pretrained import trusting  # lazy: importing open_clip takes seconds
    ckpt = read_checkpoint(checkpoint, trust=trust)  # options checked as an option file's, weights finite
    if not isinstance(ckpt, dict) or 'params' not in ckpt or 'network_g' not in ckpt:
        raise ValueError(f'{checkpoint}: not a uiqa-plugin checkpoint (needs "params" and "network_g"; '
                         'convert published CLIP-IQA+ weights with uiqa-convert)')
    options = dict(ckpt['network_g'])
    arch = options.pop('type')
    if clip_model is not None:
        options['clip_model'] = clip_model
    if clip_pretrained is not None:
        options['clip_pretrained'] = clip_pretrained
    missing = missing_clip_paths(options)
    if missing:
        flags = {'clip_model': '--clip-model', 'clip_pretrained': '--clip-pretrained'}
        how = (f'point at them with {" / ".join(flags[k] for k, _ in missing)} (uiqa-score) or '
               f'{" / ".join(f"{k}=" for k, _ in missing)} (load_trained_model)')
        raise ValueError(missing_clip_message(checkpoint, missing, how))
    if quick_gelu is not None:  # else the activation the checkpoint recorded (or the weights' rule)
        options['quick_gelu'] = quick_gelu
    if precision is not None:  # else the precision it was trained with
        options['precision'] = precision
    with trusting(trust):
        model = ARCH_REGISTRY.get(arch)(**options)
    params = ckpt['params_ema'] if isinstance(ckpt.get('params_ema'), dict) else ckpt['params']
    try:
        model.load_state_dict(params, strict=True)
    except RuntimeError as exc:
        raise ValueError(f'{checkpoint}: weights do not fit {arch} built from its own options: {exc}') from exc
    model.preprocessing = ckpt.get('preprocessing')
    model.view_options = ckpt.get('view_options')
    if getattr(model, 'regressor', None) is not None:
        model.output_names = ['score']
    model = model.to(device or default_device()).eval()
    names = output_names(model)
    try:
        count = _output_count(model)
    except Exception:  # noqa: BLE001  (a probe the model cannot take: scoring will say why, with a real image)
        count = len(names)
    if count != len(names):  # a user's arch whose head gives other columns than its attributes
        model.output_names = ['score'] if count == 1 else [f'output_{i}' for i in range(count)]
    return model


def _output_count(model):
    """Columns of the model's output, from one forward of a mid-grey image through its evaluation views."""
    side = max(224, model_minimum_side(model))
    specs = [s for s in evaluation_transform_specs(model) if s.get('type') != 'LoadImage']
    sample = build_transforms(specs, train=False)(
        {'key': 'probe', 'path': 'probe', 'target': [], 'views': {'image': np.full((side, side, 3), 0.5, np.float32)}})
    device = next(iter(model.buffers()), torch.empty(0)).device
    views = list(getattr(model, 'views', None) or ['image'])
    inputs = {v: sample[v][None].to(device) for v in views}
    with torch.inference_mode():
        out = model(inputs if len(views) > 1 else inputs[views[0]])
    return int(out.shape[-1]) if out.dim() > 1 else 1


def output_names(model):
    """Column names of a model's output: its attributes, 'score' for a regression head, or what a user's arch
    gives (set by ``load_trained_model``)."""
    return list(getattr(model, 'output_names', None) or model.attribute_names)


@dataclass
class ScoreResult:
    """``rows``: one dict per scored image in input order ('path' + one float per attribute);
    ``failures``: (path, message) for images that could not be scored."""
    attribute_names: list
    rows: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    @property
    def columns(self):
        return ['path'] + list(self.attribute_names)

    def to_table(self, path):
        """Write the rows to ``path``, a .csv or .json table in the format uiqa-score writes (failures are not rows)."""
        write_table(self.rows, self.columns, os.fspath(path))

    def to_dataframe(self):
        """The rows as a pandas DataFrame (pandas is not a dependency: import error if it is missing)."""
        import pandas as pd
        return pd.DataFrame(self.rows, columns=self.columns)


def score_paths(metric, inputs, batch_size=1, strict=False, progress=True, workers=None, read_ahead=8,
                max_aspect=MAX_ASPECT, max_pixels=MAX_PIXELS, prepare=None):
    """Score image files with ``metric`` (``create_metric`` or ``load_trained_model``).

    inputs: files, folders (recursive) and glob patterns. Each file becomes the views the
    model takes (the original image, and for CLIP-UIQA the fragment mosaic and centre
    patch), decoded in ``workers`` processes (default: up to 4; 0: in this process).
    Images of different sizes are batched with others of the same size; rows keep input order.
    Images smaller than the CLIP image tower takes are upscaled to its minimum (aspect kept);
    images more than ``max_aspect`` times longer than wide are refused, and images with more than
    ``max_pixels`` pixels before decoding (``None``: no limit). prepare: see ``scoring.loader.ScoreImages``.
    Scores that are not finite (NaN) are failures of their image, never rows.
    Unreadable or refused files are recorded in ``failures`` and skipped, or raise
    ``ImageReadError`` when ``strict``.
    """
    from tqdm import tqdm

    paths, problems = collect_image_paths(inputs)
    if strict and problems:
        raise FileNotFoundError('; '.join(f'{p}: {m}' for p, m in problems))
    names = output_names(metric)
    result = ScoreResult(names, failures=list(problems))
    workers = default_workers() if workers is None else workers
    with tqdm(total=len(paths), desc='scoring', unit='img', disable=not progress) as bar:
        for index, scores, error in iter_scores(metric, paths, batch_size=batch_size,
                                                workers=min(workers, len(paths) // 2), read_ahead=read_ahead,
                                                max_aspect=max_aspect, progress=bar, max_pixels=max_pixels,
                                                prepare=prepare):
            if error is not None:
                if strict:
                    raise ImageReadError(error)
                result.failures.append((paths[index], error))
            else:
                result.rows.append({'path': paths[index], **dict(zip(names, scores))})
    return result
