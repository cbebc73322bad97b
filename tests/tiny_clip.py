"""Tiny random CLIP models for offline tests, built from open_clip configs and saved as files."""
import json
import os.path as osp

TINY_RN_CONFIG = {
    'embed_dim': 32,
    'vision_cfg': {'image_size': 64, 'layers': [1, 1, 1, 1], 'width': 8, 'patch_size': None},
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 32, 'heads': 2, 'layers': 1},
}

TINY_VIT_CONFIG = {
    'embed_dim': 32,
    'vision_cfg': {'image_size': 64, 'layers': 1, 'width': 32, 'patch_size': 16, 'head_width': 16},
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 32, 'heads': 2, 'layers': 1},
}


def write_config(folder, name, cfg):
    path = osp.join(str(folder), f'{name}.json')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(cfg, f)
    return path
