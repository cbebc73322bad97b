"""Targets a CLIP-UIQA model can represent exactly, on the demo images: evidence that training learns.

    python scripts/learnable_targets.py --demo datasets/demo --clip-pretrained datasets/demo/tiny_clip.pt

writes ``datasets/demo/learnable_targets.csv`` (columns image_name, image_target, fragment_target,
set) for ``CSVIQADataset``. Each target is the output of a *teacher*: a CLIP-UIQA model with one
view, one prompt pair and no head, whose prompt context is drawn at random (seeded) and then fixed:

    target = sigmoid(logit_scale * <f / |f|, t_good / |t_good| - t_bad / |t_bad|])   in (0, 1)

f: the frozen CLIP's features of the view, t: the text features of the pair under that context.
This is a fixed random projection of the view's features through a sigmoid, and a student of the
same family (frozen CLIP, learned context) represents it exactly. ``image_target`` reads the
``image`` view, ``fragment_target`` the ``fragments`` view only.

The views (``LEARNABLE_VIEWS``) are computed by the project's own dataset and transforms, as in
training. The image view is downscaled to 48x64 (as UIQA downscales its aesthetics view) while
fragments and the salient patch keep native pixels: then the fine detail the fragment target
reads is not in the image view, and a model without fragments follows that target clearly worse
(measured: held-out SRCC 0.77 for an image+salient model, 0.98 with fragments). With the image
view at full size, its features follow the fragments' closely, and the test could not tell
whether the fragment view reaches the head. Training uses the evaluation
chain (fragments at the cell centres, no flip), so training sees exactly the views the targets
were computed on.

Splits: training = the demo's training sources; validation = its validation and test sources
(unseen contents, 64 images at the default demo size), so held-out SRCC ranks 64 images.
"""
import argparse
import csv
import os.path as osp
import sys

import numpy as np
import torch

if __package__ in (None, ''):  # run as a script: import the package from this checkout
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import uiqa_plugin  # noqa: E402,F401  (basicsr compatibility first)
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY  # noqa: E402

from uiqa_plugin.data.demo import DEMO_IMAGE_FOLDER  # noqa: E402
from uiqa_plugin.data.device_input import DeviceInput  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CLIP_CONFIG = osp.join(REPO, 'options', 'clip', 'tiny-rn.json')
DEMO_CSV = 'koniq10k_distributions_sets.csv'
DEMO_IMAGES = DEMO_IMAGE_FOLDER  # the default demo's image subfolder
#: views of the learnable-target runs: a downscaled image view, native-pixel fragments and centre patch
LEARNABLE_VIEWS = {'image': {'size': [48, 64]}, 'fragments': {'grid': 4, 'patch': 32, 'train': False},
                   'salient': {'size': 64}}
#: target column -> (the view the teacher reads, the seed of its prompt context; the first seed tried, not tuned)
TARGETS = {'image_target': ('image', 1), 'fragment_target': ('fragments', 1)}
N_CTX = 8


def teacher(view, seed, clip_model=TINY_CLIP_CONFIG, clip_pretrained=None):
    """A frozen one-view CLIP-UIQA whose prompt context is drawn with ``seed``: (N, 3, H, W) -> (N, 1) in (0, 1)."""
    torch.manual_seed(seed)
    net = ARCH_REGISTRY.get('CLIPUIQA')(views=[view], attributes='quality', prompt='learned',
                                        prompt_opt={'n_ctx': N_CTX}, head='none', clip_model=clip_model,
                                        clip_pretrained=clip_pretrained)
    return net.eval().requires_grad_(False)


def view_dataset(dataroot, meta_file, views=LEARNABLE_VIEWS, split='all', phase='val', **extra):
    """The project's CSV dataset over ``meta_file``, producing ``views`` exactly as the training options do."""
    opt = {'name': 'learnable_targets', 'type': 'CSVIQADataset', 'phase': phase, 'dataroot': dataroot,
           'meta_file': meta_file, 'name_column': 'image_name', 'target_columns': [], 'split_column': 'set',
           'split': split, 'views': views, 'use_hflip': False, **extra}
    return DATASET_REGISTRY.get('CSVIQADataset')(opt)


@torch.no_grad()
def compute_targets(demo_dir, clip_pretrained, clip_model=TINY_CLIP_CONFIG, views=LEARNABLE_VIEWS, targets=TARGETS,
                    batch_size=32):
    """{image name: {column: target}} for every image of the demo dataset in ``demo_dir``."""
    dataset = view_dataset(osp.join(demo_dir, DEMO_IMAGES), osp.join(demo_dir, DEMO_CSV), views)
    teachers = {col: (view, teacher(view, seed, clip_model, clip_pretrained)) for col, (view, seed) in targets.items()}
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = {}
    for batch in loader:
        to_input = DeviceInput.from_batch('cpu', batch)  # what IQAModel.feed_data does
        values = {col: net(to_input.convert(batch[view]))[:, 0].tolist() for col, (view, net) in teachers.items()}
        for i, key in enumerate(batch['key']):
            out[key] = {col: values[col][i] for col in targets}
    return out


