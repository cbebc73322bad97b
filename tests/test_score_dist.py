"""uiqa-score output: sharded over processes with torch.distributed.run, streamed, resumed, checked early."""
import csv
import json
import os
import re
import sys
import threading

import pytest

import uiqa_plugin.scoring.loader as loader
import uiqa_plugin.scoring.outputs as outputs
from helpers import REPO, random_photo_folder, score, spawn, tiny_clip_flags
from uiqa_plugin.scoring.table import write_table
from uiqa_plugin.tools.score import build_parser


@pytest.fixture
def photos(tmp_path):
    folder = random_photo_folder(tmp_path / 'photos', [[(40, 52), (48, 64), (36, 36)][i % 3] for i in range(7)], 3)
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n cut')
    return folder


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # torchrun
def test_two_processes_merge_to_the_one_process_table(tiny_clip_files, photos, tmp_path):
    single = tmp_path / 'single.csv'
    assert score(tiny_clip_files, [str(photos), '-a', 'quality,sharpness', '--out', str(single), '--workers', '0']) == 1
    sharded = tmp_path / 'sharded.csv'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           '-m', 'uiqa_plugin.tools.score', str(photos), '-a', 'quality,sharpness', '--out', str(sharded),
           '--workers', '0'] + tiny_clip_flags(tiny_clip_files)
    out = spawn(cmd, tmp_path, env={'PYTHONPATH': REPO}, timeout=300)
    # one input not scored: rank 0 exits 1 (the launcher then adds its own report), every rank ran to its end
    assert out.returncode == 1 and 'broken.png: cannot decode image' in out.stderr and 'wrote 7 rows' in out.stderr
    assert not re.search(r'File ".*uiqa_plugin', out.stderr)  # no traceback from our code
    assert sharded.read_bytes() == single.read_bytes()  # same rows, same order, same float digits
    assert len(read_csv(single)) == 7
    assert not list(tmp_path.glob('*.part-*')) and not list(tmp_path.glob('*.tmp'))


def test_resume_after_a_kill_scores_only_the_rest(tiny_clip_files, photos, tmp_path, monkeypatch):
    full = tmp_path / 'full.json'
    assert score(tiny_clip_files, [str(photos), '--out', str(full), '--workers', '0']) == 1
    out = tmp_path / 'scores.json'

    class Killed(BaseException):
        pass

    real_write = outputs.PartWriter.write
    written = []

    def dying_write(self, path, scores=None, error=None):
        if len(written) == 3:
            self.file.write('{"path": "half a li')  # the kill lands inside a line
            self.file.flush()
            raise Killed
        written.append(path)
        return real_write(self, path, scores, error)

    monkeypatch.setattr(outputs.PartWriter, 'write', dying_write)
    with pytest.raises(Killed):
        score(tiny_clip_files, [str(photos), '--out', str(out), '--workers', '0'])
    monkeypatch.setattr(outputs.PartWriter, 'write', real_write)
    parts = list(tmp_path.glob('scores.json.part-*.jsonl'))
    assert len(parts) == 1 and not out.exists()

    scored = []
    real_iter = loader.iter_scores

    def recording_iter(model, paths, **kwargs):
        scored.extend(paths)
        return real_iter(model, paths, **kwargs)

    monkeypatch.setattr(loader, 'iter_scores', recording_iter)
    assert score(tiny_clip_files, [str(photos), '--out', str(out), '--resume', '--workers', '0']) == 1
    everything = sorted(str(p) for p in photos.iterdir())
    broken = str(photos / 'broken.png')
    # the failure recorded before the kill is not tried again: it is reported, and the exit status says so
    assert written[0] == broken and scored == [p for p in everything if p not in written]
    assert out.read_text() == full.read_text()
    assert not list(tmp_path.glob('scores.json.part-*'))

    scored.clear()  # resuming a finished table scores nothing, keeps every row, and still names the failure
    assert score(tiny_clip_files, [str(photos), '--out', str(out), '--resume', '--workers', '0']) == 1
    assert scored == [] and out.read_text() == full.read_text()
    scored.clear()  # --retry-failed scores the failed image again, and only that one
    assert score(tiny_clip_files, [str(photos), '--out', str(out), '--resume', '--retry-failed', '--workers', '0']) == 1
    assert scored == [broken] and out.read_text() == full.read_text()


