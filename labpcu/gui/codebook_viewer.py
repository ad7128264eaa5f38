"""The codebook viewer: what each analog operator really computes, against its ideal.

::

    viewer = CodebookViewer("day.h5")        # the codebooks stored in a run store
    viewer.load("cb/wafer0.h5")              # or an exported file / npz folder
    viewer.show_entry("gelu")                # an operator, "programming" or "weight noise"

For each operator table: the mean output on the grid with quantile bands (5–95 % and
25–75 % by default) and the ideal function (:mod:`labpcu.data.ideal`, on a fine grid);
1-D tables (and the transfer curves of softmax and VMM) as curves, 2-D tables as
slices (one curve per value of the second input) or as an error map (mean − ideal).
The programming table: achieved vs requested weight with ±1 σ bars. The weight
noise: its distribution and the paper's. Codebooks are read with
:func:`labpcu.data.codebook_io.load_codebook` only (the file layout is its business).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from labpcu.gui.live_plot import plot_frame, trace_colour

log = logging.getLogger(__name__)

#: quantile bands drawn, outer first: (low, high) levels
BANDS = ((0.05, 0.95), (0.25, 0.75))
PROGRAMMING = "programming"
WEIGHT_NOISE = "weight noise"
#: 2-D tables: slices drawn at most
MAX_SLICES = 5
MEAN_COLOUR = "#1f5fa8"


def band_levels(levels: np.ndarray, lo: float, hi: float) -> tuple[int, int]:
    """Indices of the stored quantile levels nearest ``lo`` and ``hi``."""
    levels = np.asarray(levels, dtype=float)
    return int(np.argmin(np.abs(levels - lo))), int(np.argmin(np.abs(levels - hi)))


def _pct(level: float) -> str:
    return f"{100 * level:g}"


class CodebookViewer(QWidget):
    """Codebooks of a store (or exported files): operator tables with their bands, the
    programming table and the weight noise."""

    def __init__(self, store_path: str | Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store_path = Path(store_path) if store_path is not None else None
        self.codebook: Any = None
        self.source = ""
        self.entry = ""
        #: what the plot shows now, by name: arrays as drawn (tests and tools read it)
        self.drawn: dict[str, Any] = {}

        self.books = QComboBox()
        self.books.setMinimumContentsLength(18)
        self.books.activated.connect(self._book_chosen)
        open_file = QPushButton("Open file…")
        open_file.clicked.connect(lambda: self.load())
        reload_ = QPushButton("Reload")
        reload_.clicked.connect(self.refresh)
        self.summary = QLabel("")
        self.summary.setTextFormat(Qt.RichText)
        self.summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(QLabel("codebook"))
        top.addWidget(self.books, 1)
        top.addWidget(reload_)
        top.addWidget(open_file)

        self.entries = QListWidget()
        self.entries.setMinimumWidth(240)
        self.entries.currentItemChanged.connect(
            lambda cur, _prev: cur is not None and self.show_entry(cur.data(Qt.UserRole)))
        self.mode = QComboBox()
        self.mode.addItems(["slices", "error map"])
        self.mode.setToolTip("2-D tables: curves at a few values of the second input, or mean − ideal on the grid")
        self.mode.currentIndexChanged.connect(lambda _: self.entry and self.show_entry(self.entry))
        self.plot = plot_frame()
        self.item = self.plot.getPlotItem()
        self.legend = self.item.addLegend(offset=(10, 10), labelTextSize="8pt")  # top left: the curves rise to the right
        self.details = QLabel("")
        self.details.setTextFormat(Qt.RichText)
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextSelectableByMouse)
        # the error map lives in its own plot, made once (a colour bar created and removed
        # per view leaves pyqtgraph painting a dead item)
        self.map_plot = plot_frame()
        self.map_item = self.map_plot.getPlotItem()
        self.map_image = pg.ImageItem()
        self.map_item.addItem(self.map_image)
        self.colorbar = pg.ColorBarItem(values=(-1.0, 1.0), colorMap=pg.colormap.get("CET-D1"), label="mean − ideal",
                                        interactive=False)
        self.colorbar.setImageItem(self.map_image, insert_in=self.map_item)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.plot)
        self.stack.addWidget(self.map_plot)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        mode_row = QHBoxLayout()
        mode_row.addStretch(1)
        mode_row.addWidget(QLabel("2-D view"))
        mode_row.addWidget(self.mode)
        rl.addLayout(mode_row)
        rl.addWidget(self.stack, 1)
        scroll = QScrollArea()
        scroll.setWidget(self.details)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setMaximumHeight(170)
        rl.addWidget(scroll)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.entries)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([250, 750])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)
        self.refresh()

    # -------------------------------------------------- sources
    def store_codebooks(self) -> list[str]:
        """Names of the codebooks in the store (empty without a store or codebook)."""
        if self.store_path is None or not self.store_path.exists():
            return []
        from labpcu.data import codebook_io

        try:
            return list(codebook_io.list_codebooks(self.store_path))
        except Exception as exc:  # noqa: BLE001 - no codebook group, a file mid-write: show none
            log.info("no codebooks listed in %s: %s", self.store_path, exc)
            return []

    def refresh(self) -> None:
        """List the store's codebooks again and show the first (or the one shown)."""
        names = self.store_codebooks()
        current = self.books.currentData()
        self.books.blockSignals(True)
        self.books.clear()
        for name in names:
            self.books.addItem(f"{name}  (in {self.store_path.name})", ("store", name))
        if self.source and not self.source.startswith("store:"):
            self.books.addItem(self.source, ("file", self.source))
        self.books.blockSignals(False)
        if current is not None:
            k = self.books.findData(current)
            if k >= 0:
                self.books.setCurrentIndex(k)
                self._book_chosen(k)
                return
        if names:
            self.books.setCurrentIndex(0)
            self._book_chosen(0)
        elif self.codebook is None:
            self.summary.setText("no codebook in this store: build one with <tt>labpcu codebook build</tt>, "
                                 "or open an exported file")

    def _book_chosen(self, index: int) -> None:
        data = self.books.itemData(index)
        if not data:
            return
        kind, name = data
        if kind == "store":
            self.load(self.store_path, name)
        else:
            self.load(name)

    def load(self, path: str | Path | None = None, name: str | None = None) -> Any:
        """Show a codebook: a run store's (``name`` picks one), an exported HDF5 file, or
        an npz folder / its manifest.json. Without ``path``, ask for a file."""
        from labpcu.data.codebook_io import load_codebook

        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open a codebook", "",
                                                  "Codebooks (*.h5 *.hdf5 manifest.json);;All files (*)")
            if not path:
                return None
        try:
            cb = load_codebook(path, name)
        except Exception as exc:  # noqa: BLE001 - one line for the operator
            self.summary.setText(f"<span style='color:#c62828'>cannot read the codebook: "
                                 f"{_esc(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}</span>")
            return None
        is_store = self.store_path is not None and Path(path) == self.store_path and name is not None
        self.source = f"store:{name}" if is_store else str(path)
        if not is_store and self.books.findData(("file", str(path))) < 0:
            self.books.addItem(str(path), ("file", str(path)))
            self.books.setCurrentIndex(self.books.count() - 1)
        self.show_codebook(cb)
        return cb

    def show_codebook(self, cb: Any) -> None:
        self.codebook = cb
        sources = getattr(cb, "source_runs", ()) or ()
        bits = [f"<b>{len(cb.operators)} operator(s)</b>"]
        if cb.devices:
            bits.append(f"{len(cb.devices)} devices")
        if cb.wafer:
            bits.append(f"wafer {_esc(str(cb.wafer))}")
        if sources:
            bits.append(f"from {len(sources)} run(s)")
        bits.append(f"created {_esc(str(cb.created)[:19])}")
        if cb.temperature is not None:
            bits.append(f"{cb.temperature:g} K")
        self.summary.setText(" · ".join(bits))
        self.entries.blockSignals(True)
        self.entries.clear()
        for name, table in cb.operators.items():
            item = QListWidgetItem(f"{name}   ({'×'.join(map(str, table.grid_shape))})")
            item.setToolTip(f"{table.kind}, ideal {table.ideal}, {table.n_devices} devices")
            item.setData(Qt.UserRole, name)
            self.entries.addItem(item)
        for name, present in ((PROGRAMMING, cb.programming is not None), (WEIGHT_NOISE, cb.weight_noise is not None)):
            if present:
                item = QListWidgetItem(name)
                item.setData(Qt.UserRole, name)
                self.entries.addItem(item)
        self.entries.blockSignals(False)
        if self.entries.count():
            keep = [k for k in range(self.entries.count()) if self.entries.item(k).data(Qt.UserRole) == self.entry]
            self.entries.setCurrentRow(keep[0] if keep else 0)
            self.show_entry(self.entries.currentItem().data(Qt.UserRole))

    def entry_names(self) -> list[str]:
        return [self.entries.item(k).data(Qt.UserRole) for k in range(self.entries.count())]

    # -------------------------------------------------- drawing
    def _clear(self) -> None:
        self.item.clear()
        self.legend.clear()
        self.legend.setVisible(True)
        self.stack.setCurrentWidget(self.plot)
        self.item.setLogMode(False, False)
        self.item.setAspectLocked(False)
        self.drawn = {}

    def show_entry(self, name: str) -> None:
        """Draw an operator table by name, or ``"programming"`` / ``"weight noise"``."""
        if self.codebook is None:
            return
        self.entry = name
        self._clear()
        for k in range(self.entries.count()):  # the list follows a programmatic choice
            if self.entries.item(k).data(Qt.UserRole) == name and self.entries.currentRow() != k:
                self.entries.blockSignals(True)
                self.entries.setCurrentRow(k)
                self.entries.blockSignals(False)
        if name == PROGRAMMING:
            self._draw_programming(self.codebook.programming)
        elif name == WEIGHT_NOISE:
            self._draw_weight_noise(self.codebook.weight_noise)
        else:
            table = self.codebook[name]
            if table.ndim == 1:
                self._draw_1d(table)
            elif self.mode.currentText() == "error map":
                self._draw_error_map(table)
            else:
                self._draw_slices(table)
            self.details.setText(self._table_details(table))
        self.mode.setEnabled(name in getattr(self.codebook, "operators", {}) and self.codebook[name].ndim == 2
                             if name not in (PROGRAMMING, WEIGHT_NOISE) else False)

    def _band(self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, colour: Any, alpha: int, name: str) -> None:
        c = pg.mkColor(colour)
        c.setAlpha(alpha)
        lo_curve = pg.PlotCurveItem(x, lo, pen=pg.mkPen(None))
        hi_curve = pg.PlotCurveItem(x, hi, pen=pg.mkPen(None))
        fill = pg.FillBetweenItem(lo_curve, hi_curve, brush=pg.mkBrush(c))
        for it in (lo_curve, hi_curve, fill):
            self.item.addItem(it)
        if name:
            self.legend.addItem(pg.BarGraphItem(x=[0], height=[0], width=0, brush=pg.mkBrush(c), pen=None), name)

    def _draw_1d(self, t: Any) -> None:
        x = np.asarray(t.axes[0], dtype=float)
        levels = np.asarray(t.quantile_levels, dtype=float)
        for (lo, hi), alpha in zip(BANDS, (55, 110)):
            i, j = band_levels(levels, lo, hi)
            name = f"{_pct(levels[i])}–{_pct(levels[j])} %"
            q_lo, q_hi = t.quantiles[..., i], t.quantiles[..., j]
            self._band(x, q_lo, q_hi, MEAN_COLOUR, alpha, name)
            self.drawn[f"band {name}"] = (x, q_lo, q_hi)
        fine = np.linspace(x.min(), x.max(), 400) if len(x) > 1 else x
        ideal = np.asarray(t.ideal_function(fine), dtype=float)
        self.item.plot(fine, ideal, pen=pg.mkPen("#222", width=1.5, style=Qt.DashLine), name="ideal")
        mean = np.asarray(t.mean, dtype=float)
        measured = np.asarray(t.count) > 0
        self.item.plot(x, mean, pen=pg.mkPen(MEAN_COLOUR, width=2), symbol="o", symbolSize=5,
                       symbolBrush=MEAN_COLOUR, symbolPen=None, name="mean")
        if (~measured).any():
            self.item.plot(x[~measured], mean[~measured], pen=None, symbol="x", symbolSize=9, symbolPen="#c62828",
                           name="no sample (interpolated)")
        self.drawn.update(mean=(x, mean), ideal=(fine, ideal))
        xname = "ideal output" if t.is_transfer else (t.axis_names[0] if t.axis_names else "x")
        self.item.setLabel("bottom", f"{xname} (network units)")
        self.item.setLabel("left", f"{t.output or 'y'} (network units)")
        self.item.setTitle(f"{t.name}: measured vs {t.ideal}")

    def _draw_slices(self, t: Any) -> None:
        x1, x2 = (np.asarray(a, dtype=float) for a in t.axes[:2])
        levels = np.asarray(t.quantile_levels, dtype=float)
        i, j = band_levels(levels, *BANDS[0])
        picks = np.unique(np.linspace(0, len(x2) - 1, min(MAX_SLICES, len(x2))).round().astype(int))
        fine = np.linspace(x1.min(), x1.max(), 300) if len(x1) > 1 else x1
        for n, k in enumerate(picks):
            colour = trace_colour(n)
            label = f"{t.axis_names[1] if len(t.axis_names) > 1 else 'x2'} = {x2[k]:.3g}"
            self._band(x1, t.quantiles[:, k, i], t.quantiles[:, k, j], colour, 45, "")
            self.item.plot(fine, np.asarray(t.ideal_function(fine, np.full_like(fine, x2[k])), dtype=float),
                           pen=pg.mkPen(colour, width=1, style=Qt.DashLine))
            self.item.plot(x1, t.mean[:, k], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=5,
                           symbolBrush=colour, symbolPen=None, name=label)
            self.drawn[f"slice {k}"] = (x1, t.mean[:, k], t.quantiles[:, k, i], t.quantiles[:, k, j])
        self.item.setLabel("bottom", f"{t.axis_names[0] if t.axis_names else 'x1'} (network units)")
        self.item.setLabel("left", f"{t.output or 'y'} (network units)")
        self.item.setTitle(f"{t.name}: mean, {_pct(levels[i])}–{_pct(levels[j])} % band, ideal dashed")

    def _draw_error_map(self, t: Any) -> None:
        x1, x2 = (np.asarray(a, dtype=float) for a in t.axes[:2])
        err = np.asarray(t.mean, dtype=float) - np.asarray(t.ideal_values, dtype=float)
        lim = float(np.nanmax(np.abs(err))) or 1.0
        dx1 = (x1[-1] - x1[0]) / max(len(x1) - 1, 1) or 1.0
        dx2 = (x2[-1] - x2[0]) / max(len(x2) - 1, 1) or 1.0
        self.map_image.setImage(np.nan_to_num(err), autoLevels=False)  # rows: x1 (pyqtgraph's x), columns: x2
        self.map_image.setRect(x1[0] - dx1 / 2, x2[0] - dx2 / 2, dx1 * len(x1), dx2 * len(x2))
        self.colorbar.setLevels(values=(-lim, lim))
        self.map_item.autoRange()
        self.stack.setCurrentWidget(self.map_plot)
        self.drawn["error"] = err
        self.map_item.setLabel("bottom", f"{t.axis_names[0] if t.axis_names else 'x1'} (network units)")
        self.map_item.setLabel("left", f"{t.axis_names[1] if len(t.axis_names) > 1 else 'x2'} (network units)")
        self.map_item.setTitle(f"{t.name}: mean − ideal on the grid (max |error| {lim:.3g})")

    def _draw_programming(self, p: Any) -> None:
        x = np.asarray(p.target_fraction, dtype=float)
        y = np.asarray(p.achieved_mean, dtype=float)
        s = np.asarray(p.achieved_std, dtype=float)
        s = np.where(np.isfinite(s), s, 0.0)
        self.item.plot([0, 1], [0, 1], pen=pg.mkPen("#222", width=1.5, style=Qt.DashLine), name="ideal (achieved = requested)")
        self.item.addItem(pg.ErrorBarItem(x=x, y=y, top=s, bottom=s, beam=0.015, pen=pg.mkPen(MEAN_COLOUR, width=1.5)))
        self.item.plot(x, y, pen=None, symbol="o", symbolSize=8, symbolBrush=MEAN_COLOUR, symbolPen=None,
                       name="achieved mean ± 1 σ")
        self.drawn.update(programming=(x, y, s))
        self.item.setLabel("bottom", "requested weight (of the range)")
        self.item.setLabel("left", "programmed weight (of the range)")
        self.item.setTitle("weight programming: requested vs programmed")
        rows = "".join(
            f"<tr><td>{int(lv)}</td><td>{tf:.3f}</td><td>{am:.3f} ± {sd:.3f}</td><td>{int(n)}</td>"
            f"<td>{_si(tg, 'S')}</td><td>{_si(gm, 'S')} ± {_si(gs, 'S')}</td></tr>"
            for lv, tf, am, sd, n, tg, gm, gs in zip(p.level, p.target_fraction, p.achieved_mean, p.achieved_std,
                                                       p.count, p.target_conductance, p.achieved_conductance_mean,
                                                       p.achieved_conductance_std))
        self.details.setText(
            "<table cellspacing=4><tr><th>level</th><th>requested</th><th>programmed</th><th>n</th>"
            f"<th>target G</th><th>achieved G</th></tr>{rows}</table>"
            + (f"source run {_esc(p.source_run)}" if p.source_run else ""))

    def _draw_weight_noise(self, w: Any) -> None:
        from labpcu.data.codebook import PAPER_WEIGHT_SIGMA

        sigma = float(w.sigma)
        span = 4 * max(sigma, PAPER_WEIGHT_SIGMA)
        z = np.linspace(-span, span, 400)
        for s, name, pen in ((sigma, f"measured σ = {sigma:.4g}", pg.mkPen(MEAN_COLOUR, width=2)),
                             (PAPER_WEIGHT_SIGMA, f"paper σ = {PAPER_WEIGHT_SIGMA:.4g}",
                              pg.mkPen("#222", width=1.5, style=Qt.DashLine))):
            if s > 0:
                self.item.plot(z, np.exp(-0.5 * (z / s) ** 2) / (s * math.sqrt(2 * math.pi)), pen=pen, name=name)
        if sigma > 0:
            peak = 1 / (sigma * math.sqrt(2 * math.pi))
            for edge in (-sigma, sigma):
                self.item.plot([edge, edge], [0, peak * math.exp(-0.5)], pen=pg.mkPen(MEAN_COLOUR, width=1,
                                                                                     style=Qt.DotLine))
        self.drawn.update(weight_noise=sigma)
        self.item.setLabel("bottom", "weight error: programmed − requested (of the range)")
        self.item.setLabel("left", "probability density")
        self.item.setTitle("weight noise: w + σ · range · N(0, 1), drawn once per device")
        facts = [("σ (of the range)", f"{sigma:.4g}"), ("σ relative to G_max", _num(w.sigma_rel_gmax)),
                 ("σ absolute", _si(w.sigma_abs, "S")), ("σ proportional to the target", _num(w.sigma_proportional)),
                 ("devices", str(w.n_devices)), ("attempts", str(w.attempts)), ("reference", w.reference),
                 ("redrawn", w.resample), ("distribution", w.distribution),
                 ("source run", w.source_run or "the paper's value")]
        self.details.setText("<table cellspacing=4>" + "".join(
            f"<tr><td><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>" for k, v in facts) + "</table>")

    def _table_details(self, t: Any) -> str:
        mean_abs, mean_rel = t.errors()
        empty = int((np.asarray(t.count) == 0).sum())
        units = ", ".join(f"{n}: {u}" for n, u in zip(t.axis_names, t.input_units) if u)
        facts = [("kind", t.kind), ("ideal", t.ideal + (f" {t.ideal_params}" if t.ideal_params else "")),
                 ("grid", " × ".join(str(n) for n in t.grid_shape)), ("devices", str(t.n_devices)),
                 ("repeats", str(t.n_repeats)), ("mean |y − ideal|", _num(mean_abs)),
                 ("mean relative error", f"{100 * mean_rel:.3g} %" if math.isfinite(mean_rel) else "—"),
                 ("noise", t.noise_scope)]
        if empty:
            facts.append(("grid points without a sample", f"{empty} (interpolated)"))
        if units:
            facts.append(("physical units", units + (f" → {t.output_unit}" if t.output_unit else "")))
        if t.source_run:
            facts.append(("source run", t.source_run))
        cells = [f"<b>{_esc(k)}</b> {_esc(v)}" for k, v in facts]
        return " &nbsp;·&nbsp; ".join(cells)


def _num(v: Any) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "—" if not math.isfinite(v) else f"{v:.4g}"


def _si(v: Any, unit: str) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(v):
        return "—"
    return pg.siFormat(v, precision=3, suffix=unit)


def _esc(text: str) -> str:
    import html

    return html.escape(str(text))
