"""An HTTP/1.1-aware TCP proxy between a device and the server that injects faults request by request.

tests/server/tcp_proxy.py pipes bytes blindly, which is what a database link needs. Here a fault has to
hit one chosen request (the second push batch, say) on a keep-alive connection, and to hit it at a
chosen moment: before the server has the whole request, or after the server answered (so it has
committed) but before the device hears the answer. So this proxy reads each request and each response
whole (Content-Length or chunked) and decides per request:

    drop_request        forward half the request, then close both sides: the server never runs it
    delay               hold the server's response for `seconds` before relaying it
    cut_after_response  the server answered (and committed); close the device's side, relay nothing
    cut_mid_response    relay half the response's bytes, then close
    answer              answer `status` with an HTML page itself, the server never asked (a proxy that
                        routes the request nowhere during a deploy, or a wrong path)

`down()` / `up()` make the server unreachable the way tcp_proxy does: open connections are dropped and
new ones are accepted only to be closed at once. `blackhole()` is the slow kind of unreachable: new
connections are accepted and never answered, so a client waits for its own timeout.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

DROP_REQUEST = "drop_request"
DELAY = "delay"
CUT_AFTER_RESPONSE = "cut_after_response"
CUT_MID_RESPONSE = "cut_mid_response"
ANSWER = "answer"
KINDS = (DROP_REQUEST, DELAY, CUT_AFTER_RESPONSE, CUT_MID_RESPONSE, ANSWER)


@dataclass(frozen=True)
class Fault:
    kind: str
    seconds: float = 0.0
    status: int = 0  # for ANSWER

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind


@dataclass
class _Rule:
    method: str
    path: str
    queued: deque[Fault | None] = field(default_factory=deque)  # for the next matching requests, in order
    every: Fault | None = None  # for every matching request once the queue is empty

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and path.startswith(self.path)


class _Closed(Exception):
    pass


class HttpFaultProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._open: set[socket.socket] = set()
        self._up = threading.Event()
        self._up.set()
        self._blackhole = threading.Event()
        self._stopping = threading.Event()
        self.connections = 0  # connection attempts, refused ones included
        self.seen: Counter[str] = Counter()  # "POST /v1/sync/push" -> requests that reached the proxy
        self.applied: Counter[str] = Counter()  # fault kind -> times it was applied
        self._acceptor = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._acceptor.start()

    # -- what the test says ----------------------------------------------------------------------
    def inject(self, method: str, path: str, *faults: Fault | None) -> None:
        """The next matching requests get these faults, in order (None: let one through untouched)."""
        with self._lock:
            self._rule(method, path).queued.extend(faults)

    def always(self, method: str, path: str, fault: Fault | None) -> None:
        """Every matching request (after any queued faults) gets this fault; None clears it."""
        with self._lock:
            self._rule(method, path).every = fault

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def down(self) -> None:
        self._up.clear()
        self._blackhole.clear()
        self._drop_all()

    def blackhole(self) -> None:
        self.down()
        self._blackhole.set()

    def up(self) -> None:
        self._drop_all()
        self._blackhole.clear()
        self._up.set()

    def close(self) -> None:
        self._stopping.set()
        self.down()
        self._acceptor.join(timeout=5)
        self._listener.close()

    def _rule(self, method: str, path: str) -> _Rule:
        for rule in self._rules:
            if rule.method == method and rule.path == path:
                return rule
        rule = _Rule(method, path)
        self._rules.append(rule)
        return rule

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.seen[f"{method} {path}"] += 1
            for rule in self._rules:
                if rule.matches(method, path):
                    fault = rule.queued.popleft() if rule.queued else rule.every
                    if fault is not None:
                        self.applied[fault.kind] += 1
                    return fault
        return None

    # -- the plumbing ----------------------------------------------------------------------------
    def _drop_all(self) -> None:
        with self._lock:
            doomed = list(self._open)
            self._open.clear()
        for sock in doomed:
            _close(sock)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self._blackhole.is_set():
                with self._lock:
                    self._open.add(client)  # held open, never read, never answered
                continue
            if not self._up.is_set():
                _close(client)
                continue
            client.settimeout(None)
            with self._lock:
                self._open.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        pending = bytearray()
        from_server = bytearray()
        try:
            while True:
                request = _read_message(client, pending, is_request=True)
                if request is None:
                    return
                line = bytes(request[: request.index(b"\r\n")]).decode("latin-1")
                method, target = line.split(" ")[:2]
                fault = self._fault_for(method, target.split("?")[0])
                if fault is not None and fault.kind == ANSWER:
                    page = f"<html><body><h1>{fault.status}</h1></body></html>".encode()
                    client.sendall(f"HTTP/1.1 {fault.status} Proxy\r\ncontent-type: text/html\r\n"
                                   f"content-length: {len(page)}\r\n\r\n".encode() + page)
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                    with self._lock:
                        self._open.add(upstream)
                if fault is not None and fault.kind == DROP_REQUEST:
                    upstream.sendall(request[: max(1, len(request) // 2)])
                    return
                upstream.sendall(request)
                response = _read_message(upstream, from_server, is_request=False, head_only=method == "HEAD")
                if response is None:
                    return
                if fault is not None and fault.kind == DELAY:
                    time.sleep(fault.seconds)
                if fault is not None and fault.kind == CUT_AFTER_RESPONSE:
                    return
                if fault is not None and fault.kind == CUT_MID_RESPONSE:
                    client.sendall(response[: len(response) // 2])
                    return
                client.sendall(response)
                if b"\r\nconnection: close" in bytes(response[: response.index(b"\r\n\r\n")]).lower():
                    return
        except (OSError, _Closed):
            return
        finally:
            with self._lock:
                self._open.discard(client)
                if upstream is not None:
                    self._open.discard(upstream)
            _close(client)
            if upstream is not None:
                _close(upstream)


def _recv_into(sock: socket.socket, buffer: bytearray) -> None:
    data = sock.recv(65536)
    if not data:
        raise _Closed
    buffer.extend(data)


def _take(sock: socket.socket, buffer: bytearray, size: int) -> bytes:
    while len(buffer) < size:
        _recv_into(sock, buffer)
    out = bytes(buffer[:size])
    del buffer[:size]
    return out


def _take_line(sock: socket.socket, buffer: bytearray) -> bytes:
    while b"\r\n" not in buffer:
        _recv_into(sock, buffer)
    end = buffer.index(b"\r\n") + 2
    return _take(sock, buffer, end)


def _read_message(sock: socket.socket, buffer: bytearray, is_request: bool, head_only: bool = False) -> bytes | None:
    """One whole HTTP/1.1 message (head and body) from `sock`; None if the peer closed between messages."""
    try:
        while b"\r\n\r\n" not in buffer:
            _recv_into(sock, buffer)
    except _Closed:
        if buffer:
            raise
        return None
    head = _take(sock, buffer, buffer.index(b"\r\n\r\n") + 4)
    headers = {}
    for raw in head.split(b"\r\n")[1:]:
        name, _, value = raw.partition(b":")
        if name:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    status = 0 if is_request else int(head.split(b" ")[1])
    if head_only or status in (204, 304) or 100 <= status < 200:
        return head
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = _take_line(sock, buffer)
            size = int(size_line.split(b";")[0].strip(), 16)
            body.extend(size_line)
            if size == 0:
                while (trailer := _take_line(sock, buffer)) != b"\r\n":
                    body.extend(trailer)
                body.extend(b"\r\n")
                return head + bytes(body)
            body.extend(_take(sock, buffer, size + 2))
    if "content-length" in headers:
        return head + _take(sock, buffer, int(headers["content-length"]))
    if is_request:
        return head
    # A response delimited by the end of the connection.
    with contextlib.suppress(_Closed):
        while True:
            _recv_into(sock, buffer)
    body = bytes(buffer)
    buffer.clear()
    return head + body


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
