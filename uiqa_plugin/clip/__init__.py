"""CLIP for image quality: the only package that knows open_clip.

Laid out as open_clip is:

- ``factory``: ``build_clip_model`` (model configs by name or JSON file; weights from an
  open_clip tag, a local file or none), ``make_random_clip`` for tests and demos.
- ``pretrained``: reading weight files without running anything in them, the download
  cache, which MLP activation (QuickGELU or GELU) weights need.
- ``model``: ``ClipBackbone`` (frozen; image encoding at any size without positional
  embedding, text encoding, prompt-learner hooks) and the positional-embedding resizes.
- ``cache``: ``load_clip``, the instance shared by every model that asks for the same weights.
- ``errors``: ``ClipLoadError`` and how each interface names the CLIP options.
"""
from uiqa_plugin.clip.cache import clear_shared_clip, load_clip, load_clip_for_network
from uiqa_plugin.clip.errors import CLI_OPTION_NAMES, ClipLoadError, yaml_option_names
from uiqa_plugin.clip.factory import build_clip_model, make_random_clip, resolve_model_config, save_clip_checkpoint
from uiqa_plugin.clip.model import (CLIP_MEAN, CLIP_STD, POS_EMBED_MODES, ClipBackbone, attention_pool,
                                    check_pos_embed_mode, interpolate_grid_embedding, resize_positional_embedding,
                                    stretch_embedding_1d)
from uiqa_plugin.clip.pretrained import is_torchscript, read_clip_state_dict, resolve_quick_gelu

__all__ = ['CLIP_MEAN', 'CLIP_STD', 'CLI_OPTION_NAMES', 'POS_EMBED_MODES', 'ClipBackbone', 'ClipLoadError',
           'attention_pool', 'build_clip_model', 'check_pos_embed_mode', 'clear_shared_clip',
           'interpolate_grid_embedding',
           'is_torchscript', 'load_clip', 'load_clip_for_network', 'make_random_clip', 'read_clip_state_dict',
           'resize_positional_embedding', 'resolve_model_config', 'resolve_quick_gelu', 'save_clip_checkpoint',
           'stretch_embedding_1d', 'yaml_option_names']
