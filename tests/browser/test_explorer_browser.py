"""The interactive figures in a real browser: JupyterLab 4, ipywidgets and ipympl, driven like a reader.

Notebook 04 (the bias explorer): every control — the gap, σp/σq and sample-size sliders (arrow keys),
resample (clicks), the three estimator check boxes (clicks) — and notebook 07's separation slider. After
each action the test waits until the page shows the new state (the live table or title and the canvas
pixels) and checks it against the kernel (closed forms where there is one: k2's exact bias μ²/4, the true
KL of two Gaussians). The time from the action to the updated page is one latency. Each slider is then
dragged with the mouse at about 20 slider steps per second, and the canvas updates during the drag are
counted (frames per second). Medians, with the kernel-side step times, are printed in the terminal
summary; nothing is asserted about speed (benchmarks/ is where speed lives). The page must log no
JavaScript errors.
"""

from __future__ import annotations

import math
import time

import pytest

TIMEOUT_MS = 60_000
KEY_STEPS = 6  # key presses each way per slider

# Browser-side helpers. The app is exposed as window.jupyterapp (--LabApp.expose_app_in_browser).
KERNEL_READY = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
                 && panel.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected';
}"""
RUN_ALL = """async () => {
  const commands = window.jupyterapp.commands;
  await commands.execute('notebook:clear-all-cell-outputs');
  return await commands.execute('notebook:run-all-cells');
}"""
EXECUTION_COUNTS = """() => window.jupyterapp.shell.currentWidget.content.widgets
  .filter(cell => cell.model.type === 'code').map(cell => cell.model.executionCount)"""
KERNEL_STATUS = "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
EXECUTE_IN_KERNEL = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false, silent: false});
  let out = '';
  future.onIOPub = msg => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += 'ERROR ' + msg.content.ename + ': ' + msg.content.evalue;
  };
  await future.done;
  return out;
}"""
# The canvas of the panel with this CSS class; its 2-D context counts the frames drawn on it.
INSTALL = """(panel) => {
  const canvas = document.querySelector(panel + ' .jupyter-matplotlib-canvas-div canvas');
  if (!canvas || canvas.width < 100) return false;
  const context = canvas.getContext('2d');
  if (!context.__klvizFrames) {
    context.__klvizFrames = [];
    const draw = context.drawImage.bind(context);
    context.drawImage = (...args) => { context.__klvizFrames.push(performance.now()); return draw(...args); };
  }
  window.__klviz = {canvas, context};
  return true;
}"""
PAINTED = """() => {
  const {canvas, context} = window.__klviz;
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let dark = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 0 && data[i] < 128) dark++;
  return dark > 1000;  // axes, ticks and bars drawn, not a blank canvas
}"""
# Before an action: keep the pixels (compared once afterwards, outside the timed window), the text, the
# number of frames drawn so far, and watch the text for its next change. The timing itself reads only
# timestamps: polling the pixels at every animation frame would load the 2-core machine it measures.
SNAPSHOT = """(selector) => {
  const {canvas, context} = window.__klviz;
  window.__klvizBefore = context.getImageData(0, 0, canvas.width, canvas.height).data.slice();
  const text = document.querySelector(selector);
  const state = {text: text.innerHTML, frames: context.__klvizFrames.length, textAt: null,
                 start: performance.now()};
  if (window.__klvizObserver) window.__klvizObserver.disconnect();
  window.__klvizObserver = new MutationObserver(() => {
    if (state.textAt === null && document.querySelector(selector).innerHTML !== state.text)
      state.textAt = performance.now();
  });
  window.__klvizObserver.observe(text.parentNode, {subtree: true, childList: true, characterData: true,
                                                   attributes: true});
  // The clock starts at the reader's action as the page sees it: the key or the mouse button going down.
  const started = event => { if (state.eventAt === undefined) state.eventAt = performance.now(); };
  for (const type of ['keydown', 'mousedown'])
    document.addEventListener(type, started, {capture: true, once: true});
  window.__klvizStep = state;
}"""
# Done when the text (table or readout) changed and a new frame was drawn on the canvas: the latency in ms.
CHANGED = """() => {
  const state = window.__klvizStep;
  const frames = window.__klviz.context.__klvizFrames;
  if (state.textAt === null || frames.length <= state.frames) return false;
  return Math.max(state.textAt, frames[state.frames]) - (state.eventAt === undefined ? state.start : state.eventAt);
}"""
PIXELS_CHANGED = """() => {
  const {canvas, context} = window.__klviz;
  const now = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const before = window.__klvizBefore;
  for (let i = 0; i < now.length; i += 4)
    if (now[i] !== before[i] || now[i + 1] !== before[i + 1] || now[i + 2] !== before[i + 2]) return true;
  return false;
}"""
FRAMES = "() => window.__klviz.context.__klvizFrames.slice()"
NOW = "() => performance.now()"

