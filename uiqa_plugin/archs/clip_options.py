"""The choices and ranges of the CLIP archs' options (``network_g``), declared for up-front checks.

``CLIPIQA.option_rules`` and ``CLIPUIQA.option_rules`` are built from these; ``uiqa_plugin.options``
applies them to an option file's ``network_g`` and to the one stored in a checkpoint, so that a typo
such as ``aggregation: maen`` is named before training starts (or a model is built), never as a
traceback from deep inside the build.
"""
import functools
import json
import os.path as osp

from uiqa_plugin.archs.prompt_learner import POSITIONS
from uiqa_plugin.clip import POS_EMBED_MODES
from uiqa_plugin.clip_precision import PRECISIONS
from uiqa_plugin.option_rules import Block, Number, OneOf, did_you_mean
from uiqa_plugin.prompts import resolve_attributes

#: CLIP's text encoder has 77 positions: SOS, the context, at least one class token, '.', EOT
MAX_CONTEXT_TOKENS = 72
ENSEMBLE_MODES = ('mean_prob', 'mean_logit')


def attributes_problem(value, options=None):
    """Attributes must resolve: known names, presets, or explicit "positive|negative" pairs."""
    if not (isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))):
        return f'expected attribute names, presets or "positive|negative" pairs (a string or a list), got {value!r}'
    try:
        resolve_attributes(value)
    except (KeyError, ValueError) as exc:
        return str(exc.args[0]) if exc.args else str(exc)
    return None


def clip_model_problem(value, options=None):
    if not isinstance(value, str) or not value:
        return f'expected an open_clip model name (RN50) or a JSON model config file, got {value!r}'
    return None


@functools.lru_cache(maxsize=8)
def clip_part_names(clip_model):
    """Dotted names of the modules of an open_clip model (e.g. 'visual.layer4'), or None if it cannot be built.

    Built on the meta device: the structure without memory or weights (a fraction of a second).
    """
    import open_clip
    import torch
    if clip_model.endswith('.json'):
        try:
            with open(osp.expanduser(clip_model), encoding='utf-8') as f:
                cfg = json.load(f)
        except (OSError, ValueError):
            return None  # the file itself is checked where CLIP is loaded
    else:
        cfg = open_clip.get_model_config(clip_model)
    if not isinstance(cfg, dict) or not all(k in cfg for k in ('embed_dim', 'vision_cfg', 'text_cfg')):
        return None
    cls = open_clip.model.CustomTextCLIP if cfg.get('custom_text') else open_clip.model.CLIP
    try:
        with torch.device('meta'):
            model = cls(embed_dim=cfg['embed_dim'], vision_cfg=cfg['vision_cfg'], text_cfg=cfg['text_cfg'])
    except Exception:  # noqa: BLE001  (a config open_clip cannot build is reported when CLIP loads)
        return None
    return tuple(name for name, _ in model.named_modules() if name)


def finetune_clip_problem(value, options):
    """Each part to fine-tune must be a module of the CLIP model named by ``clip_model``."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return f"expected dotted names of CLIP parts (e.g. ['visual.layer4']), got {value!r}"
    model = (options or {}).get('clip_model', 'RN50')
    parts = clip_part_names(model) if names and isinstance(model, str) else None
    for name in names:
        if parts is not None and name not in parts:
            same_depth = sorted(p for p in parts if p.count('.') == name.count('.')) or sorted(parts)
            return (f'CLIP {model} has no part {name!r}' + did_you_mean(name, same_depth) +
                    f'; its parts at that depth: {", ".join(same_depth[:12])}' + (', ...' if len(same_depth) > 12 else ''))
    return None


#: PromptLearner's options (``prompt_opt``)
PROMPT_RULES = {
    'n_ctx': Number(1, MAX_CONTEXT_TOKENS, integer=True,
                    why="the context and the prompt share CLIP's 77 text positions"),
    'ctx_init': lambda v, o=None: None if v is None or (isinstance(v, str) and v.strip()) else
    f'expected a phrase (or null), got {v!r}',
    'class_token_position': OneOf(*POSITIONS),
    'context': OneOf('pair', 'prompt'),
    'init_std': Number(0, 10),
}

#: options every CLIP arch shares
CLIP_RULES = {
    'attributes': attributes_problem,
    'clip_model': clip_model_problem,
    'clip_pretrained': lambda v, o=None: None if v is None or isinstance(v, str) else
    f"expected an open_clip tag ('openai'), a weight file or null, got {v!r}",
    'keep_pos_embed': OneOf(*POS_EMBED_MODES),
    'input_normalized': OneOf(True, False),
    'quick_gelu': OneOf(None, True, False),
    'ensemble': OneOf(*ENSEMBLE_MODES),
    'precision': OneOf(*PRECISIONS),
}


def prompt_block():
    return Block(PROMPT_RULES)
