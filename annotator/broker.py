"""The embedded default broker: kombu's filesystem transport, with messages written atomically.

kombu's own ``_put`` creates ``<time>_<uuid>.<queue>.msg`` and then writes into it, while a
consumer moves any ``*.msg`` it lists away and reads it: a consumer that lists the file between
the two reads an empty message, fails to decode it and stops the Celery worker ("Unrecoverable
error: JSONDecodeError"). Under ``make run`` three processes publish at once (web, worker, beat),
so this happens. Here a message is written under a name the consumers skip and renamed into place once
closed, which is atomic on one file system: a consumer sees a whole message or none.

The same goes for the exchange tables kept in the control folder (see ``_queue_bind``).
Registered as the ``filesystem://`` transport in ``annotator.celery``.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")  # ".<...>": never "<queue>.msg"
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


    # The exchange table (which queues an exchange delivers to) has the same race: kombu creates
    # the file, then locks and writes it, while publishers read it unlocked-for-creation and find
    # it empty. Here it is changed under a lock file of its own and replaced whole.
    def _queue_bind(self, exchange, routing_key, pattern, queue):
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            with open(self.control_folder / f".{file.name}.lock", "a") as guard:
                filesystem.lock(guard, filesystem.LOCK_EX)
                try:
                    table = self._table_on_disk(file)
                    if entry not in table:
                        partial = file.with_name(f".{file.name}.{uuid.uuid4().hex}.part")
                        partial.write_text(dumps([entry, *table]))
                        os.replace(partial, file)
                finally:
                    filesystem.unlock(guard)
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc

    @staticmethod
    def _table_on_disk(file):
        try:
            text = file.read_text()
        except FileNotFoundError:
            return []
        return [filesystem.exchange_queue_t(*q) for q in loads(text)] if text.strip() else []

    def get_table(self, exchange):
        """The exchange's table on disk, plus the bindings this process made: kombu records a
        binding in memory before it writes the file, so another thread of this process may
        publish in between and would find no queue to deliver to."""
        file = self._exchange_file(exchange)
        try:
            table = self._table_on_disk(file)
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        for meta in self.state.exchanges.get(exchange, {}).get("table", []):
            entry = filesystem.exchange_queue_t(*meta)
            if entry not in table:
                table.append(entry)
        return table


class Transport(filesystem.Transport):
    Channel = Channel
