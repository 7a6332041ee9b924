/** Pure offer logic for the panel: query string, client-side filter and sort, row view. */
import { IOffer, IOfferFilter, Policy } from './tokens';
import { formatAmount, gpuShort } from './format';

export const DEFAULT_FILTER: IOfferFilter = {
  gpu: '',
  minVramGib: null,
  maxPrice: null,
  region: '',
  verified: false,
  policy: 'cheapest'
};

/** Verification levels (core/verification.py), lowest first; `mismatch` is below all. */
const LEVELS = ['mismatch', 'self-reported', 'detected', 'challenged', 'attested'];

export function levelRank(label: string): number {
  const i = LEVELS.indexOf(label);
  return i < 0 ? 0 : i;
}

/** The query of `GET offers` for a filter (empty fields left out). */
export function offersQuery(f: IOfferFilter, network = ''): string {
  const q = new URLSearchParams();
  if (network) {
    q.set('network', network);
  }
  if (f.gpu.trim()) {
    q.set('gpu', f.gpu.trim());
  }
  if (f.minVramGib !== null && f.minVramGib > 0) {
    q.set('min_vram_gib', String(f.minVramGib));
  }
  if (f.maxPrice !== null) {
    q.set('max_price', String(f.maxPrice));
  }
  if (f.region.trim()) {
    q.set('region', f.region.trim());
  }
  q.set('verified', f.verified ? '1' : '0');
  q.set('policy', f.policy);
  return q.toString();
}

/** The same filter applied in the browser (the server filters too; this keeps the view right
 * while a new answer is on its way and guards against a server that ignores a field). */
export function matchesFilter(o: IOffer, f: IOfferFilter): boolean {
  const gpu = f.gpu.trim().toLowerCase();
  if (gpu) {
    const names = `${o.gpu_class ?? ''} ${o.gpu_model}`.toLowerCase();
    if (!names.includes(gpu)) {
      return false;
    }
  }
  if (f.minVramGib !== null && o.vram_mib < f.minVramGib * 1024) {
    return false;
  }
  if (f.maxPrice !== null && o.price_per_hour > f.maxPrice) {
    return false;
  }
  const region = f.region.trim().toLowerCase();
  if (region && o.region.toLowerCase() !== region && !o.region.toLowerCase().startsWith(region + '-')) {
    return false;
  }
  if (f.verified && levelRank(o.verification) < levelRank('detected')) {
    return false;
  }
  return true;
}

/** Usable offers first; then by the policy; ties by the server's position. */
export function sortOffers(offers: IOffer[], policy: Policy): IOffer[] {
  const key = (o: IOffer): number => {
    if (policy === 'fastest') {
      return -o.tflops;
    }
    if (policy === 'value') {
      return o.tflops > 0 ? o.price_per_hour / o.tflops : Number.POSITIVE_INFINITY;
    }
    return o.price_per_hour;
  };
  return [...offers].sort(
    (a, b) =>
      Number(b.usable) - Number(a.usable) ||
      key(a) - key(b) ||
      (a.position ?? Infinity) - (b.position ?? Infinity)
  );
}

export interface IOfferRow {
  id: string;
  gpu: string;
  price: string;
  region: string;
  badge: string;
  badgeLevel: 'good' | 'ok' | 'weak' | 'bad';
  /** why the offer is (not) usable or how it was verified */
  reason: string;
  greyed: boolean;
  notes: string[];
}

export function offerRow(o: IOffer, decimals: number, symbol: string): IOfferRow {
  const rank = levelRank(o.verification);
  const notes: string[] = [];
  if (o.simulated) {
    notes.push('simulated');
  }
  if (o.labels.includes('cpu')) {
    notes.push('CPU only');
  }
  if (o.latency_ms !== null) {
    notes.push(`${Math.round(o.latency_ms)} ms`);
  }
  if (o.free_kernels !== null) {
    notes.push(`${o.free_kernels} free`);
  }
  let reason = o.reason;
  if (!o.usable && !reason) {
    reason = o.reachable === false ? 'unreachable' : o.free_kernels === 0 ? 'full' : 'not usable';
  }
  return {
    id: String(o.id),
    gpu: gpuShort(o.gpu_class, o.gpu_model, o.vram_mib, o.gpu_count),
    price: `${formatAmount(o.price_per_hour, decimals, symbol)}/h`,
    region: o.region,
    badge: o.verification,
    badgeLevel: rank >= 3 ? 'good' : rank === 2 ? 'ok' : rank === 1 ? 'weak' : 'bad',
    reason,
    greyed: !o.usable,
    notes
  };
}

/** A similar offer for a relaunch: same GPU class, usable, not the one that failed, cheapest. */
export function similarOffer(offers: IOffer[], failedId: string | number | null): IOffer | null {
  const same_id = (o: IOffer) => failedId !== null && String(o.id) === String(failedId);
  const failed = offers.find(same_id) ?? null;
  const pool = offers.filter(o => o.usable && !same_id(o));
  const same = failed
    ? pool.filter(o => (o.gpu_class ?? o.gpu_model) === (failed.gpu_class ?? failed.gpu_model) && o.vram_mib >= failed.vram_mib)
    : [];
  const pick = sortOffers(same.length > 0 ? same : pool, 'cheapest');
  return pick[0] ?? null;
}
