"""Fidelity check against the reference implementation (pyiqa): same RN50 weights, same images, same scores?

    python -m venv --system-site-packages venv-pyiqa && venv-pyiqa/bin/pip install pyiqa "setuptools<81"
    venv-pyiqa/bin/python scripts/compare_pyiqa.py        # exits 1 above --tol (default 1e-4)

pyiqa is a development check only, never a requirement of this package. Without internet
there are no real CLIP weights, so the script builds a random RN50 in OpenAI's format
(seeded; fp16 values like OpenAI's releases; exp(logit_scale) = 100; BatchNorm statistics
calibrated on the images so that features depend on the image), points pyiqa's CLIP loader
at that file, and scores the same images with both:

- zero-shot, pyiqa's five prompt pairs (its ``clipiqa``) against our ``attributes: pyiqa``;
- zero-shot, 'Good photo.'/'Bad photo.' (pyiqa with its prompts replaced) against our default ``quality``;
- CLIP-IQA+ with a random learned context, saved as pyiqa's bare-tensor file and converted
  with ``uiqa-convert``, against pyiqa's ``clipiqa+`` with the same context;
- pyiqa's ``clipiqa+_rn50_512`` layout (one context per prompt in ``{'params'}``, positional
  embedding kept and stretched in 1-D), converted, against pyiqa with ``pos_embedding=True``.

Our side uses default options throughout (weights from a local state-dict file, so the
QuickGELU rule applies). It prints the max |difference| of each and exits 1 above --tol.

Other scripts import ``build_pyiqa_clipiqa`` (pyiqa's model on a given weight file) and
``make_openai_rn50_weights``.
"""
import argparse
import math
import os
import os.path as osp
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

_OPENAI_EXTRA = {'input_resolution': 224, 'context_length': 77, 'vocab_size': 49408}


def demo_images(sizes=((288, 384), (384, 288), (256, 320), (320, 320)), seed=0):
    """A few distorted natural images (scikit-image samples), RGB float (N of (3, H, W)) in [0, 1]."""
    from uiqa_plugin.data.demo import DEFAULT_SOURCES, DISTORTIONS, distort, fit_to_size, load_source
    rng = np.random.RandomState(seed)
    images = []
    for i, (h, w) in enumerate(sizes):
        img = fit_to_size(load_source(DEFAULT_SOURCES[i % len(DEFAULT_SOURCES)]), w, h)
        img = distort(img, DISTORTIONS[i % len(DISTORTIONS)], 1 + i % 3, rng)
        images.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float())
    return images


def make_openai_rn50_weights(path, seed=0, calibration_images=None):
    """Write a random RN50 as OpenAI's state dict (fp16 tensors, OpenAI's extra keys); returns the path.

    calibration_images: list of (3, H, W) in [0, 1]; their 224 px resizes calibrate BatchNorm.
    """
    import torch.nn.functional as F

    from uiqa_plugin.clip import CLIP_MEAN, CLIP_STD, make_random_clip
    calib = None
    if calibration_images:
        batch = torch.stack([F.interpolate(im[None], size=(224, 224), mode='bilinear', align_corners=False)[0]
                             for im in calibration_images])
        calib = (batch - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    model = make_random_clip('RN50', seed=seed, calibration_images=calib)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))  # OpenAI's value
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    state.update({k: torch.tensor(v) for k, v in _OPENAI_EXTRA.items()})
    torch.save(state, path)
    return path


def build_pyiqa_clipiqa(weight_file, model_type='clipiqa', ctx=None, prompts=None, pos_embedding=False,
                        device='cpu'):
    """pyiqa's CLIPIQA arch (``clipiqa`` or ``clipiqa+``) on a local OpenAI-format RN50 weight file, offline.

    ctx: the learned context for ``clipiqa+`` ((16, 512), or (2, 16, 512) per prompt);
    prompts: replace pyiqa's zero-shot prompt list (pairs, positive first). Returns the
    module in eval mode; it maps RGB (N, 3, H, W) in [0, 1] to (N, 1).
    """
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        import pyiqa.archs.clip_model as pyiqa_clip
        import pyiqa.archs.clipiqa_arch as pyiqa_clipiqa
    original = pyiqa_clipiqa.load
    state = torch.load(weight_file, map_location='cpu', weights_only=True)

    def load(name, device='cpu', **kwargs):
        # pyiqa resolves 'RN50' to a download. Its loader's file path branch re-reads a state-dict
        # file from where the failed TorchScript attempt left it (EOFError), so this is that
        # branch's remaining code: build_model (fp16 weights), then float on the CPU.
        model = pyiqa_clip.build_model(dict(state)).to(device)
        return model.float() if str(device) == 'cpu' else model
    pyiqa_clipiqa.load = load
    try:
        net = pyiqa_clipiqa.CLIPIQA(model_type=model_type, backbone='RN50', pretrained=False,
                                    pos_embedding=pos_embedding)
    finally:
        pyiqa_clipiqa.load = original
    if prompts is not None:
        net.prompt_pairs = pyiqa_clipiqa.clip.tokenize(list(prompts))
    if ctx is not None:
        net.prompt_learner.ctx.data = ctx.clone().to(net.prompt_learner.ctx.dtype)
    return net.to(device).eval()


def max_abs_diff(a, b):
    return float((a.double() - b.double()).abs().max())


_START = time.perf_counter()


def step(message):
    """A progress line on stderr with the time since start: the whole comparison takes minutes on a CPU."""
    print(f'[{time.perf_counter() - _START:6.1f} s] {message}', file=sys.stderr, flush=True)


