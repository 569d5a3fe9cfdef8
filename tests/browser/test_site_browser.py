"""The built website in a real browser: every page of site/_build/html read in Chromium, served on 127.0.0.1.

``bash site/build.sh`` builds the site; without a build (or with one older than a notebook) the test skips
with the reason, except in CI (``$CI`` set), where .ci/run builds the site first and a missing build fails.

Every page (every .html file of the build) is opened once, after MathJax has typeset it, and checked:

* the browser logs no console error and no uncaught exception, no request fails or answers >= 400, and
  nothing is requested from outside 127.0.0.1 (the site reads offline: MathJax, fonts and scripts are its own);
* every image has loaded (``naturalWidth > 0``);
* every formula is typeset (each ``.math`` element holds MathJax output, no MathJax error box) and the
  visible prose holds no raw TeX (a ``\\command``, ``$...$``, ``\\(``), code blocks excepted;
* every internal link resolves: the target answers 200, and a ``#fragment`` names an element of the target.

And against the repository: every notebooks/NN_*.ipynb has a page, reached from the index's table of
contents, with Binder and Colab launch links to that notebook; every interactive output (a widget view with
an image/png beside it, as klviz.interactive saves it) shows as an image, not the widget's text or a
placeholder; every cell tagged ``hide-input`` is folded (its code not shown); search finds the lectures; the
API page documents every name in ``klviz.__all__``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.browser.conftest import SITE_REPORT, _free_port, _stop

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "site" / "_build" / "html"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPOSITORY = "klviz/klviz"
TIMEOUT_MS = 60_000
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# myst-nb's choice among an output's formats for HTML (the widget view is dropped by site/conf.py).
MIME_ORDER = ("application/javascript", "text/html", "image/svg+xml", "image/png", "image/jpeg", "text/markdown",
              "text/latex", "text/plain")

# What the page shows once MathJax is done: prose text (not code, not typeset maths, not hidden), images,
# formulas, links, element ids, and the notebook cells' state.
READ_PAGE = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const images = Array.from(document.images);
  await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done); img.addEventListener('error', done); setTimeout(done, 10000); })));
  const skip = 'pre, code, script, style, textarea, kbd, samp, mjx-container, .MathJax';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const prose = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip) || !parent.checkVisibility()) continue;
    if (node.textContent.trim()) prose.push(node.textContent);
  }
  const maths = Array.from(document.querySelectorAll('.math'));
  const cells = Array.from(document.querySelectorAll('div.cell'));
  return {
    prose: prose.join(' '),
    text: document.body.innerText,
    images: images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth,
                                output: !!img.closest('.cell_output')})),
    formulas: maths.length,
    untypeset: maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    mathErrors: document.querySelectorAll('mjx-merror').length,
    links: Array.from(document.querySelectorAll('a[href]'), a => a.href),
    ids: Array.from(document.querySelectorAll('[id]'), e => e.id)
      .concat(Array.from(document.querySelectorAll('a[name]'), a => a.name)),
    hiddenInputs: cells.filter(c => c.classList.contains('tag_hide-input')).map(c => {
      const input = c.querySelector('.cell_input');
      const output = c.querySelector('.cell_output');
      return {inputShown: !!input && input.checkVisibility(), outputShown: !output || output.checkVisibility(),
              folded: !!c.querySelector('details:not([open]) .cell_input')};
    }),
    outputImages: cells.map(c => c.querySelectorAll('.cell_output img').length),
    widgetPlaceholders: document.querySelectorAll(
      '.jupyter-widgets, .widget-subarea, script[type="application/vnd.jupyter.widget-view+json"]').length,
  };
}"""
RAW_TEX = [
    (re.compile(r"\\[A-Za-z]{2,}"), "a TeX command"),
    (re.compile(r"\\[()\[\]]"), "a TeX math delimiter"),
    (re.compile(r"\$\$"), "$$"),
    (re.compile(r"\$[^$\s][^$]{0,200}?\$"), "an inline $...$"),
]


def _site_problem() -> str | None:
    index = SITE / "index.html"
    if not index.is_file():
        return f"the site has not been built ({index.relative_to(ROOT)} is missing): run `bash site/build.sh`"
    built = index.stat().st_mtime
    stale = [path.name for path in NOTEBOOKS if path.stat().st_mtime > built]
    if stale:
        return f"the site is older than {', '.join(stale)}: rebuild it with `bash site/build.sh`"
    return None


@pytest.fixture(scope="module")
def site_url():
    problem = _site_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI is set: .ci/run builds the site before the tests)", pytrace=False)
        pytest.skip(problem)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(SITE)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"python -m http.server did not answer on {url}")
                time.sleep(0.1)
        yield url
    finally:
        _stop(process)


def _page_names() -> list[str]:
    return sorted(path.relative_to(SITE).as_posix() for path in SITE.rglob("*.html")
                  if not path.relative_to(SITE).parts[0].startswith("_"))


