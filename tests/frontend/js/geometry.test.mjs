// Pure geometry, store/undo and host adapter of the labeling tools, without a browser.
import { test } from "node:test";
import assert from "node:assert/strict";

import * as g from "../../../frontend/static/frontend/geometry.js";
import { History, Store, fold, invert } from "../../../frontend/static/frontend/store.js";
import { draftKey, externalSubmitUrl, readHost, PREVIEW_ASSIGNMENT, postAnswer } from "../../../frontend/static/frontend/host.js";

const square = [[0, 0], [10, 0], [10, 10], [0, 10]];
const bowtie = [[0, 0], [10, 10], [10, 0], [0, 10]];

test("area and bounds", () => {
  assert.equal(g.area(square), 100);
  assert.equal(g.area([...square].reverse()), 100);
  assert.equal(g.area([[0, 0], [4, 0], [0, 3]]), 6);
  assert.deepEqual(g.bounds([square, [[20, -5]]]), { minX: 0, minY: -5, maxX: 20, maxY: 10, width: 20, height: 15 });
});

test("point in polygon", () => {
  assert.equal(g.pointInPolygon([5, 5], square), true);
  assert.equal(g.pointInPolygon([15, 5], square), false);
  const ring = [[0, 0], [10, 0], [10, 10], [5, 3], [0, 10]]; // concave
  assert.equal(g.pointInPolygon([5, 8], ring), false);
  assert.equal(g.pointInPolygon([2, 2], ring), true);
});

test("self-intersection", () => {
  assert.deepEqual(g.selfIntersections(square), []);
  assert.equal(g.selfIntersections(bowtie).length, 1);
  assert.equal(g.selfIntersections(bowtie, { closed: false }).length, 1); // crosses even before closing
  // An open zigzag whose closing edge would cross it: fine while open, flagged once closed.
  const zig = [[0, 0], [10, 0], [0, 10], [10, 10]];
  assert.deepEqual(g.selfIntersections(zig, { closed: false }), []);
  assert.equal(g.selfIntersections(zig).length, 1);
  assert.equal(g.selfIntersections([[0, 0], [10, 0], [5, 0], [5, 5]]).length > 0, true); // folds back
  assert.equal(g.segmentsIntersect([0, 0], [10, 0], [5, -1], [5, 1]), true);
  assert.equal(g.segmentsIntersect([0, 0], [10, 0], [11, -1], [11, 1]), false);
  assert.equal(g.segmentsIntersect([0, 0], [10, 0], [10, 0], [20, 5]), true); // touching ends
});

test("closest point on a segment", () => {
  const r = g.closestOnSegment([5, 5], [0, 0], [10, 0]);
  assert.deepEqual(r.point, [5, 0]);
  assert.equal(r.dist2, 25);
  assert.equal(g.closestOnSegment([-5, 1], [0, 0], [10, 0]).t, 0);
});

test("simplification keeps corners and drops collinear points", () => {
  const line = [[0, 0], [1, 0.01], [2, 0], [3, 0.02], [4, 0], [4, 4]];
  assert.deepEqual(g.simplify(line, 0.1), [[0, 0], [4, 0], [4, 4]]);
  assert.equal(g.simplify(line, 0.015).length, 4); // only the 0.02 bump survives beside the corners
  assert.deepEqual(g.simplify([[0, 0], [5, 0]], 1), [[0, 0], [5, 0]]);
});

test("image <-> screen transforms round-trip, zoom keeps the point under the cursor", () => {
  const t = { scale: 2.5, tx: -120, ty: 33 };
  for (const p of [[0, 0], [123.4, 987.6], [4000, 3000]]) {
    const back = g.toImage(t, g.toScreen(t, p));
    assert.ok(Math.abs(back[0] - p[0]) < 1e-9 && Math.abs(back[1] - p[1]) < 1e-9);
  }
  const at = [300, 200];
  const before = g.toImage(t, at);
  const z = g.zoomAt(t, at, 1.7);
  const after = g.toImage(z, at);
  assert.ok(Math.abs(before[0] - after[0]) < 1e-9 && Math.abs(before[1] - after[1]) < 1e-9);
  assert.equal(g.zoomAt(t, at, 1000).scale, 64);
  const f = g.fit(4000, 3000, 800, 600, 0);
  assert.equal(f.scale, 0.2);
  assert.deepEqual(g.panBy(t, 5, -5), { scale: 2.5, tx: -115, ty: 28 });
});

test("flat rings and path data", () => {
  assert.deepEqual(g.flatten(square), [0, 0, 10, 0, 10, 10, 0, 10]);
  assert.deepEqual(g.unflatten([1, 2, 3, 4]), [[1, 2], [3, 4]]);
  assert.equal(g.pathData([[0, 0, 1, 0, 1, 1]], 0), "M0 0L1 0L1 1Z");
  assert.equal(g.pathData([[0, 0, 1, 0]]), ""); // fewer than 3 vertices: nothing drawn
  assert.deepEqual(g.clampToImage([-3, 50], 40, 30), [0, 30]);
  assert.equal(g.insideImage([NaN, 1], 10, 10), false);
});

