// Verification: a grid of outlines, each cropped around its object with the outline drawn.
// Accept or reject each one (A / R, arrows to move); every outline needs a decision.

import { pathData } from "./geometry.js";
import { Shell, el, readTask, svg, typing } from "./ui.js";

export function mountVerification(root, task) {
  const shell = new Shell(root, task, {
    title: "Check the outlines",
    subtitle: `${task.polygons.length} outlines · ${task.project.name}`,
    instructions: "Accept an outline when it follows the edge of one whole object of the named kind closely. " +
      "Reject it when it is loose, cuts the object, covers several objects or the wrong thing.",
    shortcuts: [["A", "accept"], ["R", "reject"], ["← → ↑ ↓", "move between outlines"], ["U", "undecide"], ["Ctrl+Enter", "submit"]],
  });
  const draft = shell.loadDraft() || {};
  const decisions = new Map(Object.entries(draft.decisions || {}).map(([k, v]) => [Number(k), v]));
  let current = 0;
  const grid = el("div", { class: "grid", role: "list", "aria-label": "Outlines to check" });
  shell.main.appendChild(grid);

  const cards = task.polygons.map((p, i) => {
    const [x, y, w, h] = p.bbox;
    const side = Math.max(w, h) * 1.25 + 16;
    const cx = x + w / 2, cy = y + h / 2;
    const pic = svg("svg", { viewBox: `${cx - side / 2} ${cy - side / 2} ${side} ${side}`, role: "img",
      "aria-label": `Outline of ${p.category.name}` });
    pic.append(svg("image", { href: p.image.url, width: p.image.width, height: p.image.height }), svg("path", { d: pathData(p.parts) }));
    const state = el("span", { class: "state" });
    const card = el("div", { class: "card", role: "listitem", tabindex: "-1", dataset: { polygon: p.id } },
      pic,
      el("div", { class: "row" }, el("span", { class: "label", text: p.category.name }), state),
      el("div", { class: "row" },
        el("button", { type: "button", class: "accept", text: "Accept (A)", onclick: () => decide(i, true) }),
        el("button", { type: "button", class: "reject", text: "Reject (R)", onclick: () => decide(i, false) })));
    card.addEventListener("focus", () => { current = i; paint(); });
    grid.appendChild(card);
    return { card, state };
  });

  function paint() {
    task.polygons.forEach((p, i) => {
      const d = decisions.get(p.id);
      const { card, state } = cards[i];
      card.classList.toggle("current", i === current);
      card.classList.toggle("accepted", d === true);
      card.classList.toggle("rejected", d === false);
      state.textContent = d === true ? "accepted" : d === false ? "rejected" : "";
      card.querySelector(".accept").setAttribute("aria-pressed", String(d === true));
      card.querySelector(".reject").setAttribute("aria-pressed", String(d === false));
      card.querySelectorAll("button").forEach((b) => { b.disabled = shell.readOnly; });
    });
    const left = task.polygons.length - decisions.size;
    shell.setStatus(left ? `${left} left to decide` : "All decided");
    shell.setReady(left === 0, left ? "Decide every outline first." : "");
  }

  function focus(i) {
    current = Math.max(0, Math.min(task.polygons.length - 1, i));
    cards[current].card.focus({ preventScroll: false });
    paint();
  }

  function save() { shell.saveDraft({ decisions: Object.fromEntries(decisions) }); }

  function decide(i, accept) {
    if (shell.readOnly) return;
    const id = task.polygons[i].id;
    if (accept === null) decisions.delete(id); else decisions.set(id, accept);
    save();
    current = i;
    paint();
    if (accept !== null) {
      const next = task.polygons.findIndex((p, j) => j > i && !decisions.has(p.id));
      if (next >= 0) focus(next);
    }
  }

  function columns() {
    const tops = cards.map((c) => c.card.offsetTop);
    return Math.max(1, tops.filter((t) => t === tops[0]).length);
  }

  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (k === "a" || k === "A") decide(current, true);
    else if (k === "r" || k === "R") decide(current, false);
    else if (k === "u" || k === "U") decide(current, null);
    else if (k === "ArrowRight") focus(current + 1);
    else if (k === "ArrowLeft") focus(current - 1);
    else if (k === "ArrowDown") focus(current + columns());
    else if (k === "ArrowUp") focus(current - columns());
    else return;
    e.preventDefault();
  });

  shell.refresh = paint;
  shell.onSubmit = () => {
    const missing = task.polygons.filter((p) => !decisions.has(p.id)).length;
    if (missing) throw new Error(`${missing} outlines are not decided yet.`);
    return { schema: task.schema, version: task.version,
      decisions: task.polygons.map((p) => ({ polygon: p.id, accept: decisions.get(p.id) })) };
  };
  paint();
  if (cards.length) cards[0].card.focus();
  window.annotatorTool = { shell, decisions };
  return { shell };
}

if (document.getElementById("task-data")) mountVerification(document.getElementById("app"), readTask());
