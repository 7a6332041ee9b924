// Sign EIP-712 typed data with ethers, for the cross-check against eth-account.
// stdin: [{"key": "0x..", "typed": {types, primaryType, domain, message}}, ...]
// stdout: ["0x<r><s><v>", ...]
import { Wallet } from "ethers";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const jobs = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const out = [];
for (const { key, typed } of jobs) {
  const types = { ...typed.types };
  delete types.EIP712Domain; // ethers derives the domain type from the domain object
  out.push(await new Wallet(key).signTypedData(typed.domain, types, typed.message));
}
process.stdout.write(JSON.stringify(out));
