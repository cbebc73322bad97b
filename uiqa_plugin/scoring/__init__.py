"""Scoring image collections: path search, the decode-and-batch loader, streamed and sharded output.

``uiqa_plugin.api.score_paths`` and ``uiqa-score`` are built from these parts:

- ``paths``: files, folders (cycle-safe, each real file once) and glob patterns -> image paths.
- ``input_limits``: the smallest image side a CLIP image tower takes; too small / too extreme images.
- ``loader``: decode in DataLoader workers, batch equal sizes, uint8 to the device, rows in input order.
- ``outputs``: output path checks, streamed part files, resume, merge into one CSV / JSON.
- ``distributed``: rank and world size from ``torch.distributed.run`` and the few collectives used.
"""
import os


def default_workers():
    """Decode processes used by default: up to 4, never more than the CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(4, cpus)
