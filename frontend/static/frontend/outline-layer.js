// The existing outlines of an image, drawn in one canvas layer in screen space.
//
// A canvas is a bitmap: moving or scaling it with a CSS transform (`will-change: transform`)
// costs the compositor nothing, whereas SVG with hundreds of thousands of vertices gets
// re-rasterised by the browser when the zoom changes (seconds, without a GPU). So while the view
// moves, the layer only changes its CSS transform (the delta from the transform it was drawn
// at); once the view rests (or when moving has uncovered undrawn space) it redraws at the new
// transform: crisp one-pixel strokes, culled to the view, with vertices closer than
// MIN_STEP screen pixels skipped. While moving, space it was not drawn for stays empty for at
// most REDRAW_MS.

const MARGIN = 0.35; // drawn beyond each side of the viewport, as a share of its size
const SETTLE_MS = 120;
const MIN_STEP = 0.75; // screen pixels
const MOVING_STEP = 2.5; // coarser while the view moves; the redraw at rest is fine again
const BATCH = 50; // outlines per stroke() call
const REDRAW_MS = 250; // least time between two redraws while the view moves

export class OutlineLayer {
  constructor(parent) {
    this.canvas = document.createElement("canvas");
    this.canvas.className = "existing";
    this.canvas.setAttribute("aria-hidden", "true");
    parent.appendChild(this.canvas);
    this.ctx = this.canvas.getContext("2d");
    this.rings = [];
    this.drawn = null; // {t, w, h, m}
    this.timer = 0;
    this.draws = 0;
  }

  // outlines: a list of outlines, each a list of flat parts [x1, y1, x2, y2, ...]
  setOutlines(outlines) {
    this.rings = [];
    for (const parts of outlines) {
      for (const flat of parts) {
        if (flat.length < 6) continue;
        let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
        for (let i = 0; i < flat.length; i += 2) {
          const x = flat[i], y = flat[i + 1];
          if (x < minX) minX = x;
          if (x > maxX) maxX = x;
          if (y < minY) minY = y;
          if (y > maxY) maxY = y;
        }
        this.rings.push({ flat, minX, minY, maxX, maxY });
      }
    }
    this.canvas.dataset.outlines = String(outlines.length);
    this.drawn = null;
  }

  // Called once per frame in which the view transform changed.
  update(t, w, h) {
    if (!this.rings.length) return;
    const d = this.drawn;
    // Redraw now only when there is nothing usable; uncovered edges during a gesture are
    // redrawn at most every REDRAW_MS so that heavy frames stay rare.
    if (!d || d.w !== w || d.h !== h ||
        (!this.covers(t, w, h) && performance.now() - this.drawnAt > REDRAW_MS)) {
      this.draw(t, w, h, d ? MOVING_STEP : MIN_STEP);
      if (d) this.timer = setTimeout(() => this.draw(t, w, h), SETTLE_MS);
      return;
    }
    const k = t.scale / d.t.scale;
    this.canvas.style.transform = `translate(${t.tx - k * d.t.tx}px, ${t.ty - k * d.t.ty}px) scale(${k})`;
    clearTimeout(this.timer);
    if (k !== 1 || t.tx !== d.t.tx || t.ty !== d.t.ty) this.timer = setTimeout(() => this.draw(t, w, h), SETTLE_MS);
  }

  // Whether the drawn canvas, moved to transform t, still covers the whole viewport.
  covers(t, w, h) {
    const d = this.drawn;
    const k = t.scale / d.t.scale;
    const ox = t.tx - k * d.t.tx, oy = t.ty - k * d.t.ty;
    const left = ox + k * -d.m.x, top = oy + k * -d.m.y;
    const right = ox + k * (w + d.m.x), bottom = oy + k * (h + d.m.y);
    return left <= 0 && top <= 0 && right >= w && bottom >= h;
  }

  draw(t, w, h, step = MIN_STEP) {
    clearTimeout(this.timer);
    const dpr = window.devicePixelRatio || 1;
    const m = { x: Math.round(w * MARGIN), y: Math.round(h * MARGIN) };
    const cw = Math.round((w + 2 * m.x) * dpr), ch = Math.round((h + 2 * m.y) * dpr);
    const c = this.canvas;
    if (c.width !== cw || c.height !== ch) {
      c.width = cw;
      c.height = ch;
      c.style.width = `${w + 2 * m.x}px`;
      c.style.height = `${h + 2 * m.y}px`;
      c.style.left = `${-m.x}px`;
      c.style.top = `${-m.y}px`;
      c.style.transformOrigin = `${m.x}px ${m.y}px`;
    }
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, cw, ch);
    ctx.setTransform(dpr, 0, 0, dpr, m.x * dpr, m.y * dpr);
    // The view in image pixels, with the margin, for culling.
    const x0 = (-m.x - t.tx) / t.scale, y0 = (-m.y - t.ty) / t.scale;
    const x1 = (w + m.x - t.tx) / t.scale, y1 = (h + m.y - t.ty) / t.scale;
    const min2 = step * step;
    const { scale, tx, ty } = t;
    ctx.lineWidth = 1;
    ctx.strokeStyle = "rgba(255, 255, 255, 0.6)";
    let n = 0;
    ctx.beginPath();
    for (const r of this.rings) {
      if (r.maxX < x0 || r.minX > x1 || r.maxY < y0 || r.minY > y1) continue;
      const f = r.flat;
      let lx = f[0] * scale + tx, ly = f[1] * scale + ty;
      ctx.moveTo(lx, ly);
      for (let i = 2; i < f.length; i += 2) {
        const sx = f[i] * scale + tx, sy = f[i + 1] * scale + ty;
        if ((sx - lx) * (sx - lx) + (sy - ly) * (sy - ly) < min2 && i + 2 < f.length) continue;
        ctx.lineTo(sx, sy);
        lx = sx;
        ly = sy;
      }
      ctx.closePath();
      // Stroke in batches: one path with every outline makes the rasteriser crawl.
      if (++n % BATCH === 0) { ctx.stroke(); ctx.beginPath(); }
    }
    ctx.stroke();
    c.style.transform = "none";
    this.drawn = { t: { ...t }, w, h, m };
    this.drawnAt = performance.now();
    this.draws += 1;
  }
}
