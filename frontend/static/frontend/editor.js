// The outline editor shared by segmentation and training. Parts are plain shapes in the store,
// {id, points: [[x, y], ...] in image pixels, closed}; at most one part is open (being drawn).
// Input becomes change sets committed through History; the renderer only subscribes.

import { area, clampToImage, closestOnSegment, flatten, selfIntersections, unflatten } from "./geometry.js";
import { History, Store } from "./store.js";
import { svg, typing } from "./ui.js";
import { Viewport } from "./viewport.js";

const CLICK_SLOP = 4; // screen pixels a press may move and still count as a click
const round2 = (v) => Math.round(v * 100) / 100;

export const EDITOR_SHORTCUTS = [
  ["click", "add a vertex (first click starts the outline)"],
  ["click first vertex / Enter / C", "close the outline"],
  ["drag vertex", "move it"],
  ["click edge / double-click", "insert a vertex"],
  ["right-click / Delete", "delete the vertex under the pointer"],
  ["N", "new part (occluded object)"],
  ["Esc", "drop the part being drawn"],
  ["wheel / + −", "zoom around the pointer"],
  ["drag empty / Space+drag", "pan"],
  ["Shift+arrows / 0", "pan / fit image"],
  ["Ctrl+Z", "undo"],
  ["Ctrl+Shift+Z / Ctrl+Y", "redo"],
  ["Ctrl+Enter", "submit"],
];

export class OutlineEditor {
  constructor(stage, { image, point = null, existing = [], maxVertices = 5000, readOnly = false, parts = [], onChange = null }) {
    this.image = image;
    this.point = point;
    this.maxVertices = maxVertices;
    this.readOnly = readOnly;
    this.onChange = onChange;
    this.seq = 0;
    this.store = new Store(parts.map((p) => ({ id: this.nextId(), points: p.points.map((q) => q.slice()), closed: !!p.closed })));
    this.history = new History(this.store);
    this.view = new Viewport(stage, image, { existing, label: "Outline editor: click to add vertices" });
    this.layer = svg("g");
    this.rubber = svg("line", { class: "rubber", visibility: "hidden" });
    this.marker = svg("g");
    this.view.edit.append(this.layer, this.rubber, this.marker);
    this.els = new Map(); // part id -> {g, shape, edges: g, verts: g}
    this.hover = null; // {id, index}
    this.armed = false; // N pressed: the next click starts a new part
    this.active = true;
    this.lastPointer = null;

    this.store.subscribe((changes) => this.onStore(changes));
    this.view.subscribe(() => this.renderAll());
    this.history.subscribe(() => this.changed());
    this.bind();
    this.renderAll();
  }

  nextId() { return `p${++this.seq}`; }
  parts() { return this.store.all(); }
  openPart() { return this.parts().find((p) => !p.closed) || null; }
  vertexCount() { return this.parts().reduce((n, p) => n + p.points.length, 0); }

  // --- Rendering (subscribers only) -------------------------------------------------------

  onStore(changes) {
    for (const c of changes) {
      if (c.after == null) {
        const e = this.els.get(c.id);
        if (e) { e.g.remove(); this.els.delete(c.id); }
      } else this.renderPart(c.after);
    }
    this.renderRubber();
  }

  renderAll() {
    for (const p of this.parts()) this.renderPart(p);
    this.renderMarker();
    this.renderRubber();
  }

  renderMarker() {
    if (!this.point) return;
    const [sx, sy] = this.view.toScreen([this.point.x, this.point.y]);
    this.marker.replaceChildren(
      svg("circle", { class: "target-ring", cx: sx, cy: sy, r: 12 }),
      svg("circle", { class: "target", cx: sx, cy: sy, r: 5, "data-role": "target" }),
    );
  }

