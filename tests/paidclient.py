"""A hostile (or minimal) paid renter for attack tests: open channels straight on the escrow,
answer an agent's challenge by hand, send frames and vouchers without the provisioner."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import control, eip712, paymsgs
from jupyter_gpumarket.core.auth_challenge import Challenge, sign_hello
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.session import TunnelSession

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# A token whose transfers "succeed" and move nothing: a deposit in it is worth nothing.
WORTHLESS_TOKEN = """# pragma version ~=0.4.3
@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    return True

@external
def transfer(receiver: address, amount: uint256) -> bool:
    return True

@external
def approve(spender: address, amount: uint256) -> bool:
    return True

@external
@view
def balanceOf(owner: address) -> uint256:
    return 0

@external
@view
def decimals() -> uint8:
    return 6
"""


def malleate(sig: bytes, how: str) -> bytes:
    """Forms of a valid 65-byte signature that recover (off chain, leniently) to the same
    signer or to garbage: the Escrow's ECDSA refuses every one of them."""
    r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    if how == "high-s":  # (r, n - s, v ^ 1) is the same signature, mirrored
        return r.to_bytes(32, "big") + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    if how == "v-27":  # v in {0, 1}
        return sig[:64] + bytes([v - 27])
    if how == "v+4":
        return sig[:64] + bytes([v + 4])
    if how == "truncated":
        return sig[:64]
    if how == "extra-byte":
        return sig + b"\x00"
    if how == "zero-r":
        return bytes(32) + sig[32:]
    if how == "zero-s":
        return sig[:32] + bytes(32) + sig[64:]
    raise ValueError(how)


MALLEATIONS = ("high-s", "v-27", "v+4", "truncated", "extra-byte", "zero-r", "zero-s")


def client_ssl() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Refused:
    """The agent closed the connection instead of welcoming: its code and reason."""

    code: int
    reason: str


@dataclass
class Linked:
    ws: ClientConnection
    welcome: control.Welcome
    session: TunnelSession

    async def send_agent(self, msg: Any) -> None:
        await self.ws.send(self.session.send(Channel.AGENT, [control.dump(msg)]))

    async def agent_messages(self, timeout: float) -> AsyncIterator[Any]:
        """Agent-channel messages until ``timeout`` seconds pass without one."""
        while True:
            try:
                data = await asyncio.wait_for(self.ws.recv(), timeout)
            except (TimeoutError, ConnectionClosed):
                return
            if isinstance(data, str):
                continue
            delivery = self.session.receive(data)
            if delivery is not None and delivery.channel is Channel.AGENT:
                yield control.parse_agent_message(delivery.parts[0])


@contextlib.asynccontextmanager
async def paid_hello(
    url: str,
    channel_id: bytes,
    session_key: Any,
    *,
    lease: str | None = None,
    local_host: str | None = None,
    answer: Callable[[bytes], bytes] = lambda sig: sig,
) -> AsyncIterator[Linked | Refused]:
    """Hello naming ``channel_id``, answer the challenge with ``session_key`` (``answer`` may
    tamper with the signature); yields the link or what the agent said when it refused."""
    kw: dict[str, Any] = {"local_addr": (local_host, 0)} if local_host else {}
    async with connect(url, ssl=client_ssl(), open_timeout=20, max_size=None, **kw) as ws:
        try:
            hello = control.Hello(token="", lease=lease, channel="0x" + channel_id.hex())
            await ws.send(control.dump(hello).decode())
            raw = await asyncio.wait_for(ws.recv(), 20)
            ch = control.parse_text(raw, paymsgs.AuthChallenge)
            c = Challenge(
                nonce=bytes.fromhex(ch.nonce[2:]),
                provider=ch.provider,
                chain_id=ch.chain_id,
                escrow=ch.escrow,
                expires_at=0.0,
            )
            sig = answer(sign_hello(session_key.key, c, channel_id))
            await ws.send(control.dump(paymsgs.AuthAnswer("0x" + sig.hex())).decode())
            welcome = control.parse_welcome(await asyncio.wait_for(ws.recv(), 30))
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            yield Refused(rcvd.code if rcvd else 1006, rcvd.reason if rcvd else "")
            return
        yield Linked(ws, welcome, TunnelSession())


async def challenge_only(url: str, local_host: str | None = None) -> str:
    """One unauthenticated hello: 'challenge' when the agent issued one, else its close
    reason (what a flood of strangers costs the agent)."""
    kw: dict[str, Any] = {"local_addr": (local_host, 0)} if local_host else {}
    try:
        async with connect(url, ssl=client_ssl(), open_timeout=30, **kw) as ws:
            hello = control.Hello(token="", channel="0x" + "11" * 32)
            await ws.send(control.dump(hello).decode())
            raw = await asyncio.wait_for(ws.recv(), 30)
            control.parse_text(raw, paymsgs.AuthChallenge)
            return "challenge"
    except ConnectionClosed as exc:
        return exc.rcvd.reason if exc.rcvd else "closed"


# -- the chain side ---------------------------------------------------------------------------


def contracts(profile: Any) -> Any:
    from jupyter_gpumarket.chain.client import Contracts, connect

    return Contracts.at(connect(profile.rpc_url), *profile.require_contracts())


def open_channel(
    profile: Any, renter: Any, provider: str, deposit: int, *, token: Any = None
) -> tuple[bytes, Any]:
    """approve + Escrow.open from ``renter`` with a fresh session key (in ``token``, a web3
    contract, instead of the deployment's when given); (channel id, session key)."""
    from jupyter_gpumarket.chain.client import send

    c = contracts(profile)
    session = Account.create()
    tok = token if token is not None else c.token
    send(c.w3, renter, tok.functions.approve(c.escrow.address, deposit), what="approve")
    names = [i["name"] for i in c.escrow.get_function_by_name("open").abi["inputs"]]
    args = {"provider": provider, "token": tok.address, "deposit": deposit}
    args["session_key"] = session.address
    call = c.escrow.functions.open(*[args[n] for n in names])
    send(c.w3, renter, call, what="Escrow.open")
    return eip712.channel_id_for(renter.address, session.address), session


def deploy_source(profile: Any, deployer: Any, source: str, *args: Any) -> Any:
    """Compile Vyper ``source`` and deploy it; the web3 contract."""
    import vyper

    from jupyter_gpumarket.chain.client import send

    out = vyper.compile_code(source, output_formats=["abi", "bytecode"])
    w3 = contracts(profile).w3
    factory = w3.eth.contract(abi=out["abi"], bytecode=out["bytecode"])
    receipt = send(w3, deployer, factory.constructor(*args), what="deploy")
    return w3.eth.contract(address=receipt["contractAddress"], abi=out["abi"])
