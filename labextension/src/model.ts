/**
 * The extension's state, fed by the events stream and the REST answers; every view listens to
 * `changed`. Requests go through request.ts only; failures become `problem` (never a throw into
 * the console).
 */
import { Signal } from '@lumino/signaling';

import { api, describeError, postJSON, requestAPI } from './request';
import { matchesFilter, offersQuery, sortOffers, DEFAULT_FILTER } from './offers';
import { reconcile } from './spend';
import { sameNotebook } from './launch';
import { DEFAULT_SETTINGS } from './settings';
import { IEip1193, ISignOpening, WalletProblem, answerOpening, connectWallet, openingProblem, switchChainParams } from './browserWallet';
import {
  GpuMarketEvent,
  ICullEvent,
  IGpuMarketModel,
  IHealth,
  ILaunchEvent,
  ILaunchesReply,
  IOffer,
  IOfferFilter,
  IOffersReply,
  IProblem,
  IQuote,
  IReceiptEvent,
  ISettings,
  ISpendEvent,
  IStopReply,
  ITelemetrySample,
  ITokenInfo,
  IWallet,
  IWarningEvent
} from './tokens';

const TELEMETRY_KEEP = 120;
const HISTORY_KEEP = 50;

export type StreamMode = 'connecting' | 'websocket' | 'polling';

export class GpuMarketModel implements IGpuMarketModel {
  readonly changed: Signal<IGpuMarketModel, void> = new Signal<IGpuMarketModel, void>(this);

  settings: ISettings = { ...DEFAULT_SETTINGS };
  problem: IProblem | null = null;
  /** a problem with one part (offers, wallet) that leaves the rest working */
  offersProblem: IProblem | null = null;
  walletProblem: IProblem | null = null;
  serverReady = false;
  streamMode: StreamMode = 'connecting';

  filter: IOfferFilter = { ...DEFAULT_FILTER };
  offers: IOffer[] = [];
  offersLoading = false;
  token: ITokenInfo = { symbol: 'TUSD', decimals: 6 };
  wallet: IWallet | null = null;
  /** the connected browser wallet (EIP-1193) that signs openings instead of the keystore */
  browserAddress: string | null = null;
  browserProblem: IProblem | null = null;
  /** openings waiting for the browser wallet (warning code `sign`), by kernel */
  readonly signRequests = new Map<string, ISignOpening>();

  readonly launches = new Map<string, ILaunchEvent[]>();
  readonly spend = new Map<string, ISpendEvent>();
  readonly telemetry = new Map<string, ITelemetrySample[]>();
  readonly cull = new Map<string, ICullEvent>();
  readonly warnings = new Map<string, IWarningEvent>();
  /** quotes waiting for the user's confirmation (warning code `confirm`), by kernel */
  readonly pendingQuotes = new Map<string, IQuote>();
  readonly receipts = new Map<string, IReceiptEvent>();
  readonly stops = new Map<string, IStopReply>();
  /** the kernel the lease view shows */
  focusKernel: string | null = null;

  launchFor(kernelId: string): ILaunchEvent | null {
    const h = this.launches.get(kernelId);
    return h && h.length > 0 ? h[h.length - 1] : null;
  }

  /** The kernel of the newest launch for a notebook (a kernel being switched to is not the
   * session's kernel until it started, yet its launch names the notebook). */
  launchForNotebook(path: string): string | null {
    let best: ILaunchEvent | null = null;
    for (const history of this.launches.values()) {
      const ev = history[history.length - 1];
      if (ev && ev.kernel_id && sameNotebook(ev.notebook, path) && (!best || ev.t > best.t)) {
        best = ev;
      }
    }
    return best?.kernel_id ?? null;
  }

  historyFor(kernelId: string): ILaunchEvent[] {
    return this.launches.get(kernelId) ?? [];
  }

  spendFor(kernelId: string): ISpendEvent | null {
    return this.spend.get(kernelId) ?? null;
  }

  offerById(id: string | number | null | undefined): IOffer | null {
    return id !== null && id !== undefined && id !== '' ? this.offers.find(o => String(o.id) === String(id)) ?? null : null;
  }

