"""Small SVG chart builders for the self-contained HTML reports.

Reports must open offline (a lab laptop, a CI artefact), so plots are inline SVG strings built
here rather than a JS library from a CDN. Each chart is one ``<svg class="tt-chart"
data-chart=NAME>`` element with a view box, so it scales with the page; data is decimated by
the caller (min/max per pixel column), so a chart never carries more than a few thousand points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

__all__ = ["PALETTE", "Band", "Series", "bar_chart", "histogram", "line_chart", "nice_ticks",
           "roofline_chart", "stacked_bars"]

PALETTE = ("#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04",
           "#db2777", "#4b5563", "#65a30d", "#7c3aed", "#0f766e")
_AXIS = "#94a3b8"
_GRID = "#e2e8f0"
_TEXT = "#334155"
_FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif"'

Fmt = Callable[[float], str]


@dataclass
class Series:
    """One line; with ``lo``/``hi`` also a filled min/max envelope (decimated data)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    color: str = PALETTE[0]
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    dashed: bool = False
    step: bool = False


@dataclass
class Band:
    """A shaded x range behind the data (a phase), with a label."""

    x0: float
    x1: float
    label: str
    color: str


@dataclass
class _Frame:
    width: int
    height: int
    left: int = 64
    right: int = 16
    top: int = 28
    bottom: int = 40
    parts: list[str] = field(default_factory=list)

    @property
    def pw(self) -> float:
        return float(self.width - self.left - self.right)

    @property
    def ph(self) -> float:
        return float(self.height - self.top - self.bottom)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (1, 2, 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else [0.0]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out = []
    v = start
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def _num(v: float) -> str:
    return f"{v:.1f}"


def _fmt_default(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.2g}"
    return f"{v:.4g}"


def _open(fr: _Frame, name: str, title: str) -> None:
    fr.parts.append(
        f'<svg class="tt-chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {fr.width} {fr.height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" {_FONT} font-size="12">'
    )
    fr.parts.append(f'<rect x="0" y="0" width="{fr.width}" height="{fr.height}" fill="#ffffff"/>')
    if title:
        fr.parts.append(f'<text x="{fr.left}" y="16" fill="{_TEXT}" font-weight="600" '
                        f'font-size="13">{escape(title)}</text>')


def _axes(fr: _Frame, xs: Sequence[float], ys: Sequence[float], sx: Callable[[float], float],
          sy: Callable[[float], float], fx: Fmt, fy: Fmt, x_label: str, y_label: str) -> None:
    x0, x1 = fr.left, fr.left + fr.pw
    y0, y1 = fr.top, fr.top + fr.ph
    for v in ys:
        y = sy(v)
        fr.parts.append(f'<line x1="{x0}" x2="{_num(x1)}" y1="{_num(y)}" y2="{_num(y)}" '
                        f'stroke="{_GRID}"/>')
        fr.parts.append(f'<text x="{x0 - 6}" y="{_num(y + 4)}" text-anchor="end" '
                        f'fill="{_TEXT}">{escape(fy(v))}</text>')
    for v in xs:
        x = sx(v)
        fr.parts.append(f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{_num(y1)}" y2="{_num(y1 + 4)}" '
                        f'stroke="{_AXIS}"/>')
        fr.parts.append(f'<text x="{_num(x)}" y="{_num(y1 + 16)}" text-anchor="middle" '
                        f'fill="{_TEXT}">{escape(fx(v))}</text>')
    fr.parts.append(f'<rect x="{x0}" y="{y0}" width="{_num(fr.pw)}" height="{_num(fr.ph)}" '
                    f'fill="none" stroke="{_AXIS}"/>')
    if x_label:
        fr.parts.append(f'<text x="{_num(x0 + fr.pw / 2)}" y="{fr.height - 6}" '
                        f'text-anchor="middle" fill="{_TEXT}">{escape(x_label)}</text>')
    if y_label:
        fr.parts.append(f'<text transform="translate(14 {_num(y0 + fr.ph / 2)}) rotate(-90)" '
                        f'text-anchor="middle" fill="{_TEXT}">{escape(y_label)}</text>')


def _legend(fr: _Frame, items: Sequence[tuple[str, str]], y: int = 8) -> None:
    x = fr.left + fr.pw
    for name, color in reversed(items):
        w = 14 + 7 * len(name)
        x -= w + 10
        fr.parts.append(f'<rect x="{_num(x)}" y="{y}" width="10" height="10" rx="2" '
                        f'fill="{color}"/>')
        fr.parts.append(f'<text x="{_num(x + 14)}" y="{y + 9}" fill="{_TEXT}">'
                        f'{escape(name)}</text>')


def _path(xs: np.ndarray, ys: np.ndarray, step: bool) -> str:
    if xs.size == 0:
        return ""
    if step and xs.size > 1:
        xx = np.repeat(xs, 2)[1:]
        yy = np.repeat(ys, 2)[:-1]
        xs, ys = xx, yy
    pts = " L".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs.tolist(), ys.tolist(), strict=True))
    return "M" + pts


