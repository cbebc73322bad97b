"""Views that reach the device as uint8 (or float in [0, 1]) become the model's float32 input there.

Shared by the scoring loader and ``IQAModel.feed_data``: uint8 is scaled by 1/255 and the
views are normalized by (mean, std) with the same float32 constants and operations as the
host ``transforms.Normalize`` (``x.sub_(mean).mul_(inv_std)``, ``inv_std = 1 / float32(std)``),
so the result equals the host-normalized tensors bit for bit.
"""
import contextlib
import threading

import numpy as np
import torch


class DeviceInput:
    """Stacked views on the device: uint8 scaled to [0, 1], then normalized by (mean, std) when given."""

    _cache = {}

    def __init__(self, device, mean=None, std=None):
        self.device = torch.device(device)
        self.mean = self.inv_std = None
        # a 1-element tensor on the device, not a Python scalar: CUDA turns division by a CPU scalar into
        # a multiplication by its reciprocal (1 ulp off); a tensor divisor is a true IEEE division everywhere
        self.scale = torch.full((1,), 255.0, dtype=torch.float32, device=self.device)
        if mean is not None:  # the same float32 constants and operations as transforms.Normalize
            self.mean = torch.tensor(np.asarray(mean, np.float32), device=self.device).view(1, 3, 1, 1)
            inv_std = 1.0 / np.asarray(std, np.float32)
            self.inv_std = torch.from_numpy(inv_std).to(self.device).view(1, 3, 1, 1)

    def convert(self, x):
        """One stacked (N, 3, H, W) tensor on the device -> float32 model input; ``x`` itself is never modified."""
        if x.dtype == torch.uint8:
            x = x.float().div_(self.scale)
            return x if self.mean is None else x.sub_(self.mean).mul_(self.inv_std)
        x = x.float()
        return x if self.mean is None else x.sub(self.mean).mul_(self.inv_std)

    def __call__(self, tensors):
        x = torch.stack(tensors)
        return self.convert(x)

    @classmethod
    def from_batch(cls, device, batch):
        """The DeviceInput a dataset batch asks for: its ``device_mean`` / ``device_std`` rows (or none)."""
        mean, std = batch.get('device_mean'), batch.get('device_std')
        if mean is None or std is None:
            key = (str(torch.device(device)), None)
            if key not in cls._cache:
                cls._cache[key] = cls(device)
            return cls._cache[key]
        mean, std = torch.as_tensor(mean).cpu().float(), torch.as_tensor(std).cpu().float()
        if mean.dim() == 2:  # (B, 3) after collation: one dataset, one normalization
            if not (bool((mean == mean[0]).all()) and bool((std == std[0]).all())):
                raise ValueError('a batch mixes samples with different device_mean / device_std')
            mean, std = mean[0], std[0]
        key = (str(torch.device(device)), tuple(mean.tolist()), tuple(std.tolist()))
        found = cls._cache.get(key)
        if found is None:  # one per device and normalization: no small host-to-device copies per batch
            found = cls._cache[key] = cls(device, mean.numpy(), std.numpy())
        return found


_converted = threading.local()


@contextlib.contextmanager
def converted_inputs():
    """Within: the images a model receives were converted by ``DeviceInput`` (float in [0, 1], or
    normalized). A metric's input contract then leaves their scale alone: its ``data_range`` describes
    tensors a user passes, not the ones the scoring loader makes from files. Per thread."""
    before = getattr(_converted, 'active', False)
    _converted.active = True
    try:
        yield
    finally:
        _converted.active = before


def inputs_converted():
    """Whether the calling thread is inside ``converted_inputs``."""
    return getattr(_converted, 'active', False)