  /** The offers shown: the server's answer, filtered again here and sorted by the policy. */
  visibleOffers(): IOffer[] {
    return sortOffers(
      this.offers.filter(o => matchesFilter(o, this.filter)),
      this.filter.policy
    );
  }

  emit(): void {
    this.changed.emit();
  }

  /** Apply one event of the stream (or of a GET launches poll). */
  apply(ev: GpuMarketEvent): void {
    const k = ev.kernel_id;
    switch (ev.type) {
      case 'launch': {
        if (!k) {
          return;
        }
        const h = this.launches.get(k) ?? [];
        const last = h[h.length - 1];
        if (last && last.t > ev.t) {
          return;
        }
        if (last && last.state === ev.state && last.t === ev.t) {
          return;
        }
        if (last && last.state === ev.state) {
          h[h.length - 1] = ev;
        } else {
          h.push(ev);
        }
        this.launches.set(k, h.slice(-HISTORY_KEEP));
        break;
      }
      case 'spend':
        if (k) {
          this.spend.set(k, reconcile(this.spend.get(k) ?? null, ev));
          this.token = ev.token ?? this.token;
        }
        break;
      case 'telemetry':
        if (k) {
          const s = this.telemetry.get(k) ?? [];
          s.push(ev.sample);
          this.telemetry.set(k, s.slice(-TELEMETRY_KEEP));
        }
        break;
      case 'cull':
        if (k) {
          this.cull.set(k, ev);
        }
        break;
      case 'warning':
        if (k && ev.code === 'confirm' && ev.quote) {
          this.pendingQuotes.set(k, ev.quote);
        } else if (k && ev.code === 'sign' && ev.opening) {
          this.signRequests.set(k, ev.opening);
          this.warnings.set(k, ev);
          void this.answerSign(k);
        } else if (k) {
          this.warnings.set(k, ev);
        } else if (ev.code) {
          this.walletProblem = { what: ev.message, fix: '' };
        }
        break;
      case 'receipt':
        if (k) {
          this.receipts.set(k, ev);
        }
        break;
      default:
        return;
    }
    this.emit();
  }

  private fail(error: unknown): IProblem {
    const d = describeError(error);
    return { what: d.what, fix: d.fix };
  }

  /** Is the server extension there? Sets `problem` with the fix when not. */
  async checkHealth(): Promise<boolean> {
    try {
      await requestAPI<IHealth>('health');
      this.serverReady = true;
      this.problem = null;
    } catch (error) {
      this.serverReady = false;
      this.problem = this.fail(error);
    }
    this.emit();
    return this.serverReady;
  }

  async loadOffers(): Promise<void> {
    this.offersLoading = true;
    this.emit();
    try {
      const reply = await api<IOffersReply>('offers', {}, offersQuery(this.filter, this.settings.network));
      this.offers = Array.isArray(reply?.offers) ? reply.offers : [];
      if (reply?.token) {
        this.token = reply.token;
      }
      this.offersProblem = null;
    } catch (error) {
      this.offersProblem = this.fail(error);
    }
    this.offersLoading = false;
    this.emit();
  }

  async loadWallet(): Promise<void> {
    try {
      this.wallet = await api<IWallet>('wallet');
      if (this.wallet?.token) {
        this.token = this.wallet.token;
      }
      this.walletProblem = null;
    } catch (error) {
      this.walletProblem = this.fail(error);
    }
    this.emit();
  }

  async unlock(password: string, timeoutS = 3600): Promise<IProblem | null> {
    try {
      this.wallet = await postJSON<IWallet>('wallet/unlock', { password, timeout_s: timeoutS });
      this.walletProblem = null;
      this.emit();
      return null;
    } catch (error) {
      return this.fail(error);
    }
  }

  private ethereum(): IEip1193 | undefined {
    return (globalThis as unknown as { ethereum?: IEip1193 }).ethereum;
  }

