#!/usr/bin/python3
"""Opens an HTML report (index.html, or --page) in headless Chromium and checks that it rendered.

Two Chromium runs, each in a fresh profile with networking features off:
- --dump-dom: the DOM after loading must hold the summary table (one body row per run), the
  expected number of <svg> elements, each with a <title>, and at least the expected number of
  <polyline> elements with points.
- --screenshot: kept at --screenshot (a test artefact); it must have the window's size, not be
  blank, and show each run's colour on a fair number of pixels (the SVG was painted; that the
  lines exist is the DOM check's job).
The page itself must not reference the network (http:// or https:// outside xmlns attributes).

Usage: /usr/bin/python3 test_report_browser.py --report DIR [--expect expect.json]
           [--screenshot report.png]
expect.json (written with the report by `test_report --write-fixture`): {"runs", "svgs",
"polylines_min", "colours"}. Exit 0 when all checks pass, 1 on failure, 77 (skipped, loudly)
when no Chromium is installed.
"""
import argparse
import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1400,2400",
]
TIMEOUT_S = 120


class Dom(html.parser.HTMLParser):
    """Counts what the checks need from the serialised DOM."""

    def __init__(self):
        super().__init__()
        self.svgs = 0
        self.svg_titles = 0
        self.polylines = 0
        self.empty_polylines = 0
        self.summary_tables = 0
        self.summary_rows = 0
        self._in_svg = 0
        self._in_summary = False
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.svgs += 1
            self._in_svg += 1
        elif tag == "title" and self._in_svg and "id" in attrs:
            self.svg_titles += 1
        elif tag == "polyline":
            self.polylines += 1
            if len((attrs.get("points") or "").split()) < 2:
                self.empty_polylines += 1
        elif tag == "table" and attrs.get("id") == "summary":
            self.summary_tables += 1
            self._in_summary = True
        elif tag == "tbody" and self._in_summary:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.summary_rows += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self._in_svg -= 1
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._in_summary = False


def find_browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def run_browser(browser, extra, url):
    """Runs one headless Chromium command in a throwaway profile; returns stdout."""
    with tempfile.TemporaryDirectory(prefix="switchyard-chromium-") as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", *extra, url]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=TIMEOUT_S, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return proc.stdout.decode(errors="replace")


def png_pixels(path):
    """Decodes an 8-bit RGB or RGBA PNG; returns (width, height, channels, rows of bytes)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in (2, 6) or interlace:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour type {colour_type})")
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b, c = prev[i], prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, channels, rows


def colour_counts(rows, channels, colours):
    """Pixels exactly equal to each '#rrggbb' colour, and the number of distinct colours."""
    wanted = {bytes.fromhex(c[1:]): c for c in colours}
    counts = {c: 0 for c in colours}
    distinct = set()
    for line in rows:
        for x in range(0, len(line), channels):
            rgb = line[x:x + 3]
            distinct.add(rgb)
            if rgb in wanted:
                counts[wanted[rgb]] += 1
    return counts, len(distinct)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", required=True, help="folder with index.html")
    parser.add_argument("--page", default="index.html",
                        help="the page in that folder (report.html for `switchyard llm eval`)")
    parser.add_argument("--expect", help="expect.json written with the report")
    parser.add_argument("--screenshot", help="where to keep the screenshot (PNG)")
    args = parser.parse_args()

    index = Path(args.report) / args.page
    if not index.is_file():
        print(f"FAILED: {index} does not exist (the report_fixture test writes it)")
        return 1
    expect = json.loads(Path(args.expect).read_text()) if args.expect else {}

    browser = find_browser()
    if browser is None:
        print("=" * 72)
        print("SKIPPED: no Chromium found (looked for " + ", ".join(BROWSERS) + "); install "
              "Debian's 'chromium' package (scripts/install-deps.sh) to run the browser test")
        print("=" * 72)
        return 77

    failures = []

    def check(ok, what):
        print(("ok      " if ok else "FAILED  ") + what)
        if not ok:
            failures.append(what)

    source = index.read_text(encoding="utf-8")
    remote = [m.group(0) for m in re.finditer(r'(?<!xmlns=")https?://[^\s"\'<>)]*', source)]
    check(not remote, f"no network references in {args.page} {remote[:3] if remote else ''}")

    url = index.resolve().as_uri()
    dom = Dom()
    dom.feed(run_browser(browser, ["--dump-dom"], url))
    source_svgs = source.count("<svg ")
    check(dom.summary_tables == 1, f"summary table present ({dom.summary_tables})")
    if "runs" in expect:
        check(dom.summary_rows == expect["runs"],
              f"summary table has {dom.summary_rows} rows, expected {expect['runs']}")
    else:
        check(dom.summary_rows >= 1, f"summary table has {dom.summary_rows} rows")
    check(dom.svgs == expect.get("svgs", source_svgs),
          f"{dom.svgs} svg elements in the DOM, expected {expect.get('svgs', source_svgs)}")
    check(dom.svg_titles == dom.svgs, f"every svg has a <title> ({dom.svg_titles}/{dom.svgs})")
    check(dom.polylines >= expect.get("polylines_min", 1),
          f"{dom.polylines} polylines, at least {expect.get('polylines_min', 1)}")
    check(dom.empty_polylines == 0, f"{dom.empty_polylines} polylines without points")

    with tempfile.TemporaryDirectory(prefix="switchyard-shot-") as tmp:
        shot = Path(tmp) / "report.png"
        run_browser(browser, [f"--screenshot={shot}"], url)
        check(shot.is_file(), "screenshot written")
        if shot.is_file():
            if args.screenshot:
                os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
                shutil.copyfile(shot, args.screenshot)
                print(f"screenshot: {os.path.abspath(args.screenshot)}")
            width, height, channels, rows = png_pixels(shot)
            check((width, height) == (1400, 2400), f"screenshot is {width}x{height}")
            colours = expect.get("colours", ["#0072B2", "#D55E00"])
            counts, distinct = colour_counts(rows, channels, colours)
            check(distinct > 100, f"screenshot is not blank ({distinct} distinct colours)")
            for colour, n in counts.items():
                check(n >= 300, f"run colour {colour} painted on {n} pixels")

    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all browser checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
