"""Messages a new user reads: undecodable files, help texts of every command option."""
import pytest

from uiqa_plugin.data.image_io import ImageReadError, decode_image, read_image


def test_a_text_file_named_like_an_image_says_so(tmp_path):
    page = tmp_path / 'photo.jpg'  # e.g. an HTML error page saved under an image name
    page.write_text('<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n')
    with pytest.raises(ImageReadError) as info:
        read_image(page)
    message = str(info.value)
    assert message.startswith(f'{page}: cannot decode image') and "text file starting '<!DOCTYPE html>'" in message
    assert 'BytesIO' not in message and ' at 0x' not in message


def test_unknown_binary_shows_its_signature():
    with pytest.raises(ImageReadError, match=r'x\.png: cannot decode image.*signature 00 ff 10 20'):
        decode_image(bytes([0, 255, 16, 32]) * 40, name='x.png')


def test_every_convert_option_has_help(capsys):
    from uiqa_plugin.tools.convert import main
    with pytest.raises(SystemExit):
        main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for option, words in [('--clip-model CLIP_MODEL', 'network_g.clip_model'),
                          ('--clip-pretrained CLIP_PRETRAINED', 'network_g.clip_pretrained'),
                          ('--attributes ATTRIBUTES', 'one pair per context')]:
        after = text.split(option)[-1]
        assert words in after.split('--')[0], (option, after[:120])


@pytest.mark.parametrize('module', ['score', 'profile', 'convert'])
def test_every_command_help_shows_examples(module, capsys):
    import importlib
    main = importlib.import_module(f'uiqa_plugin.tools.{module}').main
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert 'examples:' in out and f'uiqa-{module} ' in out.split('examples:')[1]


def test_build_lmdb_with_a_missing_folder_says_so_without_a_traceback(tmp_path, capsys):
    from test_lmdb import load_script
    code = load_script('build_lmdb').main(['--dataroot', str(tmp_path / 'nope'), '--out', str(tmp_path / 'x.lmdb')])
    assert code == 2
    assert capsys.readouterr().err.strip() == f'build_lmdb.py: --dataroot {tmp_path / "nope"}: no such folder'
    assert not (tmp_path / 'x.lmdb').exists()
    code = load_script('build_lmdb').main(['--dataroot', str(tmp_path), '--meta-file', str(tmp_path / 'no.csv'),
                                           '--out', str(tmp_path / 'x.lmdb')])
    assert code == 2 and 'no.csv' in capsys.readouterr().err
