"""Does training learn? CLIP-UIQA's views and aggregations on a known distortion level, and the losses.

    python scripts/ablation.py --out ablation            # the README table: ~20 min on 2 cores
    python scripts/ablation.py --out /tmp/abl --seeds 0 --iters 30 --parts losses   # a quick look

Everything runs offline with a tiny random CLIP (``scripts/make_tiny_clip.py``) through the normal
entry point (``uiqa_plugin/train.py``, one subprocess per run, one thread each), and ends in
``<out>/table.md`` (mean +- sd over seeds) and ``<out>/runs.csv`` (one row per run; a rerun skips
the runs already there, so an interrupted ablation continues).

Part ``views`` -- a target the images carry. A demo ladder (``uiqa_plugin/data/demo.py``) of blur and
noise only: every photo clean and at ``--levels`` levels of each; the target is the distortion
strength s = level / levels (0 for the clean photo), the same for blur and noise. CLIP-UIQA with
each view set (image; image + fragments; all three) and each aggregation (mean, concat, learned,
attention; one view makes them all the same), the last CLIP stage and its pool fine-tuned as in
the demo recipe, held-out SRCC / PLCC (contents never seen in training) after ``--iters``.

Part ``losses`` -- the learnable target 1 of ``scripts/learnable_targets.py`` (a fixed random
projection of the frozen CLIP's image-view features through a sigmoid, exactly representable by
the model) learned with MSE, L1, Charbonnier, PLCC and the fidelity rank loss at two temperatures.
"""
import argparse
import csv
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time

import yaml

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # the sibling scripts
from learnable_targets import (DEMO_CSV, DEMO_IMAGES, REPO, TINY_CLIP_CONFIG, training_options,  # noqa: E402
                               write_learnable_csv)

VIEW_SETS = {'image': ['image'], 'image+fragments': ['image', 'fragments'],
             'all three': ['image', 'fragments', 'salient']}
AGGREGATIONS = ('mean', 'concat', 'learned', 'attention')
#: views of the ladder runs: the image at its native 128x96, 3x3 fragments of 32 px, a 64 px centre patch
LADDER_VIEWS = {'image': {}, 'fragments': {'grid': 3, 'patch': 32}, 'salient': {'size': 64}}
LOSSES = {
    'MSE': {'type': 'MSELoss'},
    'L1': {'type': 'L1Loss'},
    'Charbonnier (eps 1e-3)': {'type': 'CharbonnierLoss', 'eps': 1.0e-3},
    'PLCC': {'type': 'PLCCLoss'},
    'fidelity (T 0.1)': {'type': 'FidelityRankLoss', 'temperature': 0.1},
    'fidelity (T 1)': {'type': 'FidelityRankLoss', 'temperature': 1.0},
}
RUN_COLUMNS = ('part', 'config', 'seed', 'srcc', 'plcc', 'seconds')


