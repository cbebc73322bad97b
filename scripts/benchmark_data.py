"""Data-loading throughput for a 1024x768 JPEG producing all three views (image, fragments, salient).

    python scripts/benchmark_data.py [--images 64] [--batch-size 8] [--workers 0 2]

Prints samples per second through a DataLoader for each worker count, and the time
of each transform step for one sample (single process).
"""
import argparse
import csv
import os.path as osp
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

import uiqa_plugin  # noqa: F401  (before basicsr)
from uiqa_plugin.data.collate import collate_views
from uiqa_plugin.data.demo import fit_to_size, load_source, to_uint8
from uiqa_plugin.data.koniq10k_dataset import KONIQ_COLUMNS, KonIQ10kDataset

VIEWS = {'image': {}, 'fragments': {'grid': 12, 'patch': 32}, 'salient': {'size': 448}}


def make_fixture(folder, num_images):
    """``num_images`` distinct 1024x768 JPEGs (q 90) and a KonIQ CSV listing them."""
    base = fit_to_size(load_source('astronaut'), 1024, 768)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(num_images):
        name = f'{i:05d}.jpg'
        img = np.clip(base + rng.normal(0, 0.02, base.shape).astype(np.float32), 0, 1)
        Image.fromarray(to_uint8(img)).save(osp.join(folder, name), quality=90)
        rows.append([name, 0, 0, 0, 0, 0, 0, 50.0, 0.0, 'training'])
    with open(osp.join(folder, 'koniq10k_distributions_sets.csv'), 'w', newline='') as f:
        csv.writer(f).writerows([KONIQ_COLUMNS, *rows])


def loader_rate(dataset, batch_size, workers, epochs=2):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         collate_fn=collate_views, drop_last=True,
                                         persistent_workers=workers > 0)
    for _ in loader:  # warm-up epoch: worker start-up, page cache
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += batch['target'].shape[0]
    return count / (time.perf_counter() - start)


def step_times(dataset, repeats=10):
    totals = {}
    for i in range(repeats):
        s = dataset.samples[i % len(dataset)]
        sample = {'key': s['key'], 'path': s['path'], 'target': s['target'], 'views': {}}
        for t in dataset.transform.transforms:
            start = time.perf_counter()
            sample = t(sample)
            totals[repr(t).split('(')[0]] = totals.get(repr(t).split('(')[0], 0.0) + time.perf_counter() - start
    return {k: 1000 * v / repeats for k, v in totals.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--images', type=int, default=64)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # like a DataLoader worker; keeps the 0-worker number comparable
    with tempfile.TemporaryDirectory() as folder:
        make_fixture(folder, args.images)
        dataset = KonIQ10kDataset({'name': 'bench', 'dataroot': folder, 'phase': 'train', 'views': VIEWS})
        print(f'{len(dataset)} JPEGs 1024x768 -> image 3x768x1024, fragments 3x384x384, salient 3x448x448 '
              f'(train chain, batch {args.batch_size})')
        print(f'{"workers":>8} | {"samples/s":>10} | {"ms/sample":>10}')
        print(f'{"-" * 8}-+-{"-" * 10}-+-{"-" * 10}')
        for workers in args.workers:
            rate = loader_rate(dataset, args.batch_size, workers)
            print(f'{workers:>8} | {rate:>10.1f} | {1000 / rate:>10.1f}')
        print('\nper step, one sample, one process (ms):')
        for name, ms in step_times(dataset).items():
            print(f'  {name:<12} {ms:7.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
