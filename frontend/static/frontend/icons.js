// Small inline SVG pictures for COCO's supercategories (24x24, drawn with simple shapes, so no
// emoji font is needed). Any other supercategory gets its first letter in a disc.

import { svg } from "./ui.js";

const SHAPES = {
  person: [["circle", { cx: 12, cy: 6, r: 3.5 }], ["path", { d: "M5 22v-6a7 7 0 0 1 14 0v6z" }]],
  vehicle: [["path", { d: "M2 15v-3l3-5h11l4 5h2v3z" }], ["circle", { cx: 7, cy: 17, r: 2.5 }], ["circle", { cx: 17, cy: 17, r: 2.5 }]],
  outdoor: [["rect", { x: 8, y: 1, width: 8, height: 17, rx: 2 }], ["rect", { x: 11, y: 18, width: 2, height: 5 }]],
  animal: [["ellipse", { cx: 12, cy: 16, rx: 5, ry: 4.5 }], ["circle", { cx: 5, cy: 10, r: 2.3 }], ["circle", { cx: 9.5, cy: 6, r: 2.3 }],
    ["circle", { cx: 14.5, cy: 6, r: 2.3 }], ["circle", { cx: 19, cy: 10, r: 2.3 }]],
  accessory: [["path", { d: "M8 8V6a4 4 0 0 1 8 0v2h3l1 14H4L5 8zm2 0h4V6a2 2 0 0 0-4 0z" }]],
  sports: [["circle", { cx: 12, cy: 12, r: 10 }]],
  kitchen: [["path", { d: "M6 2h1v6h1V2h1v6h1V2h1v7a3 3 0 0 1-2 2.8V22H8V11.8A3 3 0 0 1 6 9z" }], ["path", { d: "M15 2c3 0 4 4 4 9h-2v11h-2z" }]],
  food: [["circle", { cx: 12, cy: 14, r: 8 }], ["rect", { x: 11, y: 2, width: 2, height: 5 }]],
  furniture: [["path", { d: "M6 2h3v10h7V9h3v13h-2v-6H8v6H6z" }]],
  electronic: [["rect", { x: 2, y: 3, width: 20, height: 13, rx: 1.5 }], ["rect", { x: 8, y: 18, width: 8, height: 2 }]],
  appliance: [["rect", { x: 5, y: 1, width: 14, height: 22, rx: 2 }]],
  indoor: [["path", { d: "M4 3h7a2 2 0 0 1 2 2v16a2 2 0 0 0-2-2H4zM20 3h-5v16h5z" }]],
};
const COLORS = {
  person: "#c2410c", vehicle: "#1d4ed8", outdoor: "#15803d", animal: "#92400e", accessory: "#7c3aed", sports: "#0f766e",
  kitchen: "#475569", food: "#dc2626", furniture: "#a16207", electronic: "#0369a1", appliance: "#64748b", indoor: "#be185d",
};

export function supercategoryIcon(name) {
  const s = svg("svg", { viewBox: "0 0 24 24", width: 28, height: 28, class: "icon", "aria-hidden": "true" });
  const shapes = SHAPES[name];
  if (shapes) {
    const g = svg("g", { fill: COLORS[name] });
    for (const [tag, attrs] of shapes) g.appendChild(svg(tag, attrs));
    s.appendChild(g);
  } else {
    s.appendChild(svg("circle", { cx: 12, cy: 12, r: 11, fill: "#475569" }));
    const t = svg("text", { x: 12, y: 16.5, "text-anchor": "middle", "font-size": 13, fill: "#fff", "font-family": "system-ui, sans-serif" });
    t.textContent = (name || "?").slice(0, 1).toUpperCase();
    s.appendChild(t);
  }
  return s;
}
