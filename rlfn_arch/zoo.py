"""The models that ship with rlfn-basicsr: ``python -m rlfn_arch.zoo`` (``rlfn models``).

Lists each model's name, scale, size, quality (PSNR-Y / SSIM-Y on the benchmark sets of its card) and licence;
use one by name: ``python -m rlfn_arch.infer -i photos -o out --model rlfn_s_x3``. ``--card NAME`` prints a
model's whole card.
"""
import argparse
import json
import sys

from rlfn_arch.archs.zoo import model_cards
from rlfn_arch.utils.report import format_table


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.zoo', description=__doc__.split('\n\n')[0])
    p.add_argument('--card', default=None, help='print the whole model card of this model (JSON)')
    args = p.parse_args(argv)
    cards = model_cards()
    if args.card:
        if args.card not in cards:
            print(f'error: no model {args.card!r} ships (available: {", ".join(cards)})', file=sys.stderr)
            return 2
        print(json.dumps(cards[args.card], indent=1))
        return 0
    rows = []
    for name, c in cards.items():
        quality = ', '.join(f'{s} {m["psnr"]:.2f}/{m["ssim"]:.4f}' for s, m in c['metrics'].items())
        rows.append((name, c['architecture'], f'x{c["scale"]}', f'{c["resources"][0]["size"] / 2**20:.1f} MB',
                     quality, c['license']))
    print(format_table(rows, ('name', 'architecture', 'scale', 'size', 'PSNR-Y/SSIM-Y', 'licence')))
    print('use one: python -m rlfn_arch.infer -i IN -o OUT --model NAME (also test, export, quantize, benchmark, '
          'compare)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
