"""Command line: ``python -m klviz table [--n N] [--seed S] [--gaps 0.1 1]`` and ``python -m klviz diagnose FILE``.

``diagnose`` reads an ``.npz`` file with arrays ``logp`` and ``ref_logp`` (log-probabilities of the sampled
tokens under the policy and the reference; any shape, padding removed) and optionally ``old_logp`` (under
the rollout policy), and prints :func:`klviz.diagnose`'s report.
"""

from __future__ import annotations

import argparse
import math
import sys

_MAX_SAMPLES = 2**63 - 1


def _sample_count(text: str) -> int:
    """An integer number of samples, written as 10000000 or 1e7, from 2 to 2^63 - 1."""
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)  # "1e8"
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number of samples such as 1000000 or 1e7, got {text!r}") from None
        if not (math.isfinite(number) and number.is_integer()):  # "2.5e1", "1e400" (inf), "nan"
            raise argparse.ArgumentTypeError(f"must be a whole number of samples, got {text!r}") from None
        value = int(number)
    if not 2 <= value <= _MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"must be between 2 and 2^63 - 1, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def _gap(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if value == 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite and non-zero (KL = 0 leaves bias/true undefined), got {text}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m klviz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser(
        "table",
        help="reproduce the article's table: q = N(0,1), p = N(gap,1), Monte Carlo beside exact values",
    )
    table.add_argument("--n", type=_sample_count, default=10**7, metavar="N",
                       help="samples per gap (default 10^7; 1e8 works)")
    table.add_argument("--seed", type=_seed, default=0, metavar="S", help="random seed, >= 0 (default 0)")
    table.add_argument("--gaps", type=_gap, nargs="+", default=[0.1, 1.0], metavar="GAP",
                       help="mean gaps (default 0.1 1)")
    table.add_argument("--workers", type=_workers, default=None, metavar="W", help="threads (default: up to 2)")
    diagnose = commands.add_parser(
        "diagnose",
        help="report on logged per-token log-probs (.npz with logp, ref_logp and optionally old_logp)",
    )
    diagnose.add_argument("file", metavar="FILE", help=".npz file with arrays logp, ref_logp [, old_logp]")
    args = parser.parse_args(argv)

    if args.command == "diagnose":
        sys.stdout.write(_diagnose_file(args.file, diagnose))
        return 0

    from klviz.experiment import seed_table

    try:
        result = seed_table(gaps=args.gaps, n=args.n, rng=args.seed, workers=args.workers)
    except (TypeError, ValueError) as error:
        table.error(str(error))
    sys.stdout.write(result.to_text())
    return 0


def _diagnose_file(path: str, parser: argparse.ArgumentParser) -> str:
    """The text report for an .npz file (argparse-style errors for an unreadable file or missing arrays)."""
    import numpy as np

    from klviz.trainers import diagnose

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        parser.error(f"cannot read {path!r} as an .npz file: {error}")
    missing = [name for name in ("logp", "ref_logp") if name not in arrays]
    if missing:
        parser.error(f"{path!r} must hold arrays 'logp' and 'ref_logp' (and optionally 'old_logp'); "
                     f"missing {missing}, found {sorted(arrays)}")
    try:
        report = diagnose(arrays["logp"], arrays["ref_logp"], old_logp=arrays.get("old_logp"))
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    return report.to_text()


if __name__ == "__main__":
    raise SystemExit(main())