  /** Connect the browser wallet: its account, on the network profile's chain. */
  async connectBrowserWallet(): Promise<IProblem | null> {
    try {
      const chainId = this.wallet?.chain_id ?? null;
      if (chainId === null) {
        throw new WalletProblem('the network profile’s chain id is unknown', 'check the network in the settings (GET wallet must answer)');
      }
      this.browserAddress = await connectWallet(this.ethereum(), chainId);
      this.browserProblem = null;
    } catch (error) {
      this.browserProblem = error instanceof WalletProblem ? { what: error.message, fix: error.fix } : { what: String((error as Error)?.message ?? error), fix: 'approve the request in the wallet' };
    }
    this.emit();
    for (const k of this.signRequests.keys()) {
      void this.answerSign(k);
    }
    return this.browserProblem;
  }

  /** Answer a `sign` request with the browser wallet and POST launches/ID/signed. */
  async answerSign(kernelId: string): Promise<IProblem | null> {
    const opening = this.signRequests.get(kernelId);
    const eth = this.ethereum();
    if (!opening || !eth || !this.browserAddress) {
      return null;
    }
    this.signRequests.delete(kernelId);
    try {
      let problem = openingProblem(opening, this.browserAddress, await eth.request({ method: 'eth_chainId' }));
      if (problem && problem.includes('chain')) {
        await eth.request({ method: 'wallet_switchEthereumChain', params: switchChainParams(opening.chain_id) }).catch(() => null);
        problem = openingProblem(opening, this.browserAddress, await eth.request({ method: 'eth_chainId' }));
      }
      if (problem) {
        throw new WalletProblem(problem, 'fix the wallet, then start the kernel again');
      }
      const body = await answerOpening(eth, opening);
      await postJSON(`launches/${encodeURIComponent(kernelId)}/signed`, body);
      this.browserProblem = null;
    } catch (error) {
      this.browserProblem = error instanceof WalletProblem ? { what: error.message, fix: error.fix } : this.fail(error);
    }
    this.emit();
    return this.browserProblem;
  }

  async lock(): Promise<void> {
    try {
      this.wallet = await postJSON<IWallet>('wallet/lock', {});
    } catch (error) {
      this.walletProblem = this.fail(error);
    }
    this.emit();
  }

  /** Poll GET launches (the websocket's fallback). */
  async pollLaunches(): Promise<boolean> {
    try {
      const reply = await api<ILaunchesReply>('launches');
      for (const ev of reply?.launches ?? []) {
        this.apply({ ...ev, type: 'launch' });
      }
      return true;
    } catch (error) {
      this.problem = this.fail(error);
      this.emit();
      return false;
    }
  }

  async cancel(kernelId: string): Promise<IProblem | null> {
    try {
      const ev = await postJSON<ILaunchEvent>(`launches/${encodeURIComponent(kernelId)}/cancel`, {});
      if (ev && ev.state) {
        this.apply({ ...ev, type: 'launch', kernel_id: ev.kernel_id ?? kernelId });
      }
      return null;
    } catch (error) {
      return this.fail(error);
    }
  }

  async confirm(kernelId: string): Promise<IProblem | null> {
    const quote = this.pendingQuotes.get(kernelId);
    if (!quote) {
      return { what: 'There is no cost waiting for a confirmation.', fix: 'Wait for the launch to ask, or relaunch.' };
    }
    try {
      const ev = await postJSON<ILaunchEvent>(`launches/${encodeURIComponent(kernelId)}/confirm`, { quote });
      this.pendingQuotes.delete(kernelId);
      if (ev && ev.state) {
        this.apply({ ...ev, type: 'launch', kernel_id: ev.kernel_id ?? kernelId });
      } else {
        this.emit();
      }
      return null;
    } catch (error) {
      return this.fail(error);
    }
  }

  async stop(kernelId: string, leaseId: string): Promise<IStopReply | IProblem> {
    try {
      const reply = await api<IStopReply>(`leases/${encodeURIComponent(leaseId)}`, { method: 'DELETE' });
      this.stops.set(kernelId, reply);
      this.emit();
      return reply;
    } catch (error) {
      return this.fail(error);
    }
  }
}