def test_resume_refuses_a_table_of_other_columns(tiny_clip_files, photos, tmp_path, capsys):
    out = tmp_path / 'scores.csv'
    write_table([{'path': 'a.png', 'quality': 0.5}], ['path', 'quality'], str(out))
    assert score(tiny_clip_files, [str(photos), '-a', 'sharpness', '--out', str(out), '--resume']) == 2
    assert "has the columns ['path', 'quality'], this run gives ['path', 'sharpness']" in capsys.readouterr().err


def never_load(*args, **kwargs):
    raise AssertionError('the model must not be loaded when the output cannot be written')


@pytest.mark.parametrize('target,reason', [('scores.txt', "unknown table format .txt"),
                                           ('scores', 'unknown table format (no suffix)'),
                                           ('/dev/null', 'unknown table format (no suffix)'),
                                           ('folder.csv', 'is a folder'),
                                           ('afile/sub/scores.csv', 'cannot write in folder')])
def test_output_problems_are_found_before_scoring(tiny_clip_files, photos, tmp_path, monkeypatch, capsys,
                                                  target, reason):
    (tmp_path / 'folder.csv').mkdir()
    (tmp_path / 'afile').write_text('a file, not a folder')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr('uiqa_plugin.create_metric', never_load)
    assert score(tiny_clip_files, [str(photos), '--out', target]) == 2
    err = capsys.readouterr().err
    assert f'{target}: ' in err and reason in err


