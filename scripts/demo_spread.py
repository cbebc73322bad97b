"""How much the demo training's numbers move with the thread count and the CPU kernels.

Runs one demo training (``uiqa_plugin/train.py``, each in its own scratch folder) per setting,
one after another, and prints a table: the loss at the first logged iteration, the best and the
final validation SRCC, and the largest difference of the final validation predictions from the
first setting's (how far float rounding differences have grown by the end).

    python scripts/make_demo_dataset.py && python scripts/make_tiny_clip.py     # once
    python scripts/demo_spread.py                                  # uiqa_demo.yml, every setting
    python scripts/demo_spread.py --opt options/demo/clipiqa_plus_demo.yml --settings threads-1 threads-2
    python scripts/demo_spread.py --set train.total_iter=200 --set train.optim_g.lr=0.001   # try a recipe

Settings (all one thread unless named): ``threads-1``, ``threads-2`` (OMP_NUM_THREADS);
``aten-default``/``aten-avx2``/``aten-avx512`` (ATEN_CPU_CAPABILITY: PyTorch's own vectorized
kernels); ``onednn-avx2``/``onednn-sse41`` (ONEDNN_MAX_CPU_ISA and DNNL_MAX_CPU_ISA: the
convolution library's instruction set); ``onednn-off`` (``torch.backends.mkldnn.enabled =
False``: PyTorch's own convolutions); ``mkl-compatible`` (MKL_CBWR=COMPATIBLE: MKL's matrix
products in their SSE2 code path); ``pinned-avx2`` (ATEN avx2 + oneDNN AVX2 + MKL AVX2) and
``lowest`` (ATEN default + oneDNN off + MKL COMPATIBLE: the most different kernels on one x86
machine). A setting the machine cannot honour (avx512 on an AVX2 CPU) falls back to what the
CPU has; the table's ``ATen`` column says which kernels ran.
"""
import argparse
import csv
import glob
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
import time

import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

SETTINGS = {
    'threads-1': {},
    'threads-2': {'OMP_NUM_THREADS': '2'},
    'aten-default': {'ATEN_CPU_CAPABILITY': 'default'},
    'aten-avx2': {'ATEN_CPU_CAPABILITY': 'avx2'},
    'aten-avx512': {'ATEN_CPU_CAPABILITY': 'avx512'},
    'onednn-avx2': {'ONEDNN_MAX_CPU_ISA': 'AVX2', 'DNNL_MAX_CPU_ISA': 'AVX2'},
    'onednn-sse41': {'ONEDNN_MAX_CPU_ISA': 'SSE41', 'DNNL_MAX_CPU_ISA': 'SSE41'},
    'onednn-off': {'UIQA_SPREAD_MKLDNN_OFF': '1'},
    'mkl-compatible': {'MKL_CBWR': 'COMPATIBLE'},
    'pinned-avx2': {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2', 'DNNL_MAX_CPU_ISA': 'AVX2',
                    'MKL_CBWR': 'AVX2'},
    'lowest': {'ATEN_CPU_CAPABILITY': 'default', 'UIQA_SPREAD_MKLDNN_OFF': '1', 'MKL_CBWR': 'COMPATIBLE'},
}
#: the environment variables a setting may change; all are cleared first so that the shell's own do not leak in
KNOWN_VARIABLES = sorted({k for env in SETTINGS.values() for k in env} | {'MKL_ENABLE_INSTRUCTIONS'})

