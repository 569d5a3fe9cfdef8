"""Run notebooks top to bottom in a fresh kernel and save them with their outputs (what CI's nbval compares).

    python tools/execute_notebooks.py                      # every notebook in notebooks/
    python tools/execute_notebooks.py notebooks/03_*.ipynb # some of them

Each notebook runs in its own directory (so relative paths such as figures/ resolve as in JupyterLab),
with a fresh ``python3`` kernel; the run time of each is printed. A failing cell stops that notebook
with its traceback and a non-zero exit status; nothing is written for it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, timeout: int) -> float:
    notebook = nbformat.read(path, as_version=4)
    # No per-cell timestamps: a re-run that changes nothing then changes nothing in git either.
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(notebook, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    status = 0
    for path in paths:
        try:
            seconds = execute(path.resolve(), args.timeout)
        except Exception as error:  # report and go on with the others
            print(f"FAILED {path}: {type(error).__name__}: {error}", file=sys.stderr)
            status = 1
            continue
        size = path.stat().st_size / 1e6
        print(f"{path}: {seconds:.1f} s, {size:.2f} MB")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
