"""uiqa-convert: turn published CLIP-IQA+ checkpoints into ours.

    uiqa-convert iter_80000.pth clipiqa_plus_koniq.pth
    uiqa-convert CLIP-IQA+_learned_prompts-603f3273.pth clipiqa_plus.pth --attributes quality
    uiqa-convert CLIPIQA+_RN50_512-89f5d940.pth clipiqa_plus_rn50_512.pth

Understood inputs (the published CLIP-IQA+ checkpoints and pyiqa's copies of them):
- the reference's mmcv checkpoint: ``state_dict['generator.clipmodel_{i}.prompt_learner.ctx']``
  (16 x 512, fp16) per prompt pair, plus ``generator.regressor.linear_{1,2,3}.*`` when there are
  several pairs; everything else in it is CLIP and is dropped;
- pyiqa's redistribution: a bare context tensor (16 x width), one context shared by both prompts;
- pyiqa's retrains (``CLIPIQA+_RN50_512``, ``CLIPIQA+_ViTL14_512``): ``{'params': {'prompt_learner.ctx':
  (2, 16, width)}}``, one context per prompt (``context: prompt``). pyiqa trained and scores these
  with its positional embedding kept and stretched in 1-D; the converted model does the same
  (``keep_pos_embed: stretch_1d``) unless ``--keep-pos-embed`` says otherwise. Width 768 means ViT-L-14.
Every reference ran OpenAI's CLIP, so the converted model records ``quick_gelu: true``.
Files are read without unpickling code (weights_only); numpy scalars in mmcv's metadata are allowed.
The output is our checkpoint: ``{'params': state dict of CLIPIQAPlus, 'network_g': options}``,
loadable with ``path.pretrain_network_g`` in an option YAML or ``uiqa-score --checkpoint``.
"""
import argparse
import os
import os.path as osp
import re
import sys
from contextlib import nullcontext

import torch

from uiqa_plugin.checkpoint_io import CheckpointReadError, check_finite, load_checkpoint, save_checkpoint
from uiqa_plugin.prompts import resolve_attributes
from uiqa_plugin.terminal import printable

_CTX = re.compile(r'(?:^|\.)clipmodel_(\d+)\.prompt_learner\.ctx$')
_REGRESSOR = re.compile(r'(?:^|\.)regressor\.(linear_[123]\.(?:weight|bias))$')
_CLIP_BY_TEXT_WIDTH = {512: 'RN50', 768: 'ViT-L-14'}  # the backbones pyiqa trained CLIP-IQA+ on
KEEP_POS_EMBED = {'false': False, 'interpolate_2d': True, 'stretch_1d': 'stretch_1d'}
# CLIP's text tower reads 77 tokens: start, end, the class words and the learned context must fit
MAX_CONTEXT_TOKENS = 72


class ConvertError(ValueError):
    """A source that cannot become our checkpoint; the message names the file, the key and the reason."""


def _contexts_and_regressor(obj, source):
    if torch.is_tensor(obj):
        return [('(the tensor)', obj)], {}, 'tensor'
    if not isinstance(obj, dict):
        raise ConvertError(f'{source}: expected a tensor or a dict, got {type(obj).__name__}')
    layout = 'dict'
    for wrapper in ('state_dict', 'params', 'params_ema'):
        if wrapper in obj and isinstance(obj[wrapper], dict):
            obj, layout = obj[wrapper], wrapper
            break
    contexts, regressor = {}, {}
    for key, value in obj.items():
        if not torch.is_tensor(value):
            continue
        match = _CTX.search(key)
        if match:
            contexts[int(match.group(1))] = (key, value)
        elif key.endswith('prompt_learner.ctx') or key == 'ctx':
            contexts[len(contexts)] = (key, value)
        elif _REGRESSOR.search(key):
            regressor[f'regressor.{_REGRESSOR.search(key).group(1)}'] = value
    if not contexts:
        raise ConvertError(f'{source}: no learned prompt context found (expected keys like '
                         f"'generator.clipmodel_0.prompt_learner.ctx'); keys present: {list(obj)[:8]}")
    return [contexts[i] for i in sorted(contexts)], regressor, layout


