"""Gas per Escrow/Registry entry point, cold and warm, written to benchmarks/results/gas.json.

cold = the first lease of a fresh renter (its token permit nonce and allowance slots are
new); warm = the second lease of the same renter. Providers, relayers and pool admins are
established operators that already hold tokens. Another renter keeps a channel open the whole
time (a live escrow always holds deposits); ``empty_escrow`` repeats the plain lease with
nothing else in the escrow. Target: open + settle below µRaiden's 189,177 (119,739 open +
69,438 cooperative close; the ERC-20 approval is counted apart there and here).

Usage: python benchmarks/gas.py [--out benchmarks/results/gas.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

from eth_account import Account

from jupyter_gpumarket.chain.anvil import start_anvil
from jupyter_gpumarket.chain.client import Contracts, connect, send, send_value
from jupyter_gpumarket.chain.deploy import deploy_all
from jupyter_gpumarket.chain.dev_accounts import dev_account
from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.chain.relay import open_from_pool, relay_request, submit_relay_request
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.grant_code import issue_grant

TARGET = 189_177
USD = 10**6
RESULTS = Path(__file__).parent / "results" / "gas.json"


class Bench:
    def __init__(self, c: Contracts) -> None:
        self.c = c
        self.w3 = c.w3
        self.faucet = dev_account(0)
        self.domain = eip712.Domain(self.w3.eth.chain_id, c.escrow.address)
        self.chain = LeaseChain(c)

    def fresh(self, tokens: int = 0):
        acct = Account.create()
        send_value(self.w3, self.faucet, acct.address, 10**18)
        if tokens:
            send(self.w3, self.faucet, self.c.token.functions.mint(acct.address, tokens))
        return acct

    def gas(self, who, fn) -> int:
        return int(send(self.w3, who, fn)["gasUsed"])

    def voucher(self, key, cid: bytes, amount: int) -> bytes:
        return eip712.sign_typed_data(key.key, eip712.voucher(self.domain, cid, amount))

    def deadline(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"]) + 3600

    def plain_lease(self, renter, provider) -> dict[str, int]:
        """approve + open, redeem, topUp, settle, attest."""
        e, session = self.c.escrow.functions, Account.create()
        out = {
            "approve": self.gas(
                renter, self.c.token.functions.approve(self.c.escrow.address, 6 * USD)
            )
        }
        out["open"] = self.gas(
            renter, e.open(provider.address, self.c.token.address, 5 * USD, session.address)
        )
        cid = eip712.channel_id_for(renter.address, session.address)
        out["redeem"] = self.gas(provider, e.redeem(cid, 1000, self.voucher(session, cid, 1000)))
        out["topUp"] = self.gas(renter, e.topUp(cid, USD))
        out["settle"] = self.gas(provider, e.settle(cid, 2500, self.voucher(session, cid, 2500)))
        out["attest"] = self.gas(renter, e.attest(cid, 90, 12_345))
        return out

    def lease_open_settle(self, renter, provider) -> dict[str, int]:
        """The normal two-transaction lease: approve apart, open, settle."""
        e, session = self.c.escrow.functions, Account.create()
        out = {
            "approve": self.gas(
                renter, self.c.token.functions.approve(self.c.escrow.address, 5 * USD)
            )
        }
        out["open"] = self.gas(
            renter, e.open(provider.address, self.c.token.address, 5 * USD, session.address)
        )
        cid = eip712.channel_id_for(renter.address, session.address)
        out["settle"] = self.gas(provider, e.settle(cid, 2500, self.voucher(session, cid, 2500)))
        return out

    def permit_lease(self, renter, provider) -> dict[str, int]:
        e, session = self.c.escrow.functions, Account.create()
        permit = self.chain.permit_args(renter, 5 * USD)  # (deadline, v, r, s)
        assert permit is not None
        fn = e.openWithPermit(
            provider.address, self.c.token.address, 5 * USD, session.address, *permit
        )
        out = {"openWithPermit": self.gas(renter, fn)}
        cid = eip712.channel_id_for(renter.address, session.address)
        out["settle"] = self.gas(provider, e.settle(cid, 2500, self.voucher(session, cid, 2500)))
        return out

    def relayed_lease(self, renter, provider, relayer) -> dict[str, int]:
        """A renter without gas: signed OpenChannel + permit, relayed (chain.relay)."""
        session = Account.create()
        req = relay_request(
            self.chain, renter, provider=provider.address, deposit=5 * USD, relay_fee=10_000,
            session_key=session,
        )  # fmt: skip
        cid, tx = submit_relay_request(self.chain, relayer, req)
        e = self.c.escrow.functions
        out = {"openFor": tx.gas_used}
        out["settle"] = self.gas(provider, e.settle(cid, 2500, self.voucher(session, cid, 2500)))
        return out

    def close_path(self, renter, provider) -> dict[str, int]:
        e, session = self.c.escrow.functions, Account.create()
        self.gas(renter, self.c.token.functions.approve(self.c.escrow.address, USD))
        self.gas(renter, e.open(provider.address, self.c.token.address, USD, session.address))
        cid = eip712.channel_id_for(renter.address, session.address)
        out = {"requestClose": self.gas(renter, e.requestClose(cid))}
        self.w3.provider.make_request(
            "evm_increaseTime", [self.c.escrow.functions.close_delay().call()]
        )
        self.w3.provider.make_request("evm_mine", [])
        out["withdraw"] = self.gas(renter, e.withdraw(cid))
        return out

    def pool_path(self, admin, student, provider, relayer) -> dict[str, int]:
        e = self.c.escrow.functions
        self.gas(admin, self.c.token.functions.approve(self.c.escrow.address, 30 * USD))
        receipt = send(self.w3, admin, e.createPool(self.c.token.address, 20 * USD))
        out = {"createPool": int(receipt["gasUsed"])}
        from web3.logs import DISCARD

        (ev,) = self.c.escrow.events.PoolCreated().process_receipt(receipt, errors=DISCARD)
        pool_id = bytes(ev["args"]["pool_id"])
        out["fundPool"] = self.gas(admin, e.fundPool(pool_id, 5 * USD))
        grant = issue_grant(
            admin.key, self.domain, pool_id=pool_id, student=student.address, cap=10 * USD,
            expiry=self.deadline(),
        )  # fmt: skip
        session = Account.create()
        out["openFromPool"] = open_from_pool(
            self.chain, student, grant=grant, provider=provider.address, deposit=2 * USD,
            session_key=session,
        ).gas_used  # fmt: skip
        cid = eip712.channel_id_for(student.address, session.address)
        out["settle(pool)"] = self.gas(
            provider, e.settle(cid, 2500, self.voucher(session, cid, 2500))
        )
        req = relay_request(
            self.chain, student, provider=provider.address, deposit=2 * USD, relay_fee=5_000,
            session_key=Account.create(), grant=grant,
        )  # fmt: skip
        out["openFromPoolFor"] = submit_relay_request(self.chain, relayer, req)[1].gas_used
        out["withdrawPool"] = self.gas(admin, e.withdrawPool(pool_id, USD))
        return out

    def registry_path(self, provider) -> dict[str, int]:
        r = self.c.registry.functions
        offer = (
            "wss://gpu.example:8443",
            b"\x11" * 32,
            "H100-80GB",
            1,
            81_920,
            1_850_000,
            self.c.token.address,
            "eu-west",
            "",
        )
        out = {"Registry.register": self.gas(provider, r.register(*offer))}
        offer_id = r.offer_count().call()
        out["Registry.update"] = self.gas(provider, r.update(offer_id, *offer))
        out["Registry.deactivate"] = self.gas(provider, r.deactivate(offer_id))
        return out


def _cold_warm(run) -> dict[str, dict[str, int]]:
    cold, warm = run(), run()
    return {k: {"cold": cold[k], "warm": warm[k]} for k in cold}


def measure() -> dict[str, Any]:
    with start_anvil() as anvil:
        w3 = connect(anvil.rpc_url)
        d = deploy_all(w3, dev_account(0), 600)
        c = Contracts.at(w3, d.token, d.escrow, d.registry)
        b = Bench(c)
        r0, p0 = b.fresh(100 * USD), b.fresh(USD)
        empty = _cold_warm(lambda: b.lease_open_settle(r0, p0))
        # a live escrow: someone else's channel stays open throughout
        other = b.fresh(10 * USD)
        send(w3, other, c.token.functions.approve(c.escrow.address, USD))
        send(
            w3,
            other,
            c.escrow.functions.open(
                dev_account(9).address, c.token.address, USD, Account.create().address
            ),
        )
        entry: dict[str, dict[str, int]] = {}
        lease = {}
        r1, p1 = b.fresh(100 * USD), b.fresh(USD)
        plain = _cold_warm(lambda: b.lease_open_settle(r1, p1))
        lease["approve + open + settle"] = plain
        entry.update(plain)
        r2, p2 = b.fresh(100 * USD), b.fresh(USD)
        permit = _cold_warm(lambda: b.permit_lease(r2, p2))
        entry["openWithPermit"] = permit["openWithPermit"]
        lease["openWithPermit + settle"] = permit
        r3, p3, relayer = b.fresh(100 * USD), b.fresh(USD), b.fresh(USD)
        relayed = _cold_warm(lambda: b.relayed_lease(r3, p3, relayer))
        entry["openFor"] = relayed["openFor"]
        lease["openFor + settle"] = relayed
        r4, p4 = b.fresh(100 * USD), b.fresh(USD)
        entry.update(
            {
                k: v
                for k, v in _cold_warm(lambda: b.plain_lease(r4, p4)).items()
                if k in ("redeem", "topUp", "attest")
            }
        )
        r5, p5 = b.fresh(100 * USD), b.fresh(USD)
        entry.update(_cold_warm(lambda: b.close_path(r5, p5)))
        admin, student, p6, relayer6 = b.fresh(100 * USD), b.fresh(), b.fresh(USD), b.fresh(USD)
        entry.update(_cold_warm(lambda: b.pool_path(admin, student, p6, relayer6)))
        p7 = b.fresh()
        entry.update(_cold_warm(lambda: b.registry_path(p7)))
        version = (
            subprocess.run(
                [str(anvil.process.args[0]), "--version"],
                capture_output=True,
                text=True,
                check=False,
            )
            .stdout.strip()
            .splitlines()[:1]
        )
    totals = {}
    for name, steps in {**lease, "empty escrow: approve + open + settle": empty}.items():
        totals[name] = {
            phase: sum(v[phase] for k, v in steps.items() if k != "approve")
            for phase in ("cold", "warm")
        }
    return {
        "what": "gas used per transaction (receipt.gasUsed); cold = first lease of a fresh "
        "renter, warm = its second lease; provider/relayer/admin already hold tokens; "
        "approve counted apart",
        "chain": version[0] if version else "anvil",
        "python": platform.python_version(),
        "target_open_plus_settle": TARGET,
        "entry_points": entry,
        "lease_totals_without_approve": totals,
        "empty_escrow": empty,
        "below_target": {
            name: {phase: v[phase] < TARGET for phase in ("cold", "warm")}
            for name, v in totals.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = measure()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(k) for k in result["entry_points"])
    print(f"{'entry point':<{width}}  {'cold':>8}  {'warm':>8}")
    for name, v in result["entry_points"].items():
        print(f"{name:<{width}}  {v['cold']:>8,}  {v['warm']:>8,}")
    print()
    for name, v in result["lease_totals_without_approve"].items():
        print(f"{name:<40}  cold {v['cold']:>8,}  warm {v['warm']:>8,}  (target < {TARGET:,})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
