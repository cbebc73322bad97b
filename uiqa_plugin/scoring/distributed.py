"""Sharded scoring under PyTorch's launcher: ``python -m torch.distributed.run --nproc_per_node=N ...``.

The launcher sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address); without them
the run is one process. Ranks talk through a gloo process group (CPU, any machine), and only
twice: rank 0 sends the list of paths to score, and all ranks meet at a barrier before rank 0
merges their part files. The paths are sharded round-robin (rank r scores items r, r+N, ...),
so ranks get images from all over the list.
"""
import datetime
import os

import torch.distributed as dist

# Ranks wait at the end for the slowest shard; a rank that dies is ended by the launcher, which
# stops the others, so this only has to outlast the longest shard.
WAIT_TIMEOUT = datetime.timedelta(days=2)


class Ranks:
    """This process's place in the job: ``rank`` of ``world``; ``local_rank`` picks its GPU."""

    def __init__(self):
        self.rank = int(os.environ.get('RANK', 0))
        self.world = int(os.environ.get('WORLD_SIZE', 1))
        self.local_rank = int(os.environ.get('LOCAL_RANK', 0))
        self.group = False

    @property
    def is_main(self):
        return self.rank == 0

    def start(self):
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group('gloo', timeout=WAIT_TIMEOUT)
            self.group = True
        return self

    def share(self, obj):
        """Rank 0's ``obj`` on every rank (any picklable object)."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wait_all(self):
        if self.world > 1:
            dist.barrier()

    def shard(self, items):
        return items[self.rank::self.world]

    def close(self):
        if self.group:
            dist.destroy_process_group()
            self.group = False
