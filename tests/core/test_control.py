"""Control messages: round trips and clear errors for whatever a peer may send."""

from __future__ import annotations

import json

import pytest

from jupyter_gpumarket.core import control
from jupyter_gpumarket.exceptions import ProtocolError


@pytest.mark.parametrize(
    "msg",
    [
        control.StartKernel(key="k" * 32, env={"LANG": "C.UTF-8"}),
        control.Signal(signum=2),
        control.StopKernel(end_lease=True),
        control.KernelStarted(generation=1, gpus=(0, 1)),
        control.KernelExited(generation=3, code=-9, reason="killed"),
        control.Refused(request="start_kernel", message="no"),
        control.SyncOffer(manifest={"files": {}}),
        control.SyncNeed(missing=("ab" * 32,)),
        control.BlobChunk(sha256="cd" * 32, last=True),
        control.SyncCommit(),
        control.SyncDone(files=2, bytes=10),
        control.PullRequest(),
        control.PullManifest(manifest={"files": {}}),
        control.FetchBlob(sha256="ef" * 32),
    ],
)
def test_agent_messages_round_trip(msg: object) -> None:
    assert control.parse_agent_message(control.dump(msg)) == msg


def test_hello_and_welcome_round_trip() -> None:
    hello = control.Hello(token="t", lease="abc", last_received=7)
    assert control.parse_hello(control.dump(hello)) == hello
    welcome = control.Welcome(lease="abc", last_received=3, resumed=True, agent={"gpus": []})
    assert control.parse_welcome(control.dump(welcome).decode()) == welcome


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"op": "nope"}', "unknown agent op"),
        (b'{"op": "signal", "signum": 0}', "signal.signum"),
        (b'{"op": "signal", "signum": true}', "signal.signum"),
        (b'{"op": "signal"}', "agent op signal"),
        (b'{"op": "signal", "signum": 2, "extra": 1}', "agent op signal"),
        (b'{"op": "start_kernel", "key": "short"}', "key too short"),
        (b'{"op": "start_kernel", "key": "kkkkkkkkkkkkkkkkkkkk", "kernel": "bash"}', "not offered"),
        (
            b'{"op": "start_kernel", "key": "kkkkkkkkkkkkkkkkkkkk", "env": {"A B": "x"}}',
            "not valid",
        ),
        (b'{"op": "start_kernel", "key": "kkkkkkkkkkkkkkkkkkkk", "env": {"A": 1}}', "env"),
        (b'{"op": "kernel_started", "generation": 0}', "generation"),
        (b'{"op": "fetch_blob", "sha256": "../../etc"}', "sha256 hex digest"),
        (b'{"op": "sync_need", "missing": ["XYZ"]}', "sha256 hex digest"),
    ],
)
def test_bad_agent_messages_raise_protocol_error(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        control.parse_agent_message(raw)


def test_hello_must_come_first_and_be_complete() -> None:
    with pytest.raises(ProtocolError, match="first message must be a hello"):
        control.parse_hello(json.dumps({"op": "signal", "signum": 2}))
    with pytest.raises(ProtocolError, match="hello"):
        control.parse_hello(json.dumps({"op": "hello"}))
    with pytest.raises(ProtocolError, match="last_received"):
        control.parse_hello(json.dumps({"op": "hello", "token": "t", "last_received": -1}))
    with pytest.raises(ProtocolError, match="too large"):
        control.parse_hello("x" * 300_000)


def test_large_agent_messages_arrive_as_views_and_still_parse() -> None:
    files = {f"f{i:05d}.txt": [1, "ab" * 32, 0] for i in range(3000)}
    raw = control.dump(control.SyncOffer(manifest={"files": files}))
    assert len(raw) > 65536  # the frame codec hands parts this large over as memoryviews
    assert control.parse_agent_message(memoryview(raw)).manifest["files"] == files
