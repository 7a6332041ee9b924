"""The chain shell: everything that talks to an EVM node (web3 stays inside these modules).

- ``client``: connect, deploy, contract handles (``Contracts.at``), ``send`` signed transactions
- ``errors``: the one place web3/requests exceptions become project errors
- ``devnet`` / ``anvil`` / ``embedded`` (+ ``embedded_rpc``): local chains for demos and tests
- ``deploy``: deploy TestUSD + Escrow + Registry, TestUSD faucet
- ``profiles``: network profiles (``~/.gpumarket/networks/*.json``)
- ``keystore`` / ``session_keys``: the encrypted wallet key and per-lease session keys
- ``compile`` / ``artifact_loader`` / ``artifacts/``: Vyper -> committed ABI + bytecode
"""
