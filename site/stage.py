"""Lay out the site's Sphinx source tree in site/_build/src from the committed files (run by build.sh).

The tree mirrors the repository, so a page's launch buttons open the repository's own notebook:

* ``index.md`` (from site/), the landing page whose table of contents globs ``notebooks/[0-9][0-9]_*``:
  a new notebook ``notebooks/08_*.ipynb`` appears on the site without editing anything;
* ``notebooks/``: a copy of the repository's notebooks/ with their saved outputs (nothing is executed).
  Two changes, both for the static site only: the widget state is dropped (the site loads no widget
  JavaScript; each interactive output carries an image/png that the site shows instead), and a short
  "Run this lecture" note follows the first cell (Binder, Colab and local, and what Colab lacks);
* ``zh/index.md`` and ``zh/glossary.md``: the Chinese edition's landing page and glossary, when
  notebooks/zh/ holds its notebooks (each lecture page then links to its twin in the other language);
* ``api.md``: the API reference, generated from ``klviz/__init__.py`` (every name in ``__all__``, grouped by
  the module it is imported from, in that order), so a new public name appears on the site by itself.

Files are rewritten only when their content changes, and files that no longer belong are removed, so
Sphinx's incremental build re-reads only what changed.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import shutil
import sys
from pathlib import Path

SITE = Path(__file__).resolve().parent
ROOT = SITE.parent
SOURCE = SITE / "_build" / "src"
REPOSITORY = "https://github.com/klviz/klviz"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def write_if_changed(path: Path, content: bytes) -> None:
    if path.exists() and path.read_bytes() == content:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def installs_klviz(notebook: dict) -> bool:
    """Whether the notebook's first code cell already installs klviz when it is missing (e.g. on Colab)."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            return "pip install" in source and "klviz" in source
    return False


def run_note(notebook: dict, path: str) -> dict:
    """The note that follows a lecture's first cell on the site: how to run it, and what Colab lacks."""
    interactive = WIDGET_STATE in notebook.get("metadata", {}).get("widgets", {})
    if installs_klviz(notebook):
        colab = "Colab (same menu) installs klviz in the first cell."
    else:
        colab = ("Colab (same menu) does not have klviz: first run\n"
                 f"`%pip install \"klviz[explorer] @ git+{REPOSITORY}\"`"
                 + (" and, for the interactive figure,\n"
                    "`from google.colab import output; output.enable_custom_widget_manager()`." if interactive else "."))
    lines = [
        "```{admonition} Run this lecture",
        ":class: tip",
        "This page shows the saved outputs of a clean run"
        + (" (the interactive figure as a still picture)." if interactive else "."),
        "Binder (the rocket menu at the top) runs it with everything installed. " + colab,
        f"Locally, in a clone of the repository: `pip install -r requirements.txt && jupyter lab {path}`.",
        "```",
    ]
    return {"cell_type": "markdown", "id": "klviz-site-run-note", "metadata": {"tags": ["site-note"]},
            "source": "\n".join(lines)}


def run_note_zh(notebook: dict, path: str) -> dict:
    """The Chinese edition's note: how to run the lecture (the code and outputs are the English notebook's)."""
    interactive = WIDGET_STATE in notebook.get("metadata", {}).get("widgets", {})
    lines = [
        "```{admonition} 运行本讲",
        ":class: tip",
        "本页显示一次完整运行保存下来的输出" + ("（交互图以静态图片显示）。" if interactive else "。")
        + "顶部的火箭菜单可以在 Binder 或 Colab 中运行它（第一个代码单元会在缺少 klviz 时安装它）。"
        + f"在本地克隆仓库后：`pip install -r requirements.txt && jupyter lab {path}`。",
        "```",
    ]
    return {"cell_type": "markdown", "id": "klviz-site-run-note", "metadata": {"tags": ["site-note"]},
            "source": "\n".join(lines)}


def language_switch(source: Path) -> dict | None:
    """A link to the same lecture in the other language, when it exists: the switch on every lecture page."""
    if source.parent.name == "zh":
        twin, text = source.parent.parent / source.name, f"[English](../{source.name})"
    else:
        twin, text = source.parent / "zh" / source.name, f"[中文版](zh/{source.name})"
    if not twin.exists():
        return None
    return {"cell_type": "markdown", "id": "klviz-site-language", "metadata": {"tags": ["site-language"]},
            "source": f"<span class=\"klviz-language-switch\">{text}</span>"}