  renderPart(part) {
    let e = this.els.get(part.id);
    if (!e) {
      const g = svg("g", { "data-part": part.id });
      e = { g, shape: svg("polygon", { class: "part" }), edges: svg("g"), verts: svg("g") };
      g.append(e.shape, e.edges, e.verts);
      this.layer.appendChild(g);
      this.els.set(part.id, e);
    }
    const pts = part.points.map((p) => this.view.toScreen(p));
    const str = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    if (part.closed !== (e.shape.tagName === "polygon")) {
      const shape = svg(part.closed ? "polygon" : "polyline", { class: "part" });
      e.shape.replaceWith(shape);
      e.shape = shape;
    }
    e.shape.setAttribute("points", str);
    const bad = part.closed && part.points.length > 3 && selfIntersections(part.points, { limit: 1 }).length > 0;
    e.shape.setAttribute("class", `part${part.closed ? "" : " open"}${bad ? " bad" : ""}`);
    this.sync(e.edges, part.closed ? pts.length : Math.max(0, pts.length - 1), "line", (line, i) => {
      const [a, b] = [pts[i], pts[(i + 1) % pts.length]];
      line.setAttribute("x1", a[0]); line.setAttribute("y1", a[1]);
      line.setAttribute("x2", b[0]); line.setAttribute("y2", b[1]);
      line.setAttribute("class", "edge-hit");
      line.dataset.part = part.id; line.dataset.edge = i;
    });
    this.sync(e.verts, pts.length, "circle", (c, i) => {
      c.setAttribute("cx", pts[i][0]); c.setAttribute("cy", pts[i][1]); c.setAttribute("r", 5);
      const hovered = this.hover && this.hover.id === part.id && this.hover.index === i;
      c.setAttribute("class", `vertex${i === 0 && !part.closed ? " first" : ""}${hovered ? " hover" : ""}`);
      c.dataset.part = part.id; c.dataset.index = i;
    });
  }

  // Keep `count` children of `group`, reusing elements, and update each.
  sync(group, count, tag, update) {
    while (group.childNodes.length > count) group.lastChild.remove();
    while (group.childNodes.length < count) group.appendChild(svg(tag));
    for (let i = 0; i < count; i++) update(group.childNodes[i], i);
  }

  renderRubber() {
    const open = this.openPart();
    if (!open || !open.points.length || !this.lastPointer || this.drag || this.readOnly) {
      this.rubber.setAttribute("visibility", "hidden");
      return;
    }
    const [ax, ay] = this.view.toScreen(open.points[open.points.length - 1]);
    const [bx, by] = this.lastPointer;
    this.rubber.setAttribute("x1", ax); this.rubber.setAttribute("y1", ay);
    this.rubber.setAttribute("x2", bx); this.rubber.setAttribute("y2", by);
    this.rubber.setAttribute("visibility", "visible");
  }

  setHover(h) {
    const old = this.hover;
    this.hover = h;
    for (const id of new Set([old && old.id, h && h.id])) {
      const p = id && this.store.get(id);
      if (p) this.renderPart(p);
    }
  }

  // --- Edits (each one commit through History) -------------------------------------------

  imagePoint(event) {
    const [x, y] = clampToImage(this.view.imagePoint(event), this.image.width, this.image.height);
    return [round2(x), round2(y)];
  }

  addVertex(p) {
    const open = this.openPart();
    if (open) {
      if (open.points.length >= this.maxVertices) return this.warn(`A part has at most ${this.maxVertices} vertices.`);
      const last = this.view.toScreen(open.points[open.points.length - 1]);
      const here = this.view.toScreen(p);
      if (Math.hypot(last[0] - here[0], last[1] - here[1]) < 3) return; // a double click
      this.history.commit([this.store.change(open.id, { ...open, points: [...open.points, p] })]);
    } else if (this.armed || this.store.shapes.size === 0) {
      if (this.armed) this.info("");
      this.armed = false;
      const id = this.nextId();
      this.history.commit([this.store.change(id, { id, points: [p], closed: false })]);
    }
  }

