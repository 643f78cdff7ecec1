"""The embedded default broker: kombu's filesystem transport, with messages written atomically.

kombu's own ``_put`` creates ``<time>_<uuid>.<queue>.msg`` and then writes into it, while a
consumer moves any ``*.msg`` it lists away and reads it: a consumer that lists the file between
the two reads an empty message, fails to decode it and stops the Celery worker ("Unrecoverable
error: JSONDecodeError"). Under ``make run`` three processes publish at once (web, worker, beat),
so this happens. Here a message is written under a name the consumers skip and renamed into place once
closed, which is atomic on one file system: a consumer sees a whole message or none.

Registered as the ``filesystem://`` transport in ``annotator.celery``.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


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


class Transport(filesystem.Transport):
    Channel = Channel