@pytest.fixture(scope="module")
def pages(site_url, browser) -> dict[str, dict]:
    """Every page of the build, read once in Chromium: {page name: what the page showed, and what it logged}."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    origin = site_url.rstrip("/")
    results = {}
    try:
        for name in _page_names():
            page = context.new_page()
            log = {"console": [], "external": [], "failed": []}
            page.on("console", lambda m, log=log: log["console"].append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e, log=log: log["console"].append(f"uncaught: {e}"))

            def on_request(request, log=log):
                if not request.url.startswith((origin, "data:", "blob:", "about:")):
                    log["external"].append(request.url)

            page.on("request", on_request)
            page.on("requestfailed", lambda r, log=log: log["failed"].append(f"{r.url} ({r.failure})"))
            page.on("response", lambda r, log=log: log["failed"].append(f"{r.url} (HTTP {r.status})")
                    if r.status >= 400 else None)
            # Nothing leaves the machine: a request elsewhere is recorded (and fails the test), not sent.
            page.route(re.compile(r"^(?!" + re.escape(origin) + r").*"), lambda route: route.abort())
            page.goto(site_url + name, wait_until="load")
            results[name] = {**page.evaluate(READ_PAGE), **log}
            page.close()
    finally:
        context.close()
    SITE_REPORT["pages"] = len(results)
    return results


def _notebook_pages() -> dict[str, Path]:
    return {f"notebooks/{path.stem}.html": path for path in NOTEBOOKS}


def test_pages_log_no_errors_and_request_nothing_outside(pages):
    problems = {name: {key: page[key] for key in ("console", "external", "failed") if page[key]}
                for name, page in pages.items()}
    problems = {name: found for name, found in problems.items() if found}
    assert not problems, f"console errors, failed or outside requests: {json.dumps(problems, indent=1)}"
    assert "index.html" in pages and "search.html" in pages and "api.html" in pages


def test_every_image_loads(pages):
    broken = {name: [image["src"][:120] for image in page["images"] if image["width"] == 0]
              for name, page in pages.items()}
    broken = {name: sources for name, sources in broken.items() if sources}
    assert not broken, f"images that did not load: {broken}"
    SITE_REPORT["images"] = sum(len(page["images"]) for page in pages.values())
    assert SITE_REPORT["images"] > 0


def test_maths_typeset_and_no_raw_tex(pages):
    for name, page in pages.items():
        assert not page["untypeset"], f"{name}: formulas MathJax did not typeset: {page['untypeset'][:5]}"
        assert page["mathErrors"] == 0, f"{name}: {page['mathErrors']} MathJax error boxes (bad TeX)"
        for pattern, what in RAW_TEX:
            found = pattern.search(page["prose"])
            assert found is None, (f"{name}: {what} in the visible text: "
                                   f"...{page['prose'][max(0, found.start() - 80):found.end() + 80]}...")
    SITE_REPORT["formulas"] = sum(page["formulas"] for page in pages.values())
    assert all(pages[name]["formulas"] > 0 for name in _notebook_pages()), "a lecture page shows no formula"


def test_internal_links_resolve(pages, site_url):
    ids = {site_url + name: set(page["ids"]) for name, page in pages.items()}
    ids[site_url] = ids[site_url + "index.html"]
    status: dict[str, int] = {}
    missing_anchor, broken, external = [], [], Counter()
    anchors = 0
    for name, page in pages.items():
        for link in page["links"]:
            if not link.startswith(site_url):
                external[urllib.parse.urlsplit(link).netloc or link.split(":")[0]] += 1
                continue
            target, _, fragment = link.partition("#")
            target = target.split("?")[0]
            if target not in status:
                try:
                    with urllib.request.urlopen(target, timeout=10) as response:
                        status[target] = response.status
                except urllib.error.HTTPError as error:
                    status[target] = error.code
            if status[target] != 200:
                broken.append(f"{name} -> {link} (HTTP {status[target]})")
            elif fragment and (target.endswith(".html") or target == site_url):
                anchors += 1
                if urllib.parse.unquote(fragment) not in ids.get(target, set()):
                    missing_anchor.append(f"{name} -> {link}")
    assert not broken, f"internal links that do not resolve: {broken}"
    assert not missing_anchor, f"links to anchors that do not exist: {missing_anchor}"
    SITE_REPORT["internal links"] = sum(1 for page in pages.values() for link in page["links"]
                                        if link.startswith(site_url))
    SITE_REPORT["link targets"] = len(status)
    SITE_REPORT["anchors"] = anchors
    SITE_REPORT["external links (not fetched)"] = dict(external)


def test_every_notebook_is_a_page_in_the_contents_with_launch_buttons(pages, site_url):
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb"
    index_links = {link.split("#")[0] for link in pages["index.html"]["links"]}
    for page_name, notebook in _notebook_pages().items():
        assert page_name in pages, f"{notebook.name} has no page: rebuild the site (bash site/build.sh)"
        assert site_url + page_name in index_links, f"the index's table of contents does not list {page_name}"
        links = pages[page_name]["links"]
        path = f"notebooks/{notebook.name}"
        binder = f"https://mybinder.org/v2/gh/{REPOSITORY}/main?urlpath=lab/tree/{path}"
        colab = f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/{path}"
        assert binder in links, f"{page_name}: no Binder launch link {binder}"
        assert colab in links, f"{page_name}: no Colab launch link {colab}"
        assert "pip install" in pages[page_name]["text"], f"{page_name}: no note on installing klviz (Colab)"
    SITE_REPORT["lecture pages"] = len(NOTEBOOKS)


def test_the_chinese_edition_has_every_lecture_and_a_language_switch_both_ways(pages, site_url):
    """Issue 14: each English lecture has its zh twin on the site, listed in the contents, with its launch links;
    each page of the pair links the other."""
    index_links = {link.split("#")[0] for link in pages["index.html"]["links"]}
    for notebook in NOTEBOOKS:
        english, chinese = f"notebooks/{notebook.stem}.html", f"notebooks/zh/{notebook.stem}.html"
        assert chinese in pages, f"{chinese} missing: python tools/build_zh.py, then bash site/build.sh"
        assert site_url + chinese in index_links, f"the contents do not list {chinese}"
        assert site_url + chinese in {link.split("#")[0] for link in pages[english]["links"]}, f"{english}: no 中文版 link"
        assert site_url + english in {link.split("#")[0] for link in pages[chinese]["links"]}, f"{chinese}: no English link"
        binder = f"https://mybinder.org/v2/gh/{REPOSITORY}/main?urlpath=lab/tree/notebooks/zh/{notebook.name}"
        assert binder in pages[chinese]["links"], f"{chinese}: no Binder launch link"
        assert re.search(r"[\u4e00-\u9fff]{20}", pages[chinese]["prose"]), f"{chinese}: no Chinese prose"
    assert "zh/glossary.html" in pages and "zh/index.html" in pages
    SITE_REPORT["zh lecture pages"] = len(NOTEBOOKS)


def _shown_mime(output: dict) -> str | None:
    return next((mime for mime in MIME_ORDER if mime in output.get("data", {})), None)


def test_interactive_outputs_show_their_image_and_hide_input_is_folded(pages):
    widgets = folded = 0
    for page_name, path in _notebook_pages().items():
        page = pages[page_name]
        notebook = json.loads(path.read_text(encoding="utf-8"))
        code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
        assert len(page["outputImages"]) == len(code_cells), f"{page_name}: cells on the page differ from the notebook"
        for number, (cell, shown_images) in enumerate(zip(code_cells, page["outputImages"]), 1):
            outputs = cell.get("outputs", [])
            expected = sum(_shown_mime(output) in ("image/png", "image/jpeg") for output in outputs)
            assert shown_images == expected, (f"{page_name}, code cell {number}: {shown_images} images shown, "
                                              f"{expected} image outputs saved")
            for output in outputs:
                if WIDGET_VIEW in output.get("data", {}):
                    widgets += 1
                    assert "image/png" in output["data"], f"{page_name}, code cell {number}: a widget without image/png"
                    text = "".join(output["data"].get("text/plain", ""))
                    assert text not in page["text"], f"{page_name}: the widget shows as its text {text!r}"
        assert page["widgetPlaceholders"] == 0, f"{page_name}: widget placeholders on the page"
        assert "interactive(children=" not in page["text"]
        tagged = [cell for cell in code_cells if "hide-input" in cell.get("metadata", {}).get("tags", [])]
        assert len(page["hiddenInputs"]) == len(tagged), f"{page_name}: hide-input cells differ from the notebook"
        for cell in page["hiddenInputs"]:
            assert cell["folded"] and not cell["inputShown"], f"{page_name}: a hide-input cell shows its code"
            assert cell["outputShown"], f"{page_name}: a hide-input cell hides its output"
            folded += 1
    assert widgets > 0, "no interactive output found in the notebooks (04 and 07 have one each)"
    SITE_REPORT["interactive outputs shown as images"] = widgets
    SITE_REPORT["hide-input cells folded"] = folded


def test_search_finds_the_lectures(site_url, browser):
    page = browser.new_page()
    try:
        page.goto(site_url + "search.html?q=control+variate", wait_until="load")
        page.wait_for_selector("#search-results ul.search li", timeout=TIMEOUT_MS)
        hits = page.eval_on_selector_all("#search-results ul.search li a", "links => links.map(a => a.href)")
    finally:
        page.close()
    assert any("notebooks/03_control_variates_k3.html" in hit for hit in hits), hits
    SITE_REPORT["search hits for 'control variate'"] = len(hits)


def test_api_page_documents_every_public_name(pages):
    import klviz

    documented = set(pages["api.html"]["ids"])
    missing = [name for name in klviz.__all__ if f"klviz.{name}" not in documented]
    assert not missing, f"the API page lacks {missing}: rebuild the site (bash site/build.sh)"
    SITE_REPORT["API entries"] = len(set(klviz.__all__))
