/**
 * The status item's spend, ticking locally every second from the agreed rate and reconciled
 * with each spend event (the server's voucher totals win). Pure: `now` is passed in.
 */
import { ISpendEvent } from './tokens';
import { formatShort, formatTimeLeft } from './format';

export const WARN_BUDGET_FRACTION = 0.8;
export const WARN_SECONDS_LEFT = 15 * 60;

export interface ISpendView {
  /** base units spent so far (estimated between events) */
  spent: number;
  secondsLeft: number;
  warn: boolean;
  text: string;
}

/** The amount the lease can spend at most: the budget, else the deposit. */
function ceiling(ev: ISpendEvent): number {
  const caps = [ev.budget, ev.deposit].filter(v => typeof v === 'number' && v > 0);
  return caps.length > 0 ? Math.min(...caps) : Number.POSITIVE_INFINITY;
}

/** Spend and time left at `now` (unix seconds), from the last spend event. */
export function spendAt(ev: ISpendEvent, now: number, running = true): Omit<ISpendView, 'text'> {
  const dt = running ? Math.max(0, now - ev.t) : 0;
  const spent = Math.min(ceiling(ev), ev.spent + (ev.rate_per_hour * dt) / 3600);
  const secondsLeft = Math.max(0, ev.seconds_left - dt);
  const budget = ev.budget > 0 ? ev.budget : ev.deposit;
  const warn =
    (budget > 0 && spent >= WARN_BUDGET_FRACTION * budget) || secondsLeft < WARN_SECONDS_LEFT;
  return { spent, secondsLeft, warn };
}

/** `H100·80G ● 1.84/h · 0.37 spent · 2h41m left` */
export function statusText(gpu: string, ev: ISpendEvent, now: number, running = true): ISpendView {
  const view = spendAt(ev, now, running);
  const d = ev.token.decimals;
  const text =
    `${gpu} ● ${formatShort(ev.rate_per_hour, d)}/h · ${formatShort(view.spent, d)} spent · ` +
    `${formatTimeLeft(view.secondsLeft)} left`;
  return { ...view, text };
}

/**
 * Reconcile: the newer event replaces the older; an event older than the one held (out of
 * order after a reconnect) is dropped, so the shown spend never jumps back in time.
 */
export function reconcile(held: ISpendEvent | null, incoming: ISpendEvent): ISpendEvent {
  if (held && held.lease_id === incoming.lease_id && incoming.t < held.t) {
    return held;
  }
  return incoming;
}
