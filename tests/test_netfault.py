"""The TCP fault proxy (tests/netfault.py) against a loopback echo server.

The ``echo_server`` and ``fault_proxy`` fixtures here are the pattern to copy into a
conftest.py when tunnel tests need them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from netfault import FaultProxy, ThreadedProxy

TIMEOUT = 5.0
SILENCE = 0.3  # how long a black-holed read must stay silent


@pytest.fixture
async def echo_server() -> AsyncIterator[int]:
    """An asyncio echo server on a random loopback port; yields the port."""
    handlers: set[asyncio.Task[None]] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    if handlers:  # they end when the proxy resets its upstream links; cancel only stragglers
        _, late = await asyncio.wait(set(handlers), timeout=TIMEOUT)
        for task in late:
            task.cancel()
    await server.wait_closed()


@pytest.fixture
async def fault_proxy(echo_server: int) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo_server) as proxy:
        yield proxy


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), TIMEOUT)


async def assert_broken(reader: asyncio.StreamReader) -> None:
    """The connection was reset or closed under the client: an error or EOF, promptly."""
    try:
        data = await asyncio.wait_for(reader.read(100), TIMEOUT)
    except ConnectionResetError:
        return
    assert data == b""


async def wait_until(predicate: object, what: str) -> None:
    for _ in range(int(TIMEOUT / 0.01)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_data_flows_and_is_counted(fault_proxy: FaultProxy) -> None:
    async with connect(fault_proxy.port) as (reader, writer):
        assert await roundtrip(reader, writer, b"hello") == b"hello"
        big = bytes(range(256)) * 4096  # 1 MiB, several proxy chunks
        assert await roundtrip(reader, writer, big) == big
    expected = 5 + len(big)
    assert (fault_proxy.bytes_up, fault_proxy.bytes_down) == (expected, expected)
    assert fault_proxy.connections == 1
    await wait_until(lambda: fault_proxy.active == 0, "the link to close")


async def test_client_eof_is_passed_on(fault_proxy: FaultProxy) -> None:
    async with connect(fault_proxy.port) as (reader, writer):
        writer.write(b"last words")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"last words"


async def test_reset_breaks_current_connections_and_accepts_new_ones(
    fault_proxy: FaultProxy,
) -> None:
    async with connect(fault_proxy.port) as (reader, writer):
        assert await roundtrip(reader, writer, b"before") == b"before"
        fault_proxy.reset()
        await assert_broken(reader)
        assert fault_proxy.resets == 1
    async with connect(fault_proxy.port) as (reader, writer):
        assert await roundtrip(reader, writer, b"after") == b"after"


async def test_reset_sends_rst_not_fin(fault_proxy: FaultProxy) -> None:
    async with connect(fault_proxy.port) as (reader, writer):
        assert await roundtrip(reader, writer, b"x") == b"x"
        fault_proxy.reset()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(100), TIMEOUT)


async def test_blackhole_silences_but_keeps_the_connection_open(fault_proxy: FaultProxy) -> None:
    async with connect(fault_proxy.port) as (reader, writer):
        assert await roundtrip(reader, writer, b"warm") == b"warm"
        fault_proxy.blackhole()
        writer.write(b"into the void")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(100), SILENCE)
        assert not writer.is_closing()
        assert not reader.at_eof()
        assert fault_proxy.active == 1
        assert fault_proxy.dropped_up == len(b"into the void")
        assert fault_proxy.bytes_up == 4

        fault_proxy.restore()  # this stream has a gap now, so it is reset
        await assert_broken(reader)
    async with connect(fault_proxy.port) as (reader, writer):
        assert await roundtrip(reader, writer, b"back") == b"back"


async def test_blackhole_stalls_new_connections_until_restore(fault_proxy: FaultProxy) -> None:
    fault_proxy.blackhole()
    async with connect(fault_proxy.port) as (reader, writer):
        writer.write(b"queued")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(100), SILENCE)
        assert fault_proxy.bytes_up == 0
        fault_proxy.restore()
        assert await asyncio.wait_for(reader.readexactly(6), TIMEOUT) == b"queued"


async def test_refuse_resets_new_connections_only(fault_proxy: FaultProxy) -> None:
    async with connect(fault_proxy.port) as (old_reader, old_writer):
        assert await roundtrip(old_reader, old_writer, b"old") == b"old"
        fault_proxy.refuse()
        async with connect(fault_proxy.port) as (reader, _writer):
            await assert_broken(reader)
        assert await roundtrip(old_reader, old_writer, b"still") == b"still"
        fault_proxy.restore()
        async with connect(fault_proxy.port) as (reader, writer):
            assert await roundtrip(reader, writer, b"new") == b"new"


async def test_target_down_resets_the_client() -> None:
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    async with FaultProxy("127.0.0.1", port) as proxy, connect(proxy.port) as (reader, _):
        await assert_broken(reader)


async def test_aclose_ends_everything(echo_server: int) -> None:
    proxy = FaultProxy("127.0.0.1", echo_server)
    port = await proxy.start()
    async with connect(port) as (reader, writer):
        assert await roundtrip(reader, writer, b"x") == b"x"
        proxy.blackhole()
        async with connect(port) as (stalled_reader, _):
            await wait_until(lambda: proxy.active == 2, "the stalled connection")
            await proxy.aclose()
            await assert_broken(reader)
            await assert_broken(stalled_reader)
    assert proxy.active == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.parametrize("host", ["10.0.0.1", "example.com", "0.0.0.0"])
def test_only_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(host, 1)
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("127.0.0.1", 1, host=host)
    with pytest.raises(ValueError, match="loopback"):
        ThreadedProxy(host, 1)


# --- ThreadedProxy: the proxy on its own loop, the code under test on another (or none) --------


@pytest.fixture
def threaded_echo() -> Iterator[int]:
    """A blocking echo server in a thread, so the sync tests below use no event loop at all."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(TIMEOUT)
    for conn in conns:
        conn.close()
    listener.close()


def sync_roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        got += chunk
    return got


def test_threaded_proxy_faults_from_plain_threads(threaded_echo: int) -> None:
    with ThreadedProxy("127.0.0.1", threaded_echo) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as sock:
            assert sync_roundtrip(sock, b"ping") == b"ping"
            proxy.blackhole()
            sock.sendall(b"lost")
            sock.settimeout(SILENCE)
            with pytest.raises(TimeoutError):
                sock.recv(100)
            proxy.reset()
            sock.settimeout(TIMEOUT)
            with pytest.raises(ConnectionResetError):
                sock.recv(100)
        proxy.restore()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as sock:
            assert sync_roundtrip(sock, b"pong") == b"pong"
        stats = proxy.stats()
        assert stats["dropped_up"] == 4
        assert stats["resets"] == 1
    assert proxy.port  # the proxy object stays readable after stop
    proxy.stop()  # a second stop is a no-op


async def test_threaded_proxy_serves_a_client_on_another_loop(echo_server: int) -> None:
    proxy = ThreadedProxy("127.0.0.1", echo_server)
    port = proxy.start()
    try:
        async with connect(port) as (reader, writer):
            assert await roundtrip(reader, writer, b"cross-loop") == b"cross-loop"
            proxy.reset()
            await assert_broken(reader)
    finally:
        await asyncio.to_thread(proxy.stop)
    assert proxy.proxy.bytes_down == len(b"cross-loop")
