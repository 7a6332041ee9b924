import { describe, expect, it } from 'vitest';

import {
  formatAmount,
  formatDuration,
  formatElapsed,
  formatShort,
  formatTimeLeft,
  gpuShort,
  parseAmount,
  shortHash,
  txLabel
} from '../src/format';

describe('formatAmount (as core.money.format_amount)', () => {
  it.each([
    [1234500, 6, 'TUSD', '1.2345 TUSD'],
    [5000000, 6, 'TUSD', '5.00 TUSD'],
    [0, 6, '', '0.00'],
    [1, 6, 'TUSD', '0.000001 TUSD'],
    [1840000, 6, '', '1.84'],
    [7, 0, 'X', '7 X'],
    [1e18, 18, 'ETH', '1.00 ETH']
  ])('%d with %d decimals', (amount, decimals, symbol, text) => {
    expect(formatAmount(amount, decimals, symbol)).toBe(text);
  });
  it('never shows a negative amount', () => {
    expect(formatAmount(-5, 6)).toBe('0.00');
  });
});

describe('formatShort', () => {
  it('rounds to two decimals', () => {
    expect(formatShort(1843210, 6)).toBe('1.84');
    expect(formatShort(365000, 6)).toBe('0.37');
    expect(formatShort(0, 6)).toBe('0.00');
  });
});

describe('parseAmount', () => {
  it('parses decimals exactly', () => {
    expect(parseAmount('1.5', 6)).toBe(1500000);
    expect(parseAmount(' 10 ', 6)).toBe(10000000);
    expect(parseAmount('.25', 6)).toBe(250000);
  });
  it('refuses what is not a non-negative amount with at most `decimals` places', () => {
    for (const bad of ['', '-1', 'abc', '1.2.3', '1e3', '0.0000001']) {
      expect(parseAmount(bad, 6)).toBeNull();
    }
  });
});

describe('time', () => {
  it('formats time left like the status item', () => {
    expect(formatTimeLeft(9660)).toBe('2h41m');
    expect(formatTimeLeft(3600 + 5 * 60)).toBe('1h05m');
    expect(formatTimeLeft(300)).toBe('5m');
    expect(formatTimeLeft(42.9)).toBe('42s');
    expect(formatTimeLeft(-3)).toBe('0s');
    expect(formatTimeLeft(90061)).toBe('1d1h');
  });
  it('formats a step’s elapsed time', () => {
    expect(formatElapsed(4.2)).toBe('4s');
    expect(formatElapsed(65)).toBe('1m05s');
    expect(formatElapsed(3725)).toBe('1h02m');
  });
  it('formats a receipt’s duration', () => {
    expect(formatDuration(9725)).toBe('2 h 42 min 5 s');
    expect(formatDuration(59)).toBe('59 s');
    expect(formatDuration(61)).toBe('1 min 1 s');
  });
});

describe('gpuShort', () => {
  it('names the GPU with its VRAM', () => {
    expect(gpuShort('H100', 'NVIDIA H100 80GB HBM3', 81920)).toBe('H100·80G');
    expect(gpuShort(null, 'NVIDIA RTX 4090', 24564)).toBe('RTX 4090·24G');
    expect(gpuShort('A100', 'x', 40960, 2)).toBe('2×A100·40G');
    expect(gpuShort(null, 'cpu', 0)).toBe('cpu');
  });
  it('cuts hashes', () => {
    expect(shortHash('0x' + 'ab'.repeat(32))).toBe('0xabab…abab');
    expect(shortHash('0x12')).toBe('0x12');
  });
});

describe('txLabel', () => {
  it('labels ledger records and bare hashes', () => {
    const hash = '0x' + 'cd'.repeat(32);
    expect(txLabel({ kind: 'open', tx_hash: hash, gas_used: 180000 })).toEqual({ label: 'open 0xcdcd…cdcd', hash });
    expect(txLabel(hash)).toEqual({ label: '0xcdcd…cdcd', hash });
    expect(txLabel({})).toEqual({ label: '?', hash: '' });
  });
});