@torch.no_grad()
def compare(weight_file, images, ctx, workdir, quick_gelu=None):
    """{check name: (max |diff|, our scores, pyiqa scores)} over the images, one image per forward.

    quick_gelu: our option (None: the default rule; False shows what QuickGELU is worth).
    """
    import uiqa_plugin
    from uiqa_plugin.api import load_trained_model
    from uiqa_plugin.clip import CLIP_MEAN, CLIP_STD
    from uiqa_plugin.tools.convert import main as convert_main
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)

    def run(model, prepare=lambda x: x):
        return torch.cat([model(prepare(im)[None]).reshape(1, -1) for im in images])

    results = {}
    step('1/4 zero-shot, pyiqa five pairs: building both models and scoring')
    ours = uiqa_plugin.create_metric('pyiqa', clip_pretrained=weight_file, device='cpu', quick_gelu=quick_gelu)
    theirs = build_pyiqa_clipiqa(weight_file, 'clipiqa')
    a, b = run(ours), run(theirs)
    results['zero-shot, pyiqa five pairs'] = (max_abs_diff(a, b), a, b)

    step("2/4 zero-shot, 'Good photo.'/'Bad photo.'")
    ours = uiqa_plugin.create_metric('quality', clip_pretrained=weight_file, device='cpu', quick_gelu=quick_gelu)
    theirs = build_pyiqa_clipiqa(weight_file, 'clipiqa', prompts=['Good photo.', 'Bad photo.'])
    a, b = run(ours), run(theirs)
    results["zero-shot, 'Good photo.'/'Bad photo.'"] = (max_abs_diff(a, b), a, b)

    step('3/4 CLIP-IQA+ with a converted context')
    ctx_file, converted = osp.join(workdir, 'ctx.pth'), osp.join(workdir, 'clipiqa_plus.pth')
    torch.save(ctx, ctx_file)  # pyiqa's redistribution format: a bare tensor
    if convert_main([ctx_file, converted, '--clip-pretrained', weight_file]) != 0:
        raise RuntimeError('uiqa-convert failed on a bare context tensor')
    ours = load_trained_model(converted, device='cpu', quick_gelu=quick_gelu)  # input_normalized: as datasets do
    theirs = build_pyiqa_clipiqa(weight_file, 'clipiqa+', ctx=ctx)
    a, b = run(ours, lambda x: (x - mean) / std), run(theirs)
    results['CLIP-IQA+ (converted context)'] = (max_abs_diff(a, b), a, b)

    # pyiqa's clipiqa+_rn50_512 layout: one context per prompt, positional embedding stretched in 1-D.
    step('4/4 CLIP-IQA+ per-prompt context, 1-D stretched positions')
    per_prompt = torch.stack([ctx, ctx.flip(0)])
    torch.save({'params': {'prompt_learner.ctx': per_prompt}}, ctx_file)
    if convert_main([ctx_file, converted, '--clip-pretrained', weight_file]) != 0:
        raise RuntimeError('uiqa-convert failed on a per-prompt context')
    ours = load_trained_model(converted, device='cpu', quick_gelu=quick_gelu)
    theirs = build_pyiqa_clipiqa(weight_file, 'clipiqa+', ctx=per_prompt, pos_embedding=True)
    a, b = run(ours, lambda x: (x - mean) / std), run(theirs)
    results['CLIP-IQA+ per-prompt, 1-D stretch (512)'] = (max_abs_diff(a, b), a, b)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seed', type=int, default=0, help='seed of the random RN50 and the context')
    parser.add_argument('--weights', default=None, help='an OpenAI-format RN50 file to use instead of a random one')
    parser.add_argument('--tol', type=float, default=1e-4, help='largest accepted |difference|')
    parser.add_argument('--show', action='store_true', help='print every score')
    parser.add_argument('--quick-gelu', action=argparse.BooleanOptionalAction, default=None,
                        help='force our activation (default: our rule, which picks QuickGELU for RN50)')
    args = parser.parse_args(argv)
    try:
        import pyiqa  # noqa: F401
    except ImportError as exc:
        sys.exit(f'compare_pyiqa: pyiqa is not installed in this Python ({exc}); see the docstring')
    torch.manual_seed(args.seed)
    images = demo_images(seed=args.seed)
    with tempfile.TemporaryDirectory() as workdir:
        step('making random RN50 weights' if not args.weights else f'using {args.weights}')
        weights = args.weights or make_openai_rn50_weights(osp.join(workdir, 'RN50-random.pt'), args.seed, images)
        ctx = torch.randn(16, 512, generator=torch.Generator().manual_seed(args.seed)) * 0.02
        results = compare(weights, images, ctx, workdir, args.quick_gelu)
    worst = 0.0
    print(f'{len(images)} images ({", ".join("x".join(map(str, im.shape[1:])) for im in images)}), '
          f'{"weights " + args.weights if args.weights else "random RN50 (seed %d)" % args.seed}')
    for name, (diff, ours, theirs) in results.items():
        spread = float(theirs.max() - theirs.min())
        print(f'{name:40s} max |ours - pyiqa| = {diff:.2e}   (spread of pyiqa scores over the images {spread:.2e})')
        if args.show:
            print('   ours ', [round(v, 6) for v in ours.flatten().tolist()])
            print('   pyiqa', [round(v, 6) for v in theirs.flatten().tolist()])
        worst = max(worst, diff)
    print(f'worst {worst:.2e}: {"within" if worst <= args.tol else "ABOVE"} the tolerance {args.tol:g}')
    return 0 if worst <= args.tol else 1


if __name__ == '__main__':
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    sys.exit(main())
