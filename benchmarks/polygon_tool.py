"""How the polygon segmentation tool holds up with many existing outlines on a big image.

Opens the real segmentation tool (frontend/static/frontend/segmentation.js, the same ES modules
Django serves) in headless Chromium with frame-rate limiting and vsync off, on a 4000x3000 image
with 30, 300 and 1,000 existing outlines of 100 vertices and 300 of 1,000 vertices. Beside each
run, a bare page that only draws the same outlines as SVG polygons over the image (no tool) is
measured the same way.

Measured in the page with requestAnimationFrame timestamps and performance marks:
- first render: navigation start to the first frame after the tool mounted and the image decoded;
- pan / zoom: frame time (rAF to rAF) while one pointer move or one wheel step lands per frame;
- drag: frame time while dragging a vertex of the outline being edited, one move per frame.

Usage: .venv/bin/python benchmarks/polygon_tool.py [--frames 120] [--quick]
Prints a table, then one JSON object on the last line. Timing is reported, never asserted.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import random
import statistics
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "frontend" / "static" / "frontend"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic", "--disable-frame-rate-limit", "--disable-gpu-vsync"]
W, H = 4000, 3000
SCENARIOS = [(30, 100), (300, 100), (1000, 100), (300, 1000)]
QUERY = "?assignmentId=BENCH&hitId=H&workerId=W&turkSubmitTo=http%3A%2F%2F127.0.0.1%3A9"


def outlines(count: int, vertices: int, seed: int = 7) -> list[list[list[float]]]:
    """Star-shaped (never self-crossing) outlines scattered over the image."""
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        r = rnd.uniform(40, 220)
        cx, cy = rnd.uniform(r, W - r), rnd.uniform(r, H - r)
        flat = []
        for k in range(vertices):
            a = 2 * math.pi * k / vertices
            rr = r * rnd.uniform(0.7, 1.0)
            flat += [round(cx + rr * math.cos(a), 1), round(cy + rr * math.sin(a), 1)]
        out.append([flat])
    return out


def write_site(folder: Path, existing: list) -> None:
    from PIL import Image, ImageDraw

    img = folder / "photo.jpg"
    if not img.exists():
        im = Image.new("RGB", (W, H), (60, 90, 120))
        d = ImageDraw.Draw(im)
        rnd = random.Random(1)
        for _ in range(400):
            x, y = rnd.uniform(0, W), rnd.uniform(0, H)
            d.ellipse([x, y, x + rnd.uniform(20, 300), y + rnd.uniform(20, 300)],
                      fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
        im.save(img, "JPEG", quality=85)
    (folder / "static").mkdir(exist_ok=True)
    link = folder / "static" / "frontend"
    if not link.exists():
        link.symlink_to(STATIC)
    task = {
        "kind": "segmentation", "task": 1, "project": {"id": 1, "name": "Benchmark"},
        "schema": "annotator.answer/segmentation", "version": 1,
        "image": {"id": 1, "url": "/photo.jpg", "width": W, "height": H},
        "category": {"id": 1, "name": "thing", "supercategory": "", "example": ""},
        "point": {"id": 1, "x": 2000, "y": 1500}, "existing": existing, "max_vertices": 5000,
        "answer_url": "/answer", "direct_user": "", "stored": None,
    }
    ring = [[2000 + 300 * math.cos(a), 1500 + 300 * math.sin(a)] for a in (2 * math.pi * k / 24 for k in range(24))]
    draft = {"parts": [{"points": [[round(x, 2), round(y, 2)] for x, y in ring], "closed": True}]}
    (folder / "tool.html").write_text(
        "<!doctype html><html><head><meta charset=utf-8><link rel=icon href='data:,'>"
        "<link rel=stylesheet href='/static/frontend/tools.css'></head><body>"
        "<div id=app class='tool tool-segmentation'></div>"
        f"<script type=application/json id=task-data>{json.dumps(task)}</script>"
        f"<script>localStorage.setItem('annotator:draft:segmentation:1:BENCH', {json.dumps(json.dumps(draft))});</script>"
        "<script type=module src='/static/frontend/segmentation.js'></script></body></html>"
    )
    polys = "".join(
        "<polygon points='" + " ".join(f"{p[i]},{p[i + 1]}" for i in range(0, len(p), 2)) + "'/>"
        for parts in existing for p in parts
    )
    (folder / "bare.html").write_text(
        "<!doctype html><html><head><meta charset=utf-8><link rel=icon href='data:,'><style>"
        "html,body{margin:0;height:100%;overflow:hidden;background:#2b2f36}"
        "#v{position:absolute;inset:0;overflow:hidden} svg{width:100%;height:100%}"
        "polygon{fill:rgba(255,255,255,.08);stroke:rgba(255,255,255,.55);stroke-width:1;vector-effect:non-scaling-stroke}"
        "</style></head><body><div id=v class=viewport><svg><g id=world>"
        f"<image href='/photo.jpg' width='{W}' height='{H}'/>{polys}</g></svg></div>"
        "<script>const img=new Image();img.src='/photo.jpg';"
        "img.decode().then(()=>requestAnimationFrame(()=>requestAnimationFrame(()=>performance.mark('first-render'))));"
        "const s=Math.min(innerWidth/4000,innerHeight/3000);window.bareT={scale:s,tx:0,ty:0};"
        "window.bareApply=()=>document.getElementById('world').setAttribute('transform',"
        "`translate(${bareT.tx} ${bareT.ty}) scale(${bareT.scale})`);bareApply();"
        "</script></body></html>"
    )


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# Runs in the page: drive one input per frame, collect rAF deltas (ms) and performance marks.
DRIVE_JS = """
async ({kind, frames, bare}) => {
  const v = document.querySelector('.viewport');
  const r = v.getBoundingClientRect();
  const cx = r.left + r.width * 0.35, cy = r.top + r.height * 0.7;
  const pe = (type, target, x, y) => target.dispatchEvent(new PointerEvent(type, {bubbles: true, cancelable: true,
    clientX: x, clientY: y, pointerId: 7, pointerType: 'mouse', isPrimary: true, button: 0, buttons: type === 'pointerup' ? 0 : 1}));
  let x = cx, y = cy, target = v;
  if (kind === 'drag') {
    const c = document.querySelector('circle.vertex');
    const b = c.getBoundingClientRect();
    x = b.left + b.width / 2; y = b.top + b.height / 2; target = c;
  }
  if (!bare && kind !== 'zoom') pe('pointerdown', target, x, y);
  performance.mark(kind + '-start');
  const times = [];
  await new Promise((resolve) => {
    let i = 0, last = null;
    function step(ts) {
      if (last !== null) times.push(ts - last);
      last = ts;
      if (i++ >= frames) return resolve();
      const dir = Math.floor(i / 30) % 2 ? -1 : 1;
      const sign = kind === 'drag' ? 1 : dir;
      if (bare) {
        const t = window.bareT;
        if (kind === 'pan') { t.tx += 3 * dir; t.ty += 2 * dir; }
        else { const k = Math.exp(-dir * 40 * 0.0015), s = t.scale * k; t.tx = cx - (cx - t.tx) * k; t.ty = cy - (cy - t.ty) * k; t.scale = s; }
        window.bareApply();
      } else if (kind === 'zoom') {
        v.dispatchEvent(new WheelEvent('wheel', {bubbles: true, cancelable: true, clientX: cx, clientY: cy, deltaY: 40 * dir}));
      } else {
        x += 3 * sign; y += 2 * sign;
        pe('pointermove', v, x, y);
      }
      requestAnimationFrame(step);
    }
    requestAnimationFrame(step);
  });
  if (!bare && kind !== 'zoom') pe('pointerup', v, x, y);
  performance.mark(kind + '-end');
  performance.measure(kind, kind + '-start', kind + '-end');
  return times;
}
"""


def stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"mean": round(statistics.fmean(times), 2), "median": round(statistics.median(times), 2),
            "p95": round(p95, 2), "max": round(ordered[-1], 2)}


def measure(page, url: str, frames: int, bare: bool) -> dict:
    page.goto(url)
    if bare:
        page.wait_for_function("performance.getEntriesByName('first-render').length > 0", timeout=120_000)
        first = page.evaluate("performance.getEntriesByName('first-render')[0].startTime")
    else:
        page.wait_for_function("performance.getEntriesByName('annotator:mounted').length > 0", timeout=120_000)
        first = page.evaluate(
            "async () => { await document.querySelector('.world img').decode();"
            " await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));"
            " performance.mark('first-render'); return performance.getEntriesByName('first-render')[0].startTime; }")
    result = {"first_render_ms": round(first, 1)}
    for kind in ("pan", "zoom") + (() if bare else ("drag",)):
        page.evaluate("() => new Promise(r => setTimeout(r, 300))")  # let the crisp re-raster settle
        result[kind] = stats(page.evaluate(DRIVE_JS, {"kind": kind, "frames": frames, "bare": bare}))
    if not bare:
        moved = page.evaluate("() => window.annotatorTool.editor.snapshot()[0].points[0]")
        result["drag_check"] = moved  # the dragged vertex really moved in image pixels
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--quick", action="store_true", help="only the smallest scenario (smoke run)")
    parser.add_argument("--scenario", action="append", default=[], metavar="NxV",
                        help="run only these scenarios, e.g. --scenario 1000x100")
    opts = parser.parse_args()
    from playwright.sync_api import sync_playwright

    scenarios = SCENARIOS[:1] if opts.quick else SCENARIOS
    if opts.scenario:
        scenarios = [tuple(int(n) for n in s.lower().split("x")) for s in opts.scenario]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-polygon-") as tmp, sync_playwright() as pw:
        folder = Path(tmp)
        handler = functools.partial(QuietHandler, directory=tmp)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            for count, vertices in scenarios:
                write_site(folder, outlines(count, vertices))
                tool = measure(page, f"{base}/tool.html{QUERY}", opts.frames, bare=False)
                bare = measure(page, f"{base}/bare.html", opts.frames, bare=True)
                rows.append({"outlines": count, "vertices_each": vertices, "vertices": count * vertices,
                             "tool": tool, "bare": bare})
        finally:
            browser.close()
            server.shutdown()
    if errors:
        print("page errors:", errors, file=sys.stderr)
        return 1

    head = f"{'outlines x vertices':>20} | {'page':<5} | {'first render':>12} | {'pan mean/p95':>14} | {'zoom mean/p95':>14} | {'drag mean/p95':>14}"
    print(head)
    print("-" * len(head))
    for r in rows:
        for name in ("tool", "bare"):
            m = r[name]
            drag = f"{m['drag']['mean']:>6.1f} /{m['drag']['p95']:>6.1f}" if "drag" in m else f"{'-':>14}"
            print(f"{r['outlines']:>9} x {r['vertices_each']:<8} | {name:<5} | {m['first_render_ms']:>9.0f} ms"
                  f" | {m['pan']['mean']:>6.1f} /{m['pan']['p95']:>6.1f} | {m['zoom']['mean']:>6.1f} /{m['zoom']['p95']:>6.1f} | {drag}")
    print("frame times in ms (rAF to rAF, one input per frame); goal: tool p95 <= 16 ms up to 1,000 outlines / 100,000 vertices")
    summary = {"benchmark": "polygon_tool", "image": [W, H], "frames": opts.frames,
               "results": [{k: v for k, v in r.items()} for r in rows]}
    for r in summary["results"]:
        moved = r["tool"].pop("drag_check", None)
        if moved is None or abs(moved[0] - 2300) < 1:  # the draft's first vertex starts at (2300, 1500)
            print(f"the vertex drag did not move the vertex: {moved}", file=sys.stderr)
            return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
