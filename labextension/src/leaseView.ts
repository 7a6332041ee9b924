/** The lease view (from the status item): telemetry sparklines, vouchers, deposit left, idle
 * badge, Stop & settle with the refund, the receipt after the end, the link trouble banner. */
import { h, fill } from './dom';
import { GpuMarketModel } from './model';
import { linkTrouble } from './banner';
import { formatAmount, formatDuration, formatTimeLeft, txLabel } from './format';
import { isOver } from './launch';
import { sparkPoints } from './sparkline';
import { spendAt } from './spend';
import { ICullEvent, IGpuSample, IStopReply, ITokenInfo } from './tokens';

const SVG = 'http://www.w3.org/2000/svg';

function sparkline(name: string, values: Array<number | null>, unit: string, max?: number): HTMLElement {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 100 24');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'jp-GpuMarket-spark');
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', sparkPoints(values, 100, 24, max));
  svg.append(line);
  const last = [...values].reverse().find(v => typeof v === 'number');
  return h(
    'div',
    { class: 'jp-GpuMarket-sparkRow', 'data-metric': name },
    h('span', { class: 'jp-GpuMarket-sparkName' }, name),
    svg as unknown as HTMLElement,
    h('span', { class: 'jp-GpuMarket-sparkValue' }, last === undefined || last === null ? '–' : `${Math.round(last)}${unit}`)
  );
}

/** The idle badge: how long idle, when culled, or what keeps the kernel. */
export function cullText(cull: ICullEvent): string {
  const idle = `idle ${formatTimeLeft(cull.idle_s)}`;
  if (cull.held_by === 'busy') {
    return `${idle} · kept: busy`;
  }
  if (cull.held_by === 'connected') {
    return `${idle} · kept: a tab is open`;
  }
  if (cull.cull_in_s === null || cull.cull_in_s === undefined) {
    return `${idle} (culling off)`;
  }
  return `${idle} · culled in ${formatTimeLeft(cull.cull_in_s)}`;
}

export class LeaseView {
  readonly node = h('section', { class: 'jp-GpuMarket-lease' });
  readonly banner = h('div', { class: 'jp-GpuMarket-banner', role: 'alert' });

  constructor(
    private model: GpuMarketModel,
    private onStop: (kernelId: string, leaseId: string) => void,
    private onRelaunch: (kernelId: string) => void
  ) {}

  renderBanner(kernelId: string | null): void {
    const m = this.model;
    const trouble = kernelId
      ? linkTrouble(m.launchFor(kernelId), m.receipts.get(kernelId) ?? null, m.spendFor(kernelId))
      : null;
    if (!kernelId || !trouble) {
      fill(this.banner);
      this.banner.hidden = true;
      return;
    }
    this.banner.hidden = false;
    this.banner.dataset.kind = trouble.kind;
    fill(
      this.banner,
      h('span', { class: 'jp-GpuMarket-bannerText' }, trouble.text),
      trouble.relaunch
        ? h(
            'button',
            { class: 'jp-mod-styled jp-mod-accept jp-GpuMarket-relaunch', onclick: () => this.onRelaunch(kernelId) },
            'Relaunch on a similar offer'
          )
        : null
    );
  }

