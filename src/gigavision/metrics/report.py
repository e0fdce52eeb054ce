"""One self-contained HTML file from a metrics result: tables, inline SVG plots, example thumbnails.

No script, no external URL: styles are inline, plots are SVG drawn here (confusion-matrix heatmap,
precision-recall curves per class, ROC curves), thumbnails are ``data:`` URIs, and a Content-Security-Policy
forbids anything else. Every text that can come from users (labels, titles, captions) is HTML-escaped.
Numbers are printed with 4 decimals.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from gigavision.errors import InvalidInput, LimitExceeded
from gigavision.files import write_text
from gigavision.metrics._common import jsonable

Example = tuple[str | os.PathLike[str] | bytes, str]
MAX_THUMBNAIL_BYTES = 2 * 1024 * 1024
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
_MAX_CURVES = 12  # per plot; more classes get their own rows in the tables but not a line each
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
figcaption{font-size:.85em;max-width:260px;overflow-wrap:anywhere}.plots svg{margin-right:1em}
"""
_SUMMARY_SKIP = {"labels", "recall_thresholds", "max_dets", "area_ranges"}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return escape(str(value))


def _data(result: Any) -> dict[str, Any]:
    if hasattr(result, "to_dict"):
        out = result.to_dict()
    elif isinstance(result, Mapping):
        out = jsonable(result)
    else:
        raise InvalidInput(f"write_report needs a metrics result or a dict, got {type(result).__name__}")
    if not isinstance(out, dict):
        raise InvalidInput("a metrics result must convert to a dict")
    return out


# -- tables ---------------------------------------------------------------------------------------------
def _summary(d: Mapping[str, Any]) -> str:
    rows = []
    for key, value in d.items():
        if key in _SUMMARY_SKIP:
            continue
        if isinstance(value, int | float | str) or value is None:
            rows.append(f'<tr><th class="l">{escape(key)}</th><td>{_fmt(value)}</td></tr>')
        elif isinstance(value, Mapping) and value and all(isinstance(v, int | float) for v in value.values()):
            if key in ("iou", "dice"):
                continue
            for k, v in value.items():
                rows.append(f'<tr><th class="l">{escape(key)} {escape(str(k))}</th><td>{_fmt(v)}</td></tr>')
    averages = [k for k in ("macro", "micro", "weighted") if isinstance(d.get(k), Mapping)]
    for k in averages:
        for metric, v in d[k].items():
            rows.append(f'<tr><th class="l">{escape(k)} {escape(metric)}</th><td>{_fmt(v)}</td></tr>')
    if isinstance(d.get("operating_point"), Mapping):
        for metric, v in d["operating_point"].items():
            rows.append(f'<tr><th class="l">operating point {escape(metric)}</th><td>{_fmt(v)}</td></tr>')
    by_area = d.get("by_area")
    if isinstance(by_area, Mapping) and len(by_area) > 1:
        for area, values in by_area.items():
            for metric, v in values.items():
                rows.append(f'<tr><th class="l">{escape(metric)} (area {escape(area)})</th><td>{_fmt(v)}</td></tr>')
    return "<h2>Summary</h2><table>" + "".join(rows) + "</table>" if rows else ""


def _per_class(d: Mapping[str, Any]) -> str:
    table: dict[str, dict[str, Any]] = {}
    per_class = d.get("per_class")
    if isinstance(per_class, Mapping):
        table = {str(k): dict(v) for k, v in per_class.items() if isinstance(v, Mapping)}
    for extra in ("iou", "dice", "roc_auc_per_class", "thresholds"):
        values = d.get(extra)
        if isinstance(values, Mapping):
            for k, v in values.items():
                table.setdefault(str(k), {})["roc_auc" if extra == "roc_auc_per_class" else extra] = v
    if not table:
        return ""
    columns: list[str] = []
    for row in table.values():
        columns.extend(c for c in row if c not in columns)
    head = '<tr><th class="l">class</th>' + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr>"
    body = "".join(
        f'<tr><td class="l">{escape(label)}</td>' + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>"
        for label, row in table.items()
    )
    return f"<h2>Per class</h2><table>{head}{body}</table>"