def test_a_failed_write_keeps_the_rows(tiny_clip_files, photos, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'scores.csv'

    def disk_full(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(outputs, 'write_table', disk_full)
    assert score(tiny_clip_files, [str(photos), '--out', str(out), '--workers', '0']) == 1
    err = capsys.readouterr().err
    parts = list(tmp_path.glob('scores.csv.part-*.jsonl'))
    assert f'{out}: cannot write the table (No space left on device)' in err and str(parts[0]) in err
    assert len(parts[0].read_text().splitlines()) == 1 + 8  # header line + 7 rows + 1 failure
    monkeypatch.undo()
    monkeypatch.setattr(loader, 'iter_scores', lambda model, paths, **kw: iter([(0, None, 'x: retried')]))
    assert score(tiny_clip_files, [str(photos), '--out', str(out), '--resume', '--retry-failed']) == 1
    assert len(read_csv(out)) == 7  # the rows came from the part file, only the failed image was tried again


def test_concurrent_writers_each_leave_a_whole_table(tmp_path):
    out = str(tmp_path / 'scores.json')
    tables = {k: [{'path': f'{k}{i}.png', 'quality': i / 100} for i in range(200)] for k in 'ab'}
    errors = []

    def writer(key):
        try:
            for _ in range(15):
                write_table(tables[key], ['path', 'quality'], out)
        except Exception as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in 'ab']
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert json.loads(open(out).read()) in (tables['a'], tables['b'])
    assert os.listdir(tmp_path) == ['scores.json']


def test_usage_messages(tiny_clip_files, photos, tmp_path, capsys):
    assert score(tiny_clip_files, [str(photos), '--checkpoint', 'net.pth', '-a', 'quality']) == 2
    assert '-a/--attributes does not apply to --checkpoint' in capsys.readouterr().err
    assert score(tiny_clip_files, [str(photos), '--checkpoint', 'net.pth', '--keep-pos-embed']) == 2
    assert '--keep-pos-embed does not apply to --checkpoint' in capsys.readouterr().err
    assert score(tiny_clip_files, [str(photos), '--resume']) == 2
    assert '--resume needs --out' in capsys.readouterr().err
    help_text = build_parser().format_help()
    assert '(default RN50)' not in help_text and help_text.count('(default: RN50)') == 1
    assert 'examples:' in help_text and 'torch.distributed.run' in help_text and 'exit status' in help_text
    assert score(tiny_clip_files, [str(photos / 'img0.png'), '--out', str(tmp_path / 'one.csv')]) == 0
    assert 'wrote 1 row to' in capsys.readouterr().err


def test_rank0_names_part_files_it_cannot_see(tiny_clip_files, photos, tmp_path, monkeypatch, capsys):
    """Machines that do not share the --out file system: rank 0 says so instead of writing half a table."""
    from uiqa_plugin.scoring.distributed import Ranks
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setattr(Ranks, 'start', lambda self: self)
    monkeypatch.setattr(Ranks, 'share', lambda self, obj: obj)  # rank 1 runs elsewhere (and never writes here)
    monkeypatch.setattr(Ranks, 'wait_all', lambda self: None)
    out = tmp_path / 'scores.csv'
    assert score(tiny_clip_files, [str(photos), '--out', str(out), '--workers', '0']) == 1
    err = capsys.readouterr().err
    assert 'rank 0 cannot see the part files' in err and '-1.jsonl' in err and 'shares' in err
    own = list(tmp_path.glob('scores.csv.part-*-0.jsonl'))
    assert not out.exists() and len(own) == 1 and len(own[0].read_text().splitlines()) == 1 + 4  # items 0, 2, 4, 6


def test_resume_with_a_random_clip_merges_the_part_files(tiny_clip_files, photos, tmp_path, monkeypatch):
    """Part files hold the model's columns; the table adds random_weights: a killed run resumes all the same."""
    from uiqa_plugin.tools.score import main
    flags = ['--clip-model', tiny_clip_files['config'], '--clip-pretrained', 'none', '--device', 'cpu',
             '--no-progress', '--workers', '0']
    out = tmp_path / 'scores.csv'

    class Killed(BaseException):
        pass

    real_write = outputs.PartWriter.write
    written = {}

    def dying_write(self, path, scores=None, error=None):
        if len(written) == 3:
            raise Killed
        written[path] = scores
        return real_write(self, path, scores, error)

    monkeypatch.setattr(outputs.PartWriter, 'write', dying_write)
    with pytest.raises(Killed):
        main([str(photos), '--out', str(out)] + flags)
    monkeypatch.setattr(outputs.PartWriter, 'write', real_write)
    assert len(list(tmp_path.glob('scores.csv.part-*.jsonl'))) == 1 and not out.exists()

    assert main([str(photos), '--out', str(out), '--resume'] + flags) == 1  # broken.png is not scored
    rows = read_csv(out)
    assert list(rows[0]) == ['path', 'quality', 'random_weights'] and len(rows) == 7
    assert all(row['random_weights'] == '1' for row in rows)
    by_path = {row['path']: float(row['quality']) for row in rows}
    assert {p: by_path[p] for p, s in written.items() if s is not None} == \
        {p: s[0] for p, s in written.items() if s is not None}  # the rows of the killed run are kept as they were
    assert not list(tmp_path.glob('scores.csv.part-*'))


class KilledWhileWriting(BaseException):
    pass


def kill(*args, **kwargs):
    raise KilledWhileWriting


def test_a_kill_while_writing_the_record_or_the_table_can_be_resumed(tiny_clip_files, photos, tmp_path, monkeypatch):
    full = tmp_path / 'full.csv'
    assert score(tiny_clip_files, [str(photos), '--out', str(full), '--workers', '0']) == 1
    for step in ('write_atomically', 'write_table'):  # the record's write, then the table's
        out = tmp_path / f'{step}.csv'
        monkeypatch.setattr(outputs, step, kill)
        with pytest.raises(KilledWhileWriting):
            score(tiny_clip_files, [str(photos), '--out', str(out), '--workers', '0'])
        monkeypatch.undo()
        assert not out.exists()  # never a table without the record of what made it
        assert os.path.exists(f'{out}.run.json') == (step == 'write_table')
        monkeypatch.setattr(loader, 'iter_scores', lambda model, paths, **kw: iter([] if not paths else kill()))
        assert score(tiny_clip_files, [str(photos), '--out', str(out), '--resume', '--workers', '0']) == 1
        monkeypatch.undo()  # every row came from the part file
        assert out.read_text() == full.read_text()
        assert not list(tmp_path.glob(f'{step}.csv.part-*'))


def test_a_kill_while_replacing_a_table_of_another_model_leaves_no_stale_rows(tiny_clip_files, photos, tmp_path,
                                                                               monkeypatch):
    out = tmp_path / 'scores.csv'
    assert score(tiny_clip_files, [str(photos), '--out', str(out), '--workers', '0']) == 1
    one = str(photos / 'img0.png')
    cropped = tmp_path / 'cropped.csv'
    assert score(tiny_clip_files, [one, '--out', str(cropped), '--crop-border', '2', '--workers', '0']) == 0
    monkeypatch.setattr(outputs, 'write_table', kill)
    with pytest.raises(KilledWhileWriting):  # a cropped run of one image replaces the plain table, killed doing so
        score(tiny_clip_files, [one, '--out', str(out), '--crop-border', '2', '--workers', '0'])
    monkeypatch.undo()
    assert score(tiny_clip_files, [one, '--out', str(out), '--crop-border', '2', '--resume', '--workers', '0']) == 0
    assert read_csv(out) == read_csv(cropped)  # the plain table's rows of the other images are not kept as cropped
