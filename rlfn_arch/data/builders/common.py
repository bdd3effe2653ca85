"""What the builders share: the error type, the process pool and the summary it fills."""
import os
import sys
import time

from tqdm import tqdm

from rlfn_arch.data.image_io import list_images
from rlfn_arch.utils.runtime import default_workers, worker_pool  # noqa: F401  (re-exported)

from basicsr.utils import sizeof_fmt


class PrepareError(ValueError):
    """Input that a preparation command cannot use (a bad path, no usable image, bad arguments)."""


class Summary:
    """Counts and problems of one command, printed at the end. ``failed``: inputs that could not be
    used (the command exits non-zero when there is any); ``skipped``: files that are not images."""

    def __init__(self, what):
        self.what, self.t0 = what, time.time()
        self.images = self.outputs = self.bytes = 0
        self.skipped, self.failed, self.notes = [], [], []

    def add_file(self, path):
        self.outputs += 1
        self.bytes += os.path.getsize(path)

    def finish(self):
        """Stop the clock (the builder calls it when its work is done). Returns self."""
        self.seconds = time.time() - self.t0
        return self

    def lines(self):
        """The summary as text lines (what the command line prints)."""
        seconds = getattr(self, 'seconds', time.time() - self.t0)
        out = [f'{self.what}: {self.images} images in, {self.outputs} files out, {sizeof_fmt(self.bytes)}, '
               f'{seconds:.1f} s, {len(self.failed)} failed, {len(self.skipped)} skipped']
        out += [f'  failed: {s}' for s in self.failed] + [f'  skipped: {s}' for s in self.skipped]
        return out + [f'  note: {n}' for n in self.notes]


def pool_map(fn, items, workers, desc):
    bar = dict(total=len(items), desc=desc, unit='img', disable=not sys.stderr.isatty())
    if workers <= 1 or len(items) <= 1:
        yield from tqdm(map(fn, items), **bar)
        return
    with worker_pool(workers) as pool:
        yield from tqdm(pool.imap(fn, items), **bar)


def map_folder(what, in_dir, out_dir, fn, workers):
    """Apply ``fn(name) -> (name, written, notes, error)`` to every image of ``in_dir`` in a process
    pool; collect the summary (non-image files and failed images are listed as skipped)."""
    names, others = list_images(in_dir)
    summ = Summary(f'{what} {in_dir} -> {out_dir}')
    summ.skipped += [f'{os.path.join(in_dir, o)}: not an image file' for o in others]
    for _name, written, notes, err in pool_map(fn, names, workers or default_workers(), what):
        summ.images += 1
        summ.notes += notes
        for p in written:
            summ.add_file(p)
        if err:
            summ.failed.append(err)
    return summ.finish()
