"""Control-plane messages: the websocket hello/welcome and the AGENT channel's JSON ops.

The data path (shell, control, stdin, iopub, hb) carries ZMQ parts untouched; only these small
control messages are JSON. Each message is a frozen dataclass validated where it is made, so a
malformed message from the other side fails in ``parse_*`` with a ProtocolError naming the field.
The file-sync messages are core.sync_msgs' (exported here too), the payment messages
core.paymsgs', the market's core.market_msgs'.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from jupyter_gpumarket.core import market_msgs, paymsgs, safejson
from jupyter_gpumarket.core.kernel_args import check_kernel_args
from jupyter_gpumarket.core.sync_msgs import (
    MANIFEST_PAGE_BYTES,
    BlobChunk,
    FetchBlob,
    PullManifest,
    PullRequest,
    SyncCommit,
    SyncDone,
    SyncNeed,
    SyncOffer,
    sync_offer_pages,
)
from jupyter_gpumarket.core.telemetry import MAX_SAMPLE_BYTES, TelemetrySample
from jupyter_gpumarket.exceptions import ProtocolError

__all__ = [
    "MANIFEST_PAGE_BYTES",
    "MAX_CONTROL_BYTES",
    "MAX_CONTROL_VALUES",
    "MAX_REQUEST_BYTES",
    "PROTOCOL_VERSION",
    "BlobChunk",
    "CloseCode",
    "FetchBlob",
    "Hello",
    "KernelExited",
    "KernelStarted",
    "PullManifest",
    "PullRequest",
    "Refused",
    "Signal",
    "StartKernel",
    "StopKernel",
    "SyncCommit",
    "SyncDone",
    "SyncNeed",
    "SyncOffer",
    "Telemetry",
    "Welcome",
    "dump",
    "parse_agent_message",
    "parse_hello",
    "parse_request",
    "parse_welcome",
    "sync_offer_pages",
]

PROTOCOL_VERSION = 1
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_HELLO_BYTES = 256 * 1024
# Authenticated control messages (AGENT channel JSON) are bounded on their own, far below the
# data frames' limit (core.frames): the biggest is a manifest of core.filesync.MAX_ENTRIES files.
# json.loads turns a few bytes into a Python object of ~50-100 bytes, so the number of values
# (counted as "," "[" "{" before parsing, an upper bound) is bounded too.
MAX_CONTROL_BYTES = 32 * 1024 * 1024
MAX_CONTROL_VALUES = 1_000_000
# What the agent parses of a renter's message on its event loop, which all leases share
# (json.loads holds the GIL: a thread would not help). Every renter -> agent message is small
# but the manifest, which comes in pages of MANIFEST_PAGE_BYTES (sync_offer with more=true on
# all but the last); the pages of one offer together stay within MAX_CONTROL_BYTES.
MAX_REQUEST_BYTES = 768 * 1024  # a start_kernel: 256 KiB of environment, 256 KiB of options


class CloseCode:
    """Websocket close codes the agent uses (4000-4999 is the application range)."""

    PROTOCOL = 4000  # malformed hello / frame / agent message
    UNAUTHORIZED = 4001  # wrong token or signature
    UNKNOWN_LEASE = 4002  # resume of a lease the agent does not have
    CAPACITY = 4003  # max kernels reached
    SHUTDOWN = 4004  # agent is stopping
    REPLACED = 4005  # a newer connection took over this lease
    RELAY_REFUSED = 4006  # a relayed channel opening was refused or reverted (reason says why)


def _obj(
    data: str | bytes | memoryview, what: str, limit: int = _MAX_HELLO_BYTES
) -> dict[str, Any]:
    value = safejson.loads(data, what, max_bytes=limit)  # size, then depth, then json
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return value


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ProtocolError(msg)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def dump(msg: Any) -> bytes:
    """Serialize a control message (any dataclass here) with its ``op`` tag."""
    body = asdict(msg)
    if isinstance(msg, StartKernel) and not msg.kernel_args:
        del body["kernel_args"]  # agents from before kernel options take the message as it was
    if isinstance(msg, SyncOffer) and not msg.more:
        del body["more"]  # a one-page offer is the message as it was before pages
    return json.dumps({"op": msg.op, **body}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Hello:
    """First websocket message from the renter: who it is and where it wants to resume."""

    token: str
    lease: str | None = None
    last_received: int = 0
    version: int = PROTOCOL_VERSION
    # A new renter process taking over a lease (Jupyter server restarted): it knows no
    # sequence numbers, so it adopts the agent's and gets every frame still unacknowledged.
    adopt: bool = False
    # Paid providers: the escrow channel that pays for this lease (0x + 32 bytes of hex); the
    # agent answers with a challenge that the lease's session key must sign.
    channel: str | None = None
    op: str = field(default="hello", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(self.channel is None or paymsgs.is_b32_hex(self.channel), "hello.channel")
        _check(isinstance(self.adopt, bool), "hello.adopt must be a boolean")
        _check(not self.adopt or self.lease is not None, "hello.adopt needs a lease")
        _check(isinstance(self.token, str), "hello.token must be a string")
        _check(self.lease is None or isinstance(self.lease, str), "hello.lease must be a string")
        _check(_is_int(self.last_received) and self.last_received >= 0, "hello.last_received")
        _check(self.version == PROTOCOL_VERSION, f"hello.version must be {PROTOCOL_VERSION}")


@dataclass(frozen=True)
class Welcome:
    """The agent's answer: the lease id, its last received seq, and what it offers."""

    lease: str
    last_received: int = 0
    resumed: bool = False
    agent: dict[str, Any] = field(default_factory=dict)
    replay_from: int = 1  # the first seq the agent replays (adopting renters start there)
    op: str = field(default="welcome", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(_is_int(self.replay_from) and self.replay_from >= 1, "welcome.replay_from")
        _check(isinstance(self.lease, str) and bool(self.lease), "welcome.lease")
        _check(_is_int(self.last_received) and self.last_received >= 0, "welcome.last_received")
        _check(isinstance(self.agent, dict), "welcome.agent must be an object")


@dataclass(frozen=True)
class StartKernel:
    """Renter -> agent: start (or restart) the lease's kernel with this key and env, and
    the kernel options a local kernel would get (``kernel_args``: see core.kernel_args)."""

    key: str
    kernel: str = "python3"
    env: dict[str, str] = field(default_factory=dict)
    signature_scheme: str = "hmac-sha256"
    kernel_args: tuple[str, ...] = ()
    op: str = field(default="start_kernel", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(isinstance(self.key, str) and len(self.key) >= 16, "start_kernel.key too short")
        _check(self.kernel == "python3", f"start_kernel.kernel {self.kernel!r} is not offered")
        _check(self.signature_scheme == "hmac-sha256", "start_kernel.signature_scheme")
        _check(isinstance(self.env, dict), "start_kernel.env must be an object")
        for k, v in self.env.items():
            _check(bool(_ENV_NAME.match(k)), f"start_kernel.env name {k!r} is not valid")
            _check(isinstance(v, str) and "\0" not in v, f"start_kernel.env[{k!r}]")
        args = check_kernel_args(self.kernel_args, "start_kernel.kernel_args")
        object.__setattr__(self, "kernel_args", args)


@dataclass(frozen=True)
class Signal:
    """Renter -> agent: send a signal to the kernel's process group."""

    signum: int
    op: str = field(default="signal", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(_is_int(self.signum) and 1 <= self.signum <= 64, "signal.signum")


@dataclass(frozen=True)
class StopKernel:
    """Renter -> agent: stop the kernel; ``end_lease`` also frees the lease and its dir."""

    end_lease: bool = False
    op: str = field(default="stop_kernel", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(isinstance(self.end_lease, bool), "stop_kernel.end_lease")


@dataclass(frozen=True)
class KernelStarted:
    """Agent -> renter: the kernel answers on its sockets."""

    generation: int
    gpus: tuple[int, ...] = ()
    op: str = field(default="kernel_started", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(_is_int(self.generation) and self.generation >= 1, "kernel_started.generation")
        object.__setattr__(self, "gpus", tuple(self.gpus))


@dataclass(frozen=True)
class KernelExited:
    """Agent -> renter: the kernel process is gone, with its exit code."""

    generation: int
    code: int
    reason: str = ""
    op: str = field(default="kernel_exited", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(_is_int(self.generation), "kernel_exited.generation")
        _check(_is_int(self.code), "kernel_exited.code")


@dataclass(frozen=True)
class Refused:
    """Agent -> renter: a request could not be done; ``message`` says what to do."""

    request: str
    message: str
    op: str = field(default="refused", init=False, repr=False)


@dataclass(frozen=True)
class Telemetry:
    """Agent -> renter, about every second: the kernel's resource use and the lease's bill
    (``sample``: a core.telemetry.TelemetrySample; its JSON on the wire, parsed and bounded)."""

    sample: Any
    op: str = field(default="telemetry", init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.sample, TelemetrySample):
            object.__setattr__(self, "sample", TelemetrySample.from_json(self.sample))


_M = TypeVar("_M")


def _op_of(cls: type) -> str:
    """The ``op`` a message class is sent with (its dataclass field's fixed default)."""
    return str(getattr(cls, "__dataclass_fields__")["op"].default)  # noqa: B009


_AGENT_OPS: dict[str, type] = {
    _op_of(c): c
    for c in (
        StartKernel,
        Signal,
        StopKernel,
        KernelStarted,
        KernelExited,
        Refused,
        SyncOffer,
        SyncNeed,
        BlobChunk,
        SyncCommit,
        SyncDone,
        PullRequest,
        PullManifest,
        FetchBlob,
        paymsgs.Voucher,
        paymsgs.DepositChanged,
        paymsgs.VoucherAck,
        paymsgs.PaymentNotice,
        Telemetry,
    )
}


def _build(cls: type[_M], obj: dict[str, Any], what: str) -> _M:
    obj = dict(obj)
    obj.pop("op", None)
    try:
        return cls(**obj)
    except TypeError as exc:
        raise ProtocolError(f"{what}: {exc}") from None


def parse_hello(data: str | bytes) -> Hello:
    obj = _obj(data, "hello")
    _check(obj.get("op") == "hello", "first message must be a hello")
    return _build(Hello, obj, "hello")


def parse_first(
    data: str | bytes,
) -> Hello | paymsgs.RelayOpen | market_msgs.ProbeRequest | market_msgs.ChallengeRequest:
    """The first message of a connection: a hello, a request to relay a channel opening, or
    the market's probe / challenge (see core.market_msgs)."""
    obj = _obj(data, "first message")
    if obj.get("op") == "relay_open":
        return _build(paymsgs.RelayOpen, obj, "relay_open")
    if obj.get("op") == "probe":
        return _build(market_msgs.ProbeRequest, obj, "probe")
    if obj.get("op") == "challenge":
        return _build(market_msgs.ChallengeRequest, obj, "challenge")
    _check(obj.get("op") == "hello", "first message must be a hello")
    return _build(Hello, obj, "hello")


def parse_text(data: str | bytes, cls: type[_M]) -> _M:
    """A text message of the hello exchange that must be of class ``cls``."""
    obj = _obj(data, cls.__name__)
    expected = _op_of(cls)
    _check(obj.get("op") == expected, f"expected a {expected} message")
    return _build(cls, obj, expected)


def parse_welcome(data: str | bytes) -> Welcome:
    obj = _obj(data, "welcome")
    _check(obj.get("op") == "welcome", "expected a welcome from the provider")
    return _build(Welcome, obj, "welcome")


def _check_values(data: bytes | memoryview) -> None:
    """Bound the objects ``json.loads`` would build (an upper bound, counted at C speed)."""
    if len(data) > 65536 and len(data) <= MAX_CONTROL_BYTES:
        raw = bytes(data)
        values = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
        _check(
            values <= MAX_CONTROL_VALUES,
            f"agent message holds about {values:,} JSON values, above the "
            f"{MAX_CONTROL_VALUES:,} a control message may hold",
        )


def parse_request(data: bytes) -> Any:
    """Parse one AGENT-channel message from a renter (the agent's side): at most
    :data:`MAX_REQUEST_BYTES`, so what the agent's shared loop spends on one is small."""
    return parse_agent_message(data, MAX_REQUEST_BYTES)


def parse_agent_message(data: bytes, max_bytes: int = MAX_CONTROL_BYTES) -> Any:
    """Parse one AGENT-channel message into its dataclass (at most ``max_bytes``, and
    :data:`MAX_CONTROL_VALUES`, whatever the data frames' limit is)."""
    _check(
        len(data) <= max_bytes,
        f"agent message of {len(data):,} bytes is too large: the limit is {max_bytes:,} bytes "
        "(a file list goes in sync_offer pages)",
    )
    _check_values(data)
    obj = _obj(data, "agent message", max_bytes)
    cls = _AGENT_OPS.get(obj.get("op"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown agent op {obj.get('op')!r}")
    _check(cls is not Telemetry or len(data) <= MAX_SAMPLE_BYTES + 64, "telemetry is too big")
    return _build(cls, obj, f"agent op {obj['op']}")
