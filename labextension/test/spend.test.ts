import { describe, expect, it } from 'vitest';

import { reconcile, spendAt, statusText } from '../src/spend';
import { ISpendEvent } from '../src/tokens';

const base: ISpendEvent = {
  type: 'spend',
  kernel_id: 'k1',
  t: 1000,
  lease_id: '7',
  rate_per_hour: 1_840_000,
  spent: 370_000,
  deposit: 5_000_000,
  deposit_left: 4_630_000,
  budget: 10_000_000,
  seconds_left: 9660,
  vouchers: 4,
  token: { symbol: 'TUSD', decimals: 6 }
};

describe('status text', () => {
  it('matches the agreed format', () => {
    expect(statusText('H100·80G', base, 1000).text).toBe('H100·80G ● 1.84/h · 0.37 spent · 2h41m left');
  });
  it('ticks locally from the agreed rate', () => {
    const later = spendAt(base, 1000 + 3600);
    expect(later.spent).toBe(370_000 + 1_840_000);
    expect(later.secondsLeft).toBe(9660 - 3600);
    expect(statusText('H100·80G', base, 1060).text).toBe('H100·80G ● 1.84/h · 0.40 spent · 2h40m left');
  });
  it('stops ticking when not running and never passes the deposit or budget', () => {
    expect(spendAt(base, 5000, false).spent).toBe(370_000);
    expect(spendAt(base, 1000 + 100 * 3600).spent).toBe(5_000_000);
    expect(spendAt(base, 1000 + 100 * 3600).secondsLeft).toBe(0);
  });
});

describe('warn', () => {
  it('warns at 80 % of the budget', () => {
    expect(spendAt({ ...base, spent: 7_990_000 }, 1000).warn).toBe(false);
    expect(spendAt({ ...base, spent: 8_000_000, deposit: 20_000_000 }, 1000).warn).toBe(true);
  });
  it('warns under 15 minutes left', () => {
    expect(spendAt({ ...base, seconds_left: 901 }, 1000).warn).toBe(false);
    expect(spendAt({ ...base, seconds_left: 901 }, 1002).warn).toBe(true);
  });
  it('uses the deposit when there is no budget', () => {
    expect(spendAt({ ...base, budget: 0, spent: 4_000_000 }, 1000).warn).toBe(true);
  });
});

describe('reconcile', () => {
  it('takes the newer voucher totals, drops an older event', () => {
    const newer = { ...base, t: 1010, spent: 380_000 };
    expect(reconcile(base, newer)).toBe(newer);
    expect(reconcile(newer, base)).toBe(newer);
    expect(reconcile(null, base)).toBe(base);
    const otherLease = { ...base, lease_id: '8', t: 900 };
    expect(reconcile(newer, otherLease)).toBe(otherLease);
  });
});
