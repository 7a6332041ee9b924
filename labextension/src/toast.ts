/** One Notification toast per launch, updated in place (autoClose off while it runs). */
import { Notification } from '@jupyterlab/apputils';

import { GpuMarketModel } from './model';
import { isCancellable, toastText, toastType } from './launch';

const REFRESH_MS = 5000;

interface IShown {
  id: string;
  key: string;
}

export class LaunchToasts {
  constructor(
    private model: GpuMarketModel,
    private openPanel: (kernelId: string) => void,
    private cancel: (kernelId: string) => void,
    private confirm: (kernelId: string) => void
  ) {
    // events come in bursts: coalesce them; a running launch's toast also refreshes its
    // elapsed time every few seconds (which heals an update that raced the toast's creation)
    model.changed.connect(() => {
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => this.sync(), 250);
    });
    window.setInterval(() => this.sync(), REFRESH_MS);
  }

  private sync(): void {
    const now = Date.now() / 1000;
    for (const [kernelId, history] of this.model.launches) {
      const ev = history[history.length - 1];
      if (!ev) {
        continue;
      }
      const tick = isCancellable(ev.state) ? Math.floor(Date.now() / REFRESH_MS) : 0;
      const quote = this.model.pendingQuotes.has(kernelId) ? 'q' : '';
      const key = `${ev.state}|${ev.attempt ?? ''}|${ev.message ?? ''}|${tick}|${quote}`;
      const shown = this.shown.get(kernelId);
      if (shown?.key === key) {
        continue;
      }
      if (!shown && !isCancellable(ev.state) && ev.state !== 'failed') {
        continue; // a kernel that was running before this page: no toast for old news
      }
      const actions: Notification.IAction[] = [
        { label: 'Open panel', callback: () => this.openPanel(kernelId), displayType: 'link' }
      ];
      if (ev.state === 'confirming' && this.model.pendingQuotes.has(kernelId)) {
        actions.push({ label: 'Confirm', callback: () => this.confirm(kernelId), displayType: 'accent' });
      }
      if (isCancellable(ev.state)) {
        actions.push({ label: 'Cancel', callback: () => this.cancel(kernelId), displayType: 'warn' });
      }
      const type = toastType(ev.state);
      const pending = ev.state === 'confirming' ? this.model.pendingQuotes.get(kernelId) : undefined;
      const message = pending ? `${toastText(ev, now)}: ${pending.text}` : toastText(ev, now);
      const autoClose = ev.state === 'ready' || ev.state === 'busy' ? 5000 : (false as const);
      if (shown && Notification.manager.has(shown.id)) {
        Notification.update({ id: shown.id, message, type, autoClose, actions });
        shown.key = key;
      } else {
        const id = Notification.emit(message, type, { autoClose, actions });
        this.shown.set(kernelId, { id, key });
      }
    }
  }

  private shown = new Map<string, IShown>();
  private timer = 0;
}
