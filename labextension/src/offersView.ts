/** The panel's offers: filters, sort, rows with badge and reason, "Use for this notebook". */
import { h, fill } from './dom';
import { GpuMarketModel } from './model';
import { offerRow } from './offers';
import { parseAmount } from './format';
import { Policy } from './tokens';

export class OffersView {
  readonly node = h('section', { class: 'jp-GpuMarket-offers' });

  constructor(
    private model: GpuMarketModel,
    private use: (offerId: string) => void,
    private notebookPath: () => string | null
  ) {
    const f = model.filter;
    this.gpu = h('input', { type: 'text', placeholder: 'any', value: f.gpu, 'data-filter': 'gpu', 'aria-label': 'GPU' });
    this.vram = h('input', { type: 'number', min: 0, placeholder: '0', 'data-filter': 'vram', 'aria-label': 'min VRAM GiB' });
    this.price = h('input', { type: 'text', placeholder: 'any', 'data-filter': 'price', 'aria-label': 'max price per hour' });
    this.region = h('input', { type: 'text', placeholder: 'any', value: f.region, 'data-filter': 'region', 'aria-label': 'region' });
    this.verified = h('input', { type: 'checkbox', 'data-filter': 'verified' });
    this.verified.checked = f.verified;
    this.policy = h(
      'select',
      { 'data-filter': 'policy', 'aria-label': 'sort' },
      ...(['cheapest', 'fastest', 'value'] as Policy[]).map(p => h('option', { value: p }, p))
    );
    this.policy.value = f.policy;
    for (const el of [this.gpu, this.vram, this.price, this.region]) {
      el.addEventListener('input', () => this.changed());
    }
    this.verified.addEventListener('change', () => this.changed());
    this.policy.addEventListener('change', () => this.changed());
    const label = (text: string, el: HTMLElement) => h('label', {}, h('span', {}, text), el);
    this.priceUnit = h('span', { class: 'jp-GpuMarket-unit' });
    const form = h(
      'div',
      { class: 'jp-GpuMarket-filters' },
      label('GPU', this.gpu),
      label('min VRAM (GiB)', this.vram),
      h('label', {}, h('span', {}, 'max price/h'), h('span', { class: 'jp-GpuMarket-priceRow' }, this.price, this.priceUnit)),
      label('region', this.region),
      label('sort', this.policy),
      h('label', { class: 'jp-GpuMarket-check' }, this.verified, h('span', {}, 'verified only')),
      h('button', { class: 'jp-mod-styled jp-GpuMarket-refresh', onclick: () => void Promise.all([this.model.loadOffers(), this.model.loadWallet()]) }, 'Refresh')
    );
    this.list = h('ul', { class: 'jp-GpuMarket-offerList' });
    this.note = h('div', { class: 'jp-GpuMarket-note' });
    this.node.append(h('h3', {}, 'Offers'), form, this.note, this.list);
  }

  /** Settings give the defaults (policy, verified only) until the user touches the form. */
  applyDefaults(policy: Policy, verified: boolean): void {
    if (this.touched) {
      return;
    }
    this.policy.value = policy;
    this.verified.checked = verified;
    this.readForm();
  }

  private readForm(): boolean {
    const vram = this.vram.value.trim() === '' ? null : Number(this.vram.value);
    const priceText = this.price.value.trim();
    const price = priceText === '' ? null : parseAmount(priceText, this.model.token.decimals);
    const bad = priceText !== '' && price === null;
    this.price.classList.toggle('jp-mod-invalid', bad);
    this.model.filter = {
      gpu: this.gpu.value,
      minVramGib: vram !== null && Number.isFinite(vram) ? vram : null,
      maxPrice: bad ? null : price,
      region: this.region.value,
      verified: this.verified.checked,
      policy: this.policy.value as Policy
    };
    return !bad;
  }

  private changed(): void {
    this.touched = true;
    this.readForm();
    this.model.emit();
    window.clearTimeout(this.debounce);
    this.debounce = window.setTimeout(() => void this.model.loadOffers(), 400);
  }

  render(): void {
    const { model } = this;
    this.priceUnit.textContent = model.token.symbol;
    const path = this.notebookPath();
    if (model.offersProblem) {
      fill(
        this.note,
        h('div', { class: 'jp-GpuMarket-error', 'data-problem': 'offers' }, model.offersProblem.what),
        h('div', { class: 'jp-GpuMarket-fix' }, model.offersProblem.fix)
      );
    } else if (model.offersLoading && model.offers.length === 0) {
      fill(this.note, 'Looking for offers…');
    } else if (!path) {
      fill(this.note, 'Open a notebook to use an offer for it.');
    } else {
      fill(this.note);
    }
    const offers = model.visibleOffers();
    if (offers.length === 0 && !model.offersLoading && !model.offersProblem) {
      fill(this.list, h('li', { class: 'jp-GpuMarket-empty' }, 'No offer matches: widen the filters.'));
      return;
    }
    fill(
      this.list,
      ...offers.map(o => {
        const row = offerRow(o, model.token.decimals, model.token.symbol);
        const button = h(
          'button',
          {
            class: 'jp-mod-styled jp-mod-accept jp-GpuMarket-use',
            disabled: row.greyed || !path,
            title: row.greyed ? row.reason : path ? `Use ${row.gpu} for ${path}` : 'Open a notebook first',
            onclick: () => this.use(String(o.id))
          },
          'Use for this notebook'
        );
        return h(
          'li',
          {
            class: `jp-GpuMarket-offer${row.greyed ? ' jp-mod-greyed' : ''}`,
            'data-offer-id': o.id
          },
          h(
            'div',
            { class: 'jp-GpuMarket-offerHead' },
            h('span', { class: 'jp-GpuMarket-gpu' }, row.gpu),
            h('span', { class: 'jp-GpuMarket-price' }, row.price),
            h('span', { class: 'jp-GpuMarket-region' }, row.region)
          ),
          h(
            'div',
            { class: 'jp-GpuMarket-offerMeta' },
            h('span', { class: `jp-GpuMarket-badge jp-mod-${row.badgeLevel}`, title: o.reason || row.badge }, row.badge),
            row.notes.length > 0 ? h('span', { class: 'jp-GpuMarket-notes' }, row.notes.join(' · ')) : null
          ),
          row.reason ? h('div', { class: 'jp-GpuMarket-reason' }, row.reason) : null,
          button
        );
      })
    );
  }

  private gpu: HTMLInputElement;
  private vram: HTMLInputElement;
  private price: HTMLInputElement;
  private priceUnit: HTMLSpanElement;
  private region: HTMLInputElement;
  private verified: HTMLInputElement;
  private policy: HTMLSelectElement;
  private list: HTMLUListElement;
  private note: HTMLDivElement;
  private debounce = 0;
  private touched = false;
}
