"""The README's own commands, run as a new user would (in a fresh folder, offline, on the CPU).

Blocks preceded by ``<!-- readme-test: run -->`` run as written, in order, in one scratch folder
that holds links to the repo's ``scripts/``, ``options/`` and ``uiqa_plugin/``. Blocks marked
``<!-- readme-test: tiny-clip -->`` run with the tiny random CLIP's flags added to each
``uiqa-*`` command that scores (real weights cannot be downloaded here). Blocks marked
``<!-- readme-test: parse -->`` run their ``python`` commands and only parse the arguments of
their ``uiqa-*`` commands. The documented outputs are compared where they are deterministic.
"""
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from helpers import DEMO_FINAL_SRCC, DEMO_SRCC_SPREAD, DEMO_TRAINING, REPO
README = osp.join(REPO, 'README.md')
TINY_FLAGS = ['--clip-model', 'options/clip/tiny-rn.json', '--clip-pretrained', 'datasets/demo/tiny_clip.pt']
MARK = re.compile(r'<!-- readme-test: (run|tiny-clip|parse)\b[^>]*-->\n```bash\n(.*?)```\n(?:```\n(.*?)```\n)?',
                  re.S)


def readme_blocks(text=None):
    """[(mode, [command strings], documented output or None)] in README order."""
    text = open(README, encoding='utf-8').read() if text is None else text
    return [(mode, commands(body), output) for mode, body, output in MARK.findall(text)]


def commands(body):
    """Shell commands of a block: continuation lines joined, comments removed."""
    joined = re.sub(r'\s*\\\n\s*', ' ', body)
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(line.split(' #')[0].strip())
    return out


def entry_points():
    """console script name -> 'module:function', from setup.py."""
    setup = open(osp.join(REPO, 'setup.py'), encoding='utf-8').read()
    return dict(re.findall(r"'(uiqa-[a-z]+)=([\w.]+:\w+)'", setup))


def tool_parser(name):
    import importlib
    module = importlib.import_module(entry_points()[name].split(':')[0])
    return module.build_parser()


def scores_clip(name, words):
    """Whether this uiqa-* command line takes CLIP options (it scores images)."""
    import argparse
    parser = tool_parser(name)
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subcommands:
        parser = subcommands[0].choices[words[0]]
    return any('--clip-model' in a.option_strings for a in parser._actions)


@pytest.fixture(scope='module')
def sandbox(tmp_path_factory):
    """A scratch working folder like a fresh clone, and the environment the commands run in."""
    cwd = tmp_path_factory.mktemp('readme')
    for name in ('scripts', 'options', 'uiqa_plugin'):
        os.symlink(osp.join(REPO, name), cwd / name)
    (cwd / 'datasets').mkdir()
    bin_dir = tmp_path_factory.mktemp('bin')
    for name, target in entry_points().items():  # the console scripts, importing this checkout
        module, function = target.split(':')
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; from {module} import {function}; '
                          f'sys.exit({function}())" "$@"\n')
        script.chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', PYTHONWARNINGS='ignore',
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''), HF_HUB_OFFLINE='1')
    env = {k: v for k, v in env.items() if k != 'OMP_NUM_THREADS'}  # the README says when to set it
    return cwd, env


