/** The launch stepper: each step with its elapsed time, Cancel before ready, the failure. */
import { h, fill } from './dom';
import { GpuMarketModel } from './model';
import { failureAdvice, isCancellable, stateLabel, stepRows } from './launch';

const MARK = { done: '✓', active: '●', pending: '○', failed: '✗', skipped: '–', stopped: '■' };

export class StepperView {
  readonly node = h('section', { class: 'jp-GpuMarket-stepper' });

  constructor(
    private model: GpuMarketModel,
    private onCancel: (kernelId: string) => void,
    private onConfirm: (kernelId: string) => void
  ) {}

  render(kernelId: string | null, now: number): void {
    const history = kernelId ? this.model.historyFor(kernelId) : [];
    if (!kernelId || history.length === 0) {
      fill(this.node);
      this.node.hidden = true;
      return;
    }
    this.node.hidden = false;
    const last = history[history.length - 1];
    const rows = stepRows(history, now);
    const list = h(
      'ol',
      { class: 'jp-GpuMarket-steps' },
      ...rows.map(r =>
        h(
          'li',
          { class: `jp-GpuMarket-step jp-mod-${r.status}`, 'data-state': r.state },
          h('span', { class: 'jp-GpuMarket-stepMark' }, MARK[r.status]),
          h('span', { class: 'jp-GpuMarket-stepLabel' }, r.label),
          h('span', { class: 'jp-GpuMarket-stepTime' }, r.elapsed ?? '')
        )
      )
    );
    const now_label = stateLabel(last.state, last);
    fill(
      this.node,
      h('h3', {}, 'Launch'),
      h('div', { class: 'jp-GpuMarket-launchState', 'data-state': last.state }, now_label),
      list,
      last.state === 'failed'
        ? h(
            'div',
            { class: 'jp-GpuMarket-error jp-GpuMarket-failure' },
            h('strong', {}, `${stateLabel('failed', last)}. `),
            failureAdvice(last)
          )
        : last.message
          ? h('div', { class: 'jp-GpuMarket-message' }, last.message)
          : null,
      last.state === 'confirming' && this.model.pendingQuotes.has(kernelId)
        ? h(
            'div',
            { class: 'jp-GpuMarket-confirm' },
            h('div', { class: 'jp-GpuMarket-quote' }, this.model.pendingQuotes.get(kernelId)!.text),
            h(
              'button',
              { class: 'jp-mod-styled jp-mod-accept jp-GpuMarket-confirmButton', onclick: () => this.onConfirm(kernelId) },
              'Confirm'
            )
          )
        : null,
      isCancellable(last.state) && last.cancellable !== false
        ? h(
            'button',
            { class: 'jp-mod-styled jp-mod-warn jp-GpuMarket-cancel', onclick: () => this.onCancel(kernelId) },
            'Cancel'
          )
        : null
    );
  }
}
