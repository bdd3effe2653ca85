"""The BasicSR seam: every basicsr name it touches exists in the installed basicsr (one test, one message
when an upgrade renames one), and a swap is undone also when the pipeline raises."""
import importlib

import pytest

from rlfn_arch import basicsr_seam


def test_every_basicsr_name_the_seam_touches_exists_in_the_installed_basicsr():
    import basicsr
    missing = [f'{mod}.{name}' for mod, names in basicsr_seam.TOUCHED.items()
               for name in names if not hasattr(importlib.import_module(mod), name)]
    assert not missing, (f'basicsr {getattr(basicsr, "__version__", "?")} lacks {missing}: rlfn_arch.basicsr_seam '
                         'was written for basicsr 1.4.2; update the seam for this release')


def test_a_swap_is_undone_when_the_body_raises():
    import basicsr.train as bt
    original = bt.build_model
    with pytest.raises(RuntimeError):
        with basicsr_seam.swapped(bt, build_model=lambda o: None):
            assert bt.build_model is not original
            raise RuntimeError('boom')
    assert bt.build_model is original


def test_swapping_a_name_basicsr_does_not_have_fails_loudly():
    import basicsr.train as bt
    with pytest.raises(AttributeError, match='not supported'):
        basicsr_seam.swapped(bt, no_such_function=None)


def test_the_lmdb_progress_bar_is_quiet_only_inside_the_context():
    from basicsr.utils import lmdb_util
    original = lmdb_util.tqdm
    with basicsr_seam.quiet_lmdb_progress(True):
        assert lmdb_util.tqdm is not original and lmdb_util.tqdm(range(3)).disable
    assert lmdb_util.tqdm is original