  closeOpen() {
    const open = this.openPart();
    if (!open) return false;
    if (open.points.length < 3) return this.warn("An outline needs at least 3 vertices.");
    this.history.commit([this.store.change(open.id, { ...open, closed: true })]);
    return true;
  }

  dropOpen() {
    const open = this.openPart();
    if (open) this.history.commit([this.store.change(open.id, null)]);
  }

  newPart() {
    const open = this.openPart();
    if (open && open.points.length >= 3) this.closeOpen();
    else if (open) return this.warn("Finish this part (3 vertices or more) before starting another.");
    this.armed = true;
    this.info("New part: click to place its first vertex.");
  }

  deleteVertex(id, index) {
    const part = this.store.get(id);
    if (!part) return;
    if (part.closed && part.points.length <= 3) {
      return this.warn("An outline needs at least 3 vertices; this one would have fewer. Undo or redraw instead.");
    }
    const points = part.points.filter((_, i) => i !== index);
    this.hover = null;
    this.history.commit([this.store.change(id, points.length ? { ...part, points } : null)]);
  }

  moveVertex(id, index, p) {
    const part = this.store.get(id);
    const points = part.points.slice();
    points[index] = p;
    this.history.commit([this.store.change(id, { ...part, points })]);
  }

  insertVertex(id, edge, p) {
    const part = this.store.get(id);
    const a = part.points[edge], b = part.points[(edge + 1) % part.points.length];
    const q = closestOnSegment(p, a, b).point.map(round2);
    const points = [...part.points.slice(0, edge + 1), q, ...part.points.slice(edge + 1)];
    this.history.commit([this.store.change(id, { ...part, points })]);
    return edge + 1;
  }

  undo() { this.history.undo(); this.armed = false; }
  redo() { this.history.redo(); }

  // --- Input -------------------------------------------------------------------------------

  bind() {
    const v = this.view.el;
    v.addEventListener("pointerdown", (e) => this.onDown(e));
    v.addEventListener("pointermove", (e) => this.onMove(e));
    v.addEventListener("pointerup", (e) => this.onUp(e));
    v.addEventListener("pointercancel", (e) => this.onUp(e));
    v.addEventListener("pointerleave", () => { this.lastPointer = null; this.renderRubber(); });
    v.addEventListener("contextmenu", (e) => {
      e.preventDefault();
      const t = e.target;
      if (!this.readOnly && t.classList && t.classList.contains("vertex")) this.deleteVertex(t.dataset.part, +t.dataset.index);
    });
    this.onKeyDown = (e) => this.handleKeyDown(e);
    this.onKeyUp = (e) => { if (e.key === " ") { this.view.spaceDown = false; } };
    document.addEventListener("keydown", this.onKeyDown);
    document.addEventListener("keyup", this.onKeyUp);
  }

  destroy() {
    document.removeEventListener("keydown", this.onKeyDown);
    document.removeEventListener("keyup", this.onKeyUp);
    this.view.el.remove();
  }

  onDown(e) {
    this.view.el.focus({ preventScroll: true });
    if (e.button === 1 || (e.button === 0 && this.view.spaceDown)) {
      e.preventDefault();
      this.view.capture(e);
      this.view.startPan(e);
      return;
    }
    if (e.button !== 0) return;
    this.view.capture(e);
    const t = e.target;
    if (!this.readOnly && t.classList.contains("vertex")) {
      const id = t.dataset.part, index = +t.dataset.index;
      const part = this.store.get(id);
      if (!part.closed && index === 0 && part.points.length >= 3) { this.closeOpen(); return; }
      this.history.begin();
      this.drag = { id, index };
      return;
    }
    if (!this.readOnly && t.classList.contains("edge-hit")) {
      this.history.begin();
      const index = this.insertVertex(t.dataset.part, +t.dataset.edge, this.imagePoint(e));
      this.drag = { id: t.dataset.part, index };
      return;
    }
    this.press = { x: e.clientX, y: e.clientY, panning: false };
  }

