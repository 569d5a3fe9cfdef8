r"""Live figures for klviz's interactive panels: one lock, blitting, and an ipympl canvas made directly.

Used by the bias explorer (:mod:`klviz.explorer`) and the gradient-variance panel
(:mod:`klviz.variance_panel`); one implementation of everything that touches a canvas.

* :func:`new_figure` makes a figure *with its own canvas*: an ipympl canvas (a widget the browser
  draws) when running in a kernel with ipympl installed, else a plain Agg canvas. pyplot is not
  involved, so the notebook's backend (inline figures elsewhere) is left alone.
* :class:`BlittedFigure` renders a figure whose *dynamic* artists change at every step over a saved
  background of everything else (blitting), under one re-entrant lock.
* :class:`LivePanel` is the widget side: the picture (live canvas, or a PNG re-rendered after each
  change), a display bundle that carries an ``image/png`` of the current state next to the widget view
  (so GitHub, nbviewer and a reader without a kernel see the picture), and sliders whose values land
  where the browser's would.

Why a lock. With ipykernel 7 the widget messages (a slider moved in the browser, ipympl's "draw"
requests, resizes) are handled on a subshell thread while cells run on the main thread, so two threads
can draw the same figure at once. Every path that touches the canvas therefore takes
:attr:`BlittedFigure.lock`: a panel's whole step (read the controls, compute, set the artists, render),
every message from the browser to the canvas (:meth:`LiveCanvas.handle_event`), every draw ipympl asks
for (:meth:`LiveCanvas.draw`, which becomes a full render that also refreshes the saved background), and
the static PNG (:meth:`BlittedFigure.to_png`). Inside the lock a step is the only thing drawing: the
background it restores is the one it saved, the artists it draws are the ones it set, and the frame it
sends is finished. The last step to run reads the controls' final values, so the final picture is the
state the controls show. A draw by code that bypasses the lock (``figure.canvas.draw()`` on a plain Agg
canvas) is recognised by its thread, not by a shared flag, and only marks the background stale.
"""

from __future__ import annotations

import base64
import io
import math
import threading
import time
from collections import deque
from functools import lru_cache
from typing import Callable, Iterable

import numpy as np

__all__ = ["live_canvas_available", "new_figure", "BlittedFigure", "LivePanel", "browser_slider_value",
           "grid_slider"]


def _import_ipympl():
    """Import ipympl's backend module without letting it switch matplotlib's backend.

    ``import ipympl`` calls ``matplotlib.use("module://ipympl.backend_nbagg")`` when matplotlib is already
    imported: every later ``plt.show()`` in the notebook would then make a widget instead of an inline
    image. Only the canvas class is needed here, so that call is skipped during the import.
    """
    import sys

    if "ipympl.backend_nbagg" in sys.modules:
        return sys.modules["ipympl.backend_nbagg"]
    import matplotlib

    use = matplotlib.use
    matplotlib.use = lambda *args, **kwargs: None
    try:
        import ipympl.backend_nbagg as backend
    finally:
        matplotlib.use = use
    return backend


def live_canvas_available() -> bool:
    """True in a running IPython kernel with ipympl installed: a live (browser-drawn) canvas can be made."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    try:
        _import_ipympl()
    except ImportError:
        return False
    return True


def new_figure(figsize, *, live: bool | None = None):
    """A matplotlib Figure with a canvas of its own: live (ipympl) or Agg, without pyplot.

    Parameters
    ----------
    figsize : (float, float)
        Width and height in inches.
    live : bool or None
        True: an ipympl canvas (a widget); False: an Agg canvas; None (default): live when
        :func:`live_canvas_available`.

    Returns
    -------
    matplotlib.figure.Figure
        ``figure.canvas`` is a :class:`LiveCanvas` or a ``FigureCanvasAgg``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    if live is None:
        live = live_canvas_available()
    if live:
        canvas = _live_canvas_class()(figure)
        _import_ipympl().FigureManager(canvas, num=id(figure))  # the canvas needs a manager; it is not registered with pyplot
        canvas.header_visible = False
        canvas.toolbar_visible = "fade-in-fade-out"
        canvas.resizable = False  # the figure's layout is made for its size
    else:
        FigureCanvasAgg(figure)
    return figure


