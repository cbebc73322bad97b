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
    from helpers import load_script
    code = load_script('build_lmdb').main(['--dataroot', str(tmp_path / 'nope'), '--out', str(tmp_path / 'x.lmdb')])
    assert code == 2
    assert capsys.readouterr().err.strip() == f'build_lmdb.py: --dataroot {tmp_path / "nope"}: no such folder'
    assert not (tmp_path / 'x.lmdb').exists()
    code = load_script('build_lmdb').main(['--dataroot', str(tmp_path), '--meta-file', str(tmp_path / 'no.csv'),
                                           '--out', str(tmp_path / 'x.lmdb')])
    assert code == 2 and 'no.csv' in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize('argv', [['-m', 'uiqa_plugin.tools.score', '--help'],
                                  ['-m', 'uiqa_plugin.tools.score', 'x.png', '--batch-size', '0'],
                                  ['-m', 'uiqa_plugin.tools.score', 'x.png', '-a', 'hapy'],
                                  ['-m', 'uiqa_plugin.tools.profile', '--help'],
                                  ['-m', 'uiqa_plugin.tools.profile', 'phrasings', '-a', 'feel'],
                                  ['-m', 'uiqa_plugin.options', '--help']])
def test_help_option_errors_and_phrasings_need_no_torch(argv):
    """Start-up: these answer without importing torch, open_clip or BasicSR (timings: scripts/benchmark_startup.py)."""
    import subprocess
    import sys
    probe = ('import runpy, sys; sys.argv = [sys.argv[1]] + sys.argv[2:]\n'
             'try:\n    runpy.run_module(sys.argv[0], run_name="__main__")\n'
             'except SystemExit:\n    pass\n'
             'heavy = sorted(m for m in ("torch", "open_clip", "basicsr") if m in sys.modules)\n'
             'print("HEAVY", heavy)\n')
    run = subprocess.run([sys.executable, '-c', probe] + argv[1:], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip().splitlines()[-1] == 'HEAVY []', run.stdout[-500:] + run.stderr[-1000:]


def test_import_registers_at_the_first_lookup():
    from helpers import fresh_python
    code = ('import sys, uiqa_plugin\n'
            'assert "torch" not in sys.modules\n'
            'from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY\n'
            'assert "CLIPUIQA" in ARCH_REGISTRY and DATASET_REGISTRY.get("KonIQ10kDataset")\n'
            'print("ok")\n')
    run = fresh_python(code)
    assert run.returncode == 0 and run.stdout.strip() == 'ok', run.stderr[-2000:]


def test_uiqa_score_on_an_empty_folder_writes_nothing(tmp_path, capsys):
    from uiqa_plugin.tools.score import main
    (tmp_path / 'empty').mkdir()
    out = tmp_path / 'scores.csv'
    assert main([str(tmp_path / 'empty'), '--out', str(out), '--clip-pretrained', 'none', '--no-progress']) == 1
    err = capsys.readouterr().err
    assert 'folder holds no image files' in err and f'nothing to score: no image file among the inputs; {out} not ' \
                                                    'written' in err
    assert not out.exists() and not list(tmp_path.glob('scores.csv*'))


def test_uiqa_score_marks_random_weights_plainly(tiny_clip_files, tmp_path, capsys):
    import csv

    from PIL import Image

    from uiqa_plugin.tools.score import main
    Image.new('RGB', (40, 32), (10, 200, 30)).save(tmp_path / 'a.png')
    out = tmp_path / 'new' / 'scores.csv'
    assert main([str(tmp_path / 'a.png'), '--clip-model', tiny_clip_files['config'], '--clip-pretrained', 'none',
                 '--no-progress', '--device', 'cpu', '--out', str(out)]) == 0
    err = capsys.readouterr().err
    assert 'uiqa-score: note: CLIP has random weights (--clip-pretrained none): these scores are meaningless.' in err
    assert f'creating folder {tmp_path / "new"} for --out' in err
    assert 'UserWarning' not in err and 'warnings.warn' not in err
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ['path', 'quality', 'random_weights'] and rows[0]['random_weights'] == '1'
    assert main([str(tmp_path / 'a.png'), '--clip-model', tiny_clip_files['config'], '--clip-pretrained', 'none',
                 '--no-progress', '--device', 'cpu', '--out', str(out), '--resume']) == 0  # resumes its own table


def test_score_result_exports_its_table(tmp_path):
    import csv
    import json

    from uiqa_plugin.api import ScoreResult
    result = ScoreResult(['quality', 'happy'], rows=[{'path': 'a.png', 'quality': 0.25, 'happy': 0.5},
                                                     {'path': 'b.png', 'quality': 0.75, 'happy': 0.125}],
                         failures=[('c.png', 'c.png: cannot decode image')])
    result.to_table(tmp_path / 's.csv')
    assert list(csv.DictReader(open(tmp_path / 's.csv'))) == [{'path': 'a.png', 'quality': '0.25', 'happy': '0.5'},
                                                              {'path': 'b.png', 'quality': '0.75', 'happy': '0.125'}]
    result.to_table(tmp_path / 's.json')
    assert json.loads((tmp_path / 's.json').read_text()) == result.rows


def test_score_result_as_a_dataframe():
    from uiqa_plugin.api import ScoreResult
    pd = pytest.importorskip('pandas')
    result = ScoreResult(['quality', 'happy'], rows=[{'path': 'a.png', 'quality': 0.25, 'happy': 0.5},
                                                     {'path': 'b.png', 'quality': 0.75, 'happy': 0.125}])
    frame = result.to_dataframe()
    assert list(frame.columns) == ['path', 'quality', 'happy'] and frame['happy'].tolist() == [0.5, 0.125]
    assert isinstance(frame, pd.DataFrame)


def test_file_names_with_terminal_escapes_are_shown_escaped(tmp_path, capsys, monkeypatch):
    """A file name holding ANSI escape codes (here: clear the screen) reaches the terminal as text in the
    messages of uiqa-profile and of train.py / test.py, as it does in uiqa-score's."""
    from uiqa_plugin.runner.command_line import exit_with_message
    from uiqa_plugin.tools.profile import main as profile_main
    table = str(tmp_path / 'scores\x1b[2J.csv')
    assert profile_main(['radar', '--table', table, '--out-dir', str(tmp_path / 'charts')]) != 0
    err = capsys.readouterr().err
    assert '\x1b' not in err and 'scores\\x1b[2J.csv' in err, err
    monkeypatch.delenv('TORCHELASTIC_ERROR_FILE', raising=False)
    with pytest.raises(SystemExit):
        exit_with_message(f'error: {tmp_path}/opt\x1b[2J.yml: option file not found', 2)
    err = capsys.readouterr().err
    assert '\x1b' not in err and 'opt\\x1b[2J.yml: option file not found' in err, err
