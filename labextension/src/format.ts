/**
 * Pure formatting: money (integer base units -> decimals), durations, GPU names.
 * No JupyterLab imports, so vitest runs it without a browser.
 */

/** `1234500, 6, 'TUSD'` -> `'1.2345 TUSD'`: exact, trailing zeros trimmed (keeps 2), like
 * core.money.format_amount. */
export function formatAmount(amount: number, decimals: number, symbol = ''): string {
  const big = BigInt(Math.max(0, Math.round(amount)));
  const scale = BigInt(10) ** BigInt(decimals);
  let text = (big / scale).toString();
  if (decimals > 0) {
    const digits = (big % scale).toString().padStart(decimals, '0').replace(/0+$/, '');
    text += '.' + digits.padEnd(Math.min(2, decimals), '0');
  }
  return symbol ? `${text} ${symbol}` : text;
}

/** Two decimals, rounded half up, for the status bar: `1843210, 6` -> `'1.84'`. */
export function formatShort(amount: number, decimals: number): string {
  const cents = decimals >= 2 ? Math.round(Math.max(0, amount) / 10 ** (decimals - 2)) : Math.max(0, amount) * 10 ** (2 - decimals);
  return `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, '0')}`;
}

/** `'1.5', 6` -> `1500000`; null for anything that is not a non-negative amount. */
export function parseAmount(text: string, decimals: number): number | null {
  const t = text.trim();
  if (!/^\d+(\.\d*)?$|^\.\d+$/.test(t)) {
    return null;
  }
  const [whole, frac = ''] = t.split('.');
  if (frac.length > decimals) {
    return null;
  }
  const units = BigInt(whole || '0') * BigInt(10) ** BigInt(decimals) + BigInt(frac.padEnd(decimals, '0') || '0');
  return Number(units);
}

/** Time left: `9660` -> `'2h41m'`, `300` -> `'5m'`, `42` -> `'42s'`, `90061` -> `'1d1h'`. */
export function formatTimeLeft(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s >= 86400) {
    return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
  }
  if (s >= 3600) {
    const m = Math.floor((s % 3600) / 60);
    return `${Math.floor(s / 3600)}h${String(m).padStart(2, '0')}m`;
  }
  if (s >= 60) {
    return `${Math.floor(s / 60)}m`;
  }
  return `${s}s`;
}

/** Elapsed time of a step: `4.2` -> `'4s'`, `65` -> `'1m05s'`, `3725` -> `'1h02m'`. */
export function formatElapsed(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  }
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** The receipt's duration: `9725` -> `'2 h 42 min 5 s'`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const parts: string[] = [];
  if (s >= 3600) {
    parts.push(`${Math.floor(s / 3600)} h`);
  }
  if (s >= 60) {
    parts.push(`${Math.floor((s % 3600) / 60)} min`);
  }
  parts.push(`${s % 60} s`);
  return parts.join(' ');
}

/** `'NVIDIA H100 80GB HBM3'` / class `'H100'`, 81920 MiB -> `'H100·80G'`; counts as `2×`. */
export function gpuShort(gpuClass: string | null, gpuModel: string, vramMib: number, count = 1): string {
  const name = (gpuClass || gpuModel || 'GPU').replace(/^NVIDIA\s+/i, '').trim();
  const gib = Math.round(vramMib / 1024);
  const head = count > 1 ? `${count}×${name}` : name;
  return gib > 0 ? `${head}·${gib}G` : head;
}

/** A receipt's transaction: `{kind: 'open', tx_hash}` -> `{label: 'open 0x1234…abcd', hash}`. */
export function txLabel(
  tx: string | { kind?: string; tx_hash?: string; hash?: string } | null | undefined
): { label: string; hash: string } {
  if (typeof tx === 'string') {
    return { label: shortHash(tx), hash: tx };
  }
  const hash = String(tx?.tx_hash ?? tx?.hash ?? '');
  const kind = typeof tx?.kind === 'string' ? tx.kind : '';
  return { label: [kind, shortHash(hash)].filter(Boolean).join(' ') || '?', hash };
}

/** A transaction hash cut for display: `0x1234…abcd`. */
export function shortHash(hash: string): string {
  return hash.length > 14 ? `${hash.slice(0, 6)}…${hash.slice(-4)}` : hash;
}
