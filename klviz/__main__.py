"""Command line: ``python -m klviz table [--n N] [--seed S] [--gaps 0.1 1]``."""

from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        number = float(text)  # "1e8"; a ValueError here is reported by argparse as an invalid value
        if not number.is_integer():  # "2.5e1", "1e400" (inf), "nan": not a whole number of samples
            raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text}") from None
        value = int(number)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m klviz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser(
        "table",
        help="reproduce the article's table: q = N(0,1), p = N(gap,1), Monte Carlo beside exact values",
    )
    table.add_argument("--n", type=_positive_int, default=10**7, help="samples per gap (default 10^7; 1e8 works)")
    table.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    table.add_argument("--gaps", type=float, nargs="+", default=[0.1, 1.0], help="mean gaps (default 0.1 1)")
    table.add_argument("--workers", type=int, default=None, help="threads (default: up to 2)")
    args = parser.parse_args(argv)

    from klviz.experiment import seed_table

    try:
        result = seed_table(gaps=args.gaps, n=args.n, rng=args.seed, workers=args.workers)
    except ValueError as error:
        parser.error(str(error))
    sys.stdout.write(result.to_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
