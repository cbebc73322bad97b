"""basicsr 1.4.2 imports on current torchvision after `import uiqa_plugin`, and a fixed basicsr is left alone."""
import sys
import types

import pytest

from helpers import fresh_python
from uiqa_plugin import compat


@pytest.mark.slow  # a fresh interpreter
def test_basicsr_imports_and_registries_hold_our_classes():
    code = ('import uiqa_plugin, basicsr\n'
            'from basicsr.train import train_pipeline\n'
            'from basicsr.utils.registry import ARCH_REGISTRY\n'
            'assert "CLIPIQA" in ARCH_REGISTRY, list(ARCH_REGISTRY.keys())\n'
            'print("ok")\n')
    out = fresh_python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith('ok')


@pytest.mark.slow  # a fresh interpreter
def test_plain_basicsr_import_fails_without_us():
    # Guards the reason for the alias: if this starts passing, basicsr was fixed and the alias is moot.
    out = fresh_python('import basicsr')
    assert out.returncode != 0 and 'functional_tensor' in out.stderr


def test_alias_not_installed_when_torchvision_has_the_module(monkeypatch):
    monkeypatch.delitem(sys.modules, compat._ALIAS, raising=False)
    monkeypatch.setattr(compat.importlib.util, 'find_spec', lambda name: object())
    assert compat.install_torchvision_alias() is False
    assert compat._ALIAS not in sys.modules


def test_fixed_basicsr_is_left_alone(tmp_path, monkeypatch):
    pkg = tmp_path / 'basicsr'
    (pkg / 'data').mkdir(parents=True)
    (pkg / 'data' / 'degradations.py').write_text('from torchvision.transforms.functional import rgb_to_grayscale\n')
    spec = types.SimpleNamespace(submodule_search_locations=[str(pkg)])
    monkeypatch.setattr(compat.importlib.util, 'find_spec', lambda name: spec)
    assert compat.basicsr_needs_alias() is False
    (pkg / 'data' / 'degradations.py').write_text('from torchvision.transforms.functional_tensor import x\n')
    assert compat.basicsr_needs_alias() is True


def test_alias_exposes_rgb_to_grayscale():
    import torch
    alias = sys.modules[compat._ALIAS]
    img = torch.rand(3, 4, 5)
    expected = (0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]).unsqueeze(0)
    assert torch.allclose(alias.rgb_to_grayscale(img), expected, atol=1e-3)
