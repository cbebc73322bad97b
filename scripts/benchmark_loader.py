"""Is decoding ever the bottleneck? End-to-end scoring of JPEG files against the model alone.

    python scripts/benchmark_loader.py --clip-model RN50 --clip-pretrained none --images 64 --batch-size 8

Writes ``--images`` random-texture JPEGs of ``--size`` (default 1024x768) to a temporary folder,
then measures, interleaved over ``--rounds``: the model alone on already decoded batches
(images/s), and ``score_paths`` on the files with each ``--workers`` count. Prints a table and,
with ``--json``, writes the numbers. Issue 11's target: end-to-end >= 90% of model-only with
the default workers.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_common beside this script

import uiqa_plugin  # noqa: E402
from bench_common import make_images, write_jpegs  # noqa: E402
from uiqa_plugin.data.image_io import image_to_tensor, read_image  # noqa: E402
from uiqa_plugin.scoring import default_workers  # noqa: E402


def model_only(metric, batch, batch_size, count):
    device = next(iter(metric.buffers())).device
    x = batch.to(device)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(0, count, batch_size):
            metric(x).float().cpu()
    return count / (time.perf_counter() - start)


def end_to_end(metric, paths, batch_size, workers):
    start = time.perf_counter()
    result = uiqa_plugin.score_paths(metric, paths, batch_size=batch_size, workers=workers, progress=False)
    assert len(result.rows) == len(paths), result.failures
    return len(paths) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--clip-model', default='RN50', help='open_clip model name or JSON config')
    parser.add_argument('--clip-pretrained', default='none', help='weights; none = random (speed is the same)')
    parser.add_argument('--device', default=None, help='cpu, cuda ... (default: cuda if available)')
    parser.add_argument('--images', type=int, default=64, help='number of JPEG files')
    parser.add_argument('--size', type=int, nargs=2, default=[1024, 768], metavar=('W', 'H'), help='image size')
    parser.add_argument('--batch-size', type=int, default=8, help='images per forward')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, default_workers()], help='worker counts')
    parser.add_argument('--rounds', type=int, default=2, help='interleaved repetitions (best kept)')
    parser.add_argument('--json', default=None, help='also write the numbers to this file')
    args = parser.parse_args()

    metric = uiqa_plugin.create_metric('quality', clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                                       device=args.device)
    with tempfile.TemporaryDirectory() as folder:
        print(f'writing {args.images} JPEGs of {args.size[0]}x{args.size[1]} ...', flush=True)
        paths = write_jpegs(make_images(args.images, tuple(args.size)), folder)
        batch = torch.stack([image_to_tensor(read_image(p)) for p in paths[:args.batch_size]])
        end_to_end(metric, paths[:args.batch_size], args.batch_size, 0)  # warm-up: text features, kernels
        best = {'model only': 0.0, **{f'workers={w}': 0.0 for w in args.workers}}
        start = time.perf_counter()

        def measured(r, name, rate):  # one line per measurement: a round takes minutes on a CPU
            best[name] = max(best[name], rate)
            print(f'[{time.perf_counter() - start:6.0f} s] round {r + 1}/{args.rounds} {name:14s} {rate:8.2f} '
                  'images/s', flush=True)

        for r in range(args.rounds):
            measured(r, 'model only', model_only(metric, batch, args.batch_size, args.images))
            for w in args.workers:
                measured(r, f'workers={w}', end_to_end(metric, paths, args.batch_size, w))
    reference = best['model only']
    print(f'{"":14s} {"images/s":>9s} {"of model-only":>14s}')
    for name, rate in best.items():
        print(f'{name:14s} {rate:9.2f} {rate / reference:13.0%}')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump({'config': vars(args), 'images_per_s': best, 'cpus': default_workers()}, f, indent=2)


if __name__ == '__main__':
    main()
