"""The saved notebooks as files: what GitHub, the site and nbval read before any kernel runs.

Every notebook is saved from one clean top-to-bottom run (execution counts 1, 2, 3, ...), with no error
outputs, under 2 MB, with one kernelspec for the whole collection, and without machine-local paths in
its outputs.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LOCAL_PATH = re.compile(r"(/tmp/|/root/|/home/\w+/|/work/|site-packages/)")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_saved_from_one_clean_run(path):
    cells = [c for c in _load(path)["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c.get("execution_count") for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"execution counts {counts}"
    errors = [o.get("ename") for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_kernelspec_and_small(path):
    assert _load(path)["metadata"]["kernelspec"] == KERNELSPEC
    assert path.stat().st_size < 2_000_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_machine_local_paths_in_outputs(path):
    for cell in _load(path)["cells"]:
        for output in cell.get("outputs", []):
            text = json.dumps(output.get("text", "")) + json.dumps(output.get("data", {}).get("text/plain", ""))
            assert not LOCAL_PATH.search(text), f"cell {cell.get('id')}: {LOCAL_PATH.search(text).group(0)}"
