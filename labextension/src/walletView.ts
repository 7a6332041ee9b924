/** The wallet: address, network, balances, lock state; Unlock opens the password dialog. */
import { h, fill } from './dom';
import { GpuMarketModel } from './model';
import { formatAmount, formatTimeLeft } from './format';

export class WalletView {
  readonly node = h('section', { class: 'jp-GpuMarket-wallet' });

  constructor(
    private model: GpuMarketModel,
    private onUnlock: () => void
  ) {}

  render(): void {
    const { wallet, walletProblem } = this.model;
    const parts: Array<HTMLElement | null> = [h('h3', {}, 'Wallet')];
    if (walletProblem && !wallet) {
      parts.push(
        h('div', { class: 'jp-GpuMarket-error', 'data-problem': 'wallet' }, walletProblem.what),
        h('div', { class: 'jp-GpuMarket-fix' }, walletProblem.fix)
      );
    }
    if (!wallet && !walletProblem) {
      parts.push(h('div', { class: 'jp-GpuMarket-note' }, 'Reading the wallet…'));
    }
    if (wallet) {
      const t = wallet.token ?? this.model.token;
      const bal = wallet.balances ?? { token: null, native: null };
      parts.push(
        h(
          'dl',
          { class: 'jp-GpuMarket-facts' },
          h('dt', {}, 'address'), h('dd', { class: 'jp-GpuMarket-address', title: wallet.address ?? '' }, wallet.address ?? 'none'),
          h('dt', {}, 'network'), h('dd', {}, wallet.network),
          h('dt', {}, 'balance'), h('dd', { 'data-fact': 'balance' }, bal.token === null ? '–' : formatAmount(bal.token, t.decimals, t.symbol)),
          h('dt', {}, 'gas'), h('dd', {}, bal.native === null ? '–' : formatAmount(bal.native, 18, 'ETH')),
          h('dt', {}, 'keystore'),
          h(
            'dd',
            { 'data-fact': 'unlocked' },
            wallet.unlocked
              ? `unlocked${wallet.unlock_expires_in_s ? ` (${formatTimeLeft(wallet.unlock_expires_in_s)} left)` : ''}`
              : 'locked'
          )
        ),
        wallet.message ? h('div', { class: 'jp-GpuMarket-fix', 'data-problem': 'wallet-message' }, wallet.message) : null,
        wallet.unlock_source === 'environment'
          ? null
          : wallet.unlocked
          ? h('button', { class: 'jp-mod-styled jp-GpuMarket-lock', onclick: () => void this.model.lock() }, 'Lock')
          : h('button', { class: 'jp-mod-styled jp-mod-accept jp-GpuMarket-unlock', onclick: () => this.onUnlock() }, 'Unlock…')
      );
    }
    if (wallet) {
      const m = this.model;
      parts.push(
        m.browserAddress
          ? h('div', { class: 'jp-GpuMarket-note', 'data-fact': 'browser-wallet', title: m.browserAddress }, `browser wallet ${m.browserAddress} signs new launches`)
          : h('button', { class: 'jp-mod-styled jp-GpuMarket-connect', onclick: () => void m.connectBrowserWallet() }, 'Connect browser wallet'),
        m.browserProblem ? h('div', { class: 'jp-GpuMarket-error', 'data-problem': 'browser-wallet' }, m.browserProblem.what) : null,
        m.browserProblem ? h('div', { class: 'jp-GpuMarket-fix' }, m.browserProblem.fix) : null
      );
    }
    fill(this.node, ...parts);
  }
}
