"""Every run ends with a plot of its curves (validation PSNR and loss, all stages, stage boundaries, bicubic)
beside stages.json and names it; without matplotlib it ends normally and says how to get it."""
import json
import sys

from helpers import edit, run_module, tiny_options

from rlfn_arch.training.curves import read_curves


def _run(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 2, 1))
    edit(yml, lambda o: o['val'].update(val_freq=1))
    return yml, exp


def test_the_run_writes_and_names_its_plot(tmp_path):
    yml, exp = _run(tmp_path)
    proc = run_module('rlfn_arch.train', '-opt', yml)
    plot = exp / 'training_curves.png'
    assert f'training curves: {plot}' in proc.stdout
    assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and plot.stat().st_size > 10_000
    losses, vals = read_curves(exp / 's2' / 'curves.jsonl')
    assert sorted(losses) == [1, 2] and 2 in vals and 'psnr' in vals[2]


def test_without_matplotlib_the_run_ends_normally_and_says_how(tmp_path, monkeypatch):
    yml, exp = _run(tmp_path)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import matplotlib raises ImportError
    monkeypatch.setitem(sys.modules, 'matplotlib.figure', None)
    monkeypatch.setitem(sys.modules, 'matplotlib.backends.backend_agg', None)
    proc = run_module('rlfn_arch.train', '-opt', yml)
    assert 'rlfn-basicsr[plot]' in proc.stdout and not (exp / 'training_curves.png').exists()
    assert json.loads((exp / 'stages.json').read_text())['stages']['s3']['status'] == 'done'


def test_a_line_cut_by_a_kill_is_skipped_and_a_resumed_iteration_overwrites(tmp_path):
    f = tmp_path / 'curves.jsonl'
    f.write_text('{"iter": 1, "loss": {"l_pix": 0.5}}\n{"iter": 2, "loss": {"l_pix": 0.4}}\n{"iter": 2, "lo'
                 '\n{"iter": 2, "loss": {"l_pix": 0.3}}\n{"iter": 2, "val": "v", "metrics": {"psnr": 30.0}}\n')
    losses, vals = read_curves(f)
    assert losses == {1: {'l_pix': 0.5}, 2: {'l_pix': 0.3}} and vals == {2: {'psnr': 30.0}}
