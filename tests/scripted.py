"""A scripted server on loopback for unit tests: one connection, answered by a subclass's script.

`ScriptedLoopback` listens on 127.0.0.1 (a free port), accepts one connection in a daemon thread and
hands it to `converse`; an OSError from the connection (the client went away) ends the script.
Subclasses set their own attributes before calling `__init__`, which starts the thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import BinaryIO, Self


class ScriptedLoopback:
    """One connection on loopback, answered by `converse(conn, reader)`.

    `conn_timeout` bounds each read and write on the accepted connection (None: no bound, for
    servers that stay silent on purpose until the client gives up).
    """

    def __init__(self, conn_timeout: float | None = 10) -> None:
        self.conn_timeout = conn_timeout
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn, contextlib.suppress(OSError):
            if self.conn_timeout is not None:
                conn.settimeout(self.conn_timeout)
            self.converse(conn, conn.makefile("rb"))

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        """The script: read what the client sends from `reader`, answer on `conn`."""
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
