"""Blob bodies over a plain blocking socket in a worker thread (PROTOCOL Part VI §4.5.1).

Why: through httpx a download costs ~1 s of client CPU per GB (64 KiB reads climbing
through httpcore, h11 and anyio, each with its own copy and await), ten times a plain
``recv_into`` loop on the same socket, and as much as the relay spends serving it. Blob
transfers are the only bulk traffic, so their bodies alone take this path: one HTTP/1.1
request per TCP connection (``Connection: close``), and ONE worker thread that owns the
socket for the whole body and also runs the producer or consumer of the bytes
(:meth:`Connection.send_blocks`, :meth:`Connection.receive_blocks`): the file pipeline
encrypts/hashes into, or decrypts/hashes out of, the very buffer the socket uses, so a
~1 MiB block costs no allocation, no copy, no thread hand-off and no event-loop step
(issue #20: each of those was measurable per GB). ``recv_into``/``sendall``, AES-GCM and
BLAKE3 release the GIL. JSON calls (create, HEAD) and ``https://`` relays stay on httpx.

The wire is ordinary HTTP/1.1, byte for byte what any client sends; nothing here is a
protocol change. Errors are the same typed ones the httpx path raises: a refused or broken
connection or a timeout is :class:`~xchat.errors.ServerUnreachable` (the callers resume),
a malformed response is :class:`~xchat.errors.ProtocolError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit

from xchat.errors import ProtocolError, ServerUnreachable

#: Bytes a download thread gathers before handing a block to the event loop: four
#: ciphertext chunks of the default 256 KiB file chunk size (Part VI §3), so the decryptor
#: never has to stitch a chunk together from two blocks.
BLOCK: Final = 4 * (256 * 1024 + 16)
MAX_HEAD: Final = 64 * 1024
MAX_ERROR_BODY: Final = 1024 * 1024

Buffer: TypeAlias = bytes | bytearray | memoryview


_M_ARENA_MAX: Final = -8  # glibc <malloc.h>
_tuned = False


def one_malloc_arena() -> None:
    """Let glibc keep one malloc arena. Why: the chunks and blocks here (256 KiB – 1 MiB)
    are allocated and freed by several worker threads; with an arena per thread each one
    keeps freed megabytes, which grew the client's RSS by ~20 MB per transfer direction
    (issue #20 bounds it at 100 MB). Serving them with mmap instead (M_MMAP_THRESHOLD)
    also bounds RSS but costs a page fault per 4 KiB, ~0.5 CPU s/GB. Process-wide and
    idempotent (arenas already made stay); a no-op off glibc."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(Exception):
            libc.mallopt(_M_ARENA_MAX, 1)


def give_back_memory() -> None:
    """``malloc_trim(0)`` after a transfer: hand the freed chunk and block buffers back to
    the OS so the next transfer starts from the same RSS (glibc only; cheap, once per
    transfer)."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(Exception):
            libc.malloc_trim(0)


_LIBC: list[Any] = []


def _libc() -> Any:
    if not _LIBC:
        lib = None
        with contextlib.suppress(Exception):
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            lib = ctypes.CDLL(name) if name else None
        _LIBC.append(lib)
    return _LIBC[0]


# At import, before the worker threads that would each get an arena exist.
one_malloc_arena()


def usable(base_url: str) -> tuple[str, int] | None:
    """``(host, port)`` if this path can serve ``base_url`` (plain ``http://``), else None."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    return parts.hostname, parts.port or 80


@dataclass
class Head:
    """A response's status line and headers (names lower-cased), plus body bytes that
    arrived with the head."""

    status: int
    headers: dict[str, str]
    rest: bytes = b""
    raw: list[tuple[str, str]] = field(default_factory=list)

    @property
    def length(self) -> int | None:
        value = self.headers.get("content-length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            raise ProtocolError("server sent an invalid Content-Length") from None


class Connection:
    """One blocking HTTP/1.1 exchange. Every method blocks: call it from a worker thread."""

    def __init__(self, host: str, port: int, timeout: float, connect_timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        try:
            self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        except TimeoutError:
            raise ServerUnreachable("server timed out") from None
        except OSError as exc:
            raise ServerUnreachable(f"cannot reach server ({type(exc).__name__})") from None
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def abort(self) -> None:
        """Unblock a thread waiting in recv/send (from any thread)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def send_head(self, method: str, path: str, headers: dict[str, str]) -> None:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{self.port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise ServerUnreachable("upload timed out") from None
        except OSError as exc:
            raise ServerUnreachable(f"upload failed ({type(exc).__name__})") from None

    def read_head(self) -> Head:
        buf = b""
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_HEAD:
                raise ProtocolError("server sent an oversized response head")
            try:
                piece = self.sock.recv(65536)
            except TimeoutError:
                raise ServerUnreachable("server timed out") from None
            except OSError as exc:
                raise ServerUnreachable(f"connection lost ({type(exc).__name__})") from None
            if not piece:
                raise ServerUnreachable("connection closed before a response")
            buf += piece
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise ProtocolError("server sent a malformed status line")
        try:
            status = int(status_line[1])
        except ValueError:
            raise ProtocolError("server sent a malformed status line") from None
        raw = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError("server sent a malformed header")
            raw.append((name.strip(), value.strip()))
        return Head(status, {k.lower(): v for k, v in raw}, rest, raw)

    def read_small_body(self, head: Head) -> bytes:
        """The whole (JSON or error) body of ``head``: by Content-Length, chunked, or until
        the server closes; at most :data:`MAX_ERROR_BODY` bytes."""
        data = bytearray(head.rest)
        length = head.length
        while length is None or len(data) < length:
            if len(data) > MAX_ERROR_BODY:
                raise ProtocolError("server sent an oversized response body")
            try:
                piece = self.sock.recv(65536)
            except TimeoutError:
                raise ServerUnreachable("server timed out") from None
            except OSError as exc:
                raise ServerUnreachable(f"connection lost ({type(exc).__name__})") from None
            if not piece:
                if length is not None:
                    raise ServerUnreachable("response body cut short")
                break
            data += piece
        body = bytes(data[:length] if length is not None else data)
        if head.headers.get("transfer-encoding", "").lower() == "chunked":
            body = _dechunk(body)
        return body

    def send_blocks(self, blocks: Iterator[Buffer], report: Callable[[int], None]) -> None:
        """Send every block of ``blocks`` (each valid only until the next is asked for, so
        the producer reuses one buffer), calling ``report(n)`` after each. Producer and
        socket share this one thread: no hand-off, no copy, no event-loop step per block.
        ServerUnreachable if the connection fails; the producer's own errors propagate."""
        for block in blocks:
            self.sendall(block)
            report(memoryview(block).nbytes)

    def receive_blocks(
        self,
        first: bytes,
        left: int,
        consume: Callable[[memoryview], None],
        report: Callable[[int], None],
    ) -> tuple[int, ServerUnreachable | None]:
        """Read ``left`` body bytes (``first`` of them already received with the head) into
        one reused :data:`BLOCK` buffer and hand each full block to ``consume`` in this
        thread (a view, valid only during the call). Returns the bytes consumed and, if the
        connection broke, the error (after consuming what arrived, so the caller resumes
        from there); the consumer's own errors propagate."""
        buf = bytearray(max(1, min(BLOCK, left)))
        pre = memoryview(first)[:left]
        done = 0
        with memoryview(buf) as whole:
            while left > 0:
                want = min(len(buf), left)
                got = len(pre)
                whole[:got] = pre
                pre = memoryview(b"")
                error: ServerUnreachable | None = None
                try:
                    while got < want:
                        n = self.sock.recv_into(whole[got:want])
                        if not n:
                            error = ServerUnreachable("download ended early")
                            break
                        got += n
                except TimeoutError:
                    error = ServerUnreachable("download timed out")
                except OSError as exc:
                    error = ServerUnreachable(f"download failed ({type(exc).__name__})")
                if got:
                    with whole[:got] as view:
                        consume(view)
                    report(got)
                done += got
                left -= got
                if error is not None:
                    return done, error
        return done, None


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise ProtocolError("server sent a malformed chunked body")
        try:
            size = int(body[pos:end].split(b";")[0], 16)
        except ValueError:
            raise ProtocolError("server sent a malformed chunked body") from None
        if size == 0:
            return bytes(out)
        out += body[end + 2 : end + 2 + size]
        pos = end + 4 + size


async def request(
    where: tuple[str, int],
    timeout: float,
    method: str,
    path: str,
    headers: dict[str, str],
    *,
    read_head: bool,
) -> tuple[Connection, Head | None]:
    """Connect and send a request head (and, for a request without a body, read the
    response head), in worker threads. Cancelled meanwhile, it leaves nothing behind: a
    socket still being connected is closed once made, one in use is shut down."""
    loop = asyncio.get_running_loop()
    made = loop.run_in_executor(None, Connection, *where, timeout, min(timeout, 10.0))
    try:
        conn = await asyncio.shield(made)
    except BaseException:
        made.add_done_callback(_close_made)
        raise

    def exchange() -> Head | None:
        conn.send_head(method, path, headers)
        return conn.read_head() if read_head else None

    try:
        return conn, await in_thread(conn, exchange)
    except BaseException:
        conn.close()
        raise


def _close_made(made: asyncio.Future[Connection]) -> None:
    if not made.cancelled() and made.exception() is None:
        made.result().close()


async def in_thread(conn: Connection, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker thread; if the caller is cancelled (or fails) meanwhile,
    the connection is shut down so the thread, blocked in a socket call, ends at once, and
    is waited for: no thread outlives its transfer."""
    fut = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(fut)
    except BaseException:
        conn.abort()
        with contextlib.suppress(BaseException):
            await fut
        raise


def reporter(
    progress: Callable[[int, int], None] | None, start: int, total: int
) -> Callable[[int], None]:
    """A thread-safe byte counter that calls ``progress(done, total)`` on the event loop."""
    if progress is None:
        return lambda n: None
    loop = asyncio.get_running_loop()
    done = start

    def report(n: int) -> None:
        nonlocal done
        done += n
        loop.call_soon_threadsafe(progress, done, total)

    return report