  render(kernelId: string | null, now: number): void {
    this.renderBanner(kernelId);
    const m = this.model;
    const launch = kernelId ? m.launchFor(kernelId) : null;
    const spend = kernelId ? m.spendFor(kernelId) : null;
    const receipt = kernelId ? m.receipts.get(kernelId) ?? null : null;
    const stop = kernelId ? m.stops.get(kernelId) ?? null : null;
    if (!kernelId || (!spend && !receipt && !stop)) {
      fill(this.node);
      this.node.hidden = true;
      return;
    }
    this.node.hidden = false;
    const token: ITokenInfo = spend?.token ?? receipt?.token ?? m.token;
    const money = (v: number) => formatAmount(v, token.decimals, token.symbol);
    const parts: Array<HTMLElement | null> = [h('h3', {}, 'Lease')];
    const over = launch ? isOver(launch.state) : !!receipt;
    if (spend) {
      const live = spendAt(spend, now, !over);
      const cull = m.cull.get(kernelId);
      parts.push(
        h(
          'dl',
          { class: 'jp-GpuMarket-facts' },
          h('dt', {}, 'rate'), h('dd', {}, `${money(spend.rate_per_hour)}/h`),
          h('dt', {}, 'spent'), h('dd', { 'data-fact': 'spent' }, money(Math.round(live.spent))),
          h('dt', {}, 'deposit left'), h('dd', { 'data-fact': 'deposit-left' }, money(Math.max(0, spend.deposit - Math.round(live.spent)))),
          h('dt', {}, 'time left'), h('dd', {}, formatTimeLeft(live.secondsLeft)),
          h('dt', {}, 'vouchers'), h('dd', { 'data-fact': 'vouchers' }, String(spend.vouchers))
        ),
        cull && !over
          ? h(
              'div',
              { class: `jp-GpuMarket-idle${cull.cull_in_s !== null && cull.cull_in_s < 300 ? ' jp-mod-warn' : ''}` },
              cullText(cull)
            )
          : null
      );
    }
    const warning = m.warnings.get(kernelId);
    if (warning && !over) {
      parts.push(h('div', { class: 'jp-GpuMarket-warning', 'data-code': warning.code }, warning.message));
    }
    const samples = m.telemetry.get(kernelId) ?? [];
    if (samples.length > 0) {
      const gpu0 = (s: { gpus: IGpuSample[] }) => s.gpus?.[0] ?? null;
      const series = (f: (g: IGpuSample) => number | null) => samples.map(s => (gpu0(s) ? f(gpu0(s)!) : null));
      const memPct = (g: IGpuSample) =>
        g.mem_used_mib !== null && g.mem_total_mib ? (100 * g.mem_used_mib) / g.mem_total_mib : null;
      parts.push(
        h(
          'div',
          { class: 'jp-GpuMarket-telemetry' },
          sparkline('util', series(g => g.util_pct), '%', 100),
          sparkline('VRAM', series(memPct), '%', 100),
          sparkline('power', series(g => g.power_w), ' W'),
          sparkline('temp', series(g => g.temp_c), ' °C')
        )
      );
    }
    if (spend && !over && !stop) {
      parts.push(
        h(
          'button',
          { class: 'jp-mod-styled jp-mod-warn jp-GpuMarket-stop', onclick: () => this.onStop(kernelId, spend.lease_id) },
          'Stop & settle'
        )
      );
    }
    if (stop) {
      parts.push(this.stopBox(stop, money));
    }
    if (receipt) {
      parts.push(
        h(
          'div',
          { class: 'jp-GpuMarket-receipt', 'data-lease': receipt.lease_id },
          h('h4', {}, 'Receipt'),
          h(
            'dl',
            {},
            h('dt', {}, 'duration'), h('dd', {}, formatDuration(receipt.seconds)),
            h('dt', {}, 'charged'), h('dd', { 'data-fact': 'charged' }, money(receipt.charged)),
            h('dt', {}, 'refunded'), h('dd', { 'data-fact': 'refunded' }, money(receipt.refunded)),
            h('dt', {}, 'transactions'),
            h(
              'dd',
              { 'data-fact': 'txs' },
              ...(receipt.txs ?? []).map(tx => {
                const t = txLabel(tx);
                return h('code', { title: t.hash }, t.label + ' ');
              })
            )
          )
        )
      );
    }
    fill(this.node, ...parts);
  }

  private stopBox(stop: IStopReply, money: (v: number) => string): HTMLElement {
    return h(
      'div',
      { class: 'jp-GpuMarket-stopped', 'data-status': stop.status },
      `Stopped (${stop.status}): charged ${money(stop.charged)}, refund ${money(stop.refund)}`,
      stop.message ? h('div', { class: 'jp-GpuMarket-fix' }, stop.message) : null
    );
  }
}
