/** The left-sidebar panel "GPU Market": problem box, banner, stepper, lease, wallet, offers. */
import { Widget } from '@lumino/widgets';

import { h, fill } from './dom';
import { GpuMarketModel } from './model';
import { LeaseView } from './leaseView';
import { OffersView } from './offersView';
import { StepperView } from './stepperView';
import { WalletView } from './walletView';
import { gpuMarketIcon } from './icon';
import { PANEL_ID } from './tokens';

export interface IPanelActions {
  use(offerId: string): void;
  cancel(kernelId: string): void;
  confirm(kernelId: string): void;
  stop(kernelId: string, leaseId: string): void;
  relaunch(kernelId: string): void;
  unlock(): void;
  retry(): void;
  /** the current notebook's path and kernel id */
  current(): { path: string; kernelId: string | null } | null;
}

export class GpuMarketPanel extends Widget {
  constructor(
    private model: GpuMarketModel,
    private actions: IPanelActions
  ) {
    super();
    this.id = PANEL_ID;
    this.addClass('jp-GpuMarket-panel');
    this.title.icon = gpuMarketIcon;
    this.title.caption = 'GPU Market';
    this.offers = new OffersView(model, id => actions.use(id), () => actions.current()?.path ?? null);
    this.stepper = new StepperView(model, k => actions.cancel(k), k => actions.confirm(k));
    this.lease = new LeaseView(model, (k, l) => actions.stop(k, l), k => actions.relaunch(k));
    this.wallet = new WalletView(model, () => actions.unlock());
    this.status = h('div', { class: 'jp-GpuMarket-status' });
    this.node.append(
      h('h2', { class: 'jp-GpuMarket-title' }, 'GPU Market'),
      this.status,
      this.lease.banner,
      this.stepper.node,
      this.lease.node,
      this.offers.node,
      this.wallet.node
    );
    model.changed.connect(this.update, this);
  }

  get offersView(): OffersView {
    return this.offers;
  }

  /** The kernel whose launch and lease the panel shows: the lease view's focus, else the
   * current notebook's kernel. */
  kernelShown(): string | null {
    if (this.model.focusKernel) {
      return this.model.focusKernel;
    }
    const nb = this.actions.current();
    if (!nb) {
      return null;
    }
    const launching = this.model.launchForNotebook(nb.path);
    const own = nb.kernelId ? this.model.launchFor(nb.kernelId) : null;
    if (launching && (!own || (this.model.launchFor(launching)?.t ?? 0) > own.t)) {
      return launching;
    }
    return nb.kernelId;
  }

  protected onUpdateRequest(): void {
    const m = this.model;
    const now = Date.now() / 1000;
    if (m.problem) {
      fill(
        this.status,
        h(
          'div',
          { class: 'jp-GpuMarket-problem', 'data-problem': 'server' },
          h('div', { class: 'jp-GpuMarket-error' }, m.problem.what),
          h('div', { class: 'jp-GpuMarket-fix' }, m.problem.fix),
          h('button', { class: 'jp-mod-styled jp-GpuMarket-retry', onclick: () => this.actions.retry() }, 'Retry')
        )
      );
    } else {
      fill(
        this.status,
        m.streamMode === 'polling' && m.serverReady
          ? h('div', { class: 'jp-GpuMarket-note' }, 'live events unavailable: polling for updates')
          : null
      );
    }
    const hideAll = !!m.problem && !m.serverReady;
    this.offers.node.hidden = hideAll;
    this.wallet.node.hidden = hideAll;
    const k = this.kernelShown();
    this.stepper.render(k, now);
    this.lease.render(k, now);
    if (!hideAll) {
      this.offers.render();
      this.wallet.render();
    }
  }

  private offers: OffersView;
  private stepper: StepperView;
  private lease: LeaseView;
  private wallet: WalletView;
  private status: HTMLDivElement;
}
