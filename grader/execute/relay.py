"""A relay between the grader's ZMQ sockets and a sandboxed kernel's that bounds each message as it arrives.

ZMQ hands a message over only whole, and can cap only its parts (ZMQ_MAXMSGSIZE): a kernel's one message of
300 parts of 1 MB took the grading process to 657 MB.  So each channel of the kernel's client connects to a
unix socket of the grader's own (``Relay.url``), and the relay copies the bytes on to the kernel's socket
and back.  On the way back it reads ZMTP 3's framing (the 64-byte greeting, then commands and message
parts) and passes a message on only once it is whole and within ``max_bytes``; a larger one is read to its
end and dropped, never held (``on_drop`` is told), so the client never sees it and the channel carries on.
A kernel that breaks the protocol loses that connection, and ZMQ connects again through the relay.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from typing import Callable

GREETING_BYTES = 64  # ZMTP 3: signature (10), version (2), mechanism (20), as-server (1), filler (31)
MAX_COMMAND_BYTES = 64 * 1024  # a ZMTP command (READY, PING, SUBSCRIBE...): a few bytes
_MORE, _LONG, _COMMAND = 1, 2, 4
CHUNK = 64 * 1024


#: the longest folder whose unix sockets (a made-up name of about 40 bytes below it) stay within the 107 bytes of
#: a socket's path
MAX_SOCKET_BASE = 64


def socket_tempdir() -> str:
    """Where to make a folder of unix sockets: TMPDIR, or /tmp where TMPDIR is too long for a socket's path (a long
    TMPDIR otherwise left every kernel unable to start)."""
    base = tempfile.gettempdir()
    if len(os.fsencode(base)) > MAX_SOCKET_BASE and os.access("/tmp", os.W_OK | os.X_OK):
        return "/tmp"
    return base


class ProtocolBroken(Exception):
    """What the kernel sent is not ZMTP 3 as the relay reads it."""


class Relay:
    """One kernel client's relay: ``url(channel)`` is where its channel connects; ``upstream(channel)`` is the
    kernel's socket path for that channel (asked at each connection: it can change at a restart)."""

    def __init__(self, upstream: Callable[[str], str], max_bytes: int, on_drop: Callable[[str], None]):
        self.upstream, self.max_bytes, self.on_drop = upstream, max_bytes, on_drop
        self.folder = tempfile.mkdtemp(prefix="grader-relay-", dir=socket_tempdir())  # the grader's own, mode 700
        self.listening: dict[str, socket.socket] = {}
        self.tasks: set[asyncio.Task] = set()

    def url(self, channel: str) -> str:
        """The ZMQ address the client connects to for ``channel`` (listening from the first call on)."""
        if channel not in self.listening:
            path = os.path.join(self.folder, channel)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            sock.listen(8)
            sock.setblocking(False)
            self.listening[channel] = sock
            self._spawn(self._accept(channel, sock))
        return f"ipc://{self.folder}/{channel}"

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _accept(self, channel: str, sock: socket.socket):
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(sock)
            self._spawn(self._serve(channel, conn))

    async def _serve(self, channel: str, conn: socket.socket):
        """One connection of the client's: joined to the kernel's socket, until either side ends it."""
        client_reader, client_writer = await asyncio.open_unix_connection(sock=conn)
        try:
            kernel_reader, kernel_writer = await asyncio.open_unix_connection(self.upstream(channel))
        except OSError:  # the kernel's socket is not there (yet): ZMQ tries again
            client_writer.close()
            return
        up = asyncio.ensure_future(_copy(client_reader, kernel_writer))
        down = asyncio.ensure_future(self._messages(channel, kernel_reader, client_writer))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            for writer in (client_writer, kernel_writer):
                writer.close()

    async def _messages(self, channel: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        """The kernel's side of the conversation, message by message, none larger than ``max_bytes``."""
        try:
            # the greeting goes on as it comes: each side sends its signature, then its major version once it
            # has the other's signature, then the rest once it has the other's version
            signature = await reader.readexactly(10)
            if signature[0] != 0xFF or signature[9] != 0x7F:
                raise ProtocolBroken("not a ZMTP greeting")
            writer.write(signature)
            major = await reader.readexactly(1)
            if major[0] < 3:
                raise ProtocolBroken(f"ZMTP {major[0]}")
            writer.write(major)
            writer.write(await reader.readexactly(GREETING_BYTES - 11))
            parts: list[bytes] = []
            size = 0
            dropping = False
            while True:
                flags = (await reader.readexactly(1))[0]
                if flags & ~(_MORE | _LONG | _COMMAND):
                    raise ProtocolBroken(f"frame flags {flags:#x}")
                length_bytes = await reader.readexactly(8 if flags & _LONG else 1)
                length = int.from_bytes(length_bytes, "big")
                if flags & _COMMAND:
                    if length > MAX_COMMAND_BYTES or parts or dropping:
                        raise ProtocolBroken("a command too large, or inside a message")
                    writer.write(bytes([flags]) + length_bytes + await reader.readexactly(length))
                    await writer.drain()
                    continue
                if dropping or size + length > self.max_bytes:
                    dropping, parts = True, []
                    await _skip(reader, length)
                else:
                    parts.append(bytes([flags]) + length_bytes + await reader.readexactly(length))
                    size += length
                if not flags & _MORE:  # the message's last part
                    if dropping:
                        self.on_drop(channel)
                    else:
                        writer.write(b"".join(parts))
                        await writer.drain()
                    parts, size, dropping = [], 0, False
        except (asyncio.IncompleteReadError, ConnectionError, ProtocolBroken):
            return

    def close(self):
        for task in list(self.tasks):
            task.cancel()
        for sock in self.listening.values():
            sock.close()
        self.listening.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        return


async def _skip(reader: asyncio.StreamReader, length: int):
    """Read ``length`` bytes and let them go, a chunk at a time."""
    while length > 0:
        chunk = await reader.read(min(length, CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length)
        length -= len(chunk)