def _check_contexts(contexts, regressor, source):
    """Refuse contexts that no CLIP text tower can take, naming the key: integer tensors, no or too many
    tokens, non-finite values (in the regressor too)."""
    for key, ctx in contexts:
        if not ctx.is_floating_point():
            raise ConvertError(f'{source}: {key} holds {ctx.dtype} values; a learned context is floating point')
        if ctx.dim() not in (2, 3) or ctx.shape[-1] < 1:
            raise ConvertError(f'{source}: {key} has shape {tuple(ctx.shape)}; expected (n_ctx, width) or '
                               '(prompts, n_ctx, width)')
        n_ctx = ctx.shape[-2]
        if not 1 <= n_ctx <= MAX_CONTEXT_TOKENS:
            raise ConvertError(f'{source}: {key} has {n_ctx} context tokens; CLIP reads 77 tokens in all, so a '
                               f'context has 1 to {MAX_CONTEXT_TOKENS}')
    try:
        check_finite(dict(contexts), source)
        check_finite(regressor, source)
    except CheckpointReadError as exc:
        raise ConvertError(str(exc)) from None


def _stack_contexts(contexts, pairs, attributes, source):
    """(contexts, pairs) -> (ctx tensor (C, n_ctx, width), 'pair' | 'prompt')."""
    contexts = [ctx for _, ctx in contexts]
    if len(contexts) == 1 and contexts[0].dim() == 3:  # pyiqa's retrains: one tensor, one row per prompt
        ctx = contexts[0]
        if ctx.shape[0] == 2 * pairs:
            return ctx.float(), 'prompt'
        if ctx.shape[0] == pairs:
            return ctx.float(), 'pair'
        raise ConvertError(f'{source}: a context of shape {tuple(ctx.shape)} fits neither {pairs} pair(s) nor '
                         f'{2 * pairs} prompt(s) of the attributes {attributes!r}')
    if pairs != len(contexts):
        raise ConvertError(f'{source} holds {len(contexts)} prompt context(s) but the attributes {attributes!r} have '
                         f'{pairs} pair(s): pass --attributes with one pair per context, in the same order')
    shapes = {tuple(c.shape) for c in contexts}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ConvertError(f'{source}: contexts must all be (n_ctx, width), got {sorted(shapes)}')
    return torch.stack([c.float() for c in contexts]), 'pair'


def convert_clipiqa_plus(obj, attributes='quality', clip_model=None, clip_pretrained='openai', source='checkpoint',
                         keep_pos_embed=None):
    """Reference / pyiqa CLIP-IQA+ weights -> our checkpoint dict (fp32).

    One context per prompt pair, in the order of ``attributes`` (the reference's clipmodel_0, 1, ...),
    or pyiqa's one context per prompt. clip_model: None picks RN50 or ViT-L-14 from the context
    width. keep_pos_embed: None picks pyiqa's 1-D stretch for its per-prompt (512 px) layout, else False.
    """
    contexts, regressor, layout = _contexts_and_regressor(obj, source)
    _check_contexts(contexts, regressor, source)
    attrs = resolve_attributes(attributes)
    pairs = sum(len(a.pairs) for a in attrs)
    ctx, context = _stack_contexts(contexts, pairs, attributes, source)
    n_ctx, width = ctx.shape[1], ctx.shape[2]
    if clip_model is None:
        clip_model = _CLIP_BY_TEXT_WIDTH.get(width, 'RN50')  # another width fails to load: pass --clip-model
    if keep_pos_embed is None:
        keep_pos_embed = 'stretch_1d' if context == 'prompt' and layout == 'params' else False
    params = {'prompt_learner.ctx': ctx}
    if ctx.shape[0] > 1 and context == 'pair':
        if len(regressor) != 6:
            raise ConvertError(f'{source}: {ctx.shape[0]} pairs need the regressor linear_1..3 weights and biases; '
                             f'found {sorted(regressor)}')
        params.update({k: v.float() for k, v in regressor.items()})
    network_g = {'type': 'CLIPIQAPlus', 'attributes': attributes, 'clip_model': clip_model,
                 'clip_pretrained': clip_pretrained, 'quick_gelu': True, 'keep_pos_embed': keep_pos_embed,
                 'prompt_opt': {'n_ctx': int(n_ctx), 'class_token_position': 'middle', 'context': context}}
    return {'params': params, 'network_g': network_g, 'attribute_names': [a.name for a in attrs],
            'converted_from': source}