TABLE = ".klviz-explorer .klviz-table"
K2_BIAS = ".klviz-table [data-estimator='k2'][data-quantity='exact-relative-bias']"
TRUE_KL = ".klviz-table [data-quantity='true-kl']"


def _open_and_run(page, url, token, notebook):
    # A workspace of its own, reset: the notebook opened by an earlier test is not restored (and made current).
    workspace = notebook.split("_")[0]
    page.goto(f"{url}/lab/workspaces/klviz-{workspace}/tree/{notebook}?reset&token={token}", timeout=TIMEOUT_MS)
    page.wait_for_function(KERNEL_READY, timeout=TIMEOUT_MS)
    assert page.evaluate(RUN_ALL) is True  # the command's promise settles when the last cell has run
    counts = page.evaluate(EXECUTION_COUNTS)
    # Consecutive: every cell ran once, in order (a notebook opened again keeps its kernel and its count).
    assert counts == list(range(counts[0], counts[0] + len(counts))), f"not every cell ran in order: {counts}"
    page.wait_for_function(f"() => ({KERNEL_STATUS})() === 'idle'", timeout=TIMEOUT_MS)


def _kernel(page, code: str) -> str:
    return page.evaluate(EXECUTE_IN_KERNEL, code)


def _readout(page, key: str) -> str:
    locator = page.locator(f".klviz-{key} .widget-readout")
    page.wait_for_function(f"() => {{ const r = document.querySelector('.klviz-{key} .widget-readout');"
                           f" return !!r && r.innerText.trim() !== ''; }}", timeout=TIMEOUT_MS)
    return locator.inner_text().strip()


def _attach(page, panel: str):
    page.locator(panel).scroll_into_view_if_needed()
    page.wait_for_function(INSTALL, arg=panel, timeout=TIMEOUT_MS)
    page.wait_for_function(PAINTED, timeout=TIMEOUT_MS)
    time.sleep(0.5)  # let the first frames settle before comparing pixels


def _timed(page, action, text_selector: str) -> float:
    """Run ``action`` and wait until the text changed and a frame was drawn; the latency in ms (in-page
    clock, from the key or mouse button going down to the later of the two)."""
    page.evaluate(SNAPSHOT, text_selector)
    action()
    latency = page.wait_for_function(CHANGED, polling="raf", timeout=TIMEOUT_MS).json_value()
    assert page.evaluate(PIXELS_CHANGED), "a frame arrived but the canvas shows the same picture"
    return float(latency)


def _settle(page):
    page.wait_for_function(f"() => ({KERNEL_STATUS})() === 'idle'", timeout=TIMEOUT_MS)
    time.sleep(0.4)


def _record(results, name, latencies, drag=None, kernel_ms=None):
    results[name] = {"latencies": latencies, "drag": drag, "kernel_ms": kernel_ms}


def _kernel_step_ms(page, obj: str, count: int) -> float | None:
    """The kernel's own median time for the last ``count`` steps (None where the object does not record it)."""
    out = _kernel(page, f"import statistics; print(statistics.median(list({obj}.step_times)[-{count}:]) * 1e3)")
    try:
        return float(out)
    except ValueError:
        return None


def _gaussian_kl(gap: float, sigma: float) -> float:
    return math.log(sigma) + (1 + gap**2) / (2 * sigma**2) - 0.5


