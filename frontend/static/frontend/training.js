// Training: before segmentation work, the worker outlines objects whose outlines are known.
// The server scores each outline (IoU with the known one) and records the pass; a worker who
// fails sees the IoU of each item and may try again after a delay.

import { EDITOR_SHORTCUTS, OutlineEditor } from "./editor.js";
import { Shell, el, readTask } from "./ui.js";

export function mountTraining(root, task) {
  const shell = new Shell(root, task, {
    title: "Training: outline these objects",
    subtitle: `${task.items.length} object${task.items.length === 1 ? "" : "s"} · ${task.project.name}`,
    instructions: `Outline each object marked by the pink dot as closely as you can. You pass when every ` +
      `outline overlaps the known one by at least ${Math.round(task.threshold * 100)}% (intersection over union).`,
    shortcuts: [["PageDown / PageUp", "next / previous object"], ...EDITOR_SHORTCUTS],
  });
  const draft = shell.loadDraft() || {};
  const saved = new Map(Object.entries(draft.items || {}).map(([k, v]) => [Number(k), v]));
  let attempt = draft.attempt || (task.stored ? task.stored.attempt + (task.stored.training && task.stored.training.passed ? 0 : 1) : 1);
  let retryAt = task.status && task.status.retry_at ? new Date(task.status.retry_at) : null;
  let passed = !!(task.status && task.status.passed);
  let index = 0, editor = null;

  const nav = el("p", { class: "row" },
    el("button", { type: "button", id: "prev-item", text: "← Previous", onclick: () => show(index - 1) }),
    el("span", { id: "item-label" }),
    el("button", { type: "button", id: "next-item", text: "Next →", onclick: () => show(index + 1) }));
  const result = el("div", { id: "result", "aria-live": "polite" });
  shell.side.prepend(el("h2", { text: "Object" }), nav, el("h2", { text: "Result" }), result);

  const persist = () => {
    if (editor) saved.set(task.items[index].id, editor.snapshot());
    shell.saveDraft({ items: Object.fromEntries(saved), attempt });
  };

  function show(i) {
    if (i < 0 || i >= task.items.length) return;
    if (editor) { saved.set(task.items[index].id, editor.snapshot()); editor.destroy(); }
    index = i;
    const item = task.items[i];
    editor = new OutlineEditor(shell.main, {
      image: item.image, point: item.point, maxVertices: task.max_vertices, readOnly: shell.readOnly,
      parts: saved.get(item.id) || [],
    });
    editor.onMessage = (text, bad) => (bad ? shell.fail(text) : shell.say(text));
    editor.onChange = () => { shell.fail(""); persist(); refresh(); };
    document.getElementById("item-label").textContent = ` ${i + 1} of ${task.items.length}: ${item.category.name} `;
    shell.setStatus("");
    refresh();
  }

  function allProblems() {
    if (editor) saved.set(task.items[index].id, editor.snapshot());
    const out = [];
    task.items.forEach((item, i) => {
      const parts = saved.get(item.id) || [];
      if (!parts.length) out.push(`Object ${i + 1} has no outline yet.`);
      else if (parts.some((p) => !p.closed)) out.push(`Object ${i + 1}: close the outline.`);
    });
    if (editor) for (const p of editor.problems()) out.push(`Object ${index + 1}: ${p}`);
    return out;
  }

  function refresh() {
    const waiting = retryAt && retryAt > new Date();
    const problems = allProblems();
    if (waiting) shell.setReady(false, `Try again from ${retryAt.toLocaleTimeString()}.`);
    else shell.setReady(!problems.length, problems.join(" "));
    shell.setStatus(waiting ? `Next try from ${retryAt.toLocaleTimeString()}` : problems[0] || `Attempt ${attempt}: ready to submit`);
  }

  function showResult(training) {
    const list = el("ul", { class: "ious", id: "ious" });
    training.ious.forEach((r) => {
      const i = task.items.findIndex((it) => it.id === r.item);
      list.appendChild(el("li", { class: r.passed ? "pass" : "fail",
        text: `Object ${i + 1}: IoU ${r.iou.toFixed(2)} ${r.passed ? "✓" : `✗ (needs ${training.threshold})`}` }));
    });
    const verdict = training.passed ? "Passed: you may now take segmentation tasks."
      : `Not yet: every outline needs IoU ≥ ${training.threshold}.` +
        (training.retry_at ? ` Try again from ${new Date(training.retry_at).toLocaleTimeString()}.` : "");
    result.replaceChildren(el("p", { id: "verdict", text: verdict }), list);
  }

  if (task.stored && task.stored.training) showResult(task.stored.training);
  if (passed) shell.say("You have passed this training.");
  else if (retryAt && retryAt > new Date()) shell.say(`You may try again from ${retryAt.toLocaleTimeString()}.`);

  shell.onStored = (reply) => {
    if (!reply.training) return;
    showResult(reply.training);
    passed = reply.training.passed;
    if (!passed) {
      attempt = reply.attempt + 1;
      retryAt = reply.training.retry_at ? new Date(reply.training.retry_at) : null;
      persist();
    } else shell.clearDraft();
  };
  setInterval(refresh, 5000);
  shell.refresh = refresh;
  shell.onSubmit = () => {
    const problems = allProblems();
    if (problems.length) throw new Error(problems.join(" "));
    persist();
    const flat = (parts) => parts.map((p) => p.points.flat());
    return { schema: task.schema, version: task.version, attempt,
      items: task.items.map((item) => ({ item: item.id, parts: flat(saved.get(item.id)) })) };
  };
  document.addEventListener("keydown", (e) => {
    if (e.key === "PageDown") { e.preventDefault(); show(index + 1); }
    else if (e.key === "PageUp") { e.preventDefault(); show(index - 1); }
  });
  show(0);
  window.annotatorTool = { shell, get editor() { return editor; } };
  return { shell };
}

if (document.getElementById("task-data")) mountTraining(document.getElementById("app"), readTask());
