"""Jobs run in forked child processes, results taken back in job order.

The shard writer uses this to write a split's shards on every core: the shard plan is fixed
before anything is written, so shards are independent jobs. Plain ``os.fork`` rather than
``multiprocessing``: a Celery prefork worker's processes are daemonic, and ``multiprocessing``
refuses children to a daemonic process; a forked child needs no import or start-up either, it
already holds what the parent computed (the shard plan, the compiled queries).

A child takes a job index from its pipe, runs ``work(index, report)`` (``report(n)`` tells the
parent that ``n`` more items are done), sends back the result and takes the next. The parent
hands out jobs in order, at most ``window`` ahead of the first result not yet taken, and yields
results in job order; it may take jobs itself too, looking after the children between items. A child that raises sends its exception back, raised again in the parent;
a child that dies (killed, out of memory) is found by its pipe's end of file and reported as
``WorkerDied``. Children are killed when the parent stops early (an error, a cancel), and die
with the parent (``PR_SET_PDEATHSIG`` on Linux) if it is killed.
"""
from __future__ import annotations

import ctypes
import gc
import os
import pickle
import signal
import socket
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator

Work = Callable[[int, Callable[[int], None]], Any]


class WorkerDied(RuntimeError):
    """A child process ended without sending its job's result."""


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the parent dies (no effect elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError with its text."""
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any exception type may refuse pickling
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _exit_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class _Child:
    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        self.conn = conn
        self.job: int | None = None
        self.status: int | None = None
        self.stopped = False

    def stop(self) -> None:
        """Tell the child, once, that there is no more work: it exits."""
        if not self.stopped:
            self.stopped = True
            try:
                self.conn.send(None)
            except OSError:
                pass

    def reap(self, *, block: bool) -> None:
        if self.status is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped by someone else's SIGCHLD handler
            self.status = 0
            return
        if pid:
            self.status = status


class ForkedWorkers:
    """``count`` forked children running ``work``; use as a context manager, then ``run``.

    ``in_child`` runs first in each child (drop what must not be shared with the parent:
    database connections, storage clients). Leaving the context stops the children: politely
    after a complete ``run``, with SIGKILL otherwise.
    """

    def __init__(self, count: int, work: Work, *, in_child: Callable[[], None] = lambda: None) -> None:
        self.count = count
        self.work = work
        self.in_child = in_child
        self.children: list[_Child] = []
        self._finished = False

    # -- parent ----------------------------------------------------------------------------

    def __enter__(self) -> "ForkedWorkers":
        # Until the children are gone, no garbage collection (the parent's or a child's) walks
        # the objects the parent holds now: a collection writes to every object it visits, which
        # would copy every page holding one into the child (or keep the child's copy apart from
        # the parent's), so a child's memory would grow with all the parent holds.
        gc.freeze()
        try:
            for _ in range(self.count):
                self._fork()
        except BaseException:
            self._kill_all()
            raise
        return self

    def _fork(self) -> None:
        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            mine.close()
            self._child_main(Connection(theirs.detach()))
        theirs.close()
        self.children.append(_Child(pid, Connection(mine.detach())))

    def run(self, jobs: int, *, window: int, on_report: Callable[[int], None], on_idle: Callable[[], None],
            idle_seconds: float, local: Callable[[int, Callable[[], None]], Any] | None = None,
            ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, result)`` for jobs ``0 .. jobs - 1`` in order. ``on_report(n)`` gets
        the children's reports; ``on_idle()`` runs when nothing arrived for ``idle_seconds``
        (both may raise to stop everything, such as a cancel). With ``local``, this process
        takes jobs too, between the children's: ``local(index, poll)`` runs one and calls
        ``poll()`` every so often, which handles the children's messages and hands them jobs."""
        self._idle = list(reversed(self.children))
        self._results: dict[int, Any] = {}
        self._jobs, self._window, self._on_report = jobs, window, on_report
        self._next_job = self._next_result = 0
        if local is not None and jobs:
            # The first job is this process's: it is warm, while a child has yet to open its
            # database connection, and nothing can be handed back before the first job is done.
            self._next_job = 1
            self._hand_out()
            self._results[0] = local(0, self._poll_now)
        while self._next_result < jobs:
            self._hand_out()
            if self._next_result in self._results:
                yield self._next_result, self._results.pop(self._next_result)
                self._next_result += 1
                continue
            if local is not None and self._next_job < jobs and self._next_job < self._next_result + window:
                self._poll(0)  # a child that finished gets the next job first
                if self._next_result in self._results or not (
                        self._next_job < jobs and self._next_job < self._next_result + window):
                    continue
                index = self._next_job
                self._next_job += 1
                self._results[index] = local(index, self._poll_now)
                continue
            if not self._poll(idle_seconds):
                on_idle()
        self._finished = True

    def _hand_out(self) -> None:
        """Give idle children the next jobs the window allows; once every job is handed out,
        let idle children go (their exit overlaps the others' last jobs)."""
        while self._idle and self._next_job < self._jobs and self._next_job < self._next_result + self._window:
            child = self._idle.pop()
            child.job = self._next_job
            child.conn.send(self._next_job)
            self._next_job += 1
        if self._next_job >= self._jobs:
            while self._idle:
                self._idle.pop().stop()

    def _poll_now(self) -> None:
        self._poll(0)

    def _poll(self, timeout: float) -> bool:
        """Handle what the busy children sent, waiting up to ``timeout`` for something."""
        busy = {child.conn: child for child in self.children if child.job is not None}
        if not busy:
            return False
        ready = wait(list(busy), timeout=timeout)
        for conn in ready:
            child = busy[conn]
            while child.job is not None:  # everything it sent so far, up to its job's end
                self._receive(child)
                if not conn.poll(0):
                    break
        self._hand_out()
        return bool(ready)

    def _receive(self, child: _Child) -> None:
        try:
            message = child.conn.recv()
        except (EOFError, OSError):
            child.reap(block=True)
            raise WorkerDied(
                f"a shard writer process (pid {child.pid}) stopped ({_exit_status(child.status or 0)}) "
                f"in the middle of job {child.job}"
            ) from None
        kind = message[0]
        if kind == "report":
            self._on_report(message[1])
        elif kind == "done":
            self._results[message[1]] = message[2]
            child.job = None
            self._idle.append(child)
        else:  # "error": the child's exception, its traceback as a note
            _, _, exc, text = message
            exc.add_note(f"In shard writer process {child.pid}:\n{text}")
            raise exc

    def __exit__(self, *exc_info) -> None:
        if self._finished and exc_info[0] is None:
            for child in self.children:
                child.stop()
            deadline = time.monotonic() + 10
            for child in self.children:
                while child.status is None and time.monotonic() < deadline:
                    child.reap(block=False)
                    if child.status is None:
                        time.sleep(0.001)
        self._kill_all()

    def _kill_all(self) -> None:
        for child in self.children:
            if child.status is None:
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for child in self.children:
            child.reap(block=True)
            child.conn.close()
        gc.unfreeze()

    # -- child -----------------------------------------------------------------------------

    def _child_main(self, conn: Connection) -> None:
        code = 1
        try:
            _die_with_parent()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the Celery worker's handlers
            for other in self.children:  # the parent's ends of earlier children's pipes
                other.conn.close()
            self.in_child()
            report = lambda n: conn.send(("report", n))  # noqa: E731
            while True:
                try:
                    index = conn.recv()
                except EOFError:  # the parent is gone
                    break
                if index is None:
                    code = 0
                    break
                try:
                    result = self.work(index, report)
                except BaseException as exc:  # noqa: BLE001 - sent to the parent, raised there
                    conn.send(("error", index, _portable(exc), traceback.format_exc()))
                    break
                conn.send(("done", index, result))
        except BaseException:  # noqa: BLE001 - the parent sees the pipe close
            pass
        finally:
            os._exit(code)
