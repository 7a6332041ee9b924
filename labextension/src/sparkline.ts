/** Pure: an SVG polyline's points for a series (null gaps skipped), scaled into w×h. */
export function sparkPoints(values: Array<number | null>, w: number, h: number, max?: number): string {
  const nums = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  if (nums.length === 0) {
    return '';
  }
  const top = max ?? Math.max(...nums, 1e-9);
  const step = values.length > 1 ? w / (values.length - 1) : 0;
  const pts: string[] = [];
  values.forEach((v, i) => {
    if (typeof v === 'number' && Number.isFinite(v)) {
      const y = h - (Math.max(0, Math.min(v, top)) / top) * h;
      pts.push(`${(i * step).toFixed(1)},${y.toFixed(1)}`);
    }
  });
  return pts.join(' ');
}
