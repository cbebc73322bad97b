"""How archs hold the one shared, frozen CLIP, and what every CLIP arch tells its checkpoints and tables."""


class SharedClipMixin:
    """Holds the shared frozen CLIP outside the module tree.

    The backbone is not a registered submodule, so it never enters ``state_dict`` (our
    checkpoints stay small) and DDP does not touch it. ``.to()`` / ``.cuda()`` / ``.half()``
    switch to the shared instance for the new device and dtype (``ClipBackbone.variant``).
    """

    def _attach_clip(self, clip):
        object.__setattr__(self, 'clip', clip)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._attach_clip(self.clip.variant(fn))
        return self

    @property
    def resolved_options(self):
        """Arch options resolved at build time that a checkpoint must record to rebuild the same model."""
        return {'quick_gelu': self.clip.quick_gelu}

    @property
    def attribute_names(self):
        """The names of the scored attributes (``self.attributes``), one output column each."""
        return [attr.name for attr in self.attributes]
