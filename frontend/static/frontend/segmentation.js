// Polygon segmentation: outline one spotted instance (its point highlighted), in one or more
// parts, over the faint outlines already drawn on the same image.

import { EDITOR_SHORTCUTS, OutlineEditor } from "./editor.js";
import { Shell, readTask } from "./ui.js";

export function mountSegmentation(root, task) {
  const shell = new Shell(root, task, {
    title: "Outline the object",
    subtitle: `${task.category.name} · ${task.project.name}`,
    instructions: `Trace the ${task.category.name} marked by the pink dot, close to its edge. ` +
      "If something hides part of it, outline each visible piece as its own part (N).",
    shortcuts: EDITOR_SHORTCUTS,
  });
  const draft = shell.loadDraft();
  const editor = new OutlineEditor(shell.main, {
    image: task.image, point: task.point, existing: task.existing || [], maxVertices: task.max_vertices,
    readOnly: shell.readOnly, parts: (draft && draft.parts) || [],
  });
  editor.onMessage = (text, bad) => (bad ? shell.fail(text) : shell.say(text));
  const refresh = () => {
    const problems = editor.problems();
    const n = editor.parts().length;
    shell.setStatus(`${n} part${n === 1 ? "" : "s"}, ${editor.vertexCount()} vertices` + (problems.length ? ` · ${problems[0]}` : ""));
    shell.setReady(!problems.length, problems.join(" "));
  };
  editor.onChange = () => {
    shell.fail("");
    shell.saveDraft({ parts: editor.snapshot() });
    refresh();
  };
  shell.refresh = refresh;
  shell.onSubmit = () => {
    const problems = editor.problems();
    if (problems.length) throw new Error(problems.join(" "));
    shell.flushDraft({ parts: editor.snapshot() });
    return { schema: task.schema, version: task.version, point: task.point.id, parts: editor.flatParts() };
  };
  refresh();
  performance.mark("annotator:mounted");
  window.annotatorTool = { shell, editor };
  return { shell, editor };
}

if (document.getElementById("task-data")) mountSegmentation(document.getElementById("app"), readTask());
