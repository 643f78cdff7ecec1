// The one host adapter: the same tool runs framed by MTurk, framed by our marketplace (which
// speaks MTurk's ExternalQuestion protocol), or opened directly by a signed-in user.
//
// MTurk adds assignmentId, hitId, workerId and turkSubmitTo to the page's query string; in
// preview assignmentId is ASSIGNMENT_ID_NOT_AVAILABLE. On submit the answer goes to our server
// first (validated and stored), then a form posts to {turkSubmitTo}/mturk/externalSubmit.

export const PREVIEW_ASSIGNMENT = "ASSIGNMENT_ID_NOT_AVAILABLE";

export function readHost(search, { pageOrigin = "", directUser = "" } = {}) {
  const q = new URLSearchParams(search);
  const assignmentId = q.get("assignmentId") || "";
  const turkSubmitTo = q.get("turkSubmitTo") || "";
  let mode = "direct";
  if (assignmentId) {
    mode = "mturk";
    try {
      if (turkSubmitTo && new URL(turkSubmitTo).origin === pageOrigin) mode = "marketplace";
    } catch { /* a bad turkSubmitTo is reported on submit */ }
  }
  return {
    mode,
    assignmentId,
    hitId: q.get("hitId") || "",
    workerId: mode === "direct" ? directUser : q.get("workerId") || "",
    turkSubmitTo,
    preview: mode !== "direct" && assignmentId === PREVIEW_ASSIGNMENT,
  };
}

// {turkSubmitTo}/mturk/externalSubmit with exactly one slash between them.
export function externalSubmitUrl(turkSubmitTo) {
  return turkSubmitTo.replace(/\/+$/, "") + "/mturk/externalSubmit";
}

export function draftKey(task, host) {
  const who = host.mode === "direct" ? `user:${host.workerId}` : host.assignmentId;
  return `annotator:draft:${task.kind}:${task.task}:${who}`;
}

// localStorage, or (when the browser refuses storage to a framed page) a memory stand-in that
// says so through `.persistent === false`.
export function draftStorage(win = globalThis) {
  try {
    const s = win.localStorage;
    const probe = "annotator:probe";
    s.setItem(probe, "1");
    s.removeItem(probe);
    return s;
  } catch {
    const memory = new Map();
    return {
      persistent: false,
      getItem: (k) => (memory.has(k) ? memory.get(k) : null),
      setItem: (k, v) => memory.set(k, String(v)),
      removeItem: (k) => memory.delete(k),
    };
  }
}

export function loadDraft(storage, key) {
  try {
    const raw = storage.getItem(key);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

export function saveDraft(storage, key, value) {
  try { storage.setItem(key, JSON.stringify(value)); } catch { /* quota or privacy mode: keep going */ }
}

export function clearDraft(storage, key) {
  try { storage.removeItem(key); } catch { /* ignore */ }
}

function csrfToken(doc) {
  const m = doc.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

// POST the answer to our server. Resolves to the server's JSON reply; throws Error(message).
export async function postAnswer(url, host, answer, { fetchImpl = fetch, doc = globalThis.document } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (host.mode === "direct") headers["X-CSRFToken"] = csrfToken(doc);
  let reply;
  try {
    reply = await fetchImpl(url, {
      method: "POST",
      headers,
      credentials: "same-origin",
      body: JSON.stringify({
        host: host.mode === "direct" ? {} : { assignmentId: host.assignmentId, hitId: host.hitId, workerId: host.workerId },
        answer,
      }),
    });
  } catch {
    throw new Error("Could not reach the server; your work is kept in this browser. Try again.");
  }
  let body = null;
  try { body = await reply.json(); } catch { /* not JSON */ }
  if (!reply.ok || !body || !body.ok) {
    throw new Error((body && body.error) || `The server refused the answer (HTTP ${reply.status}).`);
  }
  return body;
}

// Hand the assignment back to MTurk or the marketplace with a hidden form, as MTurk expects.
export function submitToTurk(doc, host, fields) {
  const form = doc.createElement("form");
  form.method = "POST";
  form.action = externalSubmitUrl(host.turkSubmitTo);
  form.hidden = true;
  for (const [name, value] of Object.entries({ assignmentId: host.assignmentId, ...fields })) {
    const input = doc.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = String(value);
    form.appendChild(input);
  }
  doc.body.appendChild(form);
  if (host.mode === "marketplace" && doc.defaultView && doc.defaultView.parent !== doc.defaultView) {
    doc.defaultView.parent.postMessage({ type: "annotator.submitted", assignmentId: host.assignmentId }, "*");
  }
  form.submit();
  return form;
}
