/**
 * A browser wallet (EIP-1193, e.g. MetaMask) that signs a paid launch's channel opening
 * instead of the server keystore (docs/server-api.md, "Browser wallet"): connect
 * (eth_requestAccounts, the chain id checked against the network profile, a
 * wallet_switchEthereumChain hint), then answer a `sign` warning event with
 * eth_signTypedData_v4 (the provider relays the opening) or eth_sendTransaction (the wallet
 * sends approve + open itself). Pure: the provider and the POST are passed in.
 */

/** The EIP-1193 provider (`window.ethereum`). */
export interface IEip1193 {
  request(args: { method: string; params?: unknown[] }): Promise<unknown>;
}

/** The `opening` of a `sign` warning event. */
export interface ISignOpening {
  renter: string;
  chain_id: number;
  chain_id_hex: string;
  escrow: string;
  token: string;
  provider: string;
  deposit: string;
  session_key: string;
  channel_id: string;
  deadline: number;
  relay_fee: string | null;
  methods: string[];
  open_channel: Record<string, unknown> | null;
  permit: Record<string, unknown> | null;
  transactions: Array<{ from: string; to: string; data: string; kind: string }>;
}

/** What POST launches/ID/signed takes. */
export type SignedBody = { tx_hash: string } | { open_sig: string; permit_sig: string | null };

export class WalletProblem extends Error {
  constructor(
    message: string,
    readonly fix: string
  ) {
    super(message);
  }
}

/** `0x7a69` or `31337` → 31337 (NaN for anything else). */
export function parseChainId(value: unknown): number {
  if (typeof value === 'number' && Number.isSafeInteger(value)) {
    return value;
  }
  if (typeof value !== 'string') {
    return NaN;
  }
  const v = value.trim();
  if (/^0x[0-9a-fA-F]+$/.test(v)) {
    return parseInt(v, 16);
  }
  return /^[0-9]+$/.test(v) ? parseInt(v, 10) : NaN;
}

export function isAddress(value: unknown): value is string {
  return typeof value === 'string' && /^0x[0-9a-fA-F]{40}$/.test(value);
}

/** The problem with the wallet's chain, or null when it is the network profile's. */
export function chainMismatch(walletChain: unknown, expected: number): string | null {
  const got = parseChainId(walletChain);
  if (got === expected) {
    return null;
  }
  return `the browser wallet is on chain ${Number.isNaN(got) ? String(walletChain) : got}, the network profile on chain ${expected}`;
}

/** wallet_switchEthereumChain's params for ``chainId``. */
export function switchChainParams(chainId: number): [{ chainId: string }] {
  return [{ chainId: '0x' + chainId.toString(16) }];
}

/**
 * Connect: the wallet's first account, on ``expectedChainId`` (asks the wallet to switch
 * once; WalletProblem saying what to do otherwise).
 */
export async function connectWallet(eth: IEip1193 | undefined, expectedChainId: number): Promise<string> {
  if (!eth || typeof eth.request !== 'function') {
    throw new WalletProblem('no browser wallet found (window.ethereum is missing)', 'install or enable MetaMask (or another EIP-1193 wallet) and reload the page');
  }
  const accounts = await eth.request({ method: 'eth_requestAccounts' });
  const address = Array.isArray(accounts) ? accounts[0] : undefined;
  if (!isAddress(address)) {
    throw new WalletProblem('the browser wallet shared no account', 'unlock the wallet and allow this site to see an account');
  }
  let problem = chainMismatch(await eth.request({ method: 'eth_chainId' }), expectedChainId);
  if (problem) {
    try {
      await eth.request({ method: 'wallet_switchEthereumChain', params: switchChainParams(expectedChainId) });
    } catch {
      // the wallet refused or does not know the chain: say so below
    }
    problem = chainMismatch(await eth.request({ method: 'eth_chainId' }), expectedChainId);
  }
  if (problem) {
    throw new WalletProblem(problem, `switch the wallet to chain ${expectedChainId} (add it to the wallet with the profile's RPC URL if it is missing)`);
  }
  return address;
}

/** Why this wallet cannot answer ``opening`` (null: it can). */
export function openingProblem(opening: ISignOpening, address: string | null, walletChain: unknown): string | null {
  if (!address) {
    return 'no browser wallet is connected: connect it in the GPU Market panel';
  }
  if (address.toLowerCase() !== String(opening.renter).toLowerCase()) {
    return `the opening is for ${opening.renter}, the connected wallet is ${address}: connect that account`;
  }
  return chainMismatch(walletChain, opening.chain_id);
}

/**
 * Sign ``opening`` with the wallet: the typed data when the provider relays (one or two
 * signature prompts, no gas), else approve + open sent by the wallet (the open's hash).
 */
export async function answerOpening(
  eth: IEip1193,
  opening: ISignOpening,
  sleep: (ms: number) => Promise<void> = ms => new Promise(r => setTimeout(r, ms))
): Promise<SignedBody> {
  const from = opening.renter;
  if (opening.methods.includes('typed_data') && opening.open_channel) {
    const sign = async (typed: Record<string, unknown>): Promise<string> =>
      String(await eth.request({ method: 'eth_signTypedData_v4', params: [from, JSON.stringify(typed)] }));
    const openSig = await sign(opening.open_channel);
    const permitSig = opening.permit ? await sign(opening.permit) : null;
    return { open_sig: openSig, permit_sig: permitSig };
  }
  let last = '';
  for (const [i, tx] of opening.transactions.entries()) {
    last = String(await eth.request({ method: 'eth_sendTransaction', params: [{ from, to: tx.to, data: tx.data }] }));
    if (i < opening.transactions.length - 1) {
      await mined(eth, last, sleep); // the open needs the approval in a block first
    }
  }
  return { tx_hash: last };
}

/** Wait (up to ~2 min) for ``hash``'s receipt; WalletProblem when it failed or never came. */
export async function mined(eth: IEip1193, hash: string, sleep: (ms: number) => Promise<void>): Promise<void> {
  for (let i = 0; i < 120; i++) {
    const receipt = (await eth.request({ method: 'eth_getTransactionReceipt', params: [hash] })) as { status?: string } | null;
    if (receipt) {
      if (parseChainId(receipt.status) !== 1) {
        throw new WalletProblem(`transaction ${hash} failed`, 'check the wallet (gas, balance) and start the kernel again');
      }
      return;
    }
    await sleep(1000);
  }
  throw new WalletProblem(`transaction ${hash} was not mined within 2 minutes`, 'check the wallet, then start the kernel again');
}
