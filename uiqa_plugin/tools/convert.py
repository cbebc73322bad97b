"""uiqa-convert: turn published CLIP-IQA+ checkpoints into ours.

    uiqa-convert iter_80000.pth clipiqa_plus_koniq.pth
    uiqa-convert CLIP-IQA+_learned_prompts-603f3273.pth clipiqa_plus.pth --attributes quality

Understood inputs (SPEC.md 2):
- the reference's mmcv checkpoint: ``state_dict['generator.clipmodel_{i}.prompt_learner.ctx']``
  (16 x 512, fp16) per prompt pair, plus ``generator.regressor.linear_{1,2,3}.*`` when there are
  several pairs; everything else in it is CLIP and is dropped;
- pyiqa's redistribution: a bare context tensor, or ``{'params': {...ctx...}}``.
The output is our checkpoint: ``{'params': state dict of CLIPIQAPlus, 'network_g': options}``,
loadable with ``path.pretrain_network_g`` in an option YAML or ``uiqa-score --checkpoint``.
"""
import argparse
import re
import sys

import torch

_CTX = re.compile(r'(?:^|\.)clipmodel_(\d+)\.prompt_learner\.ctx$')
_REGRESSOR = re.compile(r'(?:^|\.)regressor\.(linear_[123]\.(?:weight|bias))$')


def _contexts_and_regressor(obj, source):
    if torch.is_tensor(obj):
        return [obj], {}
    if not isinstance(obj, dict):
        raise ValueError(f'{source}: expected a tensor or a dict, got {type(obj).__name__}')
    for wrapper in ('state_dict', 'params', 'params_ema'):
        if wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    contexts, regressor = {}, {}
    for key, value in obj.items():
        if not torch.is_tensor(value):
            continue
        match = _CTX.search(key)
        if match:
            contexts[int(match.group(1))] = value
        elif key.endswith('prompt_learner.ctx') or key == 'ctx':
            contexts[len(contexts)] = value
        elif _REGRESSOR.search(key):
            regressor[f'regressor.{_REGRESSOR.search(key).group(1)}'] = value
    if not contexts:
        raise ValueError(f'{source}: no learned prompt context found (expected keys like '
                         f"'generator.clipmodel_0.prompt_learner.ctx'); keys present: {list(obj)[:8]}")
    return [contexts[i] for i in sorted(contexts)], regressor


def convert_clipiqa_plus(obj, attributes='quality', clip_model='RN50', clip_pretrained='openai', source='checkpoint'):
    """Reference / pyiqa CLIP-IQA+ weights -> our checkpoint dict (fp32).

    One context per prompt pair, in the order of ``attributes`` (the reference's clipmodel_0, 1, ...).
    """
    from uiqa_plugin.prompts import resolve_attributes
    contexts, regressor = _contexts_and_regressor(obj, source)
    attrs = resolve_attributes(attributes)
    pairs = sum(len(a.pairs) for a in attrs)
    if pairs != len(contexts):
        raise ValueError(f'{source} holds {len(contexts)} prompt context(s) but the attributes {attributes!r} have '
                         f'{pairs} pair(s): pass --attributes with one pair per context, in the same order')
    shapes = {tuple(c.shape) for c in contexts}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f'{source}: contexts must all be (n_ctx, width), got {sorted(shapes)}')
    n_ctx = contexts[0].shape[0]
    params = {'prompt_learner.ctx': torch.stack([c.float() for c in contexts])}
    if len(contexts) > 1:
        if len(regressor) != 6:
            raise ValueError(f'{source}: {len(contexts)} pairs need the regressor linear_1..3 weights and biases; '
                             f'found {sorted(regressor)}')
        params.update({k: v.float() for k, v in regressor.items()})
    network_g = {'type': 'CLIPIQAPlus', 'attributes': attributes, 'clip_model': clip_model,
                 'clip_pretrained': clip_pretrained,
                 'prompt_opt': {'n_ctx': int(n_ctx), 'class_token_position': 'middle', 'context': 'pair'}}
    return {'params': params, 'network_g': network_g, 'attribute_names': [a.name for a in attrs],
            'converted_from': source}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='uiqa-convert', description=__doc__.split('\n')[0])
    parser.add_argument('source', help="reference mmcv checkpoint (iter_80000.pth) or pyiqa's learned prompts")
    parser.add_argument('output', help='our checkpoint (.pth)')
    parser.add_argument('--attributes', default='quality', help='one pair per context, in order (default quality)')
    parser.add_argument('--clip-model', default='RN50',
                        help='CLIP architecture the context was trained with, stored in the output as '
                             'network_g.clip_model (open_clip name or JSON config; default RN50)')
    parser.add_argument('--clip-pretrained', default='openai',
                        help='CLIP weights to load when the output is used, stored as network_g.clip_pretrained '
                             '(open_clip tag or weight file; default openai)')
    args = parser.parse_args(argv)
    try:
        obj = torch.load(args.source, map_location='cpu', weights_only=False)
    except Exception as exc:  # corrupt, truncated or not a torch file
        print(f'uiqa-convert: {args.source}: cannot be read ({type(exc).__name__}: {exc})', file=sys.stderr)
        return 2
    try:
        converted = convert_clipiqa_plus(obj, args.attributes, args.clip_model, args.clip_pretrained, args.source)
    except (ValueError, KeyError) as exc:
        print(f'uiqa-convert: {exc.args[0] if exc.args else exc}', file=sys.stderr)
        return 2
    torch.save(converted, args.output)
    ctx = converted['params']['prompt_learner.ctx']
    print(f'uiqa-convert: wrote {args.output}: {ctx.shape[0]} context(s) of {ctx.shape[1]} x {ctx.shape[2]}'
          f'{", regressor" if "regressor.linear_1.weight" in converted["params"] else ""}; CLIP itself is not stored')
    return 0


if __name__ == '__main__':
    sys.exit(main())
