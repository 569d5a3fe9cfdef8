"""The Chinese edition (issue 14) is built, not hand-copied: every English markdown cell has a current
translation, and every notebooks/zh notebook is exactly what tools/build_zh.py makes from the English one."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_zh", ROOT / "tools" / "build_zh.py")
build_zh = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_zh)
ENGLISH = build_zh.english_notebooks()
TRANSLATED = [p for p in ENGLISH if not build_zh.problems(build_zh.load(p), build_zh.translations(p.stem))]


@pytest.mark.parametrize("path", ENGLISH, ids=lambda p: p.name)
def test_every_markdown_cell_has_a_current_translation(path):
    """None missing, stale (the English changed after it was translated) or left as a stub."""
    assert build_zh.problems(build_zh.load(path), build_zh.translations(path.stem)) == []


def test_every_english_notebook_has_its_zh_twin():
    assert sorted(p.name for p in build_zh.OUT.glob("*.ipynb")) == [p.name for p in ENGLISH]


def test_links_go_to_the_zh_twin_or_else_the_english_notebook():
    text = "[a](01_monte_carlo_kl.ipynb#x), [b](07_kl_gradients.ipynb) ![c](figures/d.png)"
    assert build_zh._localise(text, {"01_monte_carlo_kl.ipynb"}) == (
        "[a](01_monte_carlo_kl.ipynb#x), [b](../07_kl_gradients.ipynb) ![c](../figures/d.png)")
    names = {p.name for p in TRANSLATED}
    for path in TRANSLATED:
        text = (build_zh.OUT / path.name).read_text(encoding="utf-8")
        for target in {m for m in build_zh.re.findall(r"\]\((?:\.\./)?(\d\d_\w+\.ipynb)", text)}:
            twin = f"]({target}" in text
            assert twin == (target in names), (path.name, target)


def test_a_stale_or_missing_translation_is_reported():
    english = build_zh.load(ENGLISH[1])
    store = build_zh.translations(ENGLISH[1].stem)
    first = next(c for c in english["cells"] if c["cell_type"] == "markdown")
    changed = json.loads(json.dumps(english))
    next(c for c in changed["cells"] if c["cell_type"] == "markdown")["source"] = ["A new sentence."]
    assert build_zh.problems(changed, store) == [f"cell {first['id']}: stale (the English changed after it was translated)"]
    partial = {k: v for k, v in store.items() if k != first["id"]}
    assert build_zh.problems(english, partial) == [f"cell {first['id']}: no translation"]


@pytest.mark.parametrize("path", TRANSLATED, ids=lambda p: p.name)
def test_the_chinese_notebook_is_exactly_the_build(path):
    zh = build_zh.OUT / path.name
    assert zh.exists(), f"{zh} is missing: run python tools/build_zh.py"
    translated = {p.name for p in TRANSLATED}
    expected = build_zh.serialise(build_zh.build(build_zh.load(path), build_zh.translations(path.stem), translated))
    assert zh.read_text(encoding="utf-8") == expected


@pytest.mark.parametrize("path", TRANSLATED, ids=lambda p: p.name)
def test_same_code_and_outputs_as_the_english(path):
    english, chinese = build_zh.load(path), json.loads((build_zh.OUT / path.name).read_text(encoding="utf-8"))
    code = [(c.get("id"), c["source"], c.get("outputs")) for c in english["cells"] if c["cell_type"] == "code"]
    assert code == [(c.get("id"), c["source"], c.get("outputs")) for c in chinese["cells"] if c["cell_type"] == "code"]


def test_no_orphan_translations_or_notebooks():
    stems = {p.stem for p in ENGLISH}
    assert {p.stem for p in build_zh.STORE.glob("*.json")} <= stems
    assert {p.stem for p in build_zh.OUT.glob("*.ipynb")} <= stems