  onMove(e) {
    this.lastPointer = this.view.screenPoint(e);
    if (this.view.movePan(e)) return;
    if (this.drag) {
      this.moveVertex(this.drag.id, this.drag.index, this.imagePoint(e));
      return;
    }
    if (this.press) {
      if (!this.press.panning && Math.hypot(e.clientX - this.press.x, e.clientY - this.press.y) > CLICK_SLOP) {
        this.press.panning = true;
        this.view.startPan({ clientX: this.press.x, clientY: this.press.y });
        this.view.movePan(e);
      }
      return;
    }
    const t = e.target;
    const h = t.classList && t.classList.contains("vertex") ? { id: t.dataset.part, index: +t.dataset.index } : null;
    if ((h && (!this.hover || h.id !== this.hover.id || h.index !== this.hover.index)) || (!h && this.hover)) this.setHover(h);
    this.renderRubber();
  }

  onUp(e) {
    if (this.view.endPan()) { this.press = null; return; }
    if (this.drag) {
      this.drag = null;
      this.history.end();
      this.renderRubber();
      return;
    }
    if (this.press && !this.press.panning && !this.readOnly && e.type === "pointerup") this.addVertex(this.imagePoint(e));
    this.press = null;
  }

  handleKeyDown(e) {
    if (!this.active || typing(e)) return;
    const k = e.key;
    const ctrl = e.ctrlKey || e.metaKey;
    if (k === " ") { this.view.spaceDown = true; e.preventDefault(); return; }
    if (ctrl && (k === "z" || k === "Z")) { e.preventDefault(); if (this.readOnly) return; e.shiftKey ? this.redo() : this.undo(); return; }
    if (ctrl && (k === "y" || k === "Y")) { e.preventDefault(); if (!this.readOnly) this.redo(); return; }
    if (ctrl || e.altKey) return;
    if (this.view.handleKey(e)) { e.preventDefault(); return; }
    if (this.readOnly) return;
    if (k === "Enter" || k === "c" || k === "C") { e.preventDefault(); this.closeOpen(); }
    else if (k === "n" || k === "N") { e.preventDefault(); this.newPart(); }
    else if (k === "Escape") { this.dropOpen(); }
    else if (k === "Delete" || k === "Backspace") {
      e.preventDefault();
      if (this.hover) this.deleteVertex(this.hover.id, this.hover.index);
      else {
        const open = this.openPart();
        if (open) this.deleteVertex(open.id, open.points.length - 1);
      }
    }
  }

  // --- State for the page ------------------------------------------------------------------

  warn(text) { if (this.onMessage) this.onMessage(text, true); return false; }
  info(text) { if (this.onMessage) this.onMessage(text, false); }

  changed() { if (this.onChange) this.onChange(this); }

  snapshot() { return this.parts().map((p) => ({ points: p.points, closed: p.closed })); }

  // Problems that block submission, in words; empty when the outline can be sent.
  problems() {
    const parts = this.parts();
    const out = [];
    if (!parts.length) out.push("Draw the outline: click around the object.");
    parts.forEach((p, i) => {
      const name = parts.length > 1 ? `Part ${i + 1}` : "The outline";
      if (!p.closed) out.push(`${name} is not closed (click its first vertex or press Enter).`);
      else if (p.points.length < 3) out.push(`${name} has fewer than 3 vertices.`);
      else if (selfIntersections(p.points, { limit: 1 }).length) out.push(`${name} crosses itself; drag a vertex to untangle it.`);
      else if (area(p.points) <= 0) out.push(`${name} has no area.`);
    });
    return out;
  }

  flatParts() { return this.parts().map((p) => flatten(p.points)); }
}

export function partsFromFlat(flatParts) {
  return flatParts.map((f) => ({ points: unflatten(f), closed: true }));
}
