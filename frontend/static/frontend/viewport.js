// A pan/zoom viewport over one image. The image sits in a "world" layer moved by a single CSS
// transform with `will-change: transform`, so panning and zooming never repaint it; after a zoom
// settles the layer is re-rasterised at the new scale so it stays sharp. Existing outlines are
// one canvas layer (outline-layer.js) that follows the same transform and redraws crisply when
// the view rests. Editable shapes live in a screen-space SVG that the tools redraw (they are few).

import { fit, panBy, toImage, toScreen, zoomAt } from "./geometry.js";
import { OutlineLayer } from "./outline-layer.js";
import { el, svg } from "./ui.js";

export class Viewport {
  constructor(parent, image, { existing = [], label = "Image" } = {}) {
    this.image = image;
    this.listeners = new Set();
    this.el = el("div", { class: "viewport", tabindex: "0", role: "application", "aria-label": label });
    this.world = el("div", { class: "world" });
    this.img = el("img", { src: image.url, width: image.width, height: image.height, alt: "", draggable: "false" });
    this.world.append(this.img);
    this.el.appendChild(this.world);
    this.outlines = new OutlineLayer(this.el);
    this.outlines.setOutlines(existing);
    this.edit = svg("svg", { class: "edit" });
    this.hud = el("div", { class: "hud", "aria-hidden": "true" });
    this.el.append(this.edit, this.hud);
    parent.appendChild(this.el);
    this.size = { w: 0, h: 0 };

    this.t = { scale: 1, tx: 0, ty: 0 };
    this.pending = null;
    this.spaceDown = false;
    this.pan = null;
    this.fitToView();

    this.el.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    new ResizeObserver(() => {
      const r = this.rect;
      this.size = { w: r.width, h: r.height };
      if (!this.userMoved) this.fitToView();
      else this.setTransform(this.current);
    }).observe(this.el);
  }

  // existing: a list of outlines, each a list of flat parts [x1, y1, ...]
  setExisting(existing) {
    this.outlines.setOutlines(existing);
    this.setTransform(this.current);
  }

  get rect() { return this.el.getBoundingClientRect(); }

  fitToView() {
    const r = this.rect;
    if (r.width < 10 || r.height < 10) return;
    this.setTransform(fit(this.image.width, this.image.height, r.width, r.height));
  }

  subscribe(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }

  // Apply on the next frame, once, however many events arrive in between.
  setTransform(t) {
    this.pending = t;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.t = this.pending;
      const { scale, tx, ty } = this.t;
      this.world.style.transform = `translate(${tx}px, ${ty}px) scale(${scale})`;
      Object.assign(this.el.dataset, { scale: String(scale), tx: String(tx), ty: String(ty) });
      this.hud.textContent = `${Math.round(scale * 100)}%`;
      if (!this.size.w) { const r = this.rect; this.size = { w: r.width, h: r.height }; }
      this.outlines.update(this.t, this.size.w, this.size.h);
      for (const fn of this.listeners) fn(this.t);
      this.scheduleCrisp();
    });
  }

  // The transform in effect once pending frames are drawn.
  get current() { return this.pending || this.t; }

  scheduleCrisp() {
    clearTimeout(this.crispTimer);
    if (this.crispScale === this.t.scale) return;
    this.crispTimer = setTimeout(() => {
      this.crispScale = this.t.scale;
      this.world.style.willChange = "auto";
      requestAnimationFrame(() => { this.world.style.willChange = "transform"; });
    }, 250);
  }

  screenPoint(event) {
    const r = this.rect;
    return [event.clientX - r.left, event.clientY - r.top];
  }

  imagePoint(event) { return toImage(this.current, this.screenPoint(event)); }
  toScreen(p) { return toScreen(this.t, p); }

  zoomBy(factor, at = null) {
    const r = this.rect;
    this.userMoved = true;
    this.setTransform(zoomAt(this.current, at || [r.width / 2, r.height / 2], factor));
  }

  onWheel(e) {
    e.preventDefault();
    const delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
    this.zoomBy(Math.exp(-delta * 0.0015), this.screenPoint(e));
  }

  // Keep pointer events coming to the viewport during a press (ignored for synthetic pointers).
  capture(e) {
    try { this.el.setPointerCapture(e.pointerId); } catch { /* not an active pointer */ }
  }

  startPan(e) {
    this.pan = { x: e.clientX, y: e.clientY };
    this.el.classList.add("panning");
  }

  movePan(e) {
    if (!this.pan) return false;
    const dx = e.clientX - this.pan.x, dy = e.clientY - this.pan.y;
    this.pan = { x: e.clientX, y: e.clientY };
    this.userMoved = true;
    this.setTransform(panBy(this.current, dx, dy));
    return true;
  }

  endPan() {
    const was = !!this.pan;
    this.pan = null;
    this.el.classList.remove("panning");
    return was;
  }

  // Keyboard zoom and pan shared by the tools: + - 0 and (with Shift) the arrow keys.
  handleKey(e) {
    if (e.key === "+" || e.key === "=") { this.zoomBy(1.25); return true; }
    if (e.key === "-" || e.key === "_") { this.zoomBy(0.8); return true; }
    if (e.key === "0") { this.userMoved = false; this.fitToView(); return true; }
    const step = 60;
    const arrows = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (e.shiftKey && arrows[e.key]) {
      this.userMoved = true;
      this.setTransform(panBy(this.current, ...arrows[e.key]));
      return true;
    }
    return false;
  }
}
