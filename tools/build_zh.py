"""Build the Chinese edition: notebooks/zh/NN_*.ipynb from the English notebooks and the stored translations.

    python tools/build_zh.py            # write notebooks/zh/*.ipynb
    python tools/build_zh.py --check    # exit 1 (and list why) if a translation is missing or stale
    python tools/build_zh.py --stub NN  # add untranslated entries (English text, hash) for a notebook's new cells

Translations live in translations/zh/<notebook stem>.json, one entry per markdown cell, keyed by the cell's id:
``{"<cell id>": {"source_sha256": "<hash of the English source it translates>", "text": "<Chinese markdown>"}}``.
A Chinese notebook is the English one with the same code cells and saved outputs (nothing is re-executed) and
each markdown cell's source replaced by its translation; links to figures/ are rewritten to ../figures/. An
English markdown cell that changed after its translation is *stale* (its hash no longer matches): the build
refuses until the translation is updated (and its hash with it).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = NOTEBOOKS / "zh"
STORE = ROOT / "translations" / "zh"


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def english_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def translations(stem: str) -> dict:
    path = STORE / f"{stem}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def problems(notebook: dict, store: dict) -> list[str]:
    """Why a notebook cannot be built: markdown cells with no translation, or a stale one."""
    out = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        entry = store.get(cell.get("id"))
        if entry is None:
            out.append(f"cell {cell.get('id')}: no translation")
        elif entry.get("source_sha256") != source_hash(text):
            out.append(f"cell {cell.get('id')}: stale (the English changed after it was translated)")
        elif not entry.get("text", "").strip() or entry.get("untranslated"):
            out.append(f"cell {cell.get('id')}: not yet translated")
    return out


def _localise(text: str, translated: set[str]) -> str:
    """Relative links from notebooks/zh/: figures live one level up; another notebook is its zh twin when it has
    one (``translated``: the names of the notebooks that build), else the English notebook one level up."""
    text = re.sub(r"(\]\(|src=\")figures/", r"\1../figures/", text)
    return re.sub(r"\]\((\d\d_\w+\.ipynb)",
                  lambda m: m.group(0) if m.group(1) in translated else f"](../{m.group(1)}", text)


def build(notebook: dict, store: dict, translated: set[str]) -> dict:
    """The Chinese notebook: code cells and outputs as they are, markdown from the store."""
    out = copy.deepcopy(notebook)
    for cell in out["cells"]:
        if cell["cell_type"] == "markdown":
            text = _localise(store[cell["id"]]["text"], translated)
            cell["source"] = text.splitlines(keepends=True)
    out["metadata"]["klviz"] = {"edition": "zh", "translated_from": "English"}
    return out


def serialise(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report missing or stale translations and stop")
    parser.add_argument("--stub", metavar="NN", help="add untranslated entries for notebook NN's new or changed cells")
    args = parser.parse_args(argv)
    if args.stub:
        (path,) = [p for p in english_notebooks() if p.name.startswith(args.stub)]
        store = translations(path.stem)
        for cell in load(path)["cells"]:
            if cell["cell_type"] == "markdown":
                text = "".join(cell["source"])
                entry = store.get(cell["id"])
                if entry is None or entry.get("source_sha256") != source_hash(text):
                    store[cell["id"]] = {"source_sha256": source_hash(text), "english": text,
                                         "text": (entry or {}).get("text", ""), "untranslated": True}
        STORE.mkdir(parents=True, exist_ok=True)
        (STORE / f"{path.stem}.json").write_text(json.dumps(store, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return 0
    failed = False
    ready = {}
    for path in english_notebooks():
        notebook, store = load(path), translations(path.stem)
        reasons = problems(notebook, store)
        if reasons:
            failed = True
            print(f"{path.name}:", *reasons, sep="\n  ", file=sys.stderr)
        else:
            ready[path] = (notebook, store)
    if not args.check:
        OUT.mkdir(exist_ok=True)
        for path, (notebook, store) in ready.items():
            (OUT / path.name).write_text(serialise(build(notebook, store, {p.name for p in ready})), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