def write_learnable_csv(demo_dir, out_csv, clip_pretrained, clip_model=TINY_CLIP_CONFIG, shuffle_seed=None):
    """Write the targets as a CSV dataset; returns its path.

    Splits: the demo's training rows stay 'training'; its validation and test rows become 'validation'.
    ``shuffle_seed``: permute the target rows against the images (a control: training must then fail).
    """
    targets = compute_targets(demo_dir, clip_pretrained, clip_model)
    with open(osp.join(demo_dir, DEMO_CSV), newline='', encoding='utf-8') as f:
        rows = [(r['image_name'], 'training' if r['set'] == 'training' else 'validation') for r in csv.DictReader(f)]
    columns = list(TARGETS)
    values = [[targets[name][c] for c in columns] for name, _ in rows]
    if shuffle_seed is not None:
        values = [values[i] for i in np.random.default_rng(shuffle_seed).permutation(len(values))]
    with open(out_csv, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['image_name', *columns, 'set'])
        for (name, split), vals in zip(rows, values):
            writer.writerow([name, *(f'{v:.8f}' for v in vals), split])
    return out_csv


def training_options(name, dataroot, meta_file, target_column, clip_pretrained, clip_model=TINY_CLIP_CONFIG,
                     views=LEARNABLE_VIEWS, model_views=('image',), aggregation='mean', head='auto',
                     attributes='quality', finetune_clip=(), loss=None, total_iter=300, lr=0.01, batch_size=16,
                     seed=0, val_split='validation'):
    """Option dict for ``uiqa_plugin/train.py`` on a CSV dataset (``set`` column: training / ``val_split``).

    ``model_views``: the views the model reads (the dataset makes only those). ``loss``: a loss
    option dict (default MSE). Training uses the evaluation chain (``views`` with deterministic
    fragments, no flip), AdamW with a constant learning rate ``lr``, and validates once at the end.
    """
    model_views = list(model_views)
    data_views = {v: dict(views.get(v, {})) for v in model_views}
    common = {'type': 'CSVIQADataset', 'dataroot': dataroot, 'meta_file': meta_file, 'name_column': 'image_name',
              'target_columns': [target_column], 'split_column': 'set', 'views': data_views,
              'batch_size_per_gpu': batch_size, 'num_worker_per_gpu': 0}
    return {
        'name': name, 'model_type': 'IQAModel', 'num_gpu': 0, 'manual_seed': seed,
        'datasets': {'train': {**common, 'name': 'learnable_train', 'split': 'training', 'use_hflip': False},
                     'val': {**common, 'name': 'learnable_val', 'split': val_split}},
        'network_g': {'type': 'CLIPUIQA', 'views': model_views, 'attributes': attributes, 'prompt': 'learned',
                      'prompt_opt': {'n_ctx': N_CTX}, 'aggregation': aggregation, 'head': head,
                      'finetune_clip': list(finetune_clip), 'clip_model': clip_model,
                      'clip_pretrained': clip_pretrained},
        'path': {'pretrain_network_g': None, 'resume_state': None},
        'train': {'total_iter': total_iter, 'optim_g': {'type': 'AdamW', 'lr': lr, 'weight_decay': 0.0},
                  'loss_opt': dict(loss or {'type': 'MSELoss', 'loss_weight': 1.0})},
        'val': {'val_freq': total_iter, 'key_metric': 'srcc',
                'metrics': {'srcc': {'type': 'calculate_srcc'}, 'plcc': {'type': 'calculate_plcc'}}},
        'logger': {'print_freq': max(1, total_iter // 4), 'save_checkpoint_freq': total_iter, 'use_tb_logger': False},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--demo', default='datasets/demo', help='demo dataset folder (scripts/make_demo_dataset.py)')
    parser.add_argument('--clip-pretrained', required=True, help='CLIP weights (scripts/make_tiny_clip.py)')
    parser.add_argument('--clip-model', default=TINY_CLIP_CONFIG, help='CLIP config (default: the tiny ResNet)')
    parser.add_argument('--out', help='output CSV (default: <demo>/learnable_targets.csv)')
    parser.add_argument('--shuffle-seed', type=int, help='permute targets against images (a control run)')
    args = parser.parse_args(argv)
    out = write_learnable_csv(args.demo, args.out or osp.join(args.demo, 'learnable_targets.csv'),
                              args.clip_pretrained, args.clip_model, args.shuffle_seed)
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
