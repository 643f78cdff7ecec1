// Category labeling: a batch of images; for each, the worker marks which categories appear.
// Categories are grouped by supercategory (an icon or example picture each) and a group opens
// to its categories. Keys: arrows / J K change image, number keys open a group or toggle a
// category in the open group, Esc goes back to the groups.

import { supercategoryIcon } from "./icons.js";
import { Shell, el, readTask, typing } from "./ui.js";

export function mountCategories(root, task) {
  const shell = new Shell(root, task, {
    title: "Which things are in each picture?",
    subtitle: `${task.images.length} images · ${task.project.name}`,
    instructions: "For each picture, open the groups and tick every kind of thing you can see, even small " +
      "or partly hidden. Look at every picture before you submit.",
    shortcuts: [
      ["→ / J", "next image"], ["← / K", "previous image"], ["1 … 9, 0", "open a group / toggle a category"],
      ["Esc / Backspace", "back to the groups"], ["Tab, Enter", "reach any group or box (past the tenth too)"],
      ["Ctrl+Enter", "submit"],
    ],
  });
  const groups = task.supercategories;
  const catName = new Map(groups.flatMap((g) => g.categories.map((c) => [c.id, c.name])));
  const draft = shell.loadDraft() || {};
  const present = new Map(task.images.map((im) => [im.id, new Set((draft.present && draft.present[im.id]) || [])]));
  const visited = new Set(draft.visited || []);
  let index = Math.min(draft.index || 0, task.images.length - 1);
  let open = null; // index of the open group

  const img = el("img", { id: "photo", alt: "" });
  const thumbs = el("div", { class: "thumbs", role: "tablist", "aria-label": "Images" });
  const thumbButtons = task.images.map((im, i) => {
    const b = el("button", { type: "button", role: "tab", "aria-label": `Image ${i + 1}`, onclick: () => go(i) },
      el("img", { src: im.url, alt: "" }), el("span", { class: "count" }));
    thumbs.appendChild(b);
    return b;
  });
  const heading = el("h2", { id: "image-heading" });
  const chips = el("div", { class: "chips", id: "chips", "aria-label": "Marked in this image" });
  const panelBody = el("div", { id: "groups" });
  const panel = el("section", { class: "cat-panel", "aria-label": "Categories" }, heading, chips, panelBody);
  shell.main.appendChild(el("div", { class: "cat-layout" },
    el("div", { class: "cat-image" }, el("figure", {}, img), thumbs), panel));
  const navigation = el("div", { class: "row" },
    el("button", { type: "button", id: "prev", text: "← Previous", onclick: () => go(index - 1) }),
    el("button", { type: "button", id: "next", text: "Next →", onclick: () => go(index + 1) }));
  heading.after(navigation);

  const current = () => present.get(task.images[index].id);

  function toggle(categoryId) {
    if (shell.readOnly) return;
    const set = current();
    set.has(categoryId) ? set.delete(categoryId) : set.add(categoryId);
    changed();
  }

  function renderPanel() {
    const set = current();
    heading.textContent = `Image ${index + 1} of ${task.images.length}`;
    chips.replaceChildren(...[...set].map((id) => el("button", {
      type: "button", class: "chip", title: "Remove", text: `${catName.get(id)} ×`, onclick: () => toggle(id),
    })));
    if (open === null) {
      const grid = el("div", { class: "supers", role: "list" });
      groups.forEach((g, i) => {
        const marked = g.categories.filter((c) => set.has(c.id)).length;
        const icon = g.example ? el("img", { class: "icon", src: g.example, alt: "" })
          : supercategoryIcon(g.name);
        grid.appendChild(el("button", {
          type: "button", role: "listitem", class: `super${marked ? " has" : ""}`, dataset: { group: g.name },
          "aria-label": `${i < 10 ? `${(i + 1) % 10}: ` : ""}${g.name}${marked ? `, ${marked} marked` : ""}`,
          onclick: () => { open = i; renderPanel(); },
        }, icon, el("span", { text: `${i < 10 ? `${(i + 1) % 10} ` : ""}${g.name}` }),
        el("span", { class: "n", text: marked ? `${marked} marked` : `${g.categories.length}` })));
      });
      panelBody.replaceChildren(grid);
    } else {
      const g = groups[open];
      const list = el("ul", { class: "cats", id: "cats" });
      g.categories.forEach((c, i) => {
        const box = el("input", { type: "checkbox", id: `cat-${c.id}`, dataset: { category: c.id } });
        box.checked = set.has(c.id);
        box.disabled = shell.readOnly;
        box.addEventListener("change", () => toggle(c.id));
        list.appendChild(el("li", {}, el("label", { for: `cat-${c.id}` }, box,
          el("kbd", { text: i < 10 ? String((i + 1) % 10) : " " }), el("span", { class: "name", text: c.name }))));
      });
      panelBody.replaceChildren(
        el("button", { type: "button", id: "back", text: `← All groups`, onclick: () => { open = null; renderPanel(); } }),
        el("h3", { text: g.name }), list);
    }
  }

  function render() {
    const im = task.images[index];
    if (img.getAttribute("src") !== im.url) img.src = im.url;
    img.alt = `Image ${index + 1}`;
    thumbButtons.forEach((b, i) => {
      b.setAttribute("aria-current", String(i === index));
      const n = present.get(task.images[i].id).size;
      b.querySelector(".count").textContent = n ? String(n) : "";
    });
    renderPanel();
    const unseen = task.images.length - visited.size;
    shell.setStatus(`${visited.size}/${task.images.length} images seen`);
    shell.setReady(unseen === 0, unseen ? "Look at every image first." : "");
  }

  function changed() {
    shell.saveDraft({ present: Object.fromEntries([...present].map(([k, v]) => [k, [...v]])), visited: [...visited], index });
    render();
  }

  function go(i) {
    if (i < 0 || i >= task.images.length) return;
    index = i;
    visited.add(task.images[i].id);
    changed();
  }

  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (k === "ArrowRight" || k === "j" || k === "J") { e.preventDefault(); go(index + 1); }
    else if (k === "ArrowLeft" || k === "k" || k === "K") { e.preventDefault(); go(index - 1); }
    else if (k === "Escape" || k === "Backspace") { e.preventDefault(); open = null; renderPanel(); }
    else if (/^[0-9]$/.test(k)) {
      e.preventDefault();
      const n = k === "0" ? 9 : Number(k) - 1;
      if (open === null) { if (n < groups.length) { open = n; renderPanel(); } }
      else if (n < groups[open].categories.length) toggle(groups[open].categories[n].id);
    }
  });

  shell.refresh = render;
  shell.onSubmit = () => {
    if (visited.size < task.images.length) throw new Error("Look at every image before submitting.");
    return {
      schema: task.schema, version: task.version,
      images: task.images.map((im) => ({ image: im.id, present: [...present.get(im.id)].sort((a, b) => a - b) })),
    };
  };
  visited.add(task.images[index].id);
  render();
  window.annotatorTool = { shell, present };
  return { shell };
}

if (document.getElementById("task-data")) mountCategories(document.getElementById("app"), readTask());
