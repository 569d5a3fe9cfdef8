r"""Tests for klviz.interactive: drawing is correct under concurrent callers, the live canvas's frames
rebuild the right picture, the slider arithmetic matches the browser's, figures leave pyplot alone.

The concurrency tests force the interleaving that ipykernel 7 produces (widget messages on a subshell
thread, cells on the main thread): thread A (the cell) is stopped *inside* its render, at a chosen point,
until thread B (the browser: a slider message, or ipympl asking for a draw) is either waiting for the
figure's lock or, without a lock, has finished. Then A goes on. The final canvas and the picture the
browser would show (rebuilt from the PNG frames the canvas sent, full and diff, exactly as ipympl's
JavaScript composes them) are compared pixel for pixel with a fresh figure drawn from scratch at the
controls' final settings. The same race with the lock replaced by a no-op shows that the test catches the
bug it guards against.
"""

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from klviz.explorer import BiasExplorer, ExplorerFigure
from klviz.interactive import BlittedFigure, browser_slider_value, is_live, new_figure

TIMEOUT = 20.0  # seconds; the test fails rather than hangs


class ObservedLock:
    """A re-entrant lock that records when some thread had to wait for it."""

    def __init__(self):
        self._lock = threading.RLock()
        self.contended = threading.Event()

    def acquire(self, blocking=True, timeout=-1):
        if self._lock.acquire(blocking=False):
            return True
        self.contended.set()
        return self._lock.acquire(blocking, timeout)

    def release(self):
        self._lock.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class NoLock(ObservedLock):
    """No mutual exclusion at all: the explorer as it was before the lock."""

    def acquire(self, blocking=True, timeout=-1):
        return True

    def release(self):
        pass


def connect_browser(canvas) -> list:
    """Make a live canvas behave as if a browser had connected; return the list its frames go to."""
    frames = []
    canvas.send_binary = lambda data: frames.append((canvas._current_image_mode, data))
    canvas._handle_message(canvas, {"type": "initialized"}, [])
    canvas.handle_event({"type": "refresh"})  # the browser then asks for a draw
    canvas.handle_event({"type": "draw"})
    return frames


def browser_picture(frames) -> np.ndarray:
    """What ipympl's JavaScript shows: a full frame replaces the picture, a diff frame's opaque pixels
    are drawn over it (unchanged pixels are sent as transparent zeros)."""
    picture = None
    for mode, data in frames:
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
        if mode == "full" or picture is None:
            picture = image.copy()
        else:
            changed = image[..., 3] != 0
            picture[changed] = image[changed]
    return picture


def fresh_pixels(explorer) -> np.ndarray:
    """A new figure at the controls' settings and the explorer's histogram view, drawn from scratch."""
    controls = explorer.controls
    shown = [name for name in ("k1", "k2", "k3") if controls[name].value]
    fresh = ExplorerFigure(controls["gap"].value, controls["sigma_ratio"].value, controls["n"].value,
                           rng=controls["seed"].value, estimators=shown, live=False)
    fresh.set_view(explorer.state.view)
    fresh.update()
    fresh.render(full=True)
    return fresh.blitted.pixels()


def race(explorer, in_cell, from_browser, pause_at: str, lock: ObservedLock):
    """Run ``in_cell`` on thread A, stopped at ``pause_at`` inside its render, and ``from_browser`` on thread B."""
    blitted = explorer.blitted
    blitted.lock = lock
    paused, b_done = threading.Event(), threading.Event()
    errors = []
    a_thread = {}
    if pause_at == "blit":  # after restoring the saved layers, drawing the first changed artist
        owner, name = explorer.figure, "draw_artist"
    elif pause_at == "background":  # drawing the static background with the changing artists hidden
        owner, name = blitted, "_draw_only"
    else:
        raise ValueError(pause_at)
    original = getattr(owner, name)

    def hook(*args, **kwargs):
        if threading.get_ident() == a_thread.get("id") and not paused.is_set():
            paused.set()
            deadline = time.monotonic() + TIMEOUT
            while not (lock.contended.is_set() or b_done.is_set()):
                if time.monotonic() > deadline:
                    raise AssertionError("thread B neither waited for the lock nor finished")
                time.sleep(0.001)
        return original(*args, **kwargs)

    setattr(owner, name, hook)

    def run_a():
        a_thread["id"] = threading.get_ident()
        try:
            in_cell()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def run_b():
        try:
            assert paused.wait(TIMEOUT), "thread A never reached the pause point"
            from_browser()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            b_done.set()

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "deadlock"
    delattr(owner, name)
    if errors:
        raise errors[0]


