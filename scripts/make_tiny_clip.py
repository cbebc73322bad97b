"""Build a tiny RANDOM CLIP for offline demos and tests, its BatchNorm calibrated on some images.

    python scripts/make_tiny_clip.py --images datasets/demo/256x192 --out datasets/demo/tiny_clip.pt

The result loads like any weight file (clip_model: options/clip/tiny-rn.json,
clip_pretrained: datasets/demo/tiny_clip.pt). Its scores mean nothing about real images;
it exists so that the whole pipeline, training included, runs without downloading CLIP.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--config', default='options/clip/tiny-rn.json', help='open_clip JSON model config')
    parser.add_argument('--images', default='datasets/demo/256x192', help='folder of calibration images')
    parser.add_argument('--max-images', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='datasets/demo/tiny_clip.pt')
    args = parser.parse_args(argv)

    import torch
    import uiqa_plugin  # noqa: F401
    from uiqa_plugin.api import collect_image_paths
    from uiqa_plugin.checkpoint_io import save_checkpoint
    from uiqa_plugin.clip import CLIP_MEAN, CLIP_STD, make_random_clip
    from uiqa_plugin.data.image_io import image_to_tensor, read_image

    paths, problems = collect_image_paths([args.images])
    if problems:
        sys.exit(f'make_tiny_clip: {problems[0][0]}: {problems[0][1]}')
    images = [image_to_tensor(read_image(p)) for p in paths[:args.max_images]]
    shape = images[0].shape
    images = torch.stack([im for im in images if im.shape == shape])
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    model = make_random_clip(args.config, seed=args.seed, calibration_images=(images - mean) / std)
    # an open_clip-style checkpoint; the flag lets reports say that scores from it mean nothing
    save_checkpoint({'state_dict': model.state_dict(), 'random_weights': True}, args.out)
    print(f'make_tiny_clip: wrote {args.out} (random weights, BatchNorm calibrated on {len(images)} images)')


if __name__ == '__main__':
    main()
