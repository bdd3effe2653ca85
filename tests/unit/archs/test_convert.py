import os

import pytest
import torch
from helpers import OFFICIAL, run_module, shared_path

from rlfn_arch.archs import RLFN
from rlfn_arch.archs.rlfn_weights import convert
from rlfn_arch.utils.checkpoint import CheckpointError, safe_load

EXPECTED = {  # from ../shared/README.md
    'rlfn_x2': (2, 52, 52, 6, 526_856), 'rlfn_x4': (4, 52, 52, 6, 543_740), 'rlfn_s_x2': (2, 48, 48, 6, 454_620),
    'rlfn_s_x4': (4, 48, 48, 6, 470_208), 'rlfn_ntire_x4': (4, 46, 48, 4, 317_218),
    'team04_rlfn': (4, 46, 48, 4, 317_218)}


@pytest.mark.parametrize('name', OFFICIAL)
def test_official_weights_convert_with_parity(name, tmp_path):
    src = shared_path('weights', f'{name}.pth')
    ref = torch.load(shared_path('reference', 'official_rlfn_io.pt'), map_location='cpu', weights_only=True)
    out = tmp_path / f'{name}.pth'
    proc = run_module('rlfn_arch.convert', '--input', src, '--output', out)
    assert 'network_g:' in proc.stdout and 'type: RLFN' in proc.stdout
    scale, feat, mid, blocks, params = EXPECTED[name]
    net = RLFN(upscale=scale, feature_channels=feat, mid_channels=mid, num_blocks=blocks).eval()
    net.load_state_dict(safe_load(out)['params'], strict=True)
    assert sum(p.numel() for p in net.parameters()) == params
    with torch.no_grad():
        y = net(ref['input'])
    assert (y - ref['out_255'][name] / 255).abs().max().item() <= 1e-5


def test_refuses_a_state_dict_that_is_not_rlfn(tmp_path):
    bad = tmp_path / 'edsr.pth'
    torch.save({'head.0.weight': torch.zeros(64, 3, 3, 3), 'tail.0.weight': torch.zeros(3, 64, 3, 3)}, bad)
    with pytest.raises(CheckpointError, match=r'edsr.pth: not an RLFN checkpoint: missing conv_1.weight'):
        convert(str(bad))
    proc = run_module('rlfn_arch.convert', '--input', bad, '--output', tmp_path / 'o.pth', check=False)
    assert proc.returncode == 2 and 'not an RLFN checkpoint' in proc.stderr
    assert not (tmp_path / 'o.pth').exists()


def test_refuses_files_that_are_not_checkpoints(tmp_path):
    txt = tmp_path / 'notes.pth'
    txt.write_text('hello')
    with pytest.raises(CheckpointError, match='notes.pth: cannot be loaded safely'):
        convert(str(txt))


class Evil:

    def __reduce__(self):
        return (os.system, ('touch evil_marker',))


def test_never_unpickles_arbitrary_objects(tmp_path, monkeypatch):
    f = tmp_path / 'evil.pth'
    torch.save({'conv_1.weight': Evil()}, f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match='could run code') as e:
        convert(str(f))
    assert 'weights_only' not in str(e.value)  # never a hint at the unsafe load
    assert not (tmp_path / 'evil_marker').exists()


@pytest.mark.parametrize('preset', ['rlfn', 'rlfn_s', 'rlfn_ntire'])
def test_every_preset_scale_and_channel_count_round_trips(tmp_path, preset):
    """spandrel's assert_loads_correctly pattern: build, save, detect the configuration from the state dict
    alone, load strictly, and get the same configuration and the same outputs."""
    from rlfn_arch.archs import PRESETS, RLFN, detect_config, load_rlfn
    for scale in (2, 3, 4):
        for channels in (1, 3):
            cfg = dict(upscale=scale, in_channels=channels, out_channels=channels, **PRESETS[preset])
            torch.manual_seed(scale * 10 + channels)
            net = RLFN(**cfg).eval()
            path = tmp_path / f'{preset}_x{scale}_c{channels}.pth'
            torch.save({'params': net.state_dict()}, path)
            assert detect_config(net.state_dict()) == cfg
            _, found, loaded = load_rlfn(str(path))
            assert found == cfg
            x = torch.rand(1, channels, 17, 19)
            with torch.no_grad():
                assert torch.equal(loaded.eval()(x), net(x))


def test_convert_creates_the_output_folder(tmp_path):
    """The README converts into weights/, which a fresh clone does not have."""
    from rlfn_arch.archs import RLFN
    torch.save(RLFN(upscale=2, feature_channels=8, mid_channels=8, num_blocks=1).state_dict(), tmp_path / 'in.pth')
    out = tmp_path / 'weights' / 'sub' / 'out.pth'
    run_module('rlfn_arch.convert', '--input', tmp_path / 'in.pth', '--output', out)
    assert set(torch.load(out, weights_only=True)) == {'params'}
