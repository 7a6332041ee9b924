# pragma version ~=0.4.3
"""
@title Escrow token I/O
@notice Tokens get a small index (a channel stores 8 bits, not a 20-byte address) and every
        transfer is checked (tokens that return nothing count as success).
"""

from ethereum.ercs import IERC20


event TokenAdded:
    token: indexed(address)
    index: uint256


token_index: public(HashMap[address, uint256])
tokens: public(HashMap[uint256, address])
token_count: public(uint256)


@internal
def _token_idx(token: address) -> uint256:
    idx: uint256 = self.token_index[token]
    if idx == 0:
        assert token != empty(address), "escrow: token is the zero address"
        idx = self.token_count + 1
        assert idx <= 255, "escrow: too many tokens"
        self.token_count = idx
        self.token_index[token] = idx
        self.tokens[idx] = token
        log TokenAdded(token=token, index=idx)
    return idx


@internal
def _pull(token: address, owner: address, amount: uint256):
    assert extcall IERC20(token).transferFrom(owner, self, amount, default_return_value=True), "escrow: token transferFrom failed"


@internal
def _send(token: address, to: address, amount: uint256):
    assert extcall IERC20(token).transfer(to, amount, default_return_value=True), "escrow: token transfer failed"
