# pragma version ~=0.4.3
"""
@title Escrow token I/O
@notice One escrow holds one token, fixed at deployment (a stablecoin without transfer fees,
        rebasing or hooks; on devnets TestUSD). Nobody can list another token, so a channel
        funded with a worthless or fee-on-transfer token cannot exist. Every transfer is
        checked (tokens that return nothing count as success).
"""

from ethereum.ercs import IERC20


token: public(immutable(address))


@deploy
def __init__(token_: address):
    assert token_.is_contract, "escrow: token has no code; deploy with the stablecoin's address"
    token = token_


@internal
@view
def _require_token(token_: address):
    assert token_ == token, "escrow: this escrow only holds its token() (one token per deployment)"


@internal
def _pull(owner: address, amount: uint256):
    assert extcall IERC20(token).transferFrom(owner, self, amount, default_return_value=True), "escrow: token transferFrom failed"


@internal
def _send(to: address, amount: uint256):
    assert extcall IERC20(token).transfer(to, amount, default_return_value=True), "escrow: token transfer failed"


@internal
def _try_send(to: address, amount: uint256) -> bool:
    """
    @notice `transfer` that reports failure (a revert, or `false`) instead of reverting.
    """
    ok: bool = False
    ret: Bytes[32] = b""
    ok, ret = raw_call(
        token,
        abi_encode(to, amount, method_id=method_id("transfer(address,uint256)")),
        max_outsize=32,
        revert_on_failure=False,
    )
    if ok and len(ret) != 0:
        ok = convert(ret, bool)
    return ok


@internal
def _try_permit(owner: address, amount: uint256, deadline: uint256, v: uint8, r: bytes32, s: bytes32):
    """
    @notice EIP-2612 permit that tolerates a permit already used (e.g. submitted by someone
            else first): a failed permit is fine when the allowance covers `amount`.
    """
    ok: bool = raw_call(
        token,
        abi_encode(
            owner, self, amount, deadline, v, r, s,
            method_id=method_id("permit(address,address,uint256,uint256,uint8,bytes32,bytes32)"),
        ),
        revert_on_failure=False,
    )
    if not ok:
        assert staticcall IERC20(token).allowance(owner, self) >= amount, "escrow: permit failed and the allowance is below the deposit; sign a new permit"