def run_command(line, cwd, env):
    python = shlex.quote(sys.executable)
    line = re.sub(r'(^|&& )python ', rf'\1{python} ', line)
    line = re.sub(r'(^|&& )(OMP_NUM_THREADS=\d+) python ', rf'\1\2 {python} ', line)
    out = subprocess.run(['bash', '-c', line], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (line, out.stdout[-3000:], out.stderr[-3000:])
    return out.stdout + out.stderr


def test_markers_cover_the_quick_start_training_and_profiles():
    blocks = readme_blocks()
    text = '\n'.join(line for _, cmds, _ in blocks for line in cmds)
    assert [mode for mode, _, _ in blocks][:2] == ['parse', 'run']
    assert DEMO_TRAINING in text.splitlines(), 'tests/helpers.py DEMO_TRAINING must be the README training command'
    for needed in ('uiqa-score datasets/demo/256x192 -a quality,look,feel', 'scripts/make_tiny_clip.py',
                   'uiqa_plugin/train.py -opt options/demo/uiqa_demo.yml', 'uiqa-profile radar --table',
                   'uiqa-profile evaluate', 'uiqa-profile report'):
        assert needed in text, needed
    assert commands('a \\\n    b  # note\n\n# only a comment\nc\n') == ['a b', 'c']


@pytest.mark.slow
def test_readme_commands_and_outputs(sandbox, demo_training):
    cwd, env = sandbox
    logs = []
    for mode, lines, documented in readme_blocks():
        for line in lines:
            if line == DEMO_TRAINING:  # run once, shared with test_training (conftest.py, demo_training)
                root, log = demo_training
                for name in set(os.listdir(root)) - {'scripts', 'options', 'uiqa_plugin', 'datasets'}:
                    os.symlink(root / name, cwd / name)  # experiments/, tb_logger/
                logs.append((line, log))
                continue
            words = shlex.split(line)
            if words[0] in entry_points() and mode == 'parse':
                tool_parser(words[0]).parse_args(words[1:])  # SystemExit on an unknown or bad argument
                continue
            if words[0] in entry_points() and mode == 'tiny-clip' and scores_clip(words[0], words[1:]):
                line = f'{line} {" ".join(TINY_FLAGS)} --no-progress'
            logs.append((line, run_command(line, cwd, env)))
        if documented:
            check_documented_output(documented, logs[-1][1])

    # Claims of the text around the blocks: the paper and ensemble tables match per attribute, and a
    # report from the tiny (random) CLIP says so in a banner.
    radar_log = next(log for line, log in logs if 'radar --table' in line)
    assert 'matched by attribute: aesthetic@ensemble as aesthetic' in radar_log
    assert len(os.listdir(cwd / 'compare')) == len(os.listdir(cwd / 'charts')) == 2 * 16  # coffee_*, png + svg
    assert '[MEANINGLESS SCORES]' in (cwd / 'report.html').read_text(encoding='utf-8')

    # What the commands wrote into the working folder is ignored by git (.gitignore), so that a
    # user following the README does not commit it.
    if shutil.which('git') and osp.exists(osp.join(REPO, '.git')):
        written = sorted(p + '/' if osp.isdir(cwd / p) else p for p in os.listdir(cwd)
                         if p not in ('scripts', 'options', 'uiqa_plugin', 'datasets'))
        written.append('datasets/demo/')
        assert {'experiments/', 'paper.csv', 'report.html'} <= set(written), written
        named = re.findall(r'--(?:out|out-dir|radar-dir|chart|scores-out) (\S+)', '\n'.join(
            line for _, lines, _ in readme_blocks() for line in lines))
        assert 'scores.csv' in named  # the quick start's, only parsed here
        written = sorted(set(written) | {n for n in named if not n.startswith(('/', 'datasets/'))})
        check = subprocess.run(['git', 'check-ignore', '--no-index', *written], cwd=REPO, capture_output=True,
                               text=True)
        assert sorted(check.stdout.split()) == sorted(written), check.stdout


def test_ci_runs_the_readme_install_and_test_commands():
    """.ci/run ends with exactly the two commands of the README's "Install and test" block."""
    text = open(README, encoding='utf-8').read()
    section = text[text.index('## Install and test'):]
    block = commands(re.search(r'```bash\n(.*?)```', section, re.S).group(1))
    assert len(block) == 2 and block[0].startswith('pip install') and 'pytest' in block[1], block
    with open(osp.join(REPO, '.ci', 'run'), encoding='utf-8') as f:
        ci = [line.strip() for line in f if line.strip() and not line.lstrip().startswith('#')]
    assert ci[-2:] == block, ci[-2:]


def test_gitignore_covers_every_file_the_readme_writes():
    """Outputs the README's commands name (``--out``, ``--json``, ...) and the folders the demo scripts
    write by default are ignored by git, whether or not the command runs in the test."""
    bash = '\n'.join(re.findall(r'```bash\n(.*?)```', open(README, encoding='utf-8').read(), re.S))
    named = set(re.findall(r'--(?:out|out-dir|radar-dir|chart|scores-out|json) ([\w./-]+)', bash))
    assert {'scores.csv', 'score.json', 'report.html'} <= named, named
    # the user's own data (KonIQ) is theirs to ignore; the demo scripts' outputs are ours
    written = sorted(n for n in named if not n.startswith(('/', 'datasets/koniq10k/')))
    written += ['datasets/demo/', 'datasets/demo_sr/']  # make_demo_dataset.py, make_sr_demo.py defaults
    assert 'datasets/demo_sr/' in bash and 'datasets/demo/' in bash
    if not (shutil.which('git') and osp.exists(osp.join(REPO, '.git'))):
        pytest.skip('needs git and a checkout')
    check = subprocess.run(['git', 'check-ignore', '--no-index', *written], cwd=REPO, capture_output=True, text=True)
    assert sorted(check.stdout.split()) == sorted(written), sorted(set(written) - set(check.stdout.split()))


def check_documented_output(documented, log):
    lines = [line for line in documented.splitlines() if line.strip() and line.strip() != '...']
    if lines[0].startswith('path '):  # a score table: same columns, the rows shown, values to 0.002
        printed = {row.split()[0]: row.split()[1:] for row in log.splitlines() if row.strip()}
        assert printed.get('path') == lines[0].split()[1:], log[-2000:]
        for row in lines[1:]:
            path, *values = row.split()
            assert path in printed, (path, log[-2000:])
            assert [float(v) for v in printed[path]] == pytest.approx([float(v) for v in values], abs=2e-3), path
        return
    # a training log: the demo recipe is stable (README, "How reproducible the demo is"; measured by
    # scripts/demo_spread.py over thread counts and CPU kernels): the loss at iteration 50 agrees to 4 digits,
    # the best and final validation SRCC to DEMO_SRCC_SPREAD
    loss = float(re.search(r'iter:\s+50,.* l_mse: ([0-9.e+-]+)', documented).group(1))
    ran = re.search(r'iter:\s+50,.* l_mse: ([0-9.e+-]+)', log)
    assert ran and float(ran.group(1)) == pytest.approx(loss, rel=1e-4), log[-3000:]
    assert 'Validation demo_val (32 images)' in log
    pattern = r'# srcc: (-?[0-9.]+)\tBest: (-?[0-9.]+)'
    final, best = (float(v) for v in re.findall(pattern, documented)[-1])
    assert final == pytest.approx(DEMO_FINAL_SRCC, abs=1e-4)  # the README and tests/test_training.py agree
    ran_final, ran_best = (float(v) for v in re.findall(pattern, log)[-1])
    assert ran_final == pytest.approx(final, abs=DEMO_SRCC_SPREAD), log[-3000:]
    assert ran_best == pytest.approx(best, abs=DEMO_SRCC_SPREAD), log[-3000:]


def test_layout_table_matches_the_tree():
    """Every module and package directly under uiqa_plugin/ is named in the README's layout table, and every
    uiqa_plugin path the table names exists."""
    with open(README, encoding='utf-8') as f:
        text = f.read()
    table = text[text.index('## Layout'):text.index('## Known limits')]
    named = set()
    for cell in re.findall(r'^\| ([^|]+) \|', table, flags=re.M):
        paths = re.findall(r'`([^`]+)`', cell)
        folder = ''
        for path in paths:
            if path.startswith('uiqa_plugin/'):
                folder = osp.dirname(path.rstrip('/'))
                named.add(path.rstrip('/'))
            elif folder:  # `metrics/`, `test.py` after a first full path: relative to its folder
                named.add(osp.join(folder, path.rstrip('/')))
    package = osp.join(REPO, 'uiqa_plugin')
    present = {f'uiqa_plugin/{name}' for name in os.listdir(package)
               if (name.endswith('.py') and name != '__init__.py')
               or osp.isfile(osp.join(package, name, '__init__.py'))}
    assert sorted(present - named) == [], 'modules the layout table does not name'
    assert sorted(named - present) == [], 'paths the layout table names that do not exist'
