/**
 * Shapes of what the server extension returns (docs/server-api.md), the model token and the
 * command ids. Money is integer token base units everywhere; only format.ts shows decimals.
 */
import { Token } from '@lumino/coreutils';
import { ISignal } from '@lumino/signaling';

export const PLUGIN_ID = 'jupyter-gpumarket:plugin';
export const PANEL_ID = 'jupyter-gpumarket-panel';

export namespace CommandIDs {
  export const useOffer = 'gpumarket:use-offer';
  export const openPanel = 'gpumarket:open-panel';
  export const openLease = 'gpumarket:open-lease';
  export const unlockWallet = 'gpumarket:unlock-wallet';
  export const relaunch = 'gpumarket:relaunch-similar';
}

export interface IHealth {
  version: string;
  kernels: number;
}

export interface ITokenInfo {
  symbol: string;
  decimals: number;
}

/** One `gpumarket offers --json` object (core.ranking.Ranked.to_json). */
export interface IOffer {
  /** the registry's offer id (a number from the server; compare as String) */
  id: string | number;
  provider?: string;
  endpoint?: string;
  gpu_model: string;
  gpu_class: string | null;
  gpu_count: number;
  vram_mib: number;
  price_per_hour: number;
  region: string;
  reachable: boolean | null;
  latency_ms: number | null;
  free_kernels: number | null;
  verification: string;
  labels: string[];
  reputation: number;
  tflops: number;
  usable: boolean;
  position: number | null;
  reason: string;
  simulated: boolean;
  sandboxed?: boolean | null;
}

export interface IOffersReply {
  offers: IOffer[];
  token?: ITokenInfo;
}

export type Policy = 'cheapest' | 'fastest' | 'value';

export interface IOfferFilter {
  gpu: string;
  minVramGib: number | null;
  /** base units per hour */
  maxPrice: number | null;
  region: string;
  verified: boolean;
  policy: Policy;
}

export interface IQuote {
  offer_id: string | number;
  price_per_hour: number;
  deposit: number;
  budget: number;
  seconds_covered: number;
  token: ITokenInfo;
  text: string;
}

export interface ISelection {
  offer: string;
  network: string | null;
  budget: number | null;
  initial_hours: number | null;
  confirmed_quote: IQuote | null;
  /** "browser": an EIP-1193 wallet signs the channel opening (default: the keystore) */
  wallet?: 'keystore' | 'browser';
  wallet_address?: string;
}

export interface ISelectionReply {
  path: string | null;
  selection: ISelection | null;
  default?: ISelection | null;
}

export type LaunchState =
  | 'choosing'
  | 'confirming'
  | 'opening_channel'
  | 'connecting'
  | 'syncing_files'
  | 'starting_kernel'
  | 'ready'
  | 'busy'
  | 'reconnecting'
  | 'low_funds'
  | 'lost'
  | 'ended'
  | 'failed';

export type EndReason =
  | 'cancelled'
  | 'stopped'
  | 'culled'
  | 'deposit_used'
  | 'provider_gone'
  | 'budget';

interface IEventBase {
  kernel_id: string | null;
  /** unix seconds */
  t: number;
}

export interface ILaunchEvent extends IEventBase {
  type: 'launch';
  state: LaunchState;
  label: string;
  step?: LaunchState | null;
  attempt?: number | null;
  elapsed_s: number;
  state_elapsed_s: number;
  cancellable: boolean;
  notebook?: string | null;
  offer_id?: string | number | null;
  lease_id?: string | null;
  message?: string | null;
  reason?: EndReason | null;
}

export interface ISpendEvent extends IEventBase {
  type: 'spend';
  lease_id: string;
  rate_per_hour: number;
  spent: number;
  deposit: number;
  deposit_left: number;
  budget: number;
  seconds_left: number;
  vouchers: number;
  token: ITokenInfo;
}

