/**
 * The status-bar item, left, right after the kernel status, active only for gpumarket kernels:
 * `H100·80G ● 1.84/h · 0.37 spent · 2h41m left`, ticking every second; click opens the lease.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

import { gpuShort } from './format';
import { isOver, stateLabel } from './launch';
import { currentNotebook, isGpuMarketKernel } from './notebooks';
import { statusText } from './spend';
import { CommandIDs, IGpuMarketModel } from './tokens';

export const STATUS_ITEM_ID = 'jupyter-gpumarket:status';

/** What the item says for a kernel: its text and whether to warn. Pure given the model. */
export function statusFor(model: IGpuMarketModel, kernelId: string, now: number): { text: string; warn: boolean; state: string } {
  const launch = model.launchFor(kernelId);
  const offer = model.offerById(launch?.offer_id);
  const gpu = offer ? gpuShort(offer.gpu_class, offer.gpu_model, offer.vram_mib, offer.gpu_count) : 'GPU';
  const spend = model.spendFor(kernelId);
  if (spend && (!launch || !['choosing', 'confirming', 'opening_channel', 'connecting', 'syncing_files', 'starting_kernel'].includes(launch.state))) {
    const running = !launch || !isOver(launch.state);
    const view = statusText(gpu, spend, now, running);
    const tail = launch && launch.state !== 'ready' && launch.state !== 'busy' ? ` · ${stateLabel(launch.state, launch)}` : '';
    return { text: view.text + tail, warn: view.warn || (!!launch && launch.state !== 'ready' && launch.state !== 'busy'), state: launch?.state ?? 'ready' };
  }
  if (launch) {
    return { text: `${gpu} ● ${stateLabel(launch.state, launch)}`, warn: launch.state === 'failed', state: launch.state };
  }
  return { text: `${gpu} ● starting`, warn: false, state: 'unknown' };
}

class SpendItem extends Widget {
  constructor() {
    super();
    this.addClass('jp-GpuMarket-statusItem');
    this.node.title = 'GPU Market: click for the lease';
  }
}

export function activateStatus(
  app: JupyterFrontEnd,
  model: IGpuMarketModel,
  statusBar: IStatusBar,
  tracker: INotebookTracker
): void {
  const item = new SpendItem();
  const kernelOf = () => {
    const nb = currentNotebook(tracker);
    if (!nb) {
      return null;
    }
    const switching = model.launchForNotebook(nb.path);
    const pending = switching ? model.launchFor(switching) : null;
    if (switching && pending && !isOver(pending.state) && switching !== nb.kernelId) {
      return switching; // the kernel being switched to, not yet the session's
    }
    if (!nb.kernelId) {
      return null;
    }
    const spec = nb.kernelName ? app.serviceManager.kernelspecs.specs?.kernelspecs[nb.kernelName] : null;
    const known = isGpuMarketKernel(nb.kernelName, spec?.metadata as Record<string, unknown> | undefined);
    return known || model.launchFor(nb.kernelId) ? nb.kernelId : null;
  };
  const refresh = () => {
    const k = kernelOf();
    if (!k) {
      return;
    }
    const view = statusFor(model, k, Date.now() / 1000);
    if (item.node.textContent !== view.text) {
      item.node.textContent = view.text;
    }
    item.node.classList.toggle('jp-mod-warn', view.warn);
    item.node.dataset.state = view.state;
  };
  item.node.addEventListener('click', () => {
    void app.commands.execute(CommandIDs.openLease, { kernel: kernelOf() ?? '' });
  });
  statusBar.registerStatusItem(STATUS_ITEM_ID, {
    item,
    align: 'left',
    rank: 2, // running sessions 0, kernel status 1
    isActive: () => model.settings.showStatusItem && kernelOf() !== null,
    activeStateChanged: model.changed
  });
  model.changed.connect(refresh);
  const follow = (panel: NotebookPanel) => panel.sessionContext.kernelChanged.connect(() => model.emit());
  tracker.forEach(follow);
  tracker.widgetAdded.connect((_, panel) => follow(panel));
  tracker.currentChanged.connect(() => model.emit());
  window.setInterval(refresh, 1000);
}