def run_python(args, cwd, log_path=None):
    """Run a Python script in a subprocess on one thread; returns its output (raises with the tail on failure)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env)
    log = out.stdout + out.stderr
    if log_path:
        with open(log_path, 'w', encoding='utf-8') as f:
            f.write(log)
    if out.returncode != 0:
        raise RuntimeError(f'{" ".join(args[:3])} failed (exit {out.returncode}):\n{log[-3000:]}')
    return log


def final_metric(log, name):
    values = re.findall(rf'# {name}: (-?[0-9.]+|nan)', log)
    if not values:
        raise RuntimeError(f'no {name} in the training log:\n{log[-2000:]}')
    return float(values[-1])


def ladder_rows(demo_csv):
    """[(image name, strength s in [0, 1], split)] for the blur and noise images and the clean ones of a demo CSV."""
    with open(demo_csv, newline='', encoding='utf-8') as f:
        rows = list(csv.DictReader(f))
    levels = max(int(m.group(1)) for r in rows if (m := re.search(r'_(?:blur|noise)(\d+)\.', r['image_name'])))
    out = []
    for r in rows:
        m = re.search(r'_(blur|noise)(\d+)\.', r['image_name'])
        if m is None and '_ref.' not in r['image_name']:
            continue
        strength = int(m.group(2)) / levels if m else 0.0
        out.append((r['image_name'], strength, 'training' if r['set'] == 'training' else 'validation'))
    return out


def prepare(out, size, levels):
    """Build (once) the ladder, the standard demo, the tiny CLIP and both target CSVs under ``out/data``."""
    from uiqa_plugin.data.demo import DEFAULT_SOURCES, EXTRA_SOURCES, image_folder_name
    data = osp.join(out, 'data')
    demo, ladder = osp.join(data, 'demo'), osp.join(data, 'ladder')
    clip = osp.join(data, 'tiny_clip.pt')
    scripts = osp.join(REPO, 'scripts')
    if not osp.isfile(osp.join(demo, DEMO_CSV)):
        print('preparing: the demo dataset', flush=True)
        run_python([osp.join(scripts, 'make_demo_dataset.py'), '--out', demo], REPO)
    if not osp.isfile(clip):
        print('preparing: the tiny random CLIP', flush=True)
        run_python([osp.join(scripts, 'make_tiny_clip.py'), '--images', osp.join(demo, DEMO_IMAGES), '--out', clip,
                    '--config', TINY_CLIP_CONFIG], REPO)
    if not osp.isfile(osp.join(ladder, DEMO_CSV)):
        print('preparing: the blur/noise ladder', flush=True)
        run_python([osp.join(scripts, 'make_demo_dataset.py'), '--out', ladder, '--size', *map(str, size),
                    '--levels', str(levels), '--distortions', 'blur', 'noise',
                    '--sources', *DEFAULT_SOURCES, *EXTRA_SOURCES], REPO)
    ladder_csv = osp.join(data, 'ladder_strength.csv')
    with open(ladder_csv, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['image_name', 'strength', 'set'])
        writer.writerows(ladder_rows(osp.join(ladder, DEMO_CSV)))
    target_csv = osp.join(data, 'learnable_targets.csv')
    if not osp.isfile(target_csv):
        print('preparing: the learnable targets', flush=True)
        write_learnable_csv(demo, target_csv, clip)
    return {'clip': clip, 'ladder_images': osp.join(ladder, image_folder_name(size)), 'ladder_csv': ladder_csv,
            'demo_images': osp.join(demo, DEMO_IMAGES), 'target_csv': target_csv}


def planned_runs(parts, seeds, iters, data):
    """[(part, config label, seed, option dict)] in the order they run: seed by seed, so that a partial
    ablation already has every configuration once."""
    runs = []
    for seed in seeds:
        if 'views' in parts:
            for label, views in VIEW_SETS.items():
                for agg in AGGREGATIONS if len(views) > 1 else ('mean',):
                    config = f'{label} / {agg}' if len(views) > 1 else f'{label} / (any)'
                    opt = training_options(
                        f'views_{_slug(config)}_{seed}', data['ladder_images'], data['ladder_csv'], 'strength',
                        data['clip'], views=LADDER_VIEWS, model_views=views, aggregation=agg,
                        attributes='quality,sharpness,noisiness', finetune_clip=('visual.layer4', 'visual.attnpool'),
                        total_iter=iters['views'], lr=0.003, batch_size=8, seed=seed)
                    opt['datasets']['train']['use_hflip'] = True  # the demo recipe's training chain
                    runs.append(('views', config, seed, opt))
        if 'losses' in parts:
            for label, loss in LOSSES.items():
                opt = training_options(f'losses_{_slug(label)}_{seed}', data['demo_images'], data['target_csv'],
                                       'image_target', data['clip'], loss=loss, total_iter=iters['losses'], lr=0.02,
                                       seed=seed)
                runs.append(('losses', label, seed, opt))
    return runs


def _slug(label):
    return re.sub(r'[^a-z0-9]+', '_', label.lower()).strip('_')


def read_runs(path):
    if not osp.isfile(path):
        return []
    with open(path, newline='', encoding='utf-8') as f:
        return [dict(r, seed=int(r['seed']), srcc=float(r['srcc']), plcc=float(r['plcc']),
                     seconds=float(r['seconds'])) for r in csv.DictReader(f)]


def run_all(out, runs):
    """Train every planned run not yet in ``out/runs.csv``; prints progress, appends each result as it ends."""
    results_path = osp.join(out, 'runs.csv')
    done = {(r['part'], r['config'], r['seed']) for r in read_runs(results_path)}
    work = osp.join(out, 'runs')
    os.makedirs(work, exist_ok=True)
    if not osp.isfile(results_path):
        with open(results_path, 'w', newline='', encoding='utf-8') as f:
            csv.writer(f).writerow(RUN_COLUMNS)
    started = time.time()
    for i, (part, config, seed, opt) in enumerate(runs, 1):
        if (part, config, seed) in done:
            continue
        yml = osp.join(work, opt['name'] + '.yml')
        with open(yml, 'w', encoding='utf-8') as f:
            yaml.safe_dump(opt, f)
        tic = time.time()
        log = run_python([osp.join(REPO, 'uiqa_plugin', 'train.py'), '-opt', yml], work,
                         log_path=osp.join(work, opt['name'] + '.log'))
        seconds = time.time() - tic
        srcc, plcc = final_metric(log, 'srcc'), final_metric(log, 'plcc')
        with open(results_path, 'a', newline='', encoding='utf-8') as f:
            csv.writer(f).writerow([part, config, seed, f'{srcc:.4f}', f'{plcc:.4f}', f'{seconds:.1f}'])
        print(f'[{i}/{len(runs)}] {part}: {config}, seed {seed}: SRCC {srcc:.3f}  PLCC {plcc:.3f}  '
              f'({seconds:.0f} s; {(time.time() - started) / 60:.1f} min so far)', flush=True)
    return read_runs(results_path)


def mean_sd(values):
    """'mean ± sd' (sample sd) over seeds; the mean alone for one seed."""
    if len(values) < 2:
        return f'{values[0]:.3f}'
    return f'{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}'


def table(results, runs):
    """Markdown table per part: config | SRCC | PLCC | s per run, mean ± sd over seeds, in the planned order."""
    order = list(dict.fromkeys((part, config) for part, config, _, _ in runs))
    lines = []
    for part in dict.fromkeys(p for p, _ in order):
        first = 'views / aggregation' if part == 'views' else 'loss'
        lines += [f'| {first} | SRCC | PLCC | s per run | seeds |', '|---|---|---|---|---|']
        for p, config in order:
            rows = [r for r in results if r['part'] == p == part and r['config'] == config]
            if rows:
                srcc, plcc = mean_sd([r['srcc'] for r in rows]), mean_sd([r['plcc'] for r in rows])
                seconds = statistics.fmean(r['seconds'] for r in rows)
                lines.append(f'| {config} | {srcc} | {plcc} | {seconds:.0f} | {len(rows)} |')
        lines.append('')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='ablation', help='working folder: data, runs, runs.csv, table.md')
    parser.add_argument('--parts', nargs='+', default=['views', 'losses'], choices=['views', 'losses'])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--iters', type=int, help='training iterations of every run (default: 200 views, 100 losses)')
    parser.add_argument('--size', type=int, nargs=2, default=(128, 96), metavar=('W', 'H'),
                        help='ladder image size (default 128 96)')
    parser.add_argument('--levels', type=int, default=4, help='ladder levels per distortion (default 4)')
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    out = osp.abspath(args.out)
    data = prepare(out, args.size, args.levels)
    iters = {'views': args.iters or 200, 'losses': args.iters or 100}
    runs = planned_runs(args.parts, args.seeds, iters, data)
    print(f'{len(runs)} runs, seeds {args.seeds}, iterations {iters}; results in {out}', flush=True)
    results = run_all(out, runs)
    text = table(results, runs)
    with open(osp.join(out, 'table.md'), 'w', encoding='utf-8') as f:
        f.write(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
