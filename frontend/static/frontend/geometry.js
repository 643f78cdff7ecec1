// Pure geometry of the labeling tools, in image pixels. No DOM: tested with `node --test`.
// A point is [x, y]; a ring is an array of points (not closed: the last vertex joins the first).
// A view transform is {scale, tx, ty}: screen = image * scale + t.

export function area(ring) {
  let s = 0;
  for (let i = 0, n = ring.length; i < n; i++) {
    const [x1, y1] = ring[i];
    const [x2, y2] = ring[(i + 1) % n];
    s += x1 * y2 - x2 * y1;
  }
  return Math.abs(s) / 2;
}

export function bounds(rings) {
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  for (const ring of rings) {
    for (const [x, y] of ring) {
      if (x < minX) minX = x;
      if (y < minY) minY = y;
      if (x > maxX) maxX = x;
      if (y > maxY) maxY = y;
    }
  }
  return { minX, minY, maxX, maxY, width: maxX - minX, height: maxY - minY };
}

export function pointInPolygon([px, py], ring) {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = ring[i];
    const [xj, yj] = ring[j];
    if ((yi > py) !== (yj > py) && px < ((xj - xi) * (py - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function orient(a, b, c) {
  const v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
  return v > 1e-12 ? 1 : v < -1e-12 ? -1 : 0;
}

function onSegment(a, b, p) {
  return Math.min(a[0], b[0]) - 1e-12 <= p[0] && p[0] <= Math.max(a[0], b[0]) + 1e-12 &&
    Math.min(a[1], b[1]) - 1e-12 <= p[1] && p[1] <= Math.max(a[1], b[1]) + 1e-12;
}

export function segmentsIntersect(a, b, c, d) {
  const o1 = orient(a, b, c), o2 = orient(a, b, d), o3 = orient(c, d, a), o4 = orient(c, d, b);
  if (o1 !== o2 && o3 !== o4) return true;
  if (o1 === 0 && onSegment(a, b, c)) return true;
  if (o2 === 0 && onSegment(a, b, d)) return true;
  if (o3 === 0 && onSegment(c, d, a)) return true;
  if (o4 === 0 && onSegment(c, d, b)) return true;
  return false;
}

// Pairs of edge indexes [i, j] of a closed ring that cross (edges i: ring[i] -> ring[i+1]).
// Adjacent edges share a vertex and only count when they fold back onto each other.
export function selfIntersections(ring, { closed = true, limit = 10 } = {}) {
  const n = ring.length;
  const edges = closed ? n : n - 1;
  const found = [];
  if (n < 3) return found;
  for (let i = 0; i < edges; i++) {
    const a = ring[i], b = ring[(i + 1) % n];
    for (let j = i + 1; j < edges; j++) {
      const adjacent = j === i + 1 || (closed && i === 0 && j === edges - 1);
      const c = ring[j], d = ring[(j + 1) % n];
      if (adjacent) {
        // Sharing one vertex is fine; overlapping along a line is not.
        const shared = j === i + 1 ? b : a;
        const other1 = j === i + 1 ? a : b;
        const other2 = j === i + 1 ? d : c;
        if (orient(other1, shared, other2) === 0 && dot(sub(other1, shared), sub(other2, shared)) > 0) {
          found.push([i, j]);
        }
        continue;
      }
      if (segmentsIntersect(a, b, c, d)) {
        found.push([i, j]);
        if (found.length >= limit) return found;
      }
    }
  }
  return found;
}

function sub(a, b) { return [a[0] - b[0], a[1] - b[1]]; }
function dot(a, b) { return a[0] * b[0] + a[1] * b[1]; }

// The closest point to p on segment a-b, with t in [0, 1] and the squared distance.
export function closestOnSegment(p, a, b) {
  const dx = b[0] - a[0], dy = b[1] - a[1];
  const len2 = dx * dx + dy * dy;
  let t = len2 ? ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2 : 0;
  t = Math.max(0, Math.min(1, t));
  const q = [a[0] + t * dx, a[1] + t * dy];
  return { point: q, t, dist2: (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 };
}

// Ramer-Douglas-Peucker simplification of an open polyline / ring, keeping its endpoints.
export function simplify(points, tolerance) {
  if (points.length <= 2) return points.slice();
  const keep = new Uint8Array(points.length);
  keep[0] = keep[points.length - 1] = 1;
  const stack = [[0, points.length - 1]];
  const tol2 = tolerance * tolerance;
  while (stack.length) {
    const [s, e] = stack.pop();
    let best = -1, bestD = tol2;
    for (let i = s + 1; i < e; i++) {
      const d = closestOnSegment(points[i], points[s], points[e]).dist2;
      if (d > bestD) { best = i; bestD = d; }
    }
    if (best >= 0) {
      keep[best] = 1;
      stack.push([s, best], [best, e]);
    }
  }
  return points.filter((_, i) => keep[i]);
}

export function clampToImage([x, y], width, height) {
  return [Math.min(width, Math.max(0, x)), Math.min(height, Math.max(0, y))];
}

export function insideImage([x, y], width, height) {
  return Number.isFinite(x) && Number.isFinite(y) && x >= 0 && y >= 0 && x <= width && y <= height;
}

// --- View transforms --------------------------------------------------------------------------

export function toScreen(t, [x, y]) {
  return [x * t.scale + t.tx, y * t.scale + t.ty];
}

export function toImage(t, [sx, sy]) {
  return [(sx - t.tx) / t.scale, (sy - t.ty) / t.scale];
}

// Zoom by `factor` keeping the image point under screen point `at` where it is.
export function zoomAt(t, [sx, sy], factor, { min = 0.01, max = 64 } = {}) {
  const scale = Math.min(max, Math.max(min, t.scale * factor));
  const k = scale / t.scale;
  return { scale, tx: sx - (sx - t.tx) * k, ty: sy - (sy - t.ty) * k };
}

export function panBy(t, dx, dy) {
  return { scale: t.scale, tx: t.tx + dx, ty: t.ty + dy };
}

// The transform that fits an image inside a viewport with a margin, centred.
export function fit(imageW, imageH, viewW, viewH, margin = 8) {
  const scale = Math.max(1e-6, Math.min((viewW - 2 * margin) / imageW, (viewH - 2 * margin) / imageH));
  return { scale, tx: (viewW - imageW * scale) / 2, ty: (viewH - imageH * scale) / 2 };
}

// COCO's flat [x1, y1, x2, y2, ...] and back.
export function flatten(ring) {
  const out = new Array(ring.length * 2);
  for (let i = 0; i < ring.length; i++) { out[2 * i] = ring[i][0]; out[2 * i + 1] = ring[i][1]; }
  return out;
}

export function unflatten(flat) {
  const out = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}

// An SVG path "d" for many flat rings at once (one element for all existing outlines).
export function pathData(flatRings, digits = 1) {
  const parts = [];
  for (const flat of flatRings) {
    if (flat.length < 6) continue;
    let s = `M${flat[0].toFixed(digits)} ${flat[1].toFixed(digits)}`;
    for (let i = 2; i < flat.length; i += 2) s += `L${flat[i].toFixed(digits)} ${flat[i + 1].toFixed(digits)}`;
    parts.push(s + "Z");
  }
  return parts.join("");
}
