"""File-system safety: one atomic writer, guarded deletes and renames, and the experiment lock.

Every file this project writes goes through :func:`atomic_write` (temporary file in the same folder,
fsync, rename over the target, temporary removed on any error), so a kill or a full disk never leaves
a partial file where a good one was. Every destructive operation (delete, rename) first proves with
:func:`require_inside` that its real path lies strictly inside the folder the run owns.
"""
import datetime
import os
import re
import shutil
import socket
import tempfile

try:  # POSIX only; elsewhere the lock degrades to a check of the lock file's contents
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: Temporary files made by :func:`atomic_write`: ``.<name>.<8 random characters of mkstemp>.rlfn-tmp`` beside
#: the target (the suffix is this project's own, so a user's ``.my.draft.tmp`` never matches).
TMP_SUFFIX = '.rlfn-tmp'
TMP_PATTERN = re.compile(r'^\..+\.[a-z0-9_]{8}' + re.escape(TMP_SUFFIX) + '$')


class WriteError(OSError):
    """A file could not be written; ``path`` is the target. Any previous file at ``path`` is intact."""

    def __init__(self, path, errno_, reason):
        super().__init__(errno_, f'cannot write {path}: {reason}')
        self.path = path


def atomic_write(path, write, binary=True):
    """Write ``path`` atomically: ``write(f)`` fills a temporary file in the same folder, which is
    flushed, fsynced and renamed over ``path``.

    Args:
        path (str): the target file.
        write (callable): called with the open temporary file.
        binary (bool): open the temporary file in binary mode. Default: True.

    Raises:
        WriteError: the file cannot be written (disk full, read-only folder, parent is a file, a
            ...); the previous ``path``, if any,
            is untouched and no temporary file is left behind.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix=TMP_SUFFIX, dir=folder)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would respect the umask
        with os.fdopen(fd, 'wb' if binary else 'w') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        if isinstance(e, WriteError):
            raise
        raise WriteError(path, e.errno, e.strerror or str(e)) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _umask():
    """The process umask: from /proc on Linux (no race with other threads), else by setting it and
    putting it back (POSIX has no plain getter)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_tmp(folder):
    """Delete the temporary files :func:`atomic_write` left in ``folder`` when a process was killed
    mid-write. Only names of that pattern, only regular files directly in ``folder``. Returns them."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        full = os.path.join(folder, name)
        if TMP_PATTERN.match(name) and os.path.isfile(full) and not os.path.islink(full):
            os.unlink(full)
            removed.append(full)
    return removed


class UnsafePathError(ValueError):
    """A destructive operation was asked for on a path outside the folder the run owns."""


def same_file(a, b):
    """True when ``a`` and ``b`` are one file: the same real path (symbolic links followed) or the same inode
    (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_output(path, inputs=(), overwrite=False, flag='--overwrite'):
    """The rule of every entry point for a file it writes: never an input, and never an existing file unless
    ``overwrite`` says so (the caller then replaces it atomically).

    Args:
        path (str): the output file.
        inputs (iterable[str | None]): the files the command reads (None entries are ignored).
        overwrite (bool): the user allowed replacing an existing ``path``.
        flag (str): the option that allows it, for the message.

    Raises:
        UnsafePathError: ``path`` is an input (same real path or inode), or exists and ``overwrite`` is False;
            nothing has been written.
    """
    for src in inputs:
        if src and os.path.exists(src) and same_file(path, src):
            raise UnsafePathError(f'{path} is the input {src}; refusing to overwrite it (nothing was written). '
                                  'Write to another file')
    if os.path.lexists(path) and not overwrite:
        what = 'a folder' if os.path.isdir(path) else 'a file'
        raise UnsafePathError(f'{path} exists ({what} this command did not create); nothing was written. Pass {flag} '
                              'to replace it, or choose another output')
    if os.path.isdir(path):
        raise UnsafePathError(f'{path} is a folder; expected a file name to write (nothing was written)')


def _real(path, follow=True):
    """The real path; with ``follow=False`` a final symbolic link is not followed (its folder is)."""
    if follow:
        return os.path.realpath(path)
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def is_inside(path, owner, follow=True):
    """True when the real path of ``path`` lies strictly inside the real path of ``owner``."""
    real, own = _real(path, follow), os.path.realpath(owner)
    return real != own and os.path.commonpath([real, own]) == own


def require_inside(path, owner, what, follow=True):
    """Raise :class:`UnsafePathError` unless ``path`` is strictly inside ``owner`` (real paths)."""
    if not is_inside(path, owner, follow):
        raise UnsafePathError(f'refusing to {what} {path}: it is not inside {owner}, the folder this run owns')


def require_real_folder_inside(path, root, what):
    """Raise :class:`UnsafePathError` unless ``path`` is inside the (already resolved) ``root`` and is
    not a symbolic link: a linked experiment or stage folder would make its target's files look like the
    run's own to every later delete and rename."""
    if os.path.islink(path):
        target = os.path.realpath(path)
        if not is_inside(target, root):
            raise UnsafePathError(f'refusing to {what} {path}: it is a symbolic link to {target}, which is not inside '
                                  f'{root}, the folder this run owns')
        raise UnsafePathError(f'refusing to {what} {path}: it is a symbolic link (to {target}); experiment and stage '
                              f'folders must be real folders inside {root} (to train on another disk, link the whole '
                              'experiments folder or set path.root)')
    require_inside(path, root, what)


def remove_inside(path, owner):
    """Delete ``path`` (file, link or folder tree) after proving it is strictly inside ``owner``.
    A link is removed itself; its target is never followed."""
    if os.path.islink(path):
        require_inside(path, owner, 'delete', follow=False)
        os.unlink(path)
        return
    require_inside(path, owner, 'delete')
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def rename_inside(src, dst, owner):
    """``os.rename(src, dst)`` after proving both are strictly inside ``owner``; never over an
    existing ``dst``."""
    require_inside(src, owner, 'rename', follow=False)
    require_inside(dst, owner, 'rename to', follow=False)
    if os.path.lexists(dst):
        raise FileExistsError(f'refusing to rename {src} to {dst}: the target exists')
    os.rename(src, dst)


class LockedError(RuntimeError):
    """Another process holds the experiment's lock."""


class ExperimentLock:
    """An exclusive lock on one experiment: ``experiments/.<name>.lock`` (beside the experiment folder,
    so archiving the folder never moves the lock). Held with a POSIX record lock (``fcntl.lockf``) for the
    whole run; the OS releases it when the process dies (forked DataLoader workers do not hold it), so a
    killed run never blocks the next one. The file records the
    holder's PID, host and start time for the message a second run prints."""

    def __init__(self, experiments_dir, name):
        self.path = os.path.join(experiments_dir, f'.{name}.lock')
        self.name = name
        self.fd = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                # a POSIX record lock belongs to this process alone: DataLoader workers forked from it do not
                # inherit it (a flock would be shared with them and outlive a killed run while they wind down)
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 4096).decode('utf-8', 'replace').strip() or 'unknown process'
                os.close(fd)
                raise LockedError(f'experiment {self.name!r} is in use by another run ({holder}); lock file '
                                  f'{self.path}. Wait for it to finish, or give this run another name.')
        os.ftruncate(fd, 0)
        started = datetime.datetime.now().isoformat(timespec='seconds')
        os.write(fd, f'PID {os.getpid()} on host {socket.gethostname()}, started {started}\n'.encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