@pytest.fixture
def live_explorer():
    explorer = BiasExplorer(gap=2.5, n=20_000, rng=3, live=True)
    frames = connect_browser(explorer.figure.canvas)
    yield explorer, frames
    explorer.close()


def set_controls(explorer, **values):
    def run():
        for key, value in values.items():
            explorer.controls[key].value = value
    return run


# The reproduction in the issue: from a cell, sigma 1.5 then gap 1.0, while the browser's σ slider goes
# Home (0.5) and ipympl asks for draws; plus a toggle and a rescale racing a browser step.
SCENARIOS = {
    "cell step paused mid-blit, browser moves a slider": (
        lambda ex: set_controls(ex, sigma_ratio=1.5, gap=1.0), lambda ex: set_controls(ex, sigma_ratio=0.5), "blit"),
    "cell step paused mid-blit, ipympl draws": (
        lambda ex: set_controls(ex, gap=2.45), lambda ex: lambda: ex.figure.canvas.handle_event({"type": "draw"}),
        "blit"),
    "cell redraws the background, browser moves a slider": (
        lambda ex: set_controls(ex, sigma_ratio=0.5), lambda ex: set_controls(ex, gap=0.3), "background"),
    "cell toggles an estimator, ipympl draws": (
        lambda ex: set_controls(ex, k2=False), lambda ex: lambda: ex.figure.canvas.handle_event({"type": "draw"}),
        "background"),
    "browser-side step paused, cell moves a slider": (
        lambda ex: set_controls(ex, gap=0.05), lambda ex: set_controls(ex, gap=3.0, sigma_ratio=1.2), "blit"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_two_threads_drawing_leave_the_right_picture(live_explorer, scenario):
    explorer, frames = live_explorer
    in_cell, from_browser, pause_at = SCENARIOS[scenario]
    lock = ObservedLock()
    race(explorer, in_cell(explorer), from_browser(explorer), pause_at, lock)
    assert lock.contended.is_set()  # the interleaving happened: B had to wait for A
    expected = fresh_pixels(explorer)
    np.testing.assert_array_equal(explorer.blitted.pixels(), expected)
    np.testing.assert_array_equal(browser_picture(frames), expected)  # what the reader sees
    # and the table agrees with the picture
    assert f'data-value="{explorer.state.kl!r}"' in explorer.table.value
    assert explorer.state.gap == explorer.controls["gap"].value
    assert explorer.state.sigma_ratio == explorer.controls["sigma_ratio"].value


@pytest.mark.parametrize("scenario", ["cell step paused mid-blit, ipympl draws",
                                      "browser-side step paused, cell moves a slider"])
def test_without_the_lock_the_same_race_draws_a_wrong_picture(live_explorer, scenario):
    explorer, frames = live_explorer
    in_cell, from_browser, pause_at = SCENARIOS[scenario]
    race(explorer, in_cell(explorer), from_browser(explorer), pause_at, NoLock())
    expected = fresh_pixels(explorer)
    assert np.any(browser_picture(frames) != expected)  # the bug the test above guards against


def test_live_canvas_frames_rebuild_the_canvas(live_explorer):
    explorer, frames = live_explorer
    for gap in (2.4, 2.3, 0.2):
        explorer.controls["gap"].value = gap
    explorer.controls["k3"].value = False
    assert {mode for mode, _ in frames} == {"full"}
    np.testing.assert_array_equal(browser_picture(frames), explorer.blitted.pixels())
    np.testing.assert_array_equal(browser_picture(frames), fresh_pixels(explorer))


def test_a_frame_the_browser_never_loads_leaves_the_right_picture(live_explorer):
    """ipympl's JavaScript cancels a frame that a newer one overtakes before it has loaded: whichever frames
    are lost, the picture after the last one is the final state (it would not be with diff frames)."""
    explorer, frames = live_explorer
    for gap in (2.4, 2.3, 0.2, 0.3):
        explorer.controls["gap"].value = gap
    expected = fresh_pixels(explorer)
    for lost in range(len(frames) - 1):
        shown = browser_picture(frames[:lost] + frames[lost + 1:])
        np.testing.assert_array_equal(shown, expected)
    # the same sequence as matplotlib's diff frames, one lost: the picture is wrong
    pictures = [np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")) for _, data in frames]
    diffs = [("full", frames[0][1])] + [("diff", _diff_frame(a, b)) for a, b in zip(pictures, pictures[1:])]
    assert np.any(browser_picture(diffs[:-2] + diffs[-1:]) != expected)


def _diff_frame(before: np.ndarray, after: np.ndarray) -> bytes:
    """matplotlib's diff frame from ``before`` to ``after``: changed pixels as they are, the rest transparent 0."""
    changed = np.any(before != after, axis=-1)
    out = np.where(changed[..., None], after, 0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(out, "RGBA").save(buffer, format="png")
    return buffer.getvalue()


def test_a_canvas_no_browser_has_connected_to_sends_nothing():
    explorer = BiasExplorer(n=1000, rng=0, live=True)
    frames = []
    explorer.figure.canvas.send_binary = frames.append
    explorer.controls["gap"].value = 2.0
    assert frames == [] and explorer.figure.canvas.syncing_data_url
    explorer.close()


def test_a_draw_from_another_thread_marks_the_background_stale():
    figure = new_figure((3, 2), live=False)
    ax = figure.add_subplot()
    line, = ax.plot([0, 1], [0, 1])
    blitted = BlittedFigure(figure, lambda: [line])
    blitted.render()
    full = blitted.full_draws
    blitted.render()
    assert blitted.full_draws == full  # a blit
    thread = threading.Thread(target=figure.canvas.draw)  # someone else's draw, on another thread
    thread.start()
    thread.join()
    blitted.render()
    assert blitted.full_draws == full + 1


def test_regions_and_layers_give_the_pixels_of_a_full_draw():
    figure = new_figure((4, 2), live=False)
    left, right = figure.add_axes((0.1, 0.2, 0.35, 0.7)), figure.add_axes((0.6, 0.2, 0.35, 0.7))
    moving, = left.plot([0, 1], [0, 1], color="C0")
    curve, = right.plot([0, 1], [1, 0], color="C1")
    regions = {"left": (lambda: [left], lambda: (0, 0, 0.5 * figure.bbox.width, figure.bbox.height)),
               "right": (lambda: [right], lambda: (0.5 * figure.bbox.width, 0, figure.bbox.width, figure.bbox.height))}
    blitted = BlittedFigure(figure, lambda: [moving], slow=lambda: [curve], regions=regions)
    blitted.render()
    left.set_xlim(0, 7)  # new ticks on the left only
    moving.set_ydata([1, 0.5])
    curve.set_ydata([0.2, 0.9])
    blitted.invalidate("left")
    blitted.render()
    assert blitted.region_draws == 1 and blitted.full_draws == 1
    reference = BlittedFigure(figure, lambda: [moving], slow=lambda: [curve])
    got = blitted.pixels()
    reference.render(full=True)
    np.testing.assert_array_equal(got, reference.pixels())
    with pytest.raises(ValueError, match="region must be one of"):
        blitted.invalidate("middle")


def test_new_figure_leaves_the_backend_and_pyplot_alone():
    import subprocess
    import sys

    # A fresh interpreter: ipympl's import would switch the backend, but only the first time.
    code = """
import matplotlib
matplotlib.use("agg")
import matplotlib.pyplot as plt
from klviz.interactive import is_live, new_figure
figure = plt.figure()
live, agg = new_figure((3, 2), live=True), new_figure((3, 2), live=False)
print(is_live(live), is_live(agg), matplotlib.get_backend(), plt.get_fignums())
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False", "agg", "[1]"]


def test_browser_slider_values():
    # Values observed from ipywidgets' FloatSlider (noUiSlider) in Chromium on [0, 3] with step 0.05.
    assert browser_slider_value(1.25, 0.0, 3.0, 0.05) == 1.2500000000000002
    assert browser_slider_value(0.05 * 12, 0.0, 3.0, 0.05) == 0.6
    assert browser_slider_value(1.05, 0.0, 3.0, 0.05) == 1.05
    assert browser_slider_value(7.0, 0.0, 3.0, 0.05) == 3.0
    assert browser_slider_value(-1.0, 0.0, 3.0, 0.05) == 0.0
    for low, high in ((0.0, 3.0), (0.5, 2.0)):
        for k in range(int(round((high - low) / 0.05)) + 1):
            value = browser_slider_value(low + 0.05 * k, low, high, 0.05)
            assert value == pytest.approx(low + 0.05 * k, abs=1e-12)
            assert browser_slider_value(value, low, high, 0.05) == value  # no ping-pong with the browser


def test_png_bytes_round_trip():
    from klviz.interactive import png_bytes

    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, size=(37, 53, 4), dtype=np.uint8)
    pixels[5:9] = 0  # runs of transparent zeros, as in a diff frame
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(pixels))))
    assert decoded.shape == pixels.shape
    np.testing.assert_array_equal(decoded, pixels)
