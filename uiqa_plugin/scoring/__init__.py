"""Scoring image collections: path search, the decode-and-batch loader, streamed and sharded output.

``uiqa_plugin.api.score_paths`` and ``uiqa-score`` are built from these parts:

- ``paths``: files, folders (cycle-safe, each real file once) and glob patterns -> image paths.
- ``input_limits``: the smallest image side a CLIP image tower takes; too small / too extreme images.
- ``loader``: decode in DataLoader workers, batch equal sizes, uint8 to the device, rows in input order.
- ``outputs``: output path checks, streamed part files, resume, merge into one CSV / JSON.
- ``distributed``: rank and world size from ``torch.distributed.run`` and the few collectives used.
"""
import os

# Pixels per image beyond which an image is refused before decoding (uiqa-score --max-megapixels).
# The model sees full-resolution images: RN50's stem holds 96 float32 channels (the 32 going into
# its third convolution and the 64 coming out) at a quarter of the input's pixels, 96 bytes per
# input pixel, so 50 megapixels (the largest camera sensors' images) need 4.8 GB at that layer;
# 13000 x 13000 would need 16 GB.
MAX_PIXELS = 50_000_000


def default_workers():
    """Decode processes used by default: up to 4, never more than the CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(4, cpus)
