"""Speed benchmarks: scoring per precision and batch size against pyiqa's clipiqa, CLIP-UIQA training, bf16 deviation.

    python scripts/benchmark.py score      [--precisions fp32 bf16] [--batch-sizes 1 4] [--images 4] [--json out.json]
    python scripts/benchmark.py train      [--precisions fp32 bf16] [--train-batch-sizes 8] [--iters 2]
    python scripts/benchmark.py deviation  [--images-dir datasets/demo/256x192] [--clip-model ... --clip-pretrained ...]
    python scripts/benchmark.py all --json bench.json
    PYTHONPATH=$PWD venv-pyiqa/bin/python scripts/benchmark.py score   # a Python with pyiqa: adds the peer

``score`` times the zero-shot model on the same 1024 x 768 images, batch by batch, for
each precision and, when pyiqa is installed (optional, never a requirement), pyiqa's
``clipiqa`` built on the SAME RN50 weight file, in the same process and interleaved (one
pass of each contestant in turn, repeated), so that a busy machine slows all alike; the
ratio to pyiqa comes from these interleaved runs. Our side scores pyiqa's five prompt
pairs (``attributes: pyiqa``) like pyiqa does. Per contestant: images/s, GFLOP per image
(torch's FlopCounterMode), achieved GFLOP/s against a matmul roofline measured here in the
same dtype (timed between the contestants in every round), peak memory of a pass beyond the
model (CUDA: allocator peak; CPU: C-heap bytes in use, sampled). It also times
``score_paths`` end to end from JPEG files (decode included).
``train`` times optimization steps of CLIP-UIQA (learned prompts, three views: 1024 x 768
image, 384^2 fragments, 448^2 salient; frozen CLIP) per precision and batch size.
``deviation`` scores a folder of images in fp32 and in each low precision and prints the
max |dp| and the rank agreement (SRCC), next to what a +-0.5/255 dither of the input does
in fp32 (the resolution of 8-bit images).

Weights: ``--weights`` (an OpenAI-format RN50 file), else a random RN50 written in OpenAI's
format (speed does not depend on the values). Progress goes to stderr, results to stdout.
"""
import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'scripts'))

import torch  # noqa: E402

from bench_common import machine_facts, make_images, progress, sync, write_jpegs  # noqa: E402


# ----------------------------------------------------------------------------- machine facts

DTYPES = {'fp32': torch.float32, 'fp32-fused': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def matmul_roofline(device, precision, size=None, repeats=5):
    """Best GFLOP/s of a square matmul in ``precision``'s dtype on ``device`` (the machine's practical peak)."""
    size = size or (8192 if torch.device(device).type == 'cuda' else 2048)
    dtype = DTYPES[precision]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
                                                     'fsmblks', 'uordblks', 'fordblks', 'keepcost')]


