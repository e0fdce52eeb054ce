"""Find the features of a (huge) GeoJSON file without parsing it: byte spans and vertex counts.

``json.load`` of a whole-slide export (millions of cells) or of one hostile 10-million-vertex polygon
needs gigabytes. ``scan_features`` reads the file in chunks and, with NumPy over each chunk, tracks
strings (quotes, backslash escapes) and bracket depth to locate every feature object and count its
coordinate pairs (``[`` followed by a number). The caller then reads and parses one feature at a time,
skipping those over the vertex cap unparsed. A structurally broken file (unbalanced brackets, unclosed
string, no features) raises ``InvalidInput`` before anything is imported.

Accepted shapes: a FeatureCollection (``{"features": [...]}``), a bare array of features (QuPath's
export without "FeatureCollection"), or a single Feature / geometry object.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gigavision.errors import InvalidInput

CHUNK = 1 << 20
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_STRUCT = np.frombuffer(b"[]{}", dtype=np.uint8)
_WS = np.frombuffer(b" \t\r\n", dtype=np.uint8)
_NUMERIC = np.frombuffer(b"-0123456789NI", dtype=np.uint8)
_FEATURES_KEY = re.compile(rb'"features"\s*:\s*$')


@dataclass
class Scan:
    """Where the features are: ``starts[i]:ends[i]`` byte span, ``vertices[i]`` coordinate pairs."""

    starts: array[int]
    ends: array[int]
    vertices: array[int]

    def __len__(self) -> int:
        return len(self.starts)


def scan_features(path: Path, chunk_size: int = CHUNK) -> Scan:
    """Byte spans and vertex counts of every feature in ``path`` (see the module docstring)."""
    starts, ends, vertices = array("q"), array("q"), array("q")
    depth = 0
    in_string = False
    backslashes = 0  # length of the backslash run that ended the previous chunk (inside a string)
    pending_open = False  # the previous chunk ended with "[" and only whitespace after it
    mode = ""  # "array" | "object"
    container = -1  # depth of the features' container once inside it
    container_closed = False
    current_start = -1
    current_vertices = 0
    tail = b""
    offset = 0
    with path.open("rb") as fh:
        while True:
            buf = fh.read(chunk_size)
            if not buf:
                break
            a = np.frombuffer(buf, dtype=np.uint8)
            if not mode:
                text = buf.lstrip(b"\xef\xbb\xbf \t\r\n")
                if not text:
                    offset += len(buf)
                    continue
                if text[:1] not in (b"[", b"{"):
                    raise InvalidInput(f"{path.name}: not a GeoJSON file (starts with {text[:20]!r})")
                mode = "array" if text[:1] == b"[" else "object"
                if mode == "array":
                    container = 1
            # -- strings: quotes not escaped by an odd run of backslashes toggle the state --------------
            quotes = np.flatnonzero(a == 0x22)
            if len(quotes):
                after_backslash = np.zeros(len(quotes), dtype=bool)
                after_backslash[quotes > 0] = a[quotes[quotes > 0] - 1] == 0x5C
                if backslashes and quotes[0] == 0:
                    after_backslash[0] = True
                if after_backslash.any():
                    keep = np.ones(len(quotes), dtype=bool)
                    for k in np.flatnonzero(after_backslash).tolist():
                        q, run = int(quotes[k]), 0
                        while q - run - 1 >= 0 and buf[q - run - 1] == 0x5C:
                            run += 1
                        if q - run == 0:
                            run += backslashes
                        keep[k] = run % 2 == 0
                    quotes = quotes[keep]
            # -- structure: brackets outside strings, with depth before/after each --------------------
            struct = np.flatnonzero(np.isin(a, _STRUCT))
            parity = np.searchsorted(quotes, struct, side="right") % 2
            outside = (parity == 1) == in_string  # toggles so far even and we start outside, or odd inside
            struct = struct[outside]
            chars = a[struct]
            delta = np.where(np.isin(chars, _OPEN), 1, -1)
            after = depth + np.cumsum(delta)
            before = after - delta
            if len(after) and after.min() < 0:
                raise InvalidInput(f"{path.name}: malformed JSON (a closing bracket without an opening one)")
            # -- vertices: "[" whose next non-blank byte starts a number ---------------------------------
            opens = struct[chars == 0x5B]
            nxt = opens + 1
            inside = nxt < len(a)
            blank = np.zeros(len(opens), dtype=bool)
            blank[inside] = np.isin(a[nxt[inside]], _WS)
            nxt[~inside] = -1
            todo = np.flatnonzero(blank)
            while len(todo):  # step over indentation (pretty-printed files), a few bytes at a time
                nxt[todo] += 1
                past = nxt[todo] >= len(a)
                nxt[todo[past]] = -1
                todo = todo[~past]
                todo = todo[np.isin(a[nxt[todo]], _WS)]
            numeric = np.zeros(len(opens), dtype=bool)
            known = nxt >= 0
            numeric[known] = np.isin(a[nxt[known]], _NUMERIC)
            last_unknown = bool(len(opens)) and not known[-1]
            vertex_at = opens[numeric]
            if pending_open:
                first = np.flatnonzero(~np.isin(a, _WS))
                if len(first) and a[first[0]] in _NUMERIC:
                    vertex_at = np.concatenate([[-1], vertex_at])  # belongs to whatever is open at the start
                pending_open = bool(len(first) == 0)
            pending_open = pending_open or last_unknown
            # -- features: objects opened/closed at the container depth --------------------------------
            since = -1  # events count only after the features array opened
            if mode == "object" and container < 0:
                for p in struct[(before == 1) & (chars == 0x5B)].tolist():
                    window = (tail + buf[:p]) if p < 256 else buf[p - 256 : p]
                    if _FEATURES_KEY.search(window):
                        container, since = 2, p
                        break
            events: list[tuple[int, int]] = []
            if container > 0 and not container_closed:
                is_start = (chars == 0x7B) & (before == container)
                is_end = (chars == 0x7D) & (after == container)
                closes = (chars == 0x5D) & (after == container - 1)
                for p in struct[is_start].tolist():
                    events.append((p, 1))
                for p in struct[is_end].tolist():
                    events.append((p, 2))
                for p in struct[closes].tolist():
                    events.append((p, 3))
                events = sorted(e for e in events if e[0] > since)
            cursor = 0
            for p, what in events:
                if container_closed:
                    break
                if what == 1 and current_start < 0:
                    current_start, current_vertices = offset + p, 0
                    cursor = int(np.searchsorted(vertex_at, p))
                elif what == 2 and current_start >= 0:
                    upto = int(np.searchsorted(vertex_at, p))
                    current_vertices += upto - cursor
                    cursor = upto
                    starts.append(current_start)
                    ends.append(offset + p + 1)
                    vertices.append(current_vertices)
                    current_start = -1
                elif what == 3:
                    container_closed = True
            if current_start >= 0:
                current_vertices += len(vertex_at) - cursor
            if mode == "object" and container < 0:
                current_vertices += len(vertex_at)  # a single Feature: the whole object counts
            if len(after):
                depth = int(after[-1])
            in_string = in_string != bool(len(quotes) % 2)
            run = len(buf) - len(buf.rstrip(b"\\"))
            backslashes = run + (backslashes if run == len(buf) else 0)
            tail = (tail + buf)[-256:]
            offset += len(buf)
    if not mode:
        raise InvalidInput(f"{path.name}: empty file")
    if depth != 0 or in_string:
        raise InvalidInput(f"{path.name}: truncated or malformed JSON (unbalanced brackets or an unclosed string)")
    if mode == "object" and container < 0:
        starts.append(0)
        ends.append(offset)
        vertices.append(current_vertices)
    return Scan(starts, ends, vertices)


def read_features(path: Path, scan: Scan, max_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """``(index, bytes, vertices)`` per feature in file order; bytes None when larger than ``max_bytes``."""
    with path.open("rb") as fh:
        for i in range(len(scan)):
            size = scan.ends[i] - scan.starts[i]
            if size > max_bytes:
                yield i, None, scan.vertices[i]
                continue
            fh.seek(scan.starts[i])
            yield i, fh.read(size), scan.vertices[i]
