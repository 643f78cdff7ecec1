// Instance spotting: one image, one category; click once on each instance. A loupe magnifies
// under the pointer; drag a point to move it, right-click or Delete to remove it. Past a
// threshold count the worker may declare "too many to count" (COCO's crowd annotations).

import { clampToImage } from "./geometry.js";
import { History, Store } from "./store.js";
import { Shell, readTask, svg, typing, el } from "./ui.js";
import { Viewport } from "./viewport.js";

const round2 = (v) => Math.round(v * 100) / 100;
const LOUPE = 160, LOUPE_ZOOM = 3;

export function mountSpotting(root, task) {
  const name = task.category.name;
  const shell = new Shell(root, task, {
    title: "Click each object",
    subtitle: `${name} · ${task.project.name}`,
    instructions: `Click once on every ${name} in the picture, even small or partly hidden ones. ` +
      `If there are too many to count, click at least ${task.crowd_threshold} and tick "Too many to count".`,
    shortcuts: [
      ["click", `mark a ${name}`], ["drag point", "move it"], ["right-click / Delete", "remove the point under the pointer"],
      ["L", "loupe on / off"], ["wheel / + −", "zoom"], ["drag empty / Space+drag", "pan"],
      ["T", "too many to count"], ["Ctrl+Z / Ctrl+Y", "undo / redo"], ["Ctrl+Enter", "submit"],
    ],
  });
  const draft = shell.loadDraft();
  let seq = 0;
  const store = new Store(((draft && draft.points) || []).map((p) => ({ id: `s${++seq}`, x: p.x, y: p.y })));
  const history = new History(store);
  const view = new Viewport(shell.main, task.image, { label: `Image: click on each ${name}` });
  const layer = svg("g");
  view.edit.appendChild(layer);
  const loupe = el("div", { class: "loupe", hidden: true, "aria-hidden": "true" });
  loupe.style.backgroundImage = `url("${encodeURI(task.image.url)}")`;
  view.el.appendChild(loupe);
  let loupeOn = true, hover = null, drag = null, press = null, last = null;

  const crowdBox = el("input", { type: "checkbox", id: "crowd" });
  crowdBox.checked = !!(draft && draft.crowd);
  const crowdLabel = el("label", { for: "crowd", class: "crowd" }, crowdBox, " Too many to count");
  const counter = el("p", { id: "count", "aria-live": "polite" });
  shell.side.prepend(el("h2", { text: "Count" }), counter, crowdLabel);

  const render = () => {
    const pts = store.all();
    while (layer.childNodes.length > pts.length) layer.lastChild.remove();
    while (layer.childNodes.length < pts.length) layer.appendChild(svg("circle", { r: 6 }));
    pts.forEach((p, i) => {
      const c = layer.childNodes[i];
      const [sx, sy] = view.toScreen([p.x, p.y]);
      c.setAttribute("cx", sx); c.setAttribute("cy", sy);
      c.setAttribute("class", `spot${hover === p.id ? " hover" : ""}`);
      c.dataset.id = p.id;
    });
  };
  const refresh = () => {
    const n = store.all().length;
    const crowdOk = n >= task.crowd_threshold;
    crowdBox.disabled = shell.readOnly || !crowdOk;
    if (!crowdOk) crowdBox.checked = false;
    counter.textContent = `${n} ${name}${n === 1 ? "" : "s"} marked` + (crowdOk ? "" : ` (too many to count from ${task.crowd_threshold})`);
    shell.setStatus(`${n} marked${crowdBox.checked ? " · too many to count" : ""}`);
    shell.setReady(true);
  };
  const changed = () => { shell.saveDraft({ points: store.all().map(({ x, y }) => ({ x, y })), crowd: crowdBox.checked }); refresh(); };
  store.subscribe(render);
  view.subscribe(render);
  history.subscribe(changed);
  crowdBox.addEventListener("change", changed);

  const imagePoint = (e) => clampToImage(view.imagePoint(e), task.image.width, task.image.height).map(round2);
  const showLoupe = (e) => {
    if (!loupeOn) { loupe.hidden = true; return; }
    const [sx, sy] = view.screenPoint(e);
    const [ix, iy] = view.imagePoint(e);
    const s = view.current.scale * LOUPE_ZOOM;
    loupe.hidden = false;
    loupe.style.left = `${sx - LOUPE / 2}px`;
    loupe.style.top = `${sy - LOUPE - 24}px`;
    loupe.style.backgroundSize = `${task.image.width * s}px ${task.image.height * s}px`;
    loupe.style.backgroundPosition = `${LOUPE / 2 - ix * s}px ${LOUPE / 2 - iy * s}px`;
  };
  const remove = (id) => { hover = null; history.commit([store.change(id, null)]); };

  view.el.addEventListener("pointerdown", (e) => {
    view.el.focus({ preventScroll: true });
    if (e.button !== 0 && e.button !== 1) return; // right-click stays on its target (contextmenu)
    view.capture(e);
    if (e.button === 1 || view.spaceDown) { view.startPan(e); return; }
    if (!shell.readOnly && e.target.classList.contains("spot")) { history.begin(); drag = e.target.dataset.id; return; }
    press = { x: e.clientX, y: e.clientY, panning: false };
  });
  view.el.addEventListener("pointermove", (e) => {
    showLoupe(e);
    if (view.movePan(e)) return;
    if (drag) { const [x, y] = imagePoint(e); history.commit([store.change(drag, { ...store.get(drag), x, y })]); return; }
    if (press) {
      if (!press.panning && Math.hypot(e.clientX - press.x, e.clientY - press.y) > 4) {
        press.panning = true; view.startPan({ clientX: press.x, clientY: press.y }); view.movePan(e);
      }
      return;
    }
    const h = e.target.classList && e.target.classList.contains("spot") ? e.target.dataset.id : null;
    if (h !== hover) { hover = h; render(); }
  });
  view.el.addEventListener("pointerup", (e) => {
    if (view.endPan()) { press = null; return; }
    if (drag) { drag = null; history.end(); return; }
    if (press && !shell.readOnly) {
      if (store.all().length >= task.max_points) shell.fail(`At most ${task.max_points} points.`);
      else {
        const [x, y] = imagePoint(e);
        const id = `s${++seq}`;
        history.commit([store.change(id, { id, x, y })]);
      }
    }
    press = null;
  });
  view.el.addEventListener("pointerleave", () => { loupe.hidden = true; });
  view.el.addEventListener("contextmenu", (e) => {
    e.preventDefault();
    if (!shell.readOnly && e.target.classList.contains("spot")) remove(e.target.dataset.id);
  });
  document.addEventListener("keydown", (e) => {
    if (typing(e)) return;
    const ctrl = e.ctrlKey || e.metaKey;
    if (e.key === " ") { view.spaceDown = true; e.preventDefault(); return; }
    if (ctrl && (e.key === "z" || e.key === "Z")) { e.preventDefault(); if (!shell.readOnly) e.shiftKey ? history.redo() : history.undo(); return; }
    if (ctrl && (e.key === "y" || e.key === "Y")) { e.preventDefault(); if (!shell.readOnly) history.redo(); return; }
    if (ctrl || e.altKey) return;
    if (view.handleKey(e)) { e.preventDefault(); return; }
    if (e.key === "l" || e.key === "L") { loupeOn = !loupeOn; loupe.hidden = !loupeOn; }
    else if ((e.key === "t" || e.key === "T") && !crowdBox.disabled) { crowdBox.checked = !crowdBox.checked; changed(); }
    else if ((e.key === "Delete" || e.key === "Backspace") && hover && !shell.readOnly) { e.preventDefault(); remove(hover); }
  });
  document.addEventListener("keyup", (e) => { if (e.key === " ") view.spaceDown = false; });

  shell.refresh = refresh;
  shell.onSubmit = () => ({
    schema: task.schema, version: task.version, image: task.image.id, category: task.category.id,
    points: store.all().map(({ x, y }) => ({ x, y })), crowd: crowdBox.checked,
  });
  render();
  refresh();
  window.annotatorTool = { shell, store, view };
  return { shell, store, view };
}

if (document.getElementById("task-data")) mountSpotting(document.getElementById("app"), readTask());
