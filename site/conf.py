"""Sphinx configuration of the klviz website (built by ``bash site/build.sh``; see that file).

The source tree is site/_build/src, laid out by site/stage.py; this file stays in site/ (``sphinx-build -c
site``). The stack is Jupyter Book 1's (myst-nb, sphinx-book-theme) without its command-line wrapper:
one configuration file, and a table of contents that globs the notebooks.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # autodoc documents the klviz of this checkout

import klviz  # noqa: E402

project = "klviz"
author = "the klviz authors"
copyright = "the klviz authors, MIT licence"
release = version = klviz.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
]
root_doc = "index"
exclude_patterns = ["**/.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type"]

# --- notebooks: saved outputs, never executed -------------------------------------------------------------
nb_execution_mode = "off"
# The interactive outputs (04's explorer, 07's panel) carry an image/png of their state next to the widget
# view: the site shows the picture. No widget JavaScript is loaded (it would come from a CDN).
nb_mime_priority_overrides = [("*", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js = {}
# Markdown outputs (tables of formulas built with IPython.display.Markdown) read as MyST: tables and $maths$.
nb_render_markdown_format = "myst"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True  # $$...$$ inside a paragraph is display maths, as in Jupyter
myst_heading_anchors = 3

# --- maths: MathJax 3 served from the site itself (vendored from the npm registry by build.sh) ------------
mathjax_path = "mathjax/tex-chtml.js"  # relative to _static
mathjax3_config = {"tex": {"processEscapes": True}}
html_static_path = ["_build/vendor"]

# --- API page: autodoc + numpydoc over klviz.__all__ (site/stage.py writes api.md) --------------------------
autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# --- theme: navigation by notebook, search, launch buttons -----------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "klviz — estimating KL divergence from samples"
html_last_updated_fmt = None
html_favicon = "favicon.svg"  # else the browser asks for /favicon.ico and logs a 404
# An explicit colour mode: with none stored, the theme logs "Got invalid theme mode" as a console error.
html_context = {"default_mode": "light"}
html_theme_options = {
    "repository_url": "https://github.com/klviz/klviz",
    "repository_branch": "main",
    "path_to_docs": "",  # the source tree mirrors the repository: notebooks/NN_*.ipynb
    "use_repository_button": True,
    "use_download_button": True,
    "launch_buttons": {
        "binderhub_url": "https://mybinder.org",
        "colab_url": "https://colab.research.google.com",
        "notebook_interface": "jupyterlab",
    },
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "navbar_persistent": [],  # one search field, in the sidebar (pydata-sphinx-theme 0.20 adds one to a header bar)
}


_DIRECTIVE = re.compile(r"^(\s*)(\.\. \S+::|.*::\s*$)")  # a directive, or a paragraph ending a literal block
_CODE = re.compile(r"(``.*?``|`[^`]*`)")


def escape_bars(app, what, name, obj, options, lines):
    """Keep the docstrings' plain-text absolute values (``|log r|``) as text.

    reStructuredText reads ``|word|`` as a substitution reference, so "for |log r| < 1/2" becomes an
    error on the page. Bars are escaped in prose only: not inside inline code or roles (``:math:`|x|```),
    directive bodies (``.. math::``), literal blocks or doctests, where reST does not substitute.
    """
    block_indent, doctest = None, False
    for index, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if doctest:  # a doctest and its output run to the next blank line
            doctest = bool(stripped)
            continue
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue
            block_indent = None
        if stripped.startswith(">>>"):
            doctest = True
            continue
        table_or_line_block = stripped.startswith(("| ", "+")) or (stripped[:1] == "|" == stripped[-1:])
        if "|" in line and not table_or_line_block:
            parts = _CODE.split(line)
            lines[index] = "".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))
        if _DIRECTIVE.match(line):
            block_indent = indent


def setup(app):
    # Load MathJax on every page: the navigation shows notebook titles with maths on pages without any.
    app.set_html_assets_policy("always")
    app.connect("autodoc-process-docstring", escape_bars)
