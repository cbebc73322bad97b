"""What the benchmark scripts share: progress lines, machine facts, synthetic test images.

Imported by ``scripts/benchmark.py`` and ``scripts/benchmark_loader.py`` (run from the repository
root; each puts ``scripts/`` on ``sys.path``).
"""
import os
import platform
import sys
import time

import numpy as np
import torch


def progress(message):
    print(f'[{time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


def sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def cpu_facts():
    """CPU model and whether it has bf16 / fp16 matrix units (from /proc/cpuinfo flags)."""
    flags, name = set(), platform.processor()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('flags') and not flags:
                    flags = set(line.split(':', 1)[1].split())
                elif line.startswith('model name'):
                    name = line.split(':', 1)[1].strip()
    except OSError:
        pass
    return {'cpu': name, 'threads': torch.get_num_threads(),
            'avx512_bf16': 'avx512_bf16' in flags, 'amx_bf16': 'amx_bf16' in flags,
            'avx512_fp16': 'avx512_fp16' in flags, 'amx_fp16': 'amx_fp16' in flags}


def machine_facts(device):
    facts = {'device': str(device), 'torch': torch.__version__, **cpu_facts()}
    if torch.device(device).type == 'cuda':
        facts['gpu'] = torch.cuda.get_device_name(device)
    return facts


def make_images(count, size, seed=0):
    """``count`` smooth random RGB images (N, 3, H, W) in [0, 1], size = (W, H)."""
    g = torch.Generator().manual_seed(seed)
    w, h = size
    coarse = torch.rand(count, 3, h // 16, w // 16, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode='bicubic', align_corners=False).clamp(0, 1)


def write_jpegs(images, folder):
    """``images`` (N, 3, H, W) in [0, 1] as quality-90 JPEGs bench_0000.jpg ... in ``folder``; their paths."""
    from PIL import Image
    paths = []
    for i, im in enumerate(images):
        path = os.path.join(folder, f'bench_{i:04d}.jpg')
        Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths
