import { describe, expect, it } from 'vitest';

import {
  IEip1193,
  ISignOpening,
  WalletProblem,
  answerOpening,
  chainMismatch,
  connectWallet,
  openingProblem,
  parseChainId,
  switchChainParams
} from '../src/browserWallet';

const A = '0x' + 'ab'.repeat(20);

function stub(chain: string, opts: { accounts?: unknown; switchTo?: string; receipts?: Array<unknown> } = {}) {
  const calls: Array<{ method: string; params?: unknown[] }> = [];
  let current = chain;
  const receipts = [...(opts.receipts ?? [])];
  const eth: IEip1193 = {
    async request(args) {
      calls.push(args);
      switch (args.method) {
        case 'eth_requestAccounts':
          return opts.accounts ?? [A];
        case 'eth_chainId':
          return current;
        case 'wallet_switchEthereumChain':
          if (!opts.switchTo) {
            throw new Error('unknown chain');
          }
          current = opts.switchTo;
          return null;
        case 'eth_signTypedData_v4':
          return '0xsig' + calls.length;
        case 'eth_sendTransaction':
          return '0xhash' + calls.length;
        case 'eth_getTransactionReceipt':
          return receipts.length ? receipts.shift() : { status: '0x1' };
        default:
          throw new Error('unexpected ' + args.method);
      }
    }
  };
  return { eth, calls };
}

function opening(extra: Partial<ISignOpening> = {}): ISignOpening {
  return {
    renter: A,
    chain_id: 31337,
    chain_id_hex: '0x7a69',
    escrow: '0x' + '11'.repeat(20),
    token: '0x' + '22'.repeat(20),
    provider: '0x' + '33'.repeat(20),
    deposit: '3600000',
    session_key: '0x' + '44'.repeat(20),
    channel_id: '0x' + '55'.repeat(32),
    deadline: 1,
    relay_fee: '10000',
    methods: ['tx_hash', 'typed_data'],
    open_channel: { primaryType: 'OpenChannel' },
    permit: { primaryType: 'Permit' },
    transactions: [
      { from: A, to: '0x' + '22'.repeat(20), data: '0xapprove', kind: 'approve' },
      { from: A, to: '0x' + '11'.repeat(20), data: '0xopen', kind: 'open' }
    ],
    ...extra
  };
}

describe('browser wallet', () => {
  it('reads chain ids', () => {
    expect(parseChainId('0x7a69')).toBe(31337);
    expect(parseChainId('31337')).toBe(31337);
    expect(parseChainId(8453)).toBe(8453);
    expect(parseChainId('mainnet')).toBeNaN();
    expect(chainMismatch('0x7a69', 31337)).toBeNull();
    expect(chainMismatch('0x1', 31337)).toContain('chain 1');
    expect(switchChainParams(31337)).toEqual([{ chainId: '0x7a69' }]);
  });

  it('connects on the profile’s chain, asking the wallet to switch once', async () => {
    expect(await connectWallet(stub('0x7a69').eth, 31337)).toBe(A);
    const s = stub('0x1', { switchTo: '0x7a69' });
    expect(await connectWallet(s.eth, 31337)).toBe(A);
    expect(s.calls.map(c => c.method)).toContain('wallet_switchEthereumChain');
    await expect(connectWallet(stub('0x1').eth, 31337)).rejects.toBeInstanceOf(WalletProblem);
    await expect(connectWallet(undefined, 31337)).rejects.toThrow(/window.ethereum/);
    await expect(connectWallet(stub('0x7a69', { accounts: [] }).eth, 31337)).rejects.toThrow(/no account/);
  });

  it('says why a wallet cannot answer an opening', () => {
    expect(openingProblem(opening(), A, '0x7a69')).toBeNull();
    expect(openingProblem(opening(), null, '0x7a69')).toMatch(/connect/);
    expect(openingProblem(opening(), '0x' + 'cd'.repeat(20), '0x7a69')).toMatch(/connect that account/);
    expect(openingProblem(opening(), A, '0x1')).toMatch(/chain 1/);
  });

  it('signs the typed data when the provider relays', async () => {
    const s = stub('0x7a69');
    const body = await answerOpening(s.eth, opening());
    expect(body).toEqual({ open_sig: '0xsig1', permit_sig: '0xsig2' });
    expect(s.calls[0].params).toEqual([A, JSON.stringify({ primaryType: 'OpenChannel' })]);
  });

  it('sends approve then open (after the approval is mined) otherwise', async () => {
    const s = stub('0x7a69', { receipts: [null, { status: '0x1' }] });
    const slept: number[] = [];
    const body = await answerOpening(s.eth, opening({ methods: ['tx_hash'] }), async ms => {
      slept.push(ms);
    });
    expect(body).toEqual({ tx_hash: '0xhash4' });
    expect(s.calls.map(c => c.method)).toEqual([
      'eth_sendTransaction',
      'eth_getTransactionReceipt',
      'eth_getTransactionReceipt',
      'eth_sendTransaction'
    ]);
    expect(slept).toEqual([1000]);
    const failed = stub('0x7a69', { receipts: [{ status: '0x0' }] });
    await expect(answerOpening(failed.eth, opening({ methods: ['tx_hash'] }), async () => {})).rejects.toThrow(/failed/);
  });
});