def stage_notebook(source: Path, target: Path, path: str) -> None:
    notebook = json.loads(source.read_text(encoding="utf-8"))
    note = run_note_zh(notebook, path) if source.parent.name == "zh" else run_note(notebook, path)
    notebook["metadata"].pop("widgets", None)
    notebook["cells"].insert(1, note)
    switch = language_switch(source)
    if switch is not None:
        notebook["cells"].insert(0, switch)
    write_if_changed(target, (json.dumps(notebook, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def public_names() -> list[tuple[str, list[str]]]:
    """(module, names) in the order of klviz/__init__.py: each name in __all__ under the module it comes from."""
    init = ROOT / "klviz" / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    origin: dict[str, str] = {}
    exported: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("klviz"):
            for alias in node.names:
                origin.setdefault(alias.asname or alias.name, node.module)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            exported = list(ast.literal_eval(node.value))
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(exported):  # __all__ may list a name twice
        groups.setdefault(origin.get(name, "klviz"), []).append(name)
    return list(groups.items())


def data_doc(klviz, name: str) -> str:
    """The ``#:`` comment above a constant's assignment in the module that defines it."""
    from sphinx.pycode import ModuleAnalyzer

    value = getattr(klviz, name)
    for module_name, module in sorted(sys.modules.items()):
        if module_name.startswith("klviz.") and getattr(module, name, None) is value:
            try:
                docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
            except Exception:  # a module without source
                continue
            if ("", name) in docs:
                return " ".join(line.strip() for line in docs[("", name)] if line.strip())
    return ""


def data_value(value) -> str:
    if isinstance(value, dict):
        return "a dict with keys " + ", ".join(f"``{key!r}``" for key in value)
    text = repr(value)
    return f"``{text}``" if len(text) <= 100 else f"a ``{type(value).__name__}``"


def api_page() -> str:
    sys.path.insert(0, str(ROOT))
    klviz = importlib.import_module("klviz")
    lines = [
        "# API reference",
        "",
        "Every public name of `klviz` (its `__all__`), grouped by the module it lives in. Each one is "
        "reached as `klviz.<name>`; the notebooks show them at work.",
        "",
    ]
    for module_name, names in public_names():
        module = importlib.import_module(module_name)
        summary = (inspect.getdoc(module) or "").strip().split("\n\n")[0].replace("\n", " ")
        callables = [name for name in names if callable(getattr(klviz, name))]
        lines += [f"## `{module_name}`", "", summary, "", "```{eval-rst}"]
        if callables:
            lines += [".. autosummary::", ""] + [f"   klviz.{name}" for name in callables] + [""]
        for name in names:
            value = getattr(klviz, name)
            if inspect.isclass(value):
                lines += [f".. autoclass:: klviz.{name}", "   :members:", ""]
            elif callable(value):
                lines += [f".. autofunction:: klviz.{name}", ""]
            else:  # a constant: its #: comment and what it holds (a type's docstring would say nothing)
                lines += [f".. py:data:: klviz.{name}", "", f"   {data_doc(klviz, name)}", "",
                          f"   Holds {data_value(value)}.", ""]
        lines += ["```", ""]
    return "\n".join(lines)


def main() -> None:
    expected: set[Path] = set()

    def put(target: Path, content: bytes) -> None:
        write_if_changed(target, content)
        expected.add(target)

    chinese = sorted((ROOT / "notebooks" / "zh").glob("[0-9][0-9]_*.ipynb"))
    index = (SITE / "index.md").read_text(encoding="utf-8")
    if chinese:  # the Chinese edition in the navigation, after the English lectures
        index += ("\n```{toctree}\n:caption: 中文版\n:glob:\n:titlesonly:\n\nzh/index\n"
                  "notebooks/zh/[0-9][0-9]_*\nzh/glossary\n```\n")
    put(SOURCE / "index.md", index.encode("utf-8"))
    for source in sorted((ROOT / "notebooks").rglob("*")):
        relative = source.relative_to(ROOT)
        if source.is_dir() or ".ipynb_checkpoints" in relative.parts:
            continue
        target = SOURCE / relative
        if source.suffix == ".ipynb":
            stage_notebook(source, target, relative.as_posix())
            expected.add(target)
        else:
            put(target, source.read_bytes())
    put(SOURCE / "api.md", api_page().encode("utf-8"))
    if chinese:  # the Chinese edition: its landing page and the glossary
        put(SOURCE / "zh" / "index.md", (SITE / "index_zh.md").read_bytes())
        put(SOURCE / "zh" / "glossary.md", (ROOT / "translations" / "zh" / "glossary.md").read_bytes())

    for path in sorted(SOURCE.rglob("*"), reverse=True):
        if path.is_file() and path not in expected:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    notebooks = sorted(p.name for p in expected if p.suffix == ".ipynb")
    print(f"staged {len(notebooks)} notebooks and the API page ({len(public_names())} modules) in "
          f"{SOURCE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