test("store emits change sets and undo folds a drag into one step", () => {
  const store = new Store();
  const seen = [];
  store.subscribe((changes) => seen.push(changes.map((c) => c.id)));
  const h = new History(store);
  h.commit([store.change("a", { id: "a", points: [[0, 0]] })]);
  h.begin();
  for (let i = 1; i <= 5; i++) h.commit([store.change("a", { id: "a", points: [[i, i]] })]);
  h.end();
  assert.equal(h.undoStack.length, 2);
  assert.deepEqual(store.get("a").points, [[5, 5]]);
  h.undo();
  assert.deepEqual(store.get("a").points, [[0, 0]]);
  h.redo();
  assert.deepEqual(store.get("a").points, [[5, 5]]);
  h.undo(); h.undo();
  assert.equal(store.get("a"), null);
  assert.equal(h.canRedo, true);
  h.commit([store.change("b", { id: "b" })]);
  assert.equal(h.canRedo, false); // a new edit drops the redo branch
  assert.ok(seen.length >= 9);
  const inv = invert([{ id: "x", before: null, after: 1 }]);
  assert.deepEqual(inv, [{ id: "x", before: 1, after: null }]);
  assert.deepEqual(fold([[{ id: "x", before: 1, after: 2 }], [{ id: "x", before: 2, after: 1 }]]), []);
});

test("host adapter reads MTurk's query string", () => {
  const q = "?assignmentId=A1&hitId=H1&workerId=W1&turkSubmitTo=https%3A%2F%2Fworkersandbox.mturk.com";
  const h = readHost(q, { pageOrigin: "https://annotator.example" });
  assert.equal(h.mode, "mturk");
  assert.equal(h.preview, false);
  assert.equal(h.workerId, "W1");
  assert.equal(readHost(q, { pageOrigin: "https://workersandbox.mturk.com" }).mode, "marketplace");
  assert.equal(readHost(`?assignmentId=${PREVIEW_ASSIGNMENT}&hitId=H1`, {}).preview, true);
  const d = readHost("", { directUser: "alice" });
  assert.equal(d.mode, "direct");
  assert.equal(d.workerId, "alice");
  assert.equal(externalSubmitUrl("https://x.example/"), "https://x.example/mturk/externalSubmit");
  assert.equal(externalSubmitUrl("https://x.example"), "https://x.example/mturk/externalSubmit");
  assert.equal(externalSubmitUrl("https://x.example//"), "https://x.example/mturk/externalSubmit");
  assert.notEqual(draftKey({ kind: "spotting", task: 1 }, h), draftKey({ kind: "spotting", task: 1 }, { ...h, assignmentId: "A2" }));
});

test("postAnswer reports the server's message", async () => {
  const fetchImpl = async () => ({ ok: false, status: 400, json: async () => ({ ok: false, error: "Point 1 lies outside" }) });
  const host = readHost("?assignmentId=A&workerId=W&hitId=H", {});
  await assert.rejects(postAnswer("/x", host, {}, { fetchImpl }), /Point 1 lies outside/);
  const down = async () => { throw new TypeError("network"); };
  await assert.rejects(postAnswer("/x", host, {}, { fetchImpl: down }), /kept in this browser/);
});

test("submitToTurk posts the form to externalSubmit and tells a marketplace parent", async () => {
  const { submitToTurk } = await import("../../../frontend/static/frontend/host.js");
  const made = [];
  const messages = [];
  const parent = { postMessage: (m, origin) => messages.push([m, origin]) };
  const doc = {
    createElement: (tag) => {
      const node = { tag, children: [], appendChild(c) { this.children.push(c); }, submit() { this.submitted = true; } };
      made.push(node);
      return node;
    },
    body: { appendChild() {} },
    defaultView: { parent },
  };
  const host = readHost("?assignmentId=A9&hitId=H&workerId=W&turkSubmitTo=https%3A%2F%2Fmarket.example%2F",
    { pageOrigin: "https://market.example" });
  assert.equal(host.mode, "marketplace");
  const form = submitToTurk(doc, host, { answerId: 5, summary: "3 points" });
  assert.equal(form.action, "https://market.example/mturk/externalSubmit");
  assert.equal(form.method, "POST");
  assert.equal(form.submitted, true);
  assert.deepEqual(form.children.map((i) => [i.name, i.value]), [["assignmentId", "A9"], ["answerId", "5"], ["summary", "3 points"]]);
  assert.deepEqual(messages, [[{ type: "annotator.submitted", assignmentId: "A9" }, "*"]]);
  // Framed by MTurk itself: no message to the parent.
  submitToTurk(doc, readHost("?assignmentId=A9&turkSubmitTo=https%3A%2F%2Fwww.mturk.com", { pageOrigin: "https://x" }), {});
  assert.equal(messages.length, 1);
});