export interface IGpuSample {
  index: number;
  util_pct: number | null;
  mem_used_mib: number | null;
  mem_total_mib: number | null;
  temp_c: number | null;
  power_w: number | null;
}

export interface ITelemetrySample {
  t: number;
  spend?: unknown;
  gpus: IGpuSample[];
}

export interface ITelemetryEvent extends IEventBase {
  type: 'telemetry';
  sample: ITelemetrySample;
}

export interface ICullEvent extends IEventBase {
  type: 'cull';
  idle_s: number;
  cull_in_s: number | null;
  timeout_s?: number | null;
  /** what keeps the kernel from being culled */
  held_by?: 'busy' | 'connected' | null;
}

export interface IWarningEvent extends IEventBase {
  type: 'warning';
  /** confirm | payment | low_funds | top_up | lost | notice */
  code: string;
  message: string;
  /** with code `confirm`: the quote waiting for the user's confirmation */
  quote?: IQuote | null;
  /** with code `sign`: the channel opening the browser wallet signs (browserWallet.ts) */
  opening?: import('./browserWallet').ISignOpening | null;
}

/** A transaction as the renter's ledger records it (a bare hash from older servers). */
export type TxRecord = string | { kind?: string; tx_hash?: string; hash?: string; gas_used?: number };

export interface IReceiptEvent extends IEventBase {
  type: 'receipt';
  lease_id: string;
  seconds: number;
  charged: number;
  refunded: number;
  txs: TxRecord[];
  token: ITokenInfo;
}

export type GpuMarketEvent =
  | ILaunchEvent
  | ISpendEvent
  | ITelemetryEvent
  | ICullEvent
  | IWarningEvent
  | IReceiptEvent;

export interface ILaunchesReply {
  launches: ILaunchEvent[];
}

export interface IStopReply {
  lease_id: string;
  status: string;
  charged: number;
  refund: number;
  txs: TxRecord[];
  token?: ITokenInfo;
  deposit?: number;
  billed_seconds?: number;
  kernel_id?: string | null;
  /** null when settled; else what happens next */
  message?: string | null;
}

export interface IWallet {
  address: string | null;
  network: string;
  unlocked: boolean;
  unlock_expires_in_s: number | null;
  balances: { token: number | null; native: number | null } | null;
  token: ITokenInfo;
  unlock_source?: 'environment' | 'memory' | null;
  /** why address or balances are null (no wallet, chain unreachable) */
  message?: string | null;
  /** the network profile's chain id (a browser wallet must be on it) */
  chain_id?: number | null;
}

export interface IServerConfig {
  budget_cap: number | null;
  auto_topup: boolean;
  network: string;
  policy: string;
  verified_only: boolean;
  cull_idle_timeout_s: number;
}

/** The extension's settings (schema/plugin.json). */
export interface ISettings {
  network: string;
  /** token units as typed (decimal), converted with the token's decimals */
  budgetCap: string;
  autoTopup: boolean;
  defaultPolicy: Policy;
  verifiedOnly: boolean;
  pollIntervalS: number;
  showStatusItem: boolean;
}

/** Why the server extension cannot serve us, said plainly (null = all well). */
export interface IProblem {
  what: string;
  fix: string;
}

/** The extension's state: the other plugins read it and listen to `changed`. */
export interface IGpuMarketModel {
  readonly changed: ISignal<IGpuMarketModel, void>;
  readonly problem: IProblem | null;
  readonly settings: ISettings;
  launchFor(kernelId: string): ILaunchEvent | null;
  spendFor(kernelId: string): ISpendEvent | null;
  launchForNotebook(path: string): string | null;
  offerById(id: string | number | null | undefined): IOffer | null;
  /** tell every view to redraw */
  emit(): void;
}

export const IGpuMarketModel = new Token<IGpuMarketModel>(
  'jupyter-gpumarket:IGpuMarketModel',
  'The GPU Market state: offers, launches, spend, telemetry, wallet.'
);
