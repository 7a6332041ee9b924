/**
 * The launch states of core/launch_state.py, word for word (docs/server-api.md), and the pure
 * mapping from launch events to the stepper's rows, the toast's text and the failure advice.
 */
import { ILaunchEvent, LaunchState } from './tokens';
import { formatElapsed } from './format';

//  state             label                               cancellable  before ready
export const LAUNCH_STATES: ReadonlyArray<[LaunchState, string, boolean]> = [
  ['choosing', 'choosing an offer', true],
  ['confirming', 'waiting for your confirmation', true],
  ['opening_channel', 'opening channel (wallet signs)', true],
  ['connecting', 'connecting', true],
  ['syncing_files', 'syncing files', true],
  ['starting_kernel', 'starting kernel', true],
  ['ready', 'ready', false],
  ['busy', 'busy', false],
  ['reconnecting', 'reconnecting (attempt N)', false],
  ['low_funds', 'low funds', false],
  ['lost', 'lost', false],
  ['ended', 'ended', false],
  ['failed', 'failed at STEP', false]
];

/** The steps the stepper draws, in order (the states before `ready`, then `ready`). */
export const STEPS: LaunchState[] = [
  'choosing',
  'confirming',
  'opening_channel',
  'connecting',
  'syncing_files',
  'starting_kernel',
  'ready'
];

const LABELS = new Map(LAUNCH_STATES.map(([s, l]) => [s, l]));
const CANCELLABLE = new Set(LAUNCH_STATES.filter(([, , c]) => c).map(([s]) => s));

/** What to do when a step fails, unless the server's message says it. */
const ADVICE: Partial<Record<LaunchState, string>> = {
  choosing: 'no offer matches: widen the filters in the GPU Market panel or pick another offer',
  confirming: 'confirm the cost again, or pick another offer',
  opening_channel: 'unlock the wallet (GPU Market panel → Wallet) and check its balance, then retry',
  connecting: 'the provider did not answer: relaunch on a similar offer',
  syncing_files: 'shrink the notebook folder or list big files in .gpumarketignore, then retry',
  starting_kernel: 'the provider could not start the kernel: relaunch on a similar offer'
};

/** The label every UI shows for a state, with its attempt or step filled in. */
export function stateLabel(
  state: LaunchState,
  opts: { attempt?: number | null; step?: LaunchState | null } = {}
): string {
  const label = LABELS.get(state) ?? state;
  if (state === 'reconnecting') {
    return label.replace('N', String(opts.attempt ?? 1));
  }
  if (state === 'failed') {
    return label.replace('STEP', opts.step ? LABELS.get(opts.step) ?? opts.step : 'launch');
  }
  return label;
}

export function isCancellable(state: LaunchState): boolean {
  return CANCELLABLE.has(state);
}

/** Launched and not over: ready, busy, or in link trouble. */
export function isRunning(state: LaunchState): boolean {
  return ['ready', 'busy', 'reconnecting', 'low_funds'].includes(state);
}

export function isOver(state: LaunchState): boolean {
  return state === 'ended' || state === 'failed' || state === 'lost';
}

/** `stopped`: the step a launch ended in before ready (cancelled, provider gone) */
export type StepStatus = 'done' | 'active' | 'pending' | 'failed' | 'skipped' | 'stopped';

export interface IStepRow {
  state: LaunchState;
  label: string;
  status: StepStatus;
  /** seconds spent in the step; null when not reached */
  elapsed: string | null;
}

/**
 * One launch's history (events in arrival order) -> the stepper's rows. A step's time is the
 * time until the next state began; the current step's time runs on to `now` (unix s).
 */
export function stepRows(history: ILaunchEvent[], now: number): IStepRow[] {
  const last = history[history.length - 1];
  const began = new Map<LaunchState, number>();
  for (const ev of history) {
    const start = ev.t - (ev.state_elapsed_s ?? 0);
    const step: LaunchState = isRunning(ev.state) ? 'ready' : ev.state;
    if (!began.has(step)) {
      began.set(step, start);
    }
  }
  const failedAt = last?.state === 'failed' ? last.step ?? null : null;
  // ended or lost: up to the furthest step reached (ready: all done; before: stopped there)
  const reached = STEPS.filter(s => began.has(s));
  const furthest = reached.length > 0 ? reached[reached.length - 1] : null;
  const over = !!last && (last.state === 'ended' || last.state === 'lost');
  const current: LaunchState | null = last
    ? failedAt ??
      (STEPS.includes(last.state) ? last.state : isRunning(last.state) ? 'ready' : over ? furthest : null)
    : null;
  const currentIndex = current ? STEPS.indexOf(current) : -1;
  return STEPS.map((state, i) => {
    let status: StepStatus = 'pending';
    if (i < currentIndex) {
      status = began.has(state) ? 'done' : 'skipped';
    } else if (i === currentIndex) {
      status = failedAt ? 'failed' : state === 'ready' ? 'done' : over ? 'stopped' : 'active';
    }
    const start = began.get(state);
    let elapsed: string | null = null;
    if (start !== undefined && status !== 'skipped') {
      const later = STEPS.slice(i + 1)
        .map(s => began.get(s))
        .filter((t): t is number => t !== undefined);
      const end =
        status === 'active' || status === 'failed' || status === 'stopped'
          ? last.state === 'failed' || status === 'stopped'
            ? last.t
            : now
          : state === 'ready'
            ? null
            : later.length > 0
              ? Math.min(...later)
              : null;
      elapsed = end === null ? null : formatElapsed(end - start);
    }
    return { state, label: stateLabel(state), status, elapsed };
  });
}

/** The toast's one line for a launch event. */
export function toastText(ev: ILaunchEvent, now: number): string {
  const label = stateLabel(ev.state, ev);
  const elapsed = formatElapsed(ev.elapsed_s + Math.max(0, now - ev.t));
  if (ev.state === 'failed') {
    return `GPU Market: ${label} after ${elapsed}. ${failureAdvice(ev)}`;
  }
  if (ev.state === 'ended') {
    return `GPU Market: ended (${ev.reason ?? 'stopped'})${ev.message ? ': ' + ev.message : ''}`;
  }
  const tail = ev.message ? ` — ${ev.message}` : '';
  return `GPU Market: ${label} (${elapsed})${tail}`;
}

/** What to do after a failure: the server's message, else the step's advice. */
export function failureAdvice(ev: ILaunchEvent): string {
  if (ev.message) {
    return ev.message;
  }
  return (ev.step && ADVICE[ev.step]) || 'open the GPU Market panel and relaunch on a similar offer';
}

/** The toast's type for a state. */
export function toastType(state: LaunchState): 'in-progress' | 'success' | 'error' | 'warning' | 'info' {
  if (isCancellable(state)) {
    return 'in-progress';
  }
  if (state === 'ready' || state === 'busy') {
    return 'success';
  }
  if (state === 'failed' || state === 'lost') {
    return 'error';
  }
  if (state === 'reconnecting' || state === 'low_funds') {
    return 'warning';
  }
  return 'info';
}

/** A launch's `notebook` (JPY_SESSION_NAME: relative to the server root, or absolute on
 * servers that send the full path) against a notebook's path in JupyterLab. */
export function sameNotebook(launched: string | null | undefined, path: string): boolean {
  if (!launched || !path) {
    return false;
  }
  const a = launched.replace(/^\/+/, '');
  return a === path || launched.endsWith('/' + path);
}