def is_live(figure) -> bool:
    """Whether the figure's canvas is a live (ipympl) widget."""
    return getattr(figure.canvas, "_klviz_live", False)


def png_bytes(rgba) -> bytes:
    """Encode an (h, w, 4) uint8 RGBA array as PNG: no row filters, zlib level 1.

    A live canvas sends every frame as a full-size PNG (LiveCanvas.get_diff_image says why). Pillow's
    encoder spends most of its time choosing row filters; without them zlib alone encodes a 1000 x 660
    frame in about half the time, for about the same size. Decoders read it like any PNG.
    """
    import struct
    import zlib

    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    height, width = rgba.shape[:2]
    raw = np.zeros((height, 1 + 4 * width), dtype=np.uint8)  # each row: filter type 0, then the pixels
    raw[:, 1:] = rgba.reshape(height, 4 * width)

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
            + chunk(b"IEND", b""))


@lru_cache(maxsize=1)
def _live_canvas_class():
    """ipympl's canvas, with every draw and every browser message under the owning figure's lock."""
    Canvas = _import_ipympl().Canvas

    class LiveCanvas(Canvas):
        _klviz_live = True

        def _owner(self):
            return getattr(self, "_klviz_owner", None)

        def _handle_message(self, object, content, buffers):
            owner = self._owner()
            if owner is None:
                return super()._handle_message(object, content, buffers)
            with owner.lock:
                return super()._handle_message(object, content, buffers)

        def handle_event(self, event):
            owner = self._owner()
            if owner is None:
                return super().handle_event(event)
            with owner.lock:
                return super().handle_event(event)

        def draw(self):
            # ipympl's draws (a browser connecting, a resize, the toolbar) become a full render: the
            # background is saved afresh and the finished frame, dynamic artists included, is sent.
            owner = self._owner()
            if owner is None:
                return super().draw()
            owner.render(full=True)

        def get_diff_image(self):
            # Always a full frame, encoded with png_bytes (faster than matplotlib's encoder). matplotlib's
            # "diff" frames (only the changed pixels, drawn over the last picture) break under two quick
            # frames: ipympl's JavaScript loads each frame by replacing one image's src, so a frame that
            # arrives before the previous one has loaded cancels it, and a diff then paints onto a picture
            # the kernel never sent — wrong for good (a cell and the browser stepping at once did it in
            # the real-browser race test). With full frames a cancelled frame is harmless: the last one sent
            # is the last one shown. The cost, on notebook 04's 1000x660 figure: 10 ms to encode instead of
            # 8 ms, 99 KB instead of 24 KB.
            if not self._png_is_old:
                return None
            buff = np.asarray(self.get_renderer().buffer_rgba()).view(np.uint32).squeeze(2)
            self.set_image_mode("full")
            self._last_buff = buff.copy()
            self._force_full = False
            self._png_is_old = False
            return png_bytes(buff.view(np.uint8).reshape((*buff.shape, 4)))

    return LiveCanvas


