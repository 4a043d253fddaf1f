"""In-process fan-out: which device's socket lives in this process (PROTOCOL Part III §8)."""

from __future__ import annotations

from xchat.fanout.base import DeviceSocket, Fanout


class LocalFanout(Fanout):
    def __init__(self) -> None:
        self._sockets: dict[int, DeviceSocket] = {}

    def attach(self, device_ref: int, sock: DeviceSocket) -> None:
        old = self._sockets.get(device_ref)
        self._sockets[device_ref] = sock
        if old is not None and old is not sock:
            old.replaced()

    def detach(self, device_ref: int, sock: DeviceSocket) -> None:
        if self._sockets.get(device_ref) is sock:
            del self._sockets[device_ref]

    def deliver(
        self, device_ref: int, seq: int, envelope_id: bytes, ts_ms: int, content: bytes
    ) -> bool:
        sock = self._sockets.get(device_ref)
        if sock is None:
            return False
        sock.push(seq, envelope_id, ts_ms, content)
        return True

    def notify(self, device_ref: int, frame: bytes) -> bool:
        sock = self._sockets.get(device_ref)
        if sock is None:
            return False
        sock.push_frame(frame)
        return True

    def connected(self) -> int:
        return len(self._sockets)
