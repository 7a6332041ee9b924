# pragma version ~=0.4.3
"""
@title TestUSD
@notice Devnet stand-in for a stablecoin: ERC-20 with 6 decimals and EIP-2612 `permit`
        (snekmate), plus `mint` for the deployer (the devnet faucet). Real networks use an
        existing stablecoin instead.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc20

initializes: ownable
initializes: erc20[ownable := ownable]

exports: erc20.__interface__


@deploy
def __init__():
    ownable.__init__()
    erc20.__init__("TestUSD", "TUSD", 6, "TestUSD", "1")
