"""Finding image files: folders walked cycle-safe, each real file once.

Symbolic links are followed, to files and to folders, but every folder (by device and inode)
is entered once and every real file (by resolved path) is listed once, under the path that
reaches it without a link when there is one. So a link to a parent folder, or two links
forming cycles, cannot repeat images or make the search run forever. Names starting with
'.' are skipped, as ``glob`` does. Links whose target is missing are reported by name.
"""
import fnmatch
import glob
import os
import os.path as osp
from collections import deque

from uiqa_plugin.data.image_io import is_image_file


def unique_real_files(paths):
    """``paths`` without the ones that name a file listed before (same real path after links and ``./``)."""
    seen, unique = set(), []
    for path in paths:
        real = osp.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def _identity(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def walk_files(folder, recursive=True, accept=is_image_file):
    """Files under ``folder`` that ``accept(path)``, sorted by path, each real file once.

    Returns (paths, problems): problems are (path, message) for links whose target is missing
    or loops and for folders that cannot be listed.
    """
    found, problems, entered = [], [], set()
    real_dirs, linked_dirs = deque([os.fspath(folder)]), []
    order = 0
    while real_dirs or linked_dirs:
        if not real_dirs:  # folders reached only through links come after every real one
            real_dirs.extend(sorted(linked_dirs))
            linked_dirs = []
        current = real_dirs.popleft()
        try:
            key = _identity(current)
            if key in entered:
                continue
            entered.add(key)
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            problems.append((current, f'cannot list folder ({exc.strerror or exc})'))
            continue
        for entry in entries:
            if entry.name.startswith('.'):
                continue
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
                is_link = entry.is_symlink()
            except OSError:  # a link loop ("too many levels of symbolic links")
                is_dir = is_file = False
                is_link = True
            if is_dir:
                if recursive:
                    (linked_dirs if is_link else real_dirs).append(entry.path)
            elif is_file:
                if accept(entry.path):
                    found.append((is_link, order, entry.path))
                    order += 1
            elif is_link and accept(entry.path):
                problems.append((entry.path, 'broken symbolic link (its target is missing or loops)'))
    found.sort()  # files reached without a link first, then in discovery order
    return sorted(unique_real_files(path for _, _, path in found)), problems


def _match_parts(pattern, parts):
    """Whether path components ``parts`` match glob components ``pattern`` ('**' = any number of folders)."""
    if not pattern:
        return not parts
    if pattern[0] == '**':
        return any(_match_parts(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and not (parts[0].startswith('.') and not pattern[0].startswith('.')) \
        and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match_parts(pattern[1:], parts[1:])


def glob_files(pattern):
    """Files matching a glob pattern, sorted. '**' matches any depth, through the cycle-safe walk."""
    if '**' not in pattern:
        return sorted(p for p in glob.glob(pattern) if osp.isfile(p)), []
    parts = pattern.split(os.sep)
    fixed = 0
    while fixed < len(parts) and not glob.has_magic(parts[fixed]):
        fixed += 1
    root = os.sep.join(parts[:fixed]) or ('/' if pattern.startswith(os.sep) else '.')
    if not osp.isdir(root):
        return [], []
    rest = [p for p in parts[fixed:] if p]
    files, problems = walk_files(root, accept=lambda p: True)
    matched = []
    for path in files:
        rel = osp.relpath(path, root)
        if _match_parts(rest, rel.split(os.sep)):
            matched.append(path if fixed else rel)  # a pattern starting with '**' gives relative paths, as glob
    return sorted(matched), problems


def collect_image_paths(inputs, recursive=True):
    """Expand files, folders and glob patterns into a sorted-per-input list of image paths.

    Folders are walked following symbolic links, cycle-safe: each real file is listed once,
    under the first path that reaches it (see ``walk_files``).
    Returns (paths, problems): ``problems`` lists (input, message) for inputs that matched
    nothing, folders that cannot be listed and links whose target is missing.
    """
    paths, problems = [], []
    for item in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs):
        item = os.fspath(item)
        if osp.isdir(item):
            found, trouble = walk_files(item, recursive=recursive)
            problems.extend(trouble)
            if not found and not trouble:
                problems.append((item, 'folder holds no image files'))
            paths.extend(found)
        elif osp.isfile(item):
            paths.append(item)  # named explicitly: try it whatever its suffix
        elif glob.has_magic(item):
            found, trouble = glob_files(item)
            problems.extend(trouble)
            if not found:
                problems.append((item, 'pattern matched no files'))
            paths.extend(found)
        elif osp.islink(item):
            problems.append((item, 'broken symbolic link (its target is missing or loops)'))
        else:
            problems.append((item, 'no such file or folder'))
    return unique_real_files(paths), problems  # one row per real file, whichever input reached it first