def line_chart(
    name: str, series: Sequence[Series], *, title: str = "", x_label: str = "",
    y_label: str = "", bands: Sequence[Band] = (), markers: Sequence[float] = (),
    marker_label: str = "", width: int = 960, height: int = 280, fx: Fmt = _fmt_default,
    fy: Fmt = _fmt_default, y_zero: bool = True,
) -> str:
    """Lines (optionally with min/max envelopes) over phase bands, with tick markers below."""
    fr = _Frame(width, height)
    _open(fr, name, title)
    xs_all = [s.x for s in series if s.x.size] + [np.asarray(markers, dtype=float)]
    ys_all = [a for s in series for a in (s.y, s.lo, s.hi) if a is not None and a.size]
    xcat = np.concatenate(xs_all) if xs_all else np.zeros(0)
    ycat = np.concatenate(ys_all) if ys_all else np.zeros(0)
    xcat = xcat[np.isfinite(xcat)]
    ycat = ycat[np.isfinite(ycat)]
    if xcat.size == 0 or ycat.size == 0:
        fr.parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                        f'fill="{_AXIS}">no data</text></svg>')
        return "".join(fr.parts)
    xmin, xmax = float(xcat.min()), float(xcat.max())
    ymin = 0.0 if y_zero else float(ycat.min())
    ymax = float(ycat.max())
    if ymax <= ymin:
        ymax = ymin + (abs(ymin) or 1.0)
    ymax += 0.06 * (ymax - ymin)
    if xmax <= xmin:
        xmax = xmin + 1.0

    def sx(v: float) -> float:
        return fr.left + (v - xmin) / (xmax - xmin) * fr.pw

    def sy(v: float) -> float:
        return fr.top + fr.ph - (v - ymin) / (ymax - ymin) * fr.ph

    for b in bands:
        a, c = sx(max(b.x0, xmin)), sx(min(b.x1, xmax))
        if c <= a:
            continue
        fr.parts.append(f'<rect class="band" x="{_num(a)}" y="{fr.top}" width="{_num(c - a)}" '
                        f'height="{_num(fr.ph)}" fill="{b.color}" fill-opacity="0.12"/>')
        fr.parts.append(f'<text x="{_num(a + 4)}" y="{fr.top + 14}" fill="{b.color}" '
                        f'font-weight="600">{escape(b.label)}</text>')
    _axes(fr, nice_ticks(xmin, xmax, 8), nice_ticks(ymin, ymax, 5), sx, sy, fx, fy,
          x_label, y_label)
    vsx = np.vectorize(sx, otypes=[float])
    vsy = np.vectorize(sy, otypes=[float])
    for s in series:
        if s.x.size == 0:
            continue
        px = vsx(s.x)
        if s.lo is not None and s.hi is not None and s.lo.size:
            top = _path(px, vsy(s.hi), s.step)
            bottom = " L".join(f"{a:.1f},{b:.1f}" for a, b in
                               zip(px[::-1].tolist(), vsy(s.lo)[::-1].tolist(), strict=True))
            fr.parts.append(f'<path class="envelope" d="{top} L{bottom} Z" fill="{s.color}" '
                            f'fill-opacity="0.25" stroke="none"/>')
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        fr.parts.append(f'<path class="series" data-name="{escape(s.name)}" '
                        f'd="{_path(px, vsy(s.y), s.step)}" fill="none" stroke="{s.color}" '
                        f'stroke-width="1.6"{dash}/>')
    if markers:
        ybase = fr.top + fr.ph
        full = " ".join(f"M{sx(m):.1f},{fr.top:.1f} V{ybase:.1f}" for m in markers)
        fr.parts.append(f'<path d="{full}" stroke="#0f172a" stroke-opacity="0.08"/>')
        ticks = " ".join(f"M{sx(m):.1f},{ybase - 12:.1f} v12" for m in markers)
        fr.parts.append(f'<path class="markers" d="{ticks}" stroke="#0f172a" '
                        f'stroke-opacity="0.8" stroke-width="1.2"/>')
    legend = [(s.name, s.color) for s in series]
    if markers and marker_label:
        legend.append((marker_label, "#0f172a"))
    _legend(fr, legend)
    fr.parts.append("</svg>")
    return "".join(fr.parts)


