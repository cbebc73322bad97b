"""Build the small synthetic IQA dataset (KonIQ-10k format) used by the tests and the quick start.

    python scripts/make_demo_dataset.py                      # -> datasets/demo/256x192/ + the CSV
    python scripts/make_demo_dataset.py --out /tmp/demo --size 512 384 --levels 4 --seed 1   # -> /tmp/demo/512x384/

See uiqa_plugin/data/demo.py for the distortions and the MOS formula.
"""
import argparse
import sys

import uiqa_plugin  # noqa: F401
from uiqa_plugin.data.demo import DEFAULT_SOURCES, DEMO_SIZE, DISTORTIONS, make_demo_dataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='datasets/demo', help='output folder (default: datasets/demo)')
    parser.add_argument('--size', type=int, nargs=2, default=DEMO_SIZE, metavar=('W', 'H'),
                        help='image width and height (default %(default)s)')
    parser.add_argument('--levels', type=int, default=3, help='levels per distortion (default 3)')
    parser.add_argument('--distortions', nargs='+', default=list(DISTORTIONS), choices=DISTORTIONS)
    parser.add_argument('--sources', nargs='+', default=list(DEFAULT_SOURCES),
                        help='scikit-image sample names, one content each')
    parser.add_argument('--split-counts', type=int, nargs=3, metavar=('TRAIN', 'VAL', 'TEST'),
                        help='sources per split (default about 2/3, 1/6, 1/6)')
    parser.add_argument('--image-folder', help='image subfolder name (default WxH of --size: 256x192)')
    parser.add_argument('--format', default='jpg', choices=('jpg', 'png'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    info = make_demo_dataset(args.out, size=tuple(args.size), levels=args.levels, distortions=args.distortions,
                             sources=args.sources, split_counts=args.split_counts, seed=args.seed,
                             image_folder=args.image_folder, image_format=args.format)
    print(f"{info['num_images']} images in {info['image_dir']}, annotations in {info['csv']}")
    for split, names in info['splits'].items():
        print(f'  {split}: {", ".join(names)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