def _keys(page, key: str, text_selector: str, check, presses=None) -> list[float]:
    handle = page.locator(f".klviz-{key} .noUi-handle")
    latencies = []
    for direction in presses or ("ArrowRight",) * KEY_STEPS + ("ArrowLeft",) * KEY_STEPS:
        handle.focus()
        before = _readout(page, key)
        latencies.append(_timed(page, lambda: page.keyboard.press(direction), text_selector))
        after = _readout(page, key)
        assert after != before, f"{key}: the readout did not move ({before})"
        check()
    return latencies


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1500, "height": 1300})
    errors = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)
    yield page
    page.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_bias_explorer_controls(page, jupyter_lab, step_latencies, control_results):
    url, token, _root = jupyter_lab
    _open_and_run(page, url, token, "04_bias_explorer.ipynb")
    # The notebook leaves the explorer at gap 1; the browser's slider must agree with the kernel (a slider
    # that echoed a stale value back would leave them apart).
    assert float(_kernel(page, "print(explorer.state.gap)")) == 1.0
    _attach(page, ".klviz-explorer")
    assert float(_readout(page, "gap")) == pytest.approx(1.0)
    results = control_results

    def gap_check():
        gap = float(_readout(page, "gap"))
        bias = float(page.locator(K2_BIAS).get_attribute("data-value"))
        assert bias == pytest.approx(gap**2 / 4, rel=1e-9)  # k2's exact relative bias for unit variances

    def kl_check():
        gap, sigma = float(_readout(page, "gap")), float(_readout(page, "sigma-ratio"))
        kl = float(page.locator(TRUE_KL).get_attribute("data-value"))
        assert kl == pytest.approx(_gaussian_kl(gap, sigma), rel=1e-9)

    def n_check():
        n = int(_readout(page, "n").replace(",", ""))
        assert f"n = {n:,}" in page.locator(TABLE).inner_text()

    latencies = _keys(page, "gap", TABLE, gap_check)
    step_latencies.extend(latencies)
    _record(results, "04 gap slider", latencies, kernel_ms=_kernel_step_ms(page, "explorer", 2 * KEY_STEPS))
    latencies = _keys(page, "sigma-ratio", TABLE, kl_check)
    _record(results, "04 σp/σq slider", latencies, kernel_ms=_kernel_step_ms(page, "explorer", 2 * KEY_STEPS))
    # From 200,000: up to 1,000,000, down to 3,000, back to 200,000.
    presses = ("ArrowRight",) * 2 + ("ArrowLeft",) * 6 + ("ArrowRight",) * 4
    latencies = _keys(page, "n", TABLE, n_check, presses)
    _record(results, "04 n slider", latencies, kernel_ms=_kernel_step_ms(page, "explorer", 2 * KEY_STEPS))

    seed = int(_kernel(page, "print(explorer.seed)"))
    button = page.locator("button.klviz-resample")
    latencies = []
    for i in range(1, 7):
        latencies.append(_timed(page, button.click, TABLE))
        assert int(_kernel(page, "print(explorer.seed)")) == seed + i
    _record(results, "04 resample", latencies, kernel_ms=_kernel_step_ms(page, "explorer", 6))

    latencies = []
    for name in ("k1", "k2", "k3"):
        box = page.locator(f".klviz-{name} input")
        for shown in (False, True):
            latencies.append(_timed(page, box.click, TABLE))
            rows = page.locator(f"{TABLE} [data-estimator='{name}']").count()
            assert (rows > 0) == shown
    _record(results, "04 estimator toggles", latencies, kernel_ms=_kernel_step_ms(page, "explorer", 6))

    # Drags: there and back, then check the kernel and the page agree on where the sliders ended.
    for key, label, steps in (("gap", "04 gap slider", 20), ("sigma_ratio", "04 σp/σq slider", 20),
                              ("n", "04 n slider", 4)):
        css = key.replace("_", "-")
        page.locator(f".klviz-{css}").scroll_into_view_if_needed()
        _settle(page)
        # From the notebook's settings: the gap and σ up by 20 notches and back; n (7 notches) down to 3,000
        # and back, three times over.
        direction, passes = (-1, 6) if key == "n" else (1, 2)
        notches = {"gap": 60, "sigma_ratio": 30, "n": 7}[key]
        drag = _drag_generic(page, css, notches, steps, direction, passes)
        _settle(page)
        results[label]["drag"] = drag
    state = _kernel(page, "print(explorer.state.gap, explorer.state.sigma_ratio, explorer.state.n)").split()
    assert float(state[0]) == pytest.approx(float(_readout(page, "gap")))
    assert float(state[1]) == pytest.approx(float(_readout(page, "sigma-ratio")))
    assert int(state[2]) == int(_readout(page, "n").replace(",", ""))