# -- plots ----------------------------------------------------------------------------------------------
def _short(text: str, n: int = 18) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[Any], title: str) -> str:
    k = len(matrix)
    if k == 0 or k > 60:
        return ""
    cell = max(14, min(40, 480 // k))
    left, top = 130, 110
    size = cell * k
    width, height = left + size + 10, top + size + 10
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">']
    font = max(8, min(12, cell // 3))
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            shade = int(255 - 200 * share)
            x, y = left + j * cell, top + i * cell
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="rgb({shade},{shade},255)" stroke="#fff">'
                f"<title>{escape(str(labels[i]))} → {escape(str(labels[j]))}: {int(count)}</title></rect>"
            )
            if cell >= 22:
                colour = "#fff" if share > 0.6 else "#222"
                parts.append(
                    f'<text x="{x + cell / 2}" y="{y + cell / 2 + font / 3}" font-size="{font}" '
                    f'text-anchor="middle" fill="{colour}">{int(count)}</text>'
                )
    for i, lab in enumerate(labels):
        name = escape(_short(str(lab)))
        parts.append(
            f'<text x="{left - 4}" y="{top + i * cell + cell / 2 + 4}" font-size="11" text-anchor="end">{name}</text>'
        )
        cx = left + i * cell + cell / 2
        parts.append(
            f'<text x="{cx}" y="{top - 6}" font-size="11" transform="rotate(-60 {cx} {top - 6})">{name}</text>'
        )
    parts.append('<text x="4" y="14" font-size="12">rows: truth, columns: prediction (shade: row share)</text>')
    parts.append("</svg>")
    return "".join(parts)


def _line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str,
               ylabel: str, diagonal: bool = False) -> str:  # fmt: skip
    if not series:
        return ""
    w, h, m = 340, 260, 40
    legend_h = 14 * min(len(series), _MAX_CURVES)
    parts = [
        f'<svg width="{w + 170}" height="{max(h + m, legend_h + 30)}" role="img" aria-label="{escape(title)}">',
        f'<text x="{m}" y="14" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{m}" y="20" width="{w - m}" height="{h - 20}" fill="none" stroke="#999"/>',
    ]

    def px(x: float, y: float) -> tuple[float, float]:
        return m + x * (w - m), h - y * (h - 20)

    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        x0 = px(t, 0)[0]
        y1 = px(0, t)[1]
        parts.append(f'<text x="{x0:.1f}" y="{h + 14}" font-size="10" text-anchor="middle">{t:g}</text>')
        parts.append(f'<text x="{m - 4}" y="{y1 + 3:.1f}" font-size="10" text-anchor="end">{t:g}</text>')
    parts.append(f'<text x="{(m + w) / 2}" y="{h + 30}" font-size="11" text-anchor="middle">{escape(xlabel)}</text>')
    parts.append(
        f'<text x="12" y="{(h + 20) / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {(h + 20) / 2})">{escape(ylabel)}</text>'
    )
    if diagonal:
        (a, b), (c, e) = px(0, 0), px(1, 1)
        parts.append(f'<line x1="{a}" y1="{b}" x2="{c}" y2="{e}" stroke="#ccc" stroke-dasharray="4"/>')
    for n, (label, (xs, ys)) in enumerate(list(series.items())[:_MAX_CURVES]):
        colour = _PALETTE[n % len(_PALETTE)]
        points = " ".join(
            "{:.1f},{:.1f}".format(*px(min(max(float(x), 0.0), 1.0), min(max(float(y), 0.0), 1.0)))
            for x, y in zip(xs, ys, strict=True)
        )
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
        ly = 30 + 14 * n
        parts.append(f'<rect x="{w + 10}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>')
        parts.append(f'<text x="{w + 24}" y="{ly}" font-size="11">{escape(_short(label, 22))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _curves(d: Mapping[str, Any]) -> tuple[dict[str, tuple[list[float], list[float]]], dict[str, Any]]:
    pr: dict[str, tuple[list[float], list[float]]] = {}
    roc: dict[str, tuple[list[float], list[float]]] = {}
    raw_pr = d.get("pr_curves")
    if isinstance(raw_pr, Mapping):
        for label, curve in raw_pr.items():
            if isinstance(curve, Mapping):
                pr[str(label)] = (list(curve["x"]), list(curve["y"]))
            elif isinstance(curve, Sequence) and d.get("recall_thresholds"):
                pr[str(label)] = (list(d["recall_thresholds"]), list(curve))
    raw_roc = d.get("roc_curves")
    if isinstance(raw_roc, Mapping):
        roc = {str(k): (list(v["x"]), list(v["y"])) for k, v in raw_roc.items()}
    elif isinstance(d.get("roc"), Mapping) and d["roc"].get("x"):
        roc = {"same vs different": (list(d["roc"]["x"]), list(d["roc"]["y"]))}
    return pr, roc


# -- examples -------------------------------------------------------------------------------------------
def _image_uri(image: str | os.PathLike[str] | bytes) -> str:
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    if len(data) > MAX_THUMBNAIL_BYTES:
        raise LimitExceeded(f"thumbnail of {len(data):,} bytes is over {MAX_THUMBNAIL_BYTES:,}: make it smaller")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        mime = "image/png"
    elif data.startswith(b"\xff\xd8\xff"):
        mime = "image/jpeg"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        mime = "image/gif"
    else:
        name = "bytes" if isinstance(image, bytes) else str(image)
        raise InvalidInput(f"thumbnail {name}: not a PNG, JPEG, WebP or GIF image")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _examples(examples: Sequence[Example]) -> str:
    if not examples:
        return ""
    figures = "".join(
        f'<figure><img src="{_image_uri(image)}" alt="{escape(caption)}" style="max-width:256px;max-height:256px">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for image, caption in examples
    )
    return f"<h2>Worst examples</h2><div>{figures}</div>"


def _document(title: str, body: str) -> str:
    """The HTML document around ``body``: inline styles, and a CSP that allows nothing but data: images."""
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{csp}">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


# -- entry points ---------------------------------------------------------------------------------------
def render_report(result: Any, title: str = "Evaluation report", worst_examples: Sequence[Example] = ()) -> str:
    """The report as one HTML document (text)."""
    d = _data(result)
    pr, roc = _curves(d)
    plots = [
        _heatmap(d["confusion_matrix"], d.get("labels") or list(range(len(d["confusion_matrix"]))), "confusion")
        if d.get("confusion_matrix")
        else "",
        _line_plot(pr, "Precision-recall" + (" (IoU 0.5)" if "iou_type" in d else ""), "recall", "precision"),
        _line_plot(roc, "ROC", "false positive rate", "true positive rate", diagonal=True),
    ]
    body = "".join(
        [
            f"<h1>{escape(title)}</h1>",
            _summary(d),
            _per_class(d),
            '<h2>Plots</h2><div class="plots">' + "".join(plots) + "</div>" if any(plots) else "",
            _examples(worst_examples),
        ]
    )
    return _document(title, body)


def write_report(
    result: Any,
    path: str | os.PathLike[str],
    title: str = "Evaluation report",
    worst_examples: Sequence[Example] = (),
) -> Path:
    """Write ``render_report`` to ``path`` atomically (temp file, fsync, rename); returns the path.

    ``worst_examples``: ``(thumbnail, caption)`` pairs, the thumbnail a PNG/JPEG/WebP/GIF file path or its bytes.
    """
    html = render_report(result, title, worst_examples)
    return write_text(path, html)


PairRow = tuple[bytes, str, bytes, str, str]  # thumbnail a, caption a, thumbnail b, caption b, note


def render_pairs_page(title: str, summary: Mapping[str, Any], rows: Sequence[PairRow], omitted: int = 0) -> str:
    """Pairs of images side by side (near-duplicates, leaks), as one self-contained HTML document like the
    reports: a summary table, then a row per pair with both thumbnails inline and a note."""
    table = "".join(f'<tr><th class="l">{escape(str(k))}</th><td>{_fmt(v)}</td></tr>' for k, v in summary.items())
    pairs = "".join(
        "<tr>"
        f'<td class="l"><img src="{_image_uri(a)}" alt="{escape(ca)}" style="max-width:200px;max-height:200px">'
        f"<br>{escape(ca)}</td>"
        f'<td class="l"><img src="{_image_uri(b)}" alt="{escape(cb)}" style="max-width:200px;max-height:200px">'
        f"<br>{escape(cb)}</td>"
        f'<td class="l">{escape(note)}</td></tr>'
        for a, ca, b, cb, note in rows
    )
    more = f"<p>{omitted} more pair(s) are listed in the JSON report only.</p>" if omitted else ""
    body = (
        f"<h1>{escape(title)}</h1><table>{table}</table><h2>Pairs</h2>"
        + (f"<table><tr><th>image</th><th>image</th><th>why</th></tr>{pairs}</table>" if rows else "<p>No pair.</p>")
        + more
    )
    return _document(title, body)


def write_pairs_page(
    path: str | os.PathLike[str], title: str, summary: Mapping[str, Any], rows: Sequence[PairRow], omitted: int = 0
) -> Path:
    """Write ``render_pairs_page`` to ``path`` atomically; returns the path."""
    return write_text(path, render_pairs_page(title, summary, rows, omitted))