class BlittedFigure:
    r"""Render a figure as a saved static background plus dynamic artists drawn over it, thread-safely.

    ``dynamic()`` returns the artists that change from step to step; everything else is the static
    background, rendered once (a *full* render) and then restored from a saved copy, with only the
    dynamic artists drawn over it (a *blit*). Call :meth:`invalidate` after changing anything static
    (limits, ticks, layout): the next render is full. The background also goes stale when the canvas
    changes size or when some other code draws the figure.

    ``slow()`` (optional) returns artists that change now and then (with a setting other than the one
    a slider moves fastest): they are drawn once over the static background and that picture is saved
    as a second layer; call :meth:`invalidate_slow` when they change. A step then restores the second
    layer and draws only ``dynamic()``. Text is the costliest thing to draw, so
    texts that rarely change belong there.

    ``regions`` (optional) split the static background into parts that can be redrawn alone:
    ``{name: (artists, bbox, key)}`` where ``artists()`` returns the figure's children drawn in that
    region (axes, legends), ``bbox()`` the region in display pixels ``(x0, y0, x1, y1)``, which must
    contain everything those artists draw and nothing of the others, and ``key()`` a hashable summary of
    everything static in the region (limits, layout; None: don't cache). :meth:`invalidate` with a
    region name then redraws only that part (the figure drawn with only those children shown, copied
    into the saved background): a rescaled axis costs its own ticks and labels, not the whole figure's.
    The last few pictures of each region are kept by key, so going back to a recent layout (an
    estimator ticked again, the slider back where it was) is a copy, not a draw.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        Its canvas should be Agg-based (:func:`new_figure` makes one); other canvases are drawn in full.
    dynamic : callable
        Returns the dynamic artists, in drawing order (hidden ones are skipped).
    slow : callable, optional
        Returns the slowly changing artists (drawn under the dynamic ones).
    regions : dict, optional
        Parts of the static background that can be redrawn alone (see above).
    blit : bool
        False draws the whole figure at every render (for comparison, or where blitting misbehaves).

    Attributes
    ----------
    lock : threading.RLock
        Held by every path that touches the canvas; panels hold it for their whole step.
    full_draws : int
        How many renders were full draws.
    render_times : collections.deque
        Seconds per render, the most recent last (kernel-side timing, for benchmarks and tests).
    """

    def __init__(self, figure, dynamic: Callable[[], Iterable], *, slow: Callable[[], Iterable] | None = None,
                 regions: dict | None = None, blit: bool = True):
        self.figure = figure
        self.dynamic = dynamic
        self.slow = slow or (lambda: ())
        self.regions = {name: (spec + (lambda: None,))[:3] for name, spec in (regions or {}).items()}
        self._region_cache: dict = {name: {} for name in self.regions}
        self._slow_background = None
        self._stale_regions: set = set()
        self.region_draws = 0  # how many renders redrew only some regions of the background
        self.blit = bool(blit)
        self.lock = threading.RLock()
        self.full_draws = 0
        self.render_times: deque = deque(maxlen=512)
        self._background = None
        self._background_size = None
        self._drawing_thread = None
        # The figure renders itself: a stale figure must not make pyplot (or anyone) redraw it.
        figure.stale_callback = None
        canvas = figure.canvas
        canvas._klviz_owner = self
        canvas.mpl_connect("draw_event", self._on_draw)

    def invalidate(self, region: str | None = None):
        """The static background changed: the next render is a full one (or redraws only ``region``)."""
        with self.lock:
            if region is None:
                self._background = self._slow_background = None
                self._stale_regions.clear()
                return
            if region not in self.regions:
                raise ValueError(f"region must be one of {sorted(self.regions)}, got {region!r}")
            self._stale_regions.add(region)
            self._slow_background = None

    def invalidate_slow(self):
        """The slowly changing artists changed: the next render redraws them over the static background."""
        with self.lock:
            self._slow_background = None

    def _on_draw(self, event):
        # A draw from this object's render runs on the thread that holds the lock; any other draw (a
        # savefig, a direct canvas.draw()) may have changed what the background shows.
        if self._drawing_thread != threading.get_ident():
            self._background = self._slow_background = None

    def render(self, full: bool = False):
        """Show the current artists: blit the dynamic ones over the saved background, or draw everything.

        A full render draws the figure without the dynamic artists, saves that as the background, then
        draws the dynamic artists on top; a blit restores the background and draws only them. The
        finished frame is then sent to the browser (live canvases; one with no browser connected yet is
        not sent frames, since it would keep them as a data URL the browser cannot read later, and a
        browser that connects asks for a full draw).
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        with self.lock:
            start = time.perf_counter()
            canvas = self.figure.canvas
            self._drawing_thread = threading.get_ident()
            try:
                if not isinstance(canvas, FigureCanvasAgg):
                    self.full_draws += 1
                    canvas.draw()
                elif not self.blit:
                    self.full_draws += 1
                    FigureCanvasAgg.draw(canvas)
                else:
                    size = canvas.get_width_height(physical=True)
                    dynamic = [artist for artist in self.dynamic() if artist.get_visible()]
                    slow = [artist for artist in self.slow() if artist.get_visible()]
                    if full or self._background is None or self._background_size != size:
                        self.full_draws += 1
                        self._draw_only(canvas, hidden=slow + dynamic)
                        self._background = np.asarray(canvas.get_renderer().buffer_rgba()).copy()
                        self._background_size = size
                        self._remember_regions()
                        self._slow_background = None
                        self._stale_regions.clear()
                    elif self._stale_regions:
                        self.region_draws += 1
                        self._redraw_regions(canvas, slow + dynamic)
                    if self._slow_background is None:
                        self._restore(canvas, self._background)
                        for artist in slow:
                            self.figure.draw_artist(artist)
                        self._slow_background = np.asarray(canvas.get_renderer().buffer_rgba()).copy()
                    else:
                        self._restore(canvas, self._slow_background)
                    for artist in dynamic:
                        self.figure.draw_artist(artist)
                if is_live(self.figure) and not canvas.syncing_data_url:
                    canvas.blit(self.figure.bbox)  # sends the frame (only the changed pixels)
            finally:
                self._drawing_thread = None
            # Everything is on screen; a stale figure would make pyplot's post-execute hook redraw it.
            self.figure.stale = False
            self.render_times.append(time.perf_counter() - start)

    @staticmethod
    def _draw_only(canvas, hidden):
        """Draw the figure into the Agg buffer (nothing is sent) with the given artists hidden."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        hidden = [artist for artist in hidden if artist.get_visible()]
        for artist in hidden:
            artist.set_visible(False)
        try:
            FigureCanvasAgg.draw(canvas)
        finally:
            for artist in hidden:
                artist.set_visible(True)

    @staticmethod
    def _restore(canvas, background):
        np.copyto(np.asarray(canvas.get_renderer().buffer_rgba()), background)

    @staticmethod
    def _slices(box, shape):
        # Display pixels have their origin bottom left, the buffer's rows go top down.
        x0, y0, x1, y1 = box
        height, width = shape[:2]
        columns = slice(max(int(math.floor(x0)), 0), min(int(math.ceil(x1)), width))
        rows = slice(max(height - int(math.ceil(y1)), 0), min(height - int(math.floor(y0)), height))
        return rows, columns

    def _remember(self, name, key, pixels):
        cache = self._region_cache[name]
        cache[(key, self._background.shape)] = pixels.copy()
        while len(cache) > 8:  # the oldest go first (dicts keep insertion order)
            del cache[next(iter(cache))]

    def _remember_regions(self):
        """After a full draw: forget pictures of other sizes or looks, keep this one of every region."""
        for name, (_artists, bbox, key) in self.regions.items():
            self._region_cache[name].clear()
            key = key()
            if key is not None:
                rows, columns = self._slices(bbox(), self._background.shape)
                self._remember(name, key, self._background[rows, columns])

    def _redraw_regions(self, canvas, changing):
        """Redraw the stale regions of the static background (or copy them from the region cache)."""
        shape = self._background.shape
        keep, drawn = set(), []
        for name in sorted(self._stale_regions):
            artists, bbox, key = self.regions[name]
            key = key()
            cached = self._region_cache[name].get((key, shape)) if key is not None else None
            if cached is not None:
                rows, columns = self._slices(bbox(), shape)
                self._background[rows, columns] = cached
                continue
            keep.update(artists())
            drawn.append((name, bbox(), key))
        if drawn:
            others = [child for child in self.figure.get_children()
                      if child not in keep and child is not self.figure.patch]
            self._draw_only(canvas, hidden=others + list(changing))
            buffer = np.asarray(canvas.get_renderer().buffer_rgba())
            for name, box, key in drawn:
                rows, columns = self._slices(box, shape)
                self._background[rows, columns] = buffer[rows, columns]
                if key is not None:
                    self._remember(name, key, buffer[rows, columns])
        self._stale_regions.clear()

    def pixels(self):
        """A copy of the canvas's current RGBA pixels (what the last render produced)."""
        with self.lock:
            return np.asarray(self.figure.canvas.get_renderer().buffer_rgba()).copy()

    def to_png(self, dpi: float = 100) -> bytes:
        """The figure as PNG bytes (a full draw), without a timestamp or version, so it is reproducible."""
        with self.lock:
            self._drawing_thread = threading.get_ident()
            try:
                buffer = io.BytesIO()
                self.figure.savefig(buffer, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
            finally:
                self._drawing_thread = None
            # savefig drew into the canvas's buffer (with every artist shown): the saved background is still
            # right (it is a separate copy), but a live canvas must not send that buffer as the next frame.
            self._background = self._background if dpi == self.figure.dpi else None
            return buffer.getvalue()


def browser_slider_value(value: float, low: float, high: float, step: float) -> float:
    """The float the browser's slider snaps ``value`` to, bit for bit (ipywidgets 8 FloatSlider, noUiSlider 15).

    The browser snaps in percent of the range: ``p = 100 (v - low)/(high - low)``, rounded to a multiple of
    ``100 step/(high - low)``, then mapped back; e.g. 1.25 becomes 1.2500000000000002 on [0, 3]. When the
    kernel sets a value that differs from this in the last bit, a slider with continuous updates sends its
    own version back, and after a loop of settings (or a notebook's "run all") those late echoes overwrite
    the value set last. Setting the browser's own float avoids the echo. The same arithmetic in IEEE
    doubles, in the same order, gives the same bits.
    """
    value, low, high, step = float(value), float(low), float(high), float(step)
    if value >= high:
        return high
    if value <= low:
        return low
    percent = 100 * (value - low) / (high - low)
    step_percent = 100 * step / (high - low)
    percent = min(max(math.floor(percent / step_percent + 0.5) * step_percent, 0.0), 100.0)  # JS Math.round
    if percent >= 100:
        return high
    return percent * (high - low) / 100 + low


@lru_cache(maxsize=1)
def _grid_slider_class():
    import ipywidgets as widgets
    import traitlets

    class GridFloatSlider(widgets.FloatSlider):
        """A FloatSlider whose values set from Python land exactly where the browser would put them."""

        @traitlets.validate("value")
        def _validate_value(self, proposal):
            value = min(max(proposal["value"], self.min), self.max)
            return browser_slider_value(value, self.min, self.max, self.step)

    return GridFloatSlider


def grid_slider(**kwargs):
    """An ipywidgets FloatSlider (same keywords) whose values land where the browser's slider would put them."""
    return _grid_slider_class()(**kwargs)


class LivePanel:
    r"""The widget side of an interactive figure: the picture, the display bundle, the lock-held step.

    A subclass sets ``self.blitted`` (a :class:`BlittedFigure`) and ``self.widget`` (the layout, built
    around :meth:`picture_widget`), and runs its steps through :meth:`step`, which holds the figure's
    lock, so that a step from a cell and one from the browser never interleave.

    On a live canvas the browser draws the frames itself. Otherwise the picture is a PNG in an
    ``Output`` widget, re-rendered after each step once the panel has been displayed. Either way the
    display bundle carries an ``image/png`` of the state at display time next to the widget view.
    """

    blitted: BlittedFigure
    widget: object

    def picture_widget(self):
        """The live canvas, or (no live canvas) an Output widget that shows PNGs."""
        import ipywidgets as widgets

        if is_live(self.blitted.figure):
            self._output = None
            return self.blitted.figure.canvas
        self._output = widgets.Output()
        self._shown = False
        return self._output

    @property
    def lock(self):
        return self.blitted.lock

    def to_png(self, dpi: float = 100) -> bytes:
        """The current picture as PNG bytes (reproducible)."""
        return self.blitted.to_png(dpi)

    def after_render(self):
        """Refresh the PNG fallback (called by subclasses after each step, under the lock)."""
        if getattr(self, "_output", None) is not None and self._shown:
            self._show_png()

    def _show_png(self):
        # One atomic change of the Output widget's outputs: no IPython display machinery, no flicker.
        png = base64.b64encode(self.to_png()).decode("ascii")
        self._output.outputs = ({"output_type": "display_data", "metadata": {},
                                 "data": {"image/png": png, "text/plain": repr(self)}},)

    def _repr_mimebundle_(self, **kwargs):
        with self.lock:
            if getattr(self, "_output", None) is not None and not self._shown:
                self._shown = True
                self._show_png()
            png = base64.b64encode(self.to_png()).decode("ascii")
            canvas = self.blitted.figure.canvas
            if is_live(self.blitted.figure) and canvas.syncing_data_url:
                # No browser yet: the canvas's saved widget state carries the picture (as ipympl's own
                # display does), so a notebook reopened without a kernel shows it in the widget too.
                canvas._data_url = f"data:image/png;base64,{png}"
            bundle = self.widget._repr_mimebundle_(**kwargs)
            # The static stand-in: viewers without a widget manager (GitHub, nbviewer) show this picture of
            # the state at display time.
            bundle["image/png"] = png
            bundle["text/plain"] = repr(self)
            return bundle