def _heap_in_use():
    """Bytes the C heap has handed out and not taken back (glibc mallinfo2), or None."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):  # not glibc >= 2.33
        return None
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


class PeakMemory:
    """Peak memory in use during a block beyond what was in use before, in MiB.

    CUDA: the caching allocator's peak. CPU: the C heap's bytes in use (glibc mallinfo2, where
    PyTorch's CPU tensors live), sampled every millisecond: unlike the RSS it does not count
    memory freed earlier and kept by the allocator. None where neither is available.
    """

    def __init__(self, device):
        self.cuda = torch.device(device).type == 'cuda'
        self.device = device
        self.mib = None

    def _sample(self):
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, _heap_in_use())

    def __enter__(self):
        if self.cuda:
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = _heap_in_use()
            if self._base is not None:
                self._peak = self._base
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            sync(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2 ** 20
        elif self._base is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _heap_in_use())
            self.mib = (self._peak - self._base) / 2 ** 20
        return False


def flops_per_image(fn, batch):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn(batch)
    return counter.get_total_flops() / batch.shape[0]


# ----------------------------------------------------------------------------- inputs

def rn50_weights(args, folder):
    if args.weights:
        return args.weights
    from compare_pyiqa import make_openai_rn50_weights
    progress('writing a random RN50 in OpenAI format (speed does not depend on the weights)')
    return make_openai_rn50_weights(os.path.join(folder, 'RN50-random.pt'), seed=0)


def pyiqa_available():
    try:
        import pyiqa  # noqa: F401
        return True
    except Exception:  # any import failure means: no peer here
        return False


# ----------------------------------------------------------------------------- score

def precisions_for(device, requested):
    cuda = torch.device(device).type == 'cuda'
    chosen = [p for p in requested if cuda or p != 'fp16']
    for p in set(requested) - set(chosen):
        progress(f'skipping {p}: it needs a CUDA device')
    return chosen


def build_contestant(name, precision, weights, attributes, device):
    """``ours-<precision>`` (create_metric) or ``pyiqa-clipiqa`` (pyiqa's arch on the same weight file)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if name == 'pyiqa-clipiqa':
            from compare_pyiqa import build_pyiqa_clipiqa
            return build_pyiqa_clipiqa(weights, 'clipiqa', device=device)
        import uiqa_plugin
        return uiqa_plugin.create_metric(attributes, clip_model='RN50', clip_pretrained=weights, device=device,
                                         precision=precision)


def bench_score(args, weights, results):
    import uiqa_plugin
    device = args.device
    images = make_images(args.images, args.size)
    specs = {f'ours-{p}': p for p in precisions_for(device, args.precisions)}
    if args.peer != 'off' and pyiqa_available():
        specs['pyiqa-clipiqa'] = 'fp32'
    elif args.peer == 'require':
        sys.exit('benchmark: --peer require, but pyiqa is not importable in this Python')
    elif args.peer != 'off':
        progress('pyiqa is not installed here: no peer comparison (see --peer)')
    contestants = {name: (p, build_contestant(name, p, weights, args.attributes, device)) for name, p in specs.items()}

    def run(model, batch_size):
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                model(images[start:start + batch_size].to(device, non_blocking=True))
        sync(device)

    # The roofline is measured in every round too, between the contestants: same load, same machine.
    rooflines = {p: 0.0 for p in sorted({p for p, _ in contestants.values()})}

    rows = []
    for batch_size in args.batch_sizes:
        times = {name: [] for name in contestants}
        memory, flops = {}, {}
        for name, (precision, model) in contestants.items():
            progress(f'batch {batch_size}: warm-up and FLOP count of {name}')
            run(model, batch_size)  # warm-up: caches (text, folded weights), kernel selection
            with torch.inference_mode():
                flops[name] = flops_per_image(model, images[:1].to(device))
        for repeat in range(args.repeats):
            for name, (precision, model) in contestants.items():  # interleaved: all contestants per repeat
                with PeakMemory(device) as peak:
                    start = time.perf_counter()
                    run(model, batch_size)
                    times[name].append(time.perf_counter() - start)
                memory[name] = max(memory.get(name) or 0, peak.mib or 0)
                progress(f'batch {batch_size} repeat {repeat + 1}/{args.repeats}: {name} '
                         f'{times[name][-1] / len(images):.3f} s/image')
            for precision in rooflines:
                rooflines[precision] = max(rooflines[precision], matmul_roofline(device, precision, repeats=2))
            progress(f'batch {batch_size} repeat {repeat + 1}/{args.repeats}: matmul roofline GFLOP/s so far '
                     + ', '.join(f'{p} {v:.0f}' for p, v in rooflines.items()))
        for name, (precision, _) in contestants.items():
            best = min(times[name])
            rate = len(images) / best
            achieved = flops[name] * rate / 1e9
            rows.append({'contestant': name, 'precision': precision, 'batch_size': batch_size,
                         'images': len(images), 'size': list(args.size), 'images_per_s': rate,
                         'median_images_per_s': len(images) / statistics.median(times[name]),
                         'gflop_per_image': flops[name] / 1e9, 'achieved_gflops': achieved,
                         'roofline_gflops': rooflines[precision], 'roofline_fraction': achieved / rooflines[precision],
                         'peak_memory_mib': memory[name], 'times_s': times[name]})
        if 'pyiqa-clipiqa' in contestants:
            peer = times['pyiqa-clipiqa']
            for name in contestants:
                if name != 'pyiqa-clipiqa':
                    # Per repeat: the two ran back to back, under the same load.
                    ratios = [p / o for p, o in zip(peer, times[name])]
                    results.setdefault('ratio_vs_pyiqa', []).append(
                        {'contestant': name, 'batch_size': batch_size, 'speedup_best': min(peer) / min(times[name]),
                         'speedup_median_of_pairs': statistics.median(ratios), 'speedup_per_repeat': ratios})
    for r in rows:  # against the best roofline seen in any round
        r['roofline_gflops'] = rooflines[r['precision']]
        r['roofline_fraction'] = r['achieved_gflops'] / rooflines[r['precision']]
    results['score'] = rows
    results['roofline_gflops'] = rooflines

    # End to end from JPEG files (decode, views, batching, scoring), at the largest batch size.
    batch_size = max(args.batch_sizes)
    end_to_end = []
    with tempfile.TemporaryDirectory() as folder:
        paths = write_jpegs(images, folder)
        for name, (precision, model) in contestants.items():
            if not name.startswith('ours'):
                continue
            progress(f'end to end from {len(paths)} JPEG files: {name}, batch {batch_size}')
            uiqa_plugin.score_paths(model, paths[:1], progress=False)
            start = time.perf_counter()
            uiqa_plugin.score_paths(model, paths, batch_size=batch_size, progress=False)
            sync(device)
            rate = len(paths) / (time.perf_counter() - start)
            model_only = next(r['images_per_s'] for r in rows if r['contestant'] == name and r['batch_size'] == batch_size)
            end_to_end.append({'contestant': name, 'batch_size': batch_size, 'images_per_s': rate,
                               'fraction_of_model_only': rate / model_only})
    results['score_end_to_end'] = end_to_end


def print_score(results):
    rows = results.get('score', [])
    if not rows:
        return
    size = 'x'.join(map(str, rows[0]['size']))
    print(f'\nscore: RN50, {size} images, model only (images already decoded), best of the interleaved repeats')
    header = (f'{"contestant":<14} {"batch":>5} {"img/s":>8} {"s/img":>7} {"GFLOP/img":>9} {"GFLOP/s":>8} '
              f'{"roofline":>9} {"of roof":>7} {"peak MiB":>9}')
    print(header)
    print('-' * len(header))
    for r in rows:
        print(f'{r["contestant"]:<14} {r["batch_size"]:>5} {r["images_per_s"]:>8.2f} {1 / r["images_per_s"]:>7.3f} '
              f'{r["gflop_per_image"]:>9.1f} {r["achieved_gflops"]:>8.1f} {r["roofline_gflops"]:>9.1f} '
              f'{100 * r["roofline_fraction"]:>6.1f}% {r["peak_memory_mib"] or 0:>9.0f}')
    for r in results.get('ratio_vs_pyiqa', []):
        print(f'speed-up of {r["contestant"]} over pyiqa clipiqa at batch {r["batch_size"]}: '
              f'{r["speedup_median_of_pairs"]:.2f}x (median of back-to-back pairs; best vs best '
              f'{r["speedup_best"]:.2f}x)')
    for r in results.get('score_end_to_end', []):
        print(f'end to end from JPEG files, {r["contestant"]} batch {r["batch_size"]}: {r["images_per_s"]:.2f} img/s '
              f'({100 * r["fraction_of_model_only"]:.0f}% of model only)')


# ----------------------------------------------------------------------------- train

def bench_train(args, weights, results):
    from basicsr.utils.registry import ARCH_REGISTRY

    import uiqa_plugin  # noqa: F401
    from uiqa_plugin.optim import build_optimizer
    device = args.device
    nets = {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for precision in precisions_for(device, args.precisions):
            torch.manual_seed(0)
            net = ARCH_REGISTRY.get('CLIPUIQA')(attributes=args.train_attributes, clip_model='RN50',
                                                clip_pretrained=weights, precision=precision).to(device).train()
            nets[precision] = (net, build_optimizer(net, {'type': 'AdamW', 'lr': 1e-4}))
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=True) if 'fp16' in nets else None
    rows = []
    for batch_size in args.train_batch_sizes:
        g = torch.Generator().manual_seed(0)
        batch = {'image': torch.randn(batch_size, 3, args.size[1], args.size[0], generator=g),
                 'fragments': torch.randn(batch_size, 3, 384, 384, generator=g),
                 'salient': torch.randn(batch_size, 3, 448, 448, generator=g)}
        batch = {k: v.to(device) for k, v in batch.items()}
        target = torch.rand(batch_size, 1, generator=g).to(device)

        def step(precision):
            net, optimizer = nets[precision]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(net(batch), target)
            if precision == 'fp16':
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            sync(device)

        times, memory = {p: [] for p in nets}, {}
        for precision in nets:
            progress(f'train batch {batch_size}: warm-up step, {precision}')
            step(precision)
        for i in range(args.iters):
            for precision in nets:  # interleaved
                with PeakMemory(device) as peak:
                    start = time.perf_counter()
                    step(precision)
                    times[precision].append(time.perf_counter() - start)
                memory[precision] = max(memory.get(precision) or 0, peak.mib or 0)
                progress(f'train batch {batch_size} step {i + 1}/{args.iters}: {precision} '
                         f'{times[precision][-1]:.2f} s')
        for precision in nets:
            best = min(times[precision])
            rows.append({'precision': precision, 'batch_size': batch_size, 'samples_per_s': batch_size / best,
                         's_per_step': best, 'peak_memory_mib': memory[precision], 'times_s': times[precision]})
    results['train'] = rows


def print_train(results, args):
    rows = results.get('train', [])
    if not rows:
        return
    print(f'\ntrain: CLIP-UIQA RN50, learned prompts ({args.train_attributes}), views image '
          f'{args.size[0]}x{args.size[1]} + fragments 384^2 + salient 448^2, frozen CLIP, AdamW; best step')
    header = f'{"precision":<9} {"batch":>5} {"samples/s":>9} {"s/step":>7} {"peak MiB":>9} {"vs fp32":>7}'
    print(header)
    print('-' * len(header))
    for r in rows:
        base = next((b for b in rows if b['precision'] == 'fp32' and b['batch_size'] == r['batch_size']), None)
        speedup = f'{r["samples_per_s"] / base["samples_per_s"]:.2f}x' if base else '-'
        print(f'{r["precision"]:<9} {r["batch_size"]:>5} {r["samples_per_s"]:>9.2f} {r["s_per_step"]:>7.2f} '
              f'{r["peak_memory_mib"] or 0:>9.0f} {speedup:>7}')


# ----------------------------------------------------------------------------- deviation

def spearman(a, b):
    from scipy.stats import spearmanr
    return float(spearmanr(a, b)[0])


def bench_deviation(args, results):
    import uiqa_plugin
    from uiqa_plugin.api import collect_image_paths
    from uiqa_plugin.data.image_io import image_to_tensor, read_image
    paths, problems = collect_image_paths([args.images_dir])
    if problems:
        sys.exit(f'benchmark deviation: {problems[0][0]}: {problems[0][1]} (make it with scripts/make_demo_dataset.py)')
    images = [image_to_tensor(read_image(p)) for p in paths]
    progress(f'deviation: {len(images)} images from {args.images_dir}, CLIP {args.clip_model} {args.clip_pretrained}')
    dither_gen = torch.Generator().manual_seed(0)

    def score(precision, dither=False):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            metric = uiqa_plugin.create_metric(args.attributes, clip_model=args.clip_model,
                                               clip_pretrained=args.clip_pretrained, device=args.device,
                                               precision=precision)
        out = []
        with torch.inference_mode():
            for im in images:
                x = im[None]
                if dither:
                    x = x + (torch.rand(x.shape, generator=dither_gen) - 0.5) / 255
                out.append(metric(x.to(args.device)).float().cpu())
        return torch.cat(out), metric.attribute_names

    reference, names = score('fp32')
    dithered, _ = score('fp32', dither=True)
    rows = [{'precision': 'fp32 + dither +-0.5/255', 'max_abs_dp': float((dithered - reference).abs().max()),
             'min_srcc': min(spearman(reference[:, j], dithered[:, j]) for j in range(len(names)))}]
    for precision in precisions_for(args.device, [p for p in args.precisions if p != 'fp32']):
        progress(f'deviation: scoring in {precision}')
        low, _ = score(precision)
        diff = (low - reference).abs()
        rows.append({'precision': precision, 'max_abs_dp': float(diff.max()), 'mean_abs_dp': float(diff.mean()),
                     'max_abs_dp_per_attribute': dict(zip(names, diff.max(dim=0).values.tolist())),
                     'srcc_per_attribute': {n: spearman(reference[:, j], low[:, j]) for j, n in enumerate(names)},
                     'min_srcc': min(spearman(reference[:, j], low[:, j]) for j in range(len(names)))})
    results['deviation'] = {'images': len(images), 'images_dir': args.images_dir, 'clip_model': args.clip_model,
                            'clip_pretrained': args.clip_pretrained, 'attributes': names, 'rows': rows}


def print_deviation(results):
    dev = results.get('deviation')
    if not dev:
        return
    print(f'\ndeviation from fp32: {dev["images"]} images ({dev["images_dir"]}), CLIP {dev["clip_model"]} '
          f'{dev["clip_pretrained"]}, {len(dev["attributes"])} attributes')
    print(f'{"scores":<26} {"max |dp|":>9} {"min SRCC":>9}')
    for r in dev['rows']:
        print(f'{r["precision"]:<26} {r["max_abs_dp"]:>9.2e} {r["min_srcc"]:>9.5f}')


# ----------------------------------------------------------------------------- main

def main(argv=None):
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog='See the module docstring for details.')
    parser.add_argument('mode', choices=['score', 'train', 'deviation', 'all'],
                        help='score: zero-shot throughput (+ pyiqa peer); train: CLIP-UIQA steps; '
                             'deviation: low precision vs fp32 scores; all: score and train')
    parser.add_argument('--device', default='cuda' if cuda else 'cpu', help='torch device (default: cuda if present)')
    parser.add_argument('--precisions', nargs='+',
                        default=['fp32', 'fp32-fused', 'bf16', 'fp16'] if cuda else ['fp32', 'fp32-fused', 'bf16'],
                        choices=['fp32', 'fp32-fused', 'bf16', 'fp16'], help='precisions to run (fp16 only on CUDA)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 16, 64] if cuda else [1, 4],
                        help='scoring batch sizes (default: 1 4 on CPU, 1 16 64 on CUDA)')
    parser.add_argument('--images', type=int, default=64 if cuda else 4,
                        help='images per timed scoring pass (default: 4 on CPU, 64 on CUDA)')
    parser.add_argument('--size', type=int, nargs=2, default=[1024, 768], metavar=('W', 'H'),
                        help='image size for score and train (default: 1024 768, KonIQ)')
    parser.add_argument('--repeats', type=int, default=3, help='interleaved timed passes per contestant (default 3)')
    parser.add_argument('--attributes', default='pyiqa',
                        help="scored attributes (default 'pyiqa': pyiqa clipiqa's five pairs, the fair comparison)")
    parser.add_argument('--peer', choices=['auto', 'off', 'require'], default='auto',
                        help='time pyiqa clipiqa when importable (auto), never (off), or fail without it (require)')
    parser.add_argument('--weights', default=None,
                        help='OpenAI-format RN50 weight file used by both sides (default: a random one)')
    parser.add_argument('--train-batch-sizes', type=int, nargs='+', default=[8, 64] if cuda else [8],
                        help='training batch sizes (default: 8 on CPU, 8 64 on CUDA)')
    parser.add_argument('--train-attributes', default='quality,look', help='training prompt pairs (default: six)')
    parser.add_argument('--iters', type=int, default=5 if cuda else 2,
                        help='timed training steps per precision and batch size (default: 2 on CPU, 5 on CUDA)')
    parser.add_argument('--images-dir', default=os.path.join(REPO, 'datasets/demo/256x192'),
                        help='deviation: folder of images (default: the demo set)')
    parser.add_argument('--clip-model', default=os.path.join(REPO, 'options/clip/tiny-rn.json'),
                        help='deviation: CLIP architecture (default: the tiny demo CLIP config; RN50 for RN50)')
    parser.add_argument('--clip-pretrained', default=os.path.join(REPO, 'datasets/demo/tiny_clip.pt'),
                        help="deviation: CLIP weights (default: the calibrated tiny demo CLIP; 'none' = random)")
    parser.add_argument('--deviation-attributes', dest='dev_attributes', default='quality,look,feel',
                        help='deviation: attributes scored (default quality,look,feel)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--json', default=None, metavar='PATH', help='also write all results as JSON to PATH')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clip_pretrained in ('none', 'None'):
        args.clip_pretrained = None
    torch.manual_seed(0)
    results = {'machine': machine_facts(args.device), 'args': vars(args)}
    facts = results['machine']
    print(f'{facts["device"]} | {facts.get("gpu") or facts["cpu"]} | {facts["threads"]} threads | torch {facts["torch"]}'
          f' | CPU bf16 units: avx512_bf16={facts["avx512_bf16"]} amx_bf16={facts["amx_bf16"]}', flush=True)
    with tempfile.TemporaryDirectory() as folder:
        if args.mode in ('score', 'train', 'all'):
            weights = rn50_weights(args, folder)
        if args.mode in ('score', 'all'):
            bench_score(args, weights, results)
            print_score(results)
        if args.mode in ('train', 'all'):
            bench_train(args, weights, results)
            print_train(results, args)
    if args.mode == 'deviation':
        args.attributes = args.dev_attributes
        bench_deviation(args, results)
        print_deviation(results)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(results, f, indent=1)
        print(f'\nresults written to {args.json}')
    return 0


if __name__ == '__main__':
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    sys.exit(main())