def bar_chart(
    name: str, labels: Sequence[str], values: Sequence[float | None], *, title: str = "",
    fmt: Fmt = _fmt_default, best: int | None = None, color: str = PALETTE[0],
    width: int = 480, row: int = 24,
) -> str:
    """Horizontal bars, one per label; the ``best`` bar is drawn in green with a star."""
    label_w = min(220, 12 + 7 * max((len(s) for s in labels), default=4))
    fr = _Frame(width, 36 + row * max(len(labels), 1) + 8, left=label_w, right=70, top=30,
                bottom=8)
    _open(fr, name, title)
    vals = [v if v is not None and math.isfinite(v) else None for v in values]
    top = max((v for v in vals if v is not None), default=0.0) or 1.0
    for i, (lab, v) in enumerate(zip(labels, vals, strict=True)):
        y = fr.top + i * row
        fr.parts.append(f'<text x="{label_w - 8}" y="{y + row * 0.65:.1f}" text-anchor="end" '
                        f'fill="{_TEXT}">{escape(lab)}</text>')
        if v is None:
            fr.parts.append(f'<text x="{label_w + 4}" y="{y + row * 0.65:.1f}" '
                            f'fill="{_AXIS}">n/a</text>')
            continue
        w = max(1.0, v / top * fr.pw) if v > 0 else 1.0
        c = "#16a34a" if best == i else color
        fr.parts.append(f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" '
                        f'height="{row - 6}" rx="3" fill="{c}"/>')
        star = " ★" if best == i else ""
        fr.parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + row * 0.65:.1f}" '
                        f'fill="{_TEXT}">{escape(fmt(v))}{star}</text>')
    fr.parts.append("</svg>")
    return "".join(fr.parts)


def stacked_bars(
    name: str, labels: Sequence[str], segments: Mapping[str, Sequence[float]], *,
    title: str = "",
    fmt: Fmt = _fmt_default, width: int = 960, row: int = 26,
) -> str:
    """Horizontal stacked bars: one row per label, one colour per segment name."""
    label_w = 12 + 7 * max((len(s) for s in labels), default=4)
    fr = _Frame(width, 52 + row * max(len(labels), 1) + 8, left=label_w, right=80, top=48,
                bottom=8)
    _open(fr, name, title)
    names = list(segments)
    totals = [sum(segments[n][i] for n in names) for i in range(len(labels))]
    top = max(totals, default=0.0) or 1.0
    for i, lab in enumerate(labels):
        y = fr.top + i * row
        fr.parts.append(f'<text x="{label_w - 8}" y="{y + row * 0.65:.1f}" text-anchor="end" '
                        f'fill="{_TEXT}">{escape(lab)}</text>')
        x = float(label_w)
        for j, n in enumerate(names):
            w = segments[n][i] / top * fr.pw
            if w <= 0:
                continue
            fr.parts.append(f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" '
                            f'height="{row - 6}" fill="{PALETTE[j % len(PALETTE)]}">'
                            f'<title>{escape(lab)} · {escape(n)}: '
                            f'{escape(fmt(segments[n][i]))}</title></rect>')
            x += w
        fr.parts.append(f'<text x="{x + 6:.1f}" y="{y + row * 0.65:.1f}" fill="{_TEXT}">'
                        f'{escape(fmt(totals[i]))}</text>')
    _legend(fr, [(n, PALETTE[j % len(PALETTE)]) for j, n in enumerate(names)], y=26)
    fr.parts.append("</svg>")
    return "".join(fr.parts)


