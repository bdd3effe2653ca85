"""The ``rlfn`` console command: ``rlfn <tool> [arguments]`` runs ``python -m rlfn_arch.<tool>``.

    rlfn train -opt options/train/RLFN_S_x4_quickstart.yml
    rlfn infer -i photo.png -o out/ --model_path weights/RLFN_S_x4.pth

Each tool keeps its own ``--help``, arguments and exit codes; ``python -m rlfn_arch.<tool>`` works the
same (BasicSR users' habit, and what the README shows).
"""
import importlib
import sys

TOOLS = {
    'train': 'multi-stage warm-start training with BasicSR\'s trainer',
    'test': 'BasicSR test pipeline (PSNR/SSIM on benchmark sets)',
    'prepare': 'datasets: bicubic LR, sub-images, LMDBs, DF2K, the sample set, checks',
    'infer': 'upscale images or folders',
    'export': 'ONNX export and check',
    'quantize': 'int8 ONNX model',
    'convert': 'official RLFN weights -> BasicSR checkpoints',
    'benchmark': 'NTIRE-style params/FLOPs/activations/runtime',
    'compare': 'side-by-side crops with PSNR',
    'models': 'the models that ship with the package (python -m rlfn_arch.zoo)',
}
#: Tools whose module has another name (``rlfn_arch.models`` is the package of BasicSR models).
MODULES = {'models': 'zoo'}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help') or argv[0] not in TOOLS:
        print('usage: rlfn <tool> [arguments]   (rlfn <tool> --help for each)\n\ntools:')
        for name, what in TOOLS.items():
            print(f'  {name:<10} {what}')
        if argv and argv[0] not in ('-h', '--help'):
            print(f'\nerror: unknown tool {argv[0]!r}', file=sys.stderr)
            return 2
        return 0 if argv else 2
    return importlib.import_module(f'rlfn_arch.{MODULES.get(argv[0], argv[0])}').main(argv[1:])


if __name__ == '__main__':
    sys.exit(main())
