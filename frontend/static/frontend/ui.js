// The page shell every tool shares: header, notices, the shortcut list, the submit flow and
// the draft kept in localStorage. Text from requesters and workers only ever goes through
// textContent (el() below), never innerHTML.

import { clearDraft, draftKey, draftStorage, loadDraft, postAnswer, readHost, saveDraft, submitToTurk } from "./host.js";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return node;
}

export const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) node.setAttribute(k, String(v));
  return node;
}

export function readTask(doc = document) {
  return JSON.parse(doc.getElementById("task-data").textContent);
}

// True when a key event comes from a text field, where tool shortcuts must not fire.
export function typing(event) {
  const t = event.target;
  return t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName)) &&
    !(t.tagName === "INPUT" && ["checkbox", "radio", "button"].includes(t.type));
}

export class Shell {
  constructor(root, task, { title, instructions, shortcuts = [], subtitle = "" }) {
    this.task = task;
    this.host = readHost(location.search, { pageOrigin: location.origin, directUser: task.direct_user || "" });
    this.readOnly = this.host.preview;
    this.draftKey = draftKey(task, this.host);
    this.storage = draftStorage(window);
    this.submitting = false;
    this.onSubmit = null;

    this.notice = el("div", { class: "notice", role: "status", "aria-live": "polite", id: "notice" });
    this.error = el("div", { class: "error", role: "alert", id: "error", hidden: true });
    this.main = el("main", { class: "stage", id: "stage" });
    this.side = el("aside", { class: "side", "aria-label": "Task panel" });
    this.status = el("span", { class: "status", id: "status" });
    this.submitButton = el("button", { type: "button", class: "primary", id: "submit", text: "Submit" });
    this.submitButton.addEventListener("click", () => this.submit());
    const keys = el("dl", { class: "shortcuts", id: "shortcuts" });
    for (const [key, what] of shortcuts) keys.append(el("dt", {}, el("kbd", { text: key })), el("dd", { text: what }));
    this.side.append(
      el("h2", { text: "How" }), el("p", { class: "instructions", text: instructions }),
      el("h2", { text: "Shortcuts" }), keys,
    );
    const header = el("header", { class: "bar" },
      el("h1", { text: title }),
      el("span", { class: "subtitle", id: "subtitle", text: subtitle }),
      el("span", { class: "spacer" }),
      this.status, this.submitButton,
      // Messages float over the work area, so the image never moves under the pointer.
      el("div", { class: "messages" }, this.notice, this.error));
    root.replaceChildren(header, el("div", { class: "body" }, this.main, this.side));

    document.addEventListener("keydown", (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); this.submit(); }
    });
    if (this.readOnly) {
      root.classList.add("preview");
      this.submitButton.disabled = true;
      this.say("Preview: accept the HIT to start working. Nothing you do here can be submitted.");
    } else if (this.storage.persistent === false) {
      this.say("This browser keeps no work for framed pages: finish the task before leaving or reloading.");
    } else if (task.stored) {
      this.say(`Already submitted (${task.stored.summary}). Submitting again sends the stored answer.`);
    }
  }

  say(text) { this.notice.textContent = text; }
  fail(text) { this.error.textContent = text; this.error.hidden = !text; }
  setStatus(text) { this.status.textContent = text; }
  setReady(ready, why = "") {
    if (this.readOnly) return;
    this.submitButton.disabled = !ready || this.submitting;
    this.submitButton.title = why;
  }

  loadDraft() { return this.readOnly ? null : loadDraft(this.storage, this.draftKey); }
  // Called once per committed change (a whole drag is one), so writing at once is cheap.
  saveDraft(value) { if (!this.readOnly) saveDraft(this.storage, this.draftKey, value); }
  flushDraft(value) { this.saveDraft(value); }
  clearDraft() { clearDraft(this.storage, this.draftKey); }

  // Build the answer (the tool's onSubmit returns it or throws Error(reason)), post it, then
  // hand the assignment back to the marketplace. Resolves to the server's reply or null.
  async submit() {
    if (this.readOnly || this.submitting || !this.onSubmit) return null;
    this.fail("");
    let answer;
    try {
      answer = this.onSubmit();
    } catch (e) {
      this.fail(e.message);
      return null;
    }
    this.submitting = true;
    this.submitButton.disabled = true;
    this.say("Sending…");
    try {
      const reply = await postAnswer(this.task.answer_url, this.host, answer);
      this.lastReply = reply;
      if (this.onStored) this.onStored(reply);
      if (this.task.kind !== "training") this.clearDraft();
      if (this.host.mode === "direct") {
        this.say(`Thank you: answer #${reply.answer} is stored (${reply.summary}).`);
      } else if (this.task.kind !== "training" || (reply.training && reply.training.passed)) {
        this.say("Stored. Handing the assignment back…");
        submitToTurk(document, this.host, { answerId: reply.answer, summary: reply.summary });
      } else {
        this.say("Scored: see the result beside the image.");
      }
      document.body.dataset.submitted = String(reply.answer);
      return reply;
    } catch (e) {
      this.say("");
      this.fail(e.message);
      return null;
    } finally {
      this.submitting = false;
      if (this.refresh) this.refresh();
    }
  }
}
