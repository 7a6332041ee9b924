import { describe, expect, it } from 'vitest';

import { DEFAULT_FILTER, matchesFilter, offerRow, offersQuery, similarOffer, sortOffers } from '../src/offers';
import { linkTrouble } from '../src/banner';
import { reconnectDelay } from '../src/backoff';
import { sparkPoints } from '../src/sparkline';
import { IOffer, ILaunchEvent } from '../src/tokens';

function offer(id: string, extra: Partial<IOffer> = {}): IOffer {
  return {
    id,
    gpu_model: 'NVIDIA H100 80GB HBM3',
    gpu_class: 'H100',
    gpu_count: 1,
    vram_mib: 81920,
    price_per_hour: 1_840_000,
    region: 'eu-west',
    reachable: true,
    latency_ms: 20,
    free_kernels: 2,
    verification: 'challenged',
    labels: [],
    reputation: 0.9,
    tflops: 500,
    usable: true,
    position: 1,
    reason: '',
    simulated: false,
    ...extra
  };
}

describe('offers', () => {
  const offers = [
    offer('a'),
    offer('b', { gpu_class: 'RTX 4090', gpu_model: 'NVIDIA RTX 4090', vram_mib: 24564, price_per_hour: 400_000, tflops: 150, verification: 'self-reported', region: 'us-east' }),
    offer('c', { usable: false, reachable: false, reason: 'unreachable: probe timed out', price_per_hour: 100_000 })
  ];
  it('builds the GET offers query', () => {
    expect(offersQuery({ ...DEFAULT_FILTER, gpu: 'H100', minVramGib: 40, maxPrice: 2_000_000, region: 'eu', verified: true })).toBe(
      'gpu=H100&min_vram_gib=40&max_price=2000000&region=eu&verified=1&policy=cheapest'
    );
    expect(offersQuery(DEFAULT_FILTER)).toBe('verified=0&policy=cheapest');
  });
  it('filters in the browser too', () => {
    const f = (extra: object) => offers.filter(o => matchesFilter(o, { ...DEFAULT_FILTER, ...extra })).map(o => o.id);
    expect(f({ gpu: '4090' })).toEqual(['b']);
    expect(f({ minVramGib: 40 })).toEqual(['a', 'c']);
    expect(f({ maxPrice: 500_000 })).toEqual(['b', 'c']);
    expect(f({ region: 'eu' })).toEqual(['a', 'c']);
    expect(f({ verified: true })).toEqual(['a', 'c']);
  });
  it('sorts usable first, then by policy', () => {
    expect(sortOffers(offers, 'cheapest').map(o => o.id)).toEqual(['b', 'a', 'c']);
    expect(sortOffers(offers, 'fastest').map(o => o.id)).toEqual(['a', 'b', 'c']);
    expect(sortOffers(offers, 'value').map(o => o.id)).toEqual(['b', 'a', 'c']);
  });
  it('greys unusable offers with their reason', () => {
    const row = offerRow(offers[2], 6, 'TUSD');
    expect(row).toMatchObject({ greyed: true, reason: 'unreachable: probe timed out', price: '0.10 TUSD/h', gpu: 'H100·80G' });
    expect(offerRow(offer('d', { usable: false, free_kernels: 0 }), 6, 'TUSD').reason).toBe('full');
    expect(offerRow(offer('e', { simulated: true, labels: ['cpu'] }), 6, '').notes).toContain('simulated');
    expect(offerRow(offers[0], 6, '').badgeLevel).toBe('good');
    expect(offerRow(offer('f', { verification: 'detected' }), 6, '').badgeLevel).toBe('ok');
    expect(offerRow(offer('g', { verification: 'mismatch' }), 6, '').badgeLevel).toBe('bad');
  });
  it('finds a similar offer for a relaunch', () => {
    const more = [...offers, offer('d', { price_per_hour: 1_500_000 }), offer('e', { gpu_class: 'A100' })];
    expect(similarOffer(more, 'a')?.id).toBe('d');
    expect(similarOffer([offers[0], offers[2]], 'a')).toBeNull();
    expect(similarOffer(more, null)?.id).toBe('b');
  });
});

describe('link trouble', () => {
  const launch = (state: ILaunchEvent['state'], extra: Partial<ILaunchEvent> = {}): ILaunchEvent => ({
    type: 'launch', kernel_id: 'k', t: 1, state, label: state, elapsed_s: 1, state_elapsed_s: 1, cancellable: false, ...extra
  });
  const token = { symbol: 'TUSD', decimals: 6 };
  it('tells the three troubles apart', () => {
    expect(linkTrouble(launch('reconnecting', { attempt: 2 }), null, null)?.text).toBe(
      'link down, reconnecting (attempt 2) (kernel alive, output buffered)'
    );
    const receipt = { type: 'receipt' as const, kernel_id: 'k', t: 2, lease_id: '1', seconds: 10, charged: 1, refunded: 4_500_000, txs: [], token };
    expect(linkTrouble(launch('ended', { reason: 'provider_gone' }), receipt, null)).toEqual({
      kind: 'provider_gone', text: 'provider gone: 4.50 TUSD refunded', relaunch: true
    });
    expect(linkTrouble(launch('lost'), null, null)?.kind).toBe('provider_gone');
    expect(linkTrouble(launch('ended', { reason: 'deposit_used' }), null, null)?.text).toBe('deposit used up');
    expect(linkTrouble(launch('ended', { reason: 'stopped' }), null, null)).toBeNull();
    expect(linkTrouble(launch('ready'), null, null)).toBeNull();
  });
});

describe('helpers', () => {
  it('backs off 1, 2, 4 … 30 s', () => {
    expect([0, 1, 2, 3, 4, 5, 9].map(a => reconnectDelay(a))).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    expect(reconnectDelay(0, 1)).toBe(1200);
  });
  it('scales sparkline points', () => {
    expect(sparkPoints([0, 50, 100], 100, 20, 100)).toBe('0.0,20.0 50.0,10.0 100.0,0.0');
    expect(sparkPoints([null, 10], 100, 20)).toBe('100.0,0.0');
    expect(sparkPoints([], 100, 20)).toBe('');
  });
});
