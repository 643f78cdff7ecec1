// One store of plain shapes keyed by id; every change is a change set [{id, before, after}]
// (null before = created, null after = deleted). Renderers subscribe; tools commit through
// History, which records inverse change sets and folds a whole drag into one undo step.

export class Store {
  constructor(shapes = []) {
    this.shapes = new Map();
    this.listeners = new Set();
    for (const s of shapes) this.shapes.set(s.id, s);
  }

  get(id) { return this.shapes.get(id) ?? null; }
  all() { return [...this.shapes.values()]; }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  apply(changes) {
    for (const c of changes) {
      if (c.after == null) this.shapes.delete(c.id);
      else this.shapes.set(c.id, c.after);
    }
    for (const fn of this.listeners) fn(changes, this);
  }

  // A change set that moves the store from its state to `after` for one id.
  change(id, after) {
    return { id, before: this.get(id), after };
  }
}

export function invert(changes) {
  return changes.slice().reverse().map((c) => ({ id: c.id, before: c.after, after: c.before }));
}

// Fold several change sets into one: the first `before` and the last `after` of each id.
export function fold(sets) {
  const byId = new Map();
  for (const set of sets) {
    for (const c of set) {
      const had = byId.get(c.id);
      if (had) had.after = c.after;
      else byId.set(c.id, { id: c.id, before: c.before, after: c.after });
    }
  }
  return [...byId.values()].filter((c) => c.before !== c.after);
}

export class History {
  constructor(store, { limit = 500 } = {}) {
    this.store = store;
    this.undoStack = [];
    this.redoStack = [];
    this.group = null;
    this.limit = limit;
    this.listeners = new Set();
  }

  subscribe(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }
  notify() { for (const fn of this.listeners) fn(this); }

  commit(changes) {
    if (!changes.length) return;
    this.store.apply(changes);
    if (this.group) { this.group.push(changes); return; }
    this.push(changes);
  }

  push(changes) {
    this.undoStack.push(changes);
    if (this.undoStack.length > this.limit) this.undoStack.shift();
    this.redoStack = [];
    this.notify();
  }

  // Everything committed between begin() and end() becomes one undo step (a drag).
  begin() { if (!this.group) this.group = []; }
  end() {
    const g = this.group;
    this.group = null;
    if (!g) return;
    const folded = fold(g);
    if (folded.length) this.push(folded);
  }
  get grouping() { return this.group !== null; }

  get canUndo() { return this.undoStack.length > 0; }
  get canRedo() { return this.redoStack.length > 0; }

  undo() {
    if (this.group) this.end();
    const changes = this.undoStack.pop();
    if (!changes) return false;
    this.store.apply(invert(changes));
    this.redoStack.push(changes);
    this.notify();
    return true;
  }

  redo() {
    const changes = this.redoStack.pop();
    if (!changes) return false;
    this.store.apply(changes);
    this.undoStack.push(changes);
    this.notify();
    return true;
  }
}
