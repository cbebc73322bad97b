"""Model benchmarks: zero-shot scoring throughput and CLIP-UIQA training step time.

    python scripts/benchmark.py score [--device cpu] [--images 8] [--attributes quality,look,feel]
    python scripts/benchmark.py train [--device cpu] [--batch-size 8] [--iters 3]
    python scripts/benchmark.py all

RN50 with RANDOM weights (the speed of real weights is the same; no download needed).
`score` times uiqa-score's own path (read JPEGs, one image pass for all attributes,
cached text) and, for comparison, the references' way (one image pass per prompt pair,
text re-encoded every call); it prints both and their ratio. `train` times one
optimization step of CLIP-UIQA on three views and counts image-encoder passes per
sample (the reference made 3 per prompt pair).
"""
import argparse
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def sync(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def make_jpegs(folder, count, size=(1024, 768)):
    from PIL import Image
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    paths = []
    for i in range(count):
        img = Image.fromarray(np.roll(base, i, axis=1)).resize(size, Image.BICUBIC)
        path = os.path.join(folder, f'bench_{i:03d}.jpg')
        img.save(path, quality=90)
        paths.append(path)
    return paths


def bench_score(args):
    import uiqa_plugin
    from uiqa_plugin.data.image_io import image_to_tensor, read_image
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        metric = uiqa_plugin.create_metric(args.attributes, clip_model='RN50', clip_pretrained=None,
                                           device=args.device)
    num_pairs = len(metric.prompts) // 2
    with tempfile.TemporaryDirectory() as folder:
        paths = make_jpegs(folder, args.images)
        uiqa_plugin.score_paths(metric, paths[:1], progress=False)  # warm-up (text cache, kernels)
        sync(args.device)
        start = time.perf_counter()
        result = uiqa_plugin.score_paths(metric, paths, batch_size=args.batch_size, progress=False)
        sync(args.device)
        ours = (time.perf_counter() - start) / len(result.rows)

        # The references' way: the image tower once per prompt pair, the text tower every call.
        clip = metric.clip
        image = image_to_tensor(read_image(paths[0]))[None].to(args.device)
        ref_images = min(args.images, args.reference_images)
        with torch.no_grad():
            sync(args.device)
            start = time.perf_counter()
            for _ in range(ref_images):
                x = clip.normalize(image)
                for k in range(num_pairs):
                    feats = clip.encode_image(x)
                    text = clip.encode_text(metric.prompts[2 * k:2 * k + 2])
                    torch.softmax(clip.logit_scale() * feats @ text.t(), dim=-1)
            sync(args.device)
        reference = (time.perf_counter() - start) / ref_images
    print(f'score  RN50 random, 1024x768 JPEG, {num_pairs} prompt pairs ({args.attributes}), device {args.device}, '
          f'batch {args.batch_size}')
    print(f'  uiqa-score path : {ours * 1000:8.1f} ms/image  {1 / ours:7.2f} images/s  (1 image pass per image)')
    print(f'  reference-style : {reference * 1000:8.1f} ms/image  {1 / reference:7.2f} images/s  '
          f'({num_pairs} image passes + text per image)')
    print(f'  speed-up        : {reference / ours:8.1f}x')


def bench_train(args):
    import uiqa_plugin  # noqa: F401
    from basicsr.utils.registry import ARCH_REGISTRY
    from uiqa_plugin.optim import build_optimizer
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        net = ARCH_REGISTRY.get('CLIPUIQA')(attributes=args.train_attributes, clip_model='RN50', clip_pretrained=None,
                                            aggregation='mean').to(args.device)
    num_pairs = len(net.prompts) // 2
    passes = []
    encode = net.clip.encode_image
    net.clip.encode_image = lambda x, **kw: passes.append(x.shape[0]) or encode(x, **kw)
    optimizer = build_optimizer(net, {'type': 'SGD', 'lr': 0.002})
    n = args.batch_size
    batch = {'image': torch.randn(n, 3, 768, 1024), 'fragments': torch.randn(n, 3, 384, 384),
             'salient': torch.randn(n, 3, 448, 448)}
    batch = {k: v.to(args.device) for k, v in batch.items()}
    target = torch.rand(n, 1, device=args.device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(batch), target)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    passes.clear()
    sync(args.device)
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    sync(args.device)
    per_iter = (time.perf_counter() - start) / args.iters
    per_sample = sum(passes) / (args.iters * n)
    memory = f', peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB' \
        if str(args.device).startswith('cuda') else ''
    print(f'train  CLIP-UIQA RN50 random, 3 views (1024x768, 384^2 fragments, 448^2 salient), {num_pairs} pairs, '
          f'learned prompts, batch {n}, device {args.device}')
    print(f'  {per_iter:.3f} s/iteration  {n / per_iter:.2f} samples/s{memory}')
    print(f'  image-encoder passes per sample: {per_sample:.0f} (reference CLIP-UIQA: 3 x {num_pairs} pairs = '
          f'{3 * num_pairs})')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('mode', choices=['score', 'train', 'all'])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--images', type=int, default=8)
    parser.add_argument('--reference-images', type=int, default=2, help='images timed the references\' way')
    parser.add_argument('--batch-size', type=int, default=None, help='default: 1 for score, 8 for train')
    parser.add_argument('--attributes', default='quality,look,feel')
    parser.add_argument('--train-attributes', default='quality,look', help='six pairs, as in the report')
    parser.add_argument('--iters', type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.mode in ('score', 'all'):
        bench_score(argparse.Namespace(**{**vars(args), 'batch_size': args.batch_size or 1}))
    if args.mode in ('train', 'all'):
        bench_train(argparse.Namespace(**{**vars(args), 'batch_size': args.batch_size or 8}))


if __name__ == '__main__':
    main()
