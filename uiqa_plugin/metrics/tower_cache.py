"""Image-tower features of the last few images, so that several CLIP-IQA metrics of one image share one pass.

BasicSR calls every ``val.metrics`` entry once per output image, one after the other: three
``calculate_clipiqa`` entries (quality, sharpness, noisiness) on one CLIP would run its image tower
three times on the same pixels. The tower's output depends only on the tower (the frozen, shared
``ClipBackbone`` instance of a device and dtype), on how it is run (``keep_pos_embed``, ``precision``,
``input_normalized``) and on the pixels; the attributes only change the text side. So features are
kept per tower instance (weakly: a tower that is freed takes its entries with it) under the run
settings and a digest of the pixels, for the ``size`` most recently used images.
"""
import hashlib
import threading
import weakref
from collections import OrderedDict

import numpy as np


class TowerFeatureCache:
    """Bounded LRU of image features, keyed on (tower instance, run settings, image content)."""

    def __init__(self, size=16):
        self.size = int(size)
        self._by_tower = weakref.WeakKeyDictionary()  # ClipBackbone -> OrderedDict(key -> features)
        self._lock = threading.Lock()

    @staticmethod
    def content_key(model, pixels):
        """What the features of ``pixels`` (a numpy array, the tower's input before normalization) depend on
        besides the tower: the model's type and run settings, the shape, dtype and bytes of the pixels."""
        pixels = np.ascontiguousarray(pixels)
        digest = hashlib.blake2b(pixels.data, digest_size=32).digest()
        settings = (type(model), repr(getattr(model, 'keep_pos_embed', None)), getattr(model, 'precision', None),
                    bool(getattr(model, 'input_normalized', False)))
        return settings + (pixels.shape, pixels.dtype.str, digest)

    def features(self, model, pixels, encode):
        """``encode()`` -> features of ``pixels`` by ``model.clip``, computed once while they stay cached.

        A tower that belongs to one model and may train (``exclusive``) is never cached.
        """
        tower = model.clip
        if getattr(tower, 'exclusive', False):
            return encode()
        key = self.content_key(model, pixels)
        with self._lock:
            entries = self._by_tower.setdefault(tower, OrderedDict())
            if key in entries:
                entries.move_to_end(key)
                return entries[key]
            feats = encode()
            entries[key] = feats
            while len(entries) > self.size:
                entries.popitem(last=False)
            return feats

    def __len__(self):
        with self._lock:
            return sum(len(entries) for entries in self._by_tower.values())

    def clear(self):
        with self._lock:
            self._by_tower.clear()
