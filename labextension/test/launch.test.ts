import { describe, expect, it } from 'vitest';

import {
  LAUNCH_STATES,
  STEPS,
  failureAdvice,
  isCancellable,
  sameNotebook,
  stateLabel,
  stepRows,
  toastText,
  toastType
} from '../src/launch';
import { ILaunchEvent, LaunchState } from '../src/tokens';

function ev(state: LaunchState, t: number, extra: Partial<ILaunchEvent> = {}): ILaunchEvent {
  return {
    type: 'launch',
    kernel_id: 'k1',
    t,
    state,
    label: stateLabel(state, extra),
    elapsed_s: t - 1000,
    state_elapsed_s: 0,
    cancellable: isCancellable(state),
    ...extra
  };
}

describe('launch states (docs/server-api.md, word for word)', () => {
  it('has the contract’s table', () => {
    expect(LAUNCH_STATES.map(([s, l, c]) => `${s}|${l}|${c}`)).toEqual([
      'choosing|choosing an offer|true',
      'confirming|waiting for your confirmation|true',
      'opening_channel|opening channel (wallet signs)|true',
      'connecting|connecting|true',
      'syncing_files|syncing files|true',
      'starting_kernel|starting kernel|true',
      'ready|ready|false',
      'busy|busy|false',
      'reconnecting|reconnecting (attempt N)|false',
      'low_funds|low funds|false',
      'lost|lost|false',
      'ended|ended|false',
      'failed|failed at STEP|false'
    ]);
  });
  it('fills in the attempt and the failed step', () => {
    expect(stateLabel('reconnecting', { attempt: 3 })).toBe('reconnecting (attempt 3)');
    expect(stateLabel('failed', { step: 'syncing_files' })).toBe('failed at syncing files');
    expect(stateLabel('failed')).toBe('failed at launch');
  });
  it('never says idle', () => {
    expect(LAUNCH_STATES.some(([, l]) => l.includes('idle'))).toBe(false);
  });
});

describe('stepRows', () => {
  it('marks done, active and pending steps with elapsed times', () => {
    const h = [ev('choosing', 1000), ev('confirming', 1002), ev('opening_channel', 1010)];
    const rows = stepRows(h, 1015);
    expect(rows.map(r => r.status)).toEqual(['done', 'done', 'active', 'pending', 'pending', 'pending', 'pending']);
    expect(rows[0].elapsed).toBe('2s');
    expect(rows[1].elapsed).toBe('8s');
    expect(rows[2].elapsed).toBe('5s');
    expect(rows[3].elapsed).toBeNull();
  });
  it('counts a late event’s state_elapsed_s into its step', () => {
    const rows = stepRows([ev('connecting', 1030, { state_elapsed_s: 12 })], 1031);
    expect(rows[3]).toMatchObject({ state: 'connecting', status: 'active', elapsed: '13s' });
    expect(rows[0].status).toBe('skipped');
  });
  it('marks the failed step and stops its clock at the failure', () => {
    const h = [ev('connecting', 1000), ev('syncing_files', 1004), ev('failed', 1010, { step: 'syncing_files' })];
    const rows = stepRows(h, 2000);
    const sync = rows.find(r => r.state === 'syncing_files')!;
    expect(sync.status).toBe('failed');
    expect(sync.elapsed).toBe('6s');
    expect(rows.find(r => r.state === 'starting_kernel')!.status).toBe('pending');
  });
  it('shows every step done once running', () => {
    const rows = stepRows([ev('starting_kernel', 1000), ev('busy', 1003)], 1100);
    expect(rows[rows.length - 1]).toMatchObject({ state: 'ready', status: 'done' });
    expect(rows.find(r => r.state === 'starting_kernel')!.elapsed).toBe('3s');
    expect(STEPS.length).toBe(rows.length);
  });
});

describe('toast', () => {
  it('says the step and what to do on failure', () => {
    const f = ev('failed', 1010, { step: 'opening_channel', elapsed_s: 10 });
    expect(toastText(f, 1010)).toContain('failed at opening channel (wallet signs)');
    expect(failureAdvice(f)).toContain('unlock the wallet');
    expect(failureAdvice({ ...f, message: 'balance too low: top up 3.00 TUSD' })).toBe('balance too low: top up 3.00 TUSD');
  });
  it('types states', () => {
    expect(toastType('connecting')).toBe('in-progress');
    expect(toastType('ready')).toBe('success');
    expect(toastType('failed')).toBe('error');
    expect(toastType('reconnecting')).toBe('warning');
    expect(toastType('ended')).toBe('info');
  });
  it('says the elapsed time and the message while launching', () => {
    expect(toastText(ev('connecting', 1000, { elapsed_s: 5, message: 'to 10.0.0.2' }), 1002)).toBe(
      'GPU Market: connecting (7s) — to 10.0.0.2'
    );
  });
});

describe('stepRows after the end', () => {
  it('shows every step done when the lease ended after ready', () => {
    const rows = stepRows([ev('opening_channel', 1000), ev('ready', 1009), ev('ended', 1100, { reason: 'stopped' })], 1200);
    expect(rows.filter(r => r.status === 'done').map(r => r.state)).toEqual(['opening_channel', 'ready']);
    expect(rows.find(r => r.state === 'opening_channel')!.elapsed).toBe('9s');
  });
  it('marks the step a cancelled launch stopped in', () => {
    const rows = stepRows([ev('connecting', 1000), ev('ended', 1004, { reason: 'cancelled' })], 1200);
    expect(rows.find(r => r.state === 'connecting')).toMatchObject({ status: 'stopped', elapsed: '4s' });
    expect(rows.find(r => r.state === 'ready')!.status).toBe('pending');
  });
});

describe('sameNotebook', () => {
  it('matches a relative or absolute JPY_SESSION_NAME with a JupyterLab path', () => {
    expect(sameNotebook('work/nb.ipynb', 'work/nb.ipynb')).toBe(true);
    expect(sameNotebook('/srv/notebooks/work/nb.ipynb', 'work/nb.ipynb')).toBe(true);
    expect(sameNotebook('/srv/notebooks/work/xnb.ipynb', 'nb.ipynb')).toBe(false);
    expect(sameNotebook(null, 'nb.ipynb')).toBe(false);
    expect(sameNotebook('nb.ipynb', '')).toBe(false);
  });
});