def histogram(
    name: str, values: np.ndarray, *, title: str = "", x_label: str = "", bins: int = 30,
    fx: Fmt = _fmt_default, lines: Sequence[tuple[str, float]] = (), width: int = 480,
    height: int = 260,
) -> str:
    """A histogram of ``values`` with labelled vertical lines (percentiles)."""
    fr = _Frame(width, height, left=48)
    _open(fr, name, title)
    v = values[np.isfinite(values)]
    if v.size == 0:
        fr.parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                        f'fill="{_AXIS}">no data</text></svg>')
        return "".join(fr.parts)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        lo, hi = lo - abs(lo) * 0.05 - 1e-9, hi + abs(hi) * 0.05 + 1e-9
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    cmax = float(counts.max()) * 1.1 or 1.0

    def sx(x: float) -> float:
        return fr.left + (x - lo) / (hi - lo) * fr.pw

    def sy(c: float) -> float:
        return fr.top + fr.ph - c / cmax * fr.ph

    _axes(fr, nice_ticks(lo, hi, 5), nice_ticks(0, cmax, 4), sx, sy, fx,
          lambda c: str(int(c)), x_label, "count")
    for c, a, b in zip(counts.tolist(), edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if c:
            fr.parts.append(f'<rect class="bar" x="{sx(a) + 0.5:.1f}" y="{sy(c):.1f}" '
                            f'width="{max(sx(b) - sx(a) - 1, 0.5):.1f}" '
                            f'height="{fr.top + fr.ph - sy(c):.1f}" fill="{PALETTE[0]}"/>')
    for i, (label, x) in enumerate(lines):
        if not math.isfinite(x):
            continue
        px = sx(min(max(x, lo), hi))
        color = PALETTE[(i + 1) % len(PALETTE)]
        fr.parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{fr.top}" '
                        f'y2="{fr.top + fr.ph}" stroke="{color}" stroke-dasharray="4 3"/>')
        right = px > fr.left + 0.7 * fr.pw
        anchor = ' text-anchor="end"' if right else ""
        fr.parts.append(f'<text x="{px - 3 if right else px + 3:.1f}" y="{fr.top + 12 + 13 * i}"'
                        f' fill="{color}"{anchor}>{escape(label)}</text>')
    fr.parts.append("</svg>")
    return "".join(fr.parts)


def roofline_chart(
    name: str, points: Sequence[tuple[str, float, float]], peak: float,
    ridges: Sequence[float], *, title: str = "", width: int = 480, height: int = 300,
) -> str:
    """Log-log roofline: attainable MAC/s = min(peak, intensity x bandwidth) with ops as dots.

    Args:
        points: (label, intensity MAC/B, achieved MAC/s).
        peak: compute roof (MAC/s).
        ridges: ridge points (MAC/B) of the memory tiers to draw as slanted roofs.
    """
    fr = _Frame(width, height, left=64)
    _open(fr, name, title)
    pts = [(n, i, a) for n, i, a in points if i > 0 and a > 0]
    xs = [i for _, i, _ in pts] + list(ridges)
    if not pts or peak <= 0:
        fr.parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                        f'fill="{_AXIS}">no data</text></svg>')
        return "".join(fr.parts)
    lx0 = math.floor(math.log10(min(xs)) - 0.3)
    lx1 = math.ceil(math.log10(max(xs)) + 0.3)
    ly1 = math.ceil(math.log10(peak) + 0.2)
    ly0 = min(math.floor(math.log10(min(a for _, _, a in pts)) - 0.3), ly1 - 2)

    def sx(v: float) -> float:
        return fr.left + (math.log10(v) - lx0) / (lx1 - lx0) * fr.pw

    def sy(v: float) -> float:
        return fr.top + fr.ph - (math.log10(v) - ly0) / (ly1 - ly0) * fr.ph

    _axes(fr, [10.0 ** k for k in range(lx0, lx1 + 1)], [10.0 ** k for k in range(ly0, ly1 + 1)],
          sx, sy, lambda v: f"{v:g}", lambda v: f"{v:.0e}", "MACs per byte", "MAC/s")
    for j, r in enumerate(ridges):
        bw = peak / r
        x_start = max(10.0 ** lx0, 10.0 ** ly0 / bw)
        fr.parts.append(
            f'<path class="roof" d="M{sx(x_start):.1f},{sy(bw * x_start):.1f} '
            f'L{sx(r):.1f},{sy(peak):.1f} L{sx(10.0 ** lx1):.1f},{sy(peak):.1f}" fill="none" '
            f'stroke="{PALETTE[3] if j == 0 else PALETTE[8]}" stroke-width="1.8"/>')
    boxes: list[tuple[float, float, float, float]] = []
    for k, (label, i, a) in enumerate(pts):
        color = PALETTE[k % len(PALETTE)]
        cx, cy = sx(i), sy(a)
        fr.parts.append(f'<circle class="op" cx="{cx:.1f}" cy="{cy:.1f}" r="4.5" '
                        f'fill="{color}"><title>{escape(label)}</title></circle>')
        # Place the label right of its dot, moving down past labels already drawn.
        w, x, y = 6.2 * len(label), cx + 7, cy + 4
        if x + w > fr.left + fr.pw:
            x = cx - 7 - w
        while any(x < b[2] and b[0] < x + w and y - 10 < b[3] and b[1] < y for b in boxes):
            y += 11
        boxes.append((x, y - 10, x + w, y))
        fr.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" fill="{color}" font-size="11">'
                        f'{escape(label)}</text>')
    fr.parts.append("</svg>")
    return "".join(fr.parts)