# train.py under the setting: oneDNN can only be switched off from Python, so the launcher does it.
LAUNCHER = """
import os, runpy, sys, torch
if os.environ.get('UIQA_SPREAD_MKLDNN_OFF'):
    torch.backends.mkldnn.enabled = False
print('ATen kernels:', torch.backends.cpu.get_cpu_capability(), '| oneDNN:', torch.backends.mkldnn.enabled,
      '| threads:', torch.get_num_threads(), flush=True)
sys.argv = [sys.argv[1], '-opt', sys.argv[2]]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def set_dotted(opt, dotted, value):
    """opt['a']['b'] = value for 'a.b'."""
    *parents, leaf = dotted.split('.')
    node = opt
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def parse_log(log):
    """{'capability', 'first_loss', 'best', 'best_iter', 'final'} from a training log (None where absent)."""
    found = {}
    cap = re.search(r'ATen kernels: (\w+) \| oneDNN: (\w+) \| threads: (\d+)', log)
    found['capability'] = f'{cap.group(1)}{"" if cap.group(2) == "True" else ", no oneDNN"}' if cap else None
    found['threads'] = int(cap.group(3)) if cap else None
    loss = re.search(r'iter:\s+(\d+),.*? l_\w+: ([0-9.e+-]+)', log)
    found['first_loss'] = (int(loss.group(1)), float(loss.group(2))) if loss else None
    final = re.findall(r'# srcc: (-?[0-9.]+|nan)\tBest: (-?[0-9.]+|nan) @ (\d+) iter', log)
    found['final'], found['best'], found['best_iter'] = ((float(final[-1][0]), float(final[-1][1]), int(final[-1][2]))
                                                         if final else (None, None, None))
    return found


def read_predictions(folder):
    """{key: first prediction column} of the latest validation predictions CSV under ``folder``."""
    paths = sorted(glob.glob(osp.join(folder, '**', '*_predictions_*.csv'), recursive=True),
                   key=lambda p: int(re.search(r'_(\d+)\.csv$', p).group(1)) if re.search(r'_(\d+)\.csv$', p) else 0)
    if not paths:
        return {}
    with open(paths[-1], newline='') as f:
        reader = csv.reader(f)
        next(reader)
        return {row[0]: float(row[1]) for row in reader}


def run_setting(name, opt, data_root, threads, log_dir=None):
    """Train once under setting ``name`` in a scratch folder; returns parse_log's dict + seconds, predictions.

    With ``log_dir``, the run's output is kept there as ``<name>.log``.
    """
    env = {k: v for k, v in os.environ.items() if k not in KNOWN_VARIABLES}
    # PASSIVE: OpenMP threads that wait sleep instead of spinning; on a busy (shared) CPU spinning threads
    # slow a 2-thread run several fold. It changes when threads wait, not what they compute.
    env.update(OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY='PASSIVE', PYTHONWARNINGS='ignore')
    env.update(SETTINGS[name])
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    with tempfile.TemporaryDirectory(prefix='demo_spread_') as cwd:
        # the option files' relative paths (datasets/demo/..., options/clip/...) resolve as in the repo
        os.symlink(osp.abspath(data_root), osp.join(cwd, 'datasets'))
        os.symlink(osp.join(REPO, 'options'), osp.join(cwd, 'options'))
        opt_path = osp.join(cwd, 'spread.yml')
        with open(opt_path, 'w') as f:
            yaml.safe_dump(opt, f)
        start = time.time()
        out = subprocess.run([sys.executable, '-c', LAUNCHER, osp.join(REPO, 'uiqa_plugin', 'train.py'), opt_path],
                             cwd=cwd, env=env, capture_output=True, text=True)
        seconds = time.time() - start
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            with open(osp.join(log_dir, f'{name}.log'), 'w') as f:
                f.write(out.stdout + out.stderr)
        if out.returncode != 0:
            sys.exit(f'demo_spread: {name}: train.py failed (exit {out.returncode}):\n{out.stderr[-3000:]}')
        result = parse_log(out.stdout + out.stderr)
        result['seconds'] = seconds
        return result, read_predictions(osp.join(cwd, 'experiments', opt['name']))


def fmt(value, spec):
    return '-' if value is None else format(value, spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--opt', default=osp.join(REPO, 'options', 'demo', 'uiqa_demo.yml'), help='demo option file')
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS), metavar='SETTING',
                        help=f'settings to run, in order (default all: {" ".join(SETTINGS)})')
    parser.add_argument('--threads', type=int, default=1, help='OMP_NUM_THREADS where a setting does not set it')
    parser.add_argument('--datasets', default=osp.join(REPO, 'datasets'),
                        help='folder holding demo/ (scripts/make_demo_dataset.py, make_tiny_clip.py)')
    parser.add_argument('--logs', metavar='DIR', help='keep each run\'s output as DIR/<setting>.log')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=YAML',
                        help='change an option, e.g. train.total_iter=200 (repeatable)')
    args = parser.parse_args(argv)
    if not osp.isdir(osp.join(args.datasets, 'demo')):
        sys.exit(f'demo_spread: {args.datasets}/demo not found: run scripts/make_demo_dataset.py and '
                 'scripts/make_tiny_clip.py first')
    with open(args.opt) as f:
        opt = yaml.safe_load(f)
    for change in args.set:
        key, sep, value = change.partition('=')
        if not sep:
            sys.exit(f'demo_spread: --set {change!r}: expected KEY=VALUE')
        set_dotted(opt, key, yaml.safe_load(value))
    opt.setdefault('val', {})['save_predictions'] = True
    opt.setdefault('logger', {})['use_tb_logger'] = False

    print(f'{osp.relpath(args.opt, REPO)} {" ".join(args.set)}'.strip(), flush=True)
    header = '| setting | ATen | threads | loss (iter) | best SRCC (iter) | final SRCC | max dpred | s |'
    print(header + '\n' + '|---' * (header.count('|') - 1) + '|', flush=True)
    rows, reference = [], None
    for name in args.settings:
        result, preds = run_setting(name, opt, args.datasets, args.threads, args.logs)
        if reference is None:
            reference = preds
        common = [k for k in preds if k in reference]
        dpred = max(abs(preds[k] - reference[k]) for k in common) if common else None
        loss = result['first_loss']
        print(f"| {name} | {result['capability']} | {result['threads']} | "
              f"{'-' if loss is None else f'{loss[1]:.4e} ({loss[0]})'} | "
              f"{fmt(result['best'], '.4f')} ({result['best_iter']}) | {fmt(result['final'], '.4f')} | "
              f"{fmt(dpred, '.1e')} | {result['seconds']:.0f} |", flush=True)
        rows.append(result)
    for key in ('best', 'final'):
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            print(f'{key} SRCC: {min(values):.4f} to {max(values):.4f} (spread {max(values) - min(values):.4f})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
