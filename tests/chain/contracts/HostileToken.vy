# pragma version ~=0.4.3
"""
@title HostileToken (tests only, never shipped)
@notice An ERC-20 with the switches an attacker or a real stablecoin may have:
        `fake` (transfer/transferFrom return true and move nothing: a worthless token),
        `fee_bps` (a fee burned on every transfer: fee-on-transfer), and `blocked` addresses
        (any transfer to or from them reverts, like a stablecoin's blacklist or pause).
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256


balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
totalSupply: public(uint256)
fake: public(bool)
fee_bps: public(uint256)
blocked: public(HashMap[address, bool])


@deploy
def __init__(fake: bool, fee_bps: uint256):
    self.fake = fake
    self.fee_bps = fee_bps


@external
def mint(to: address, amount: uint256):
    self.balanceOf[to] += amount
    self.totalSupply += amount
    log Transfer(sender=empty(address), receiver=to, value=amount)


@external
def set_blocked(who: address, yes: bool):
    self.blocked[who] = yes


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def transfer(to: address, amount: uint256) -> bool:
    self._move(msg.sender, to, amount)
    return True


@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    if not self.fake:
        self.allowance[owner][msg.sender] -= amount
    self._move(owner, to, amount)
    return True


@internal
def _move(src: address, dst: address, amount: uint256):
    if self.fake:
        return
    assert not self.blocked[src] and not self.blocked[dst], "token: address is blocked"
    self.balanceOf[src] -= amount
    fee: uint256 = amount * self.fee_bps // 10_000
    self.balanceOf[dst] += amount - fee
    self.totalSupply -= fee
    log Transfer(sender=src, receiver=dst, value=amount - fee)