def test_a_cell_and_the_browser_drawing_at_once_leave_the_right_picture(page, jupyter_lab):
    """The issue's reproduction: gap at 2.5; on the σp/σq slider →, →, End about a second apart, then
    Home, and at once, from a cell, σ = 1.5 and gap = 1.0 (the cell runs on the main thread while the
    widget messages run on a subshell thread). The canvas in the page must then be, pixel for pixel, a
    fresh figure drawn in the kernel at the controls' final settings."""
    url, token, _root = jupyter_lab
    _open_and_run(page, url, token, "04_bias_explorer.ipynb")
    _attach(page, ".klviz-explorer")
    _kernel(page, "explorer.update(gap=2.5)")
    handle = page.locator(".klviz-sigma-ratio .noUi-handle")
    handle.focus()
    for key in ("ArrowRight", "ArrowRight", "End"):
        page.keyboard.press(key)
        time.sleep(1.0)
    page.keyboard.press("Home")
    cell = "explorer.controls['sigma_ratio'].value = 1.5; explorer.controls['gap'].value = 1.0"
    _kernel(page, cell)
    _settle(page)
    time.sleep(1.0)  # let the last frames arrive
    _settle(page)
    fresh = _kernel(page, """
import base64
from klviz.explorer import ExplorerFigure
from klviz.interactive import png_bytes
_c = explorer.controls
_fresh = ExplorerFigure(_c['gap'].value, _c['sigma_ratio'].value, _c['n'].value, rng=_c['seed'].value,
                        estimators=[k for k in ('k1', 'k2', 'k3') if _c[k].value], live=False)
_fresh.set_view(explorer.state.view)
_fresh.update()
_fresh.render(full=True)
print(_c['gap'].value, _c['sigma_ratio'].value, base64.b64encode(png_bytes(_fresh.blitted.pixels())).decode())
""").split()
    assert float(fresh[0]) == 1.0 and float(fresh[1]) in (0.5, 1.5)  # the last writer wins, either way
    assert float(_readout(page, "sigma-ratio")) == float(fresh[1]) and float(_readout(page, "gap")) == 1.0
    import base64
    import io

    import numpy as np
    from PIL import Image

    expected = np.asarray(Image.open(io.BytesIO(base64.b64decode(fresh[2]))).convert("RGB"))
    # The final picture must be right once the frames in flight have arrived: on a loaded machine that can
    # take longer than the settle window, so look again for up to 20 s. A broken canvas stays broken (ipympl
    # sends only changed pixels), so waiting cannot turn the old race's wrong picture into a pass.
    deadline = time.monotonic() + 20.0
    while True:
        shown = page.evaluate("() => window.__klviz.canvas.toDataURL('image/png').split(',')[1]")
        picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(shown))).convert("RGB"))
        assert picture.shape == expected.shape
        differing = int(np.any(picture != expected, axis=-1).sum())
        if differing == 0 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert differing == 0, f"{differing} pixels of the page's canvas differ from a fresh draw of the final state"


def _drag_generic(page, css: str, notches: int, steps: int, direction: int, passes: int = 2,
                  steps_per_second: float = 20.0) -> dict:
    """Hold the mouse on the slider with CSS class ``klviz-<css>`` and drag it ``steps`` notches one way and
    back, ``passes`` times in all, at ``steps_per_second`` notches a second; count the canvas frames drawn
    while the button is down."""
    track = page.locator(f".klviz-{css} .noUi-target").bounding_box()
    box = page.locator(f".klviz-{css} .noUi-handle").bounding_box()
    per_notch = track["width"] / notches
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    before = len(page.evaluate(FRAMES))
    start = page.evaluate(NOW)
    offset = 0.0
    for sweep in range(passes):
        sign = direction if sweep % 2 == 0 else -direction
        for _ in range(2 * steps):  # half a notch per move
            offset += sign * per_notch / 2
            page.mouse.move(x + offset, y)
            time.sleep(1.0 / (2 * steps_per_second))
    end = page.evaluate(NOW)
    page.mouse.up()
    frames = [t for t in page.evaluate(FRAMES)[before:] if start <= t <= end]
    duration = (end - start) / 1e3
    return {"frames": len(frames), "seconds": duration, "fps": len(frames) / duration}


def test_gradient_variance_slider(page, jupyter_lab, control_results):
    url, token, _root = jupyter_lab
    _open_and_run(page, url, token, "07_kl_gradients.ipynb")
    printed = _kernel(page, "print(repr(panel))").strip()
    assert printed == "GradientVarianceExplorer(separation=1, combos=15)", printed
    # One picture in the cell: the live canvas (no second panel stacked under a static one).
    panel = page.locator(".klviz-variance-panel")
    assert panel.count() == 1
    assert panel.locator(".jupyter-matplotlib-canvas-div").count() == 1
    _attach(page, ".klviz-variance-panel")

    def check():
        separation = float(_readout(page, "separation"))
        assert float(_kernel(page, "print(panel.separation)")) == pytest.approx(separation)

    latencies = _keys(page, "separation", ".klviz-separation .widget-readout", check)
    _record(control_results, "07 separation slider", latencies, kernel_ms=_kernel_step_ms(page, "panel", 2 * KEY_STEPS))
    _settle(page)
    control_results["07 separation slider"]["drag"] = _drag_generic(page, "separation", 60, 20, 1)
    _settle(page)
    check()