def _numpy_scalar_globals():
    """What pickled numpy scalars (mmcv's metadata) need under weights_only: plain numbers, no code."""
    import numpy as np
    multiarray = (np._core if hasattr(np, '_core') else np.core).multiarray
    found = [multiarray.scalar, np.dtype]
    found += [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    return found


def read_source(path, trust=False):
    """Load a published checkpoint without running code from it (weights_only, numpy scalars allowed)."""
    allow = getattr(torch.serialization, 'safe_globals', None)  # a context manager from torch 2.5
    if allow is None:
        torch.serialization.add_safe_globals(_numpy_scalar_globals())  # torch 2.4: process-wide, still no code
    with (allow(_numpy_scalar_globals()) if allow else nullcontext()):
        return load_checkpoint(path, trust=trust, what='source checkpoint')


def say(message):
    print(printable(f'uiqa-convert: {message}'), file=sys.stderr)


def output_problem(path):
    """Why a checkpoint cannot be written at ``path`` (a folder, a device, an unwritable place), or None."""
    if osp.isdir(path):
        return f'{path}: is a folder; name the checkpoint file, e.g. {osp.join(path, "clipiqa_plus.pth")}'
    if osp.exists(path) and not osp.isfile(path):
        return f'{path}: is not a regular file (a device or pipe); name a .pth file'
    folder = osp.dirname(osp.abspath(path))
    if osp.isdir(folder) and not os.access(folder, os.W_OK):
        return f'{path}: cannot write in folder {folder}'
    return None  # a missing folder is created; other failures (a full disk, /proc) are named when writing


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='uiqa-convert', description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='examples:\n'
               '  uiqa-convert iter_80000.pth clipiqa_plus.pth --attributes quality      # the reference (mmcv)\n'
               '  uiqa-convert CLIP-IQA+_learned_prompts-603f3273.pth clipiqa_plus.pth   # pyiqa\'s context tensor\n'
               '  uiqa-score photos/ --checkpoint clipiqa_plus.pth --out scores.csv')
    parser.add_argument('source', help="reference mmcv checkpoint (iter_80000.pth) or pyiqa's learned prompts")
    parser.add_argument('output', help='our checkpoint (.pth)')
    parser.add_argument('--attributes', default='quality', help='one pair per context, in order (default: quality)')
    parser.add_argument('--clip-model', default=None,
                        help='CLIP architecture the context was trained with, stored in the output as '
                             'network_g.clip_model (open_clip name or JSON config; default RN50, or ViT-L-14 '
                             'for 768-wide contexts)')
    parser.add_argument('--clip-pretrained', default='openai',
                        help='CLIP weights to load when the output is used, stored as network_g.clip_pretrained '
                             '(open_clip tag or weight file; default openai)')
    parser.add_argument('--keep-pos-embed', choices=sorted(KEEP_POS_EMBED), default=None,
                        help="positional embedding of the converted model (default: stretch_1d for pyiqa's "
                             'per-prompt 512 px retrains, as pyiqa scores them; false otherwise)')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='allow full unpickling of the source (only for a file you trust)')
    args = parser.parse_args(argv)
    problem = output_problem(args.output)
    if problem:
        say(problem)
        return 2
    try:
        obj = read_source(args.source, trust=args.trust_checkpoint)
    except CheckpointReadError as exc:
        say(exc)
        return 2
    keep = KEEP_POS_EMBED[args.keep_pos_embed] if args.keep_pos_embed else None
    try:
        converted = convert_clipiqa_plus(obj, args.attributes, args.clip_model, args.clip_pretrained, args.source,
                                         keep_pos_embed=keep)
    except (ValueError, KeyError) as exc:  # ConvertError, and unknown attributes (UnknownAttributeError)
        say(exc)
        return 2
    try:
        save_checkpoint(converted, args.output)
    except OSError as exc:
        say(f'{args.output}: cannot write the checkpoint ({exc.strerror or exc})')
        return 1
    ctx = converted['params']['prompt_learner.ctx']
    net = converted['network_g']
    regressor = ', regressor' if 'regressor.linear_1.weight' in converted['params'] else ''
    print(f'uiqa-convert: wrote {args.output}: {ctx.shape[0]} context(s) of {ctx.shape[1]} x {ctx.shape[2]} '
          f'(one per {net["prompt_opt"]["context"]}){regressor}; CLIP {net["clip_model"]}, '
          f'keep_pos_embed {net["keep_pos_embed"]}, QuickGELU; CLIP itself is not stored')
    return 0


if __name__ == '__main__':
    sys.exit(main())
