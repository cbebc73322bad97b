"""Build a tiny super-resolution set (bicubic x4) from the clean photos of the demo dataset.

    python scripts/make_demo_dataset.py      # -> datasets/demo/ (once)
    python scripts/make_sr_demo.py           # -> datasets/demo_sr/{train,val,test}/{GT,LQ}/*.png

GT: the demo dataset's undistorted photos (``*_ref.*``), cropped to a multiple of the scale;
LQ: GT downscaled with MATLAB's bicubic (``basicsr.utils.matlab_functions.imresize``, the
usual SR benchmark kernel, with antialiasing). The demo's content split is kept (training /
validation / test photos -> train / val / test), so the sets share no content. Files are PNG
with the same name in GT and LQ, as BasicSR's PairedImageDataset reads them
(``filename_tmpl: '{}'``). Used by options/demo/sr_msrresnet_demo.yml.
"""
import argparse
import csv
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

SPLITS = {'training': 'train', 'validation': 'val', 'test': 'test'}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--demo', default='datasets/demo', help='demo dataset folder (scripts/make_demo_dataset.py)')
    parser.add_argument('--image-folder', default='256x192',
                        help='image subfolder of the demo dataset (default 256x192, its image size)')
    parser.add_argument('--out', default='datasets/demo_sr', help='output folder (default datasets/demo_sr)')
    parser.add_argument('--scale', type=int, default=4, help='downscaling factor (default 4)')
    args = parser.parse_args(argv)

    import numpy as np
    import uiqa_plugin  # noqa: F401  (basicsr on current torchvision)
    from basicsr.utils.matlab_functions import imresize
    from PIL import Image

    table = osp.join(args.demo, 'koniq10k_distributions_sets.csv')
    if not osp.isfile(table):
        sys.exit(f'make_sr_demo: {table} not found; run scripts/make_demo_dataset.py --out {args.demo} first')
    with open(table, newline='', encoding='utf-8') as f:
        rows = [r for r in csv.DictReader(f) if osp.splitext(r['image_name'])[0].endswith('_ref')]
    if not rows:
        sys.exit(f'make_sr_demo: {table} lists no clean (*_ref) photos')
    counts = {}
    for row in rows:
        split = SPLITS.get(row['set'], row['set'])
        gt = np.asarray(Image.open(osp.join(args.demo, args.image_folder, row['image_name'])).convert('RGB'))
        h, w = (gt.shape[0] // args.scale) * args.scale, (gt.shape[1] // args.scale) * args.scale
        gt = gt[:h, :w]
        lq = imresize(gt.astype(np.float64) / 255.0, 1.0 / args.scale)  # MATLAB bicubic, antialiased
        lq = (lq.clip(0, 1) * 255.0).round().astype(np.uint8)
        name = osp.splitext(row['image_name'])[0][:-len('_ref')] + '.png'
        for kind, img in (('GT', gt), ('LQ', lq)):
            folder = osp.join(args.out, split, kind)
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(img).save(osp.join(folder, name))
        counts[split] = counts.get(split, 0) + 1
    print(f'make_sr_demo: x{args.scale} pairs in {args.out}: ' +
          ', '.join(f'{split} {n}' for split, n in sorted(counts.items())))
    return 0


if __name__ == '__main__':
    sys.exit(main())
