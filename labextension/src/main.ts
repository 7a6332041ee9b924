/** The main plugin's activation: model, events, panel, toasts, commands, settings. */
import { ILabShell, JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { EventStream } from './events';
import { GpuMarketModel } from './model';
import { GpuMarketPanel } from './panel';
import { LaunchToasts } from './toast';
import { currentNotebook } from './notebooks';
import { similarOffer } from './offers';
import { api } from './request';
import { readSettings, serverConfigPatch } from './settings';
import { useOffer, IUseOfferArgs } from './useOffer';
import { CommandIDs, IGpuMarketModel, IServerConfig, ISettings, PLUGIN_ID } from './tokens';

export function activateMain(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  registry: ISettingRegistry | null,
  palette: ICommandPalette | null,
  labShell: ILabShell | null
): IGpuMarketModel {
  const model = new GpuMarketModel();
  let settings: ISettings = readSettings(null);
  const stream = new EventStream(model, () => settings.pollIntervalS);

  const current = () => {
    const nb = currentNotebook(tracker);
    return nb ? { path: nb.path, kernelId: nb.kernelId } : null;
  };
  const cancel = async (kernelId: string) => {
    const problem = await model.cancel(kernelId);
    if (problem) {
      Notification.error(`GPU Market: cancel failed. ${problem.what} ${problem.fix}`, { autoClose: 8000 });
    }
  };
  const confirm = async (kernelId: string) => {
    const problem = await model.confirm(kernelId);
    if (problem) {
      Notification.error(`GPU Market: the confirmation failed. ${problem.what} ${problem.fix}`, { autoClose: 8000 });
    }
  };
  const openPanel = () => {
    app.shell.activateById(panel.id);
  };

  const panel = new GpuMarketPanel(model, {
    use: offer => void app.commands.execute(CommandIDs.useOffer, { offer, path: current()?.path ?? '' }),
    cancel: k => void cancel(k),
    confirm: k => void confirm(k),
    stop: (k, lease) =>
      void model.stop(k, lease).then(r => {
        if ('what' in r) {
          Notification.error(`GPU Market: stop failed. ${r.what} ${r.fix}`, { autoClose: false });
        }
      }),
    relaunch: k => void app.commands.execute(CommandIDs.relaunch, { kernel: k }),
    unlock: () => void app.commands.execute(CommandIDs.unlockWallet),
    retry: () => void start(),
    current
  });
  app.shell.add(panel, 'left', { rank: 600 });
  new LaunchToasts(
    model,
    k => {
      model.focusKernel = k;
      openPanel();
      model.emit();
    },
    k => void cancel(k),
    k => void confirm(k)
  );

  app.commands.addCommand(CommandIDs.useOffer, {
    label: 'Use GPU Market offer for this notebook',
    caption: 'Confirm the cost, store the selection and switch the kernel to GPU Market',
    execute: args => useOffer({ browserAddress: model.browserAddress, ...(args as unknown as IUseOfferArgs) }, tracker, app.serviceManager.kernelspecs, settings, model.token)
  });
  app.commands.addCommand(CommandIDs.openPanel, { label: 'Open GPU Market', execute: openPanel });
  app.commands.addCommand(CommandIDs.openLease, {
    label: 'Show the GPU Market lease',
    execute: args => {
      model.focusKernel = (args.kernel as string) || null;
      openPanel();
      model.emit();
    }
  });
  app.commands.addCommand(CommandIDs.unlockWallet, {
    label: 'Unlock the GPU Market wallet',
    execute: async () => {
      const answer = await InputDialog.getPassword({ title: 'Unlock the wallet', label: 'Keystore password' });
      if (!answer.button.accept || !answer.value) {
        return;
      }
      const problem = await model.unlock(answer.value);
      if (problem) {
        Notification.error(`GPU Market: ${problem.what} ${problem.fix}`, { autoClose: 8000 });
      }
    }
  });
  app.commands.addCommand(CommandIDs.relaunch, {
    label: 'Relaunch on a similar offer',
    execute: async args => {
      const kernelId = args.kernel as string;
      const launch = model.launchFor(kernelId);
      if (model.offers.length === 0) {
        await model.loadOffers();
      }
      const offer = similarOffer(model.offers, launch?.offer_id ?? null);
      if (!offer) {
        Notification.warning('GPU Market: no similar offer is usable now: widen the filters in the panel.', {
          autoClose: 8000
        });
        openPanel();
        return;
      }
      const path = launch?.notebook ?? current()?.path ?? '';
      model.focusKernel = null;
      return app.commands.execute(CommandIDs.useOffer, { offer: offer.id, path });
    }
  });
  if (palette) {
    for (const command of [CommandIDs.openPanel, CommandIDs.unlockWallet]) {
      palette.addItem({ command, category: 'GPU Market' });
    }
  }

  // the lease view and stepper follow the current notebook; their clocks tick every second
  tracker.currentChanged.connect(() => {
    model.focusKernel = null;
    panel.update();
  });
  labShell?.currentChanged.connect(() => panel.update());
  window.setInterval(() => {
    if (panel.isVisible) {
      panel.update();
    }
  }, 1000);

  const start = async () => {
    if (await model.checkHealth()) {
      await Promise.all([model.loadOffers(), model.loadWallet(), model.pollLaunches()]);
    }
  };
  let started = false;
  const applySettings = (s: ISettingRegistry.ISettings | null) => {
    settings = readSettings(s);
    model.settings = settings;
    model.emit(); // the status item's visibility follows showStatusItem
    panel.offersView.applyDefaults(settings.defaultPolicy, settings.verifiedOnly);
    if (!started) {
      started = true;
      void start().then(() => stream.start());
    }
  };
  if (registry) {
    registry
      .load(PLUGIN_ID)
      .then(s => {
        applySettings(s);
        s.changed.connect(() => {
          applySettings(s);
          void model.loadOffers();
          if (model.serverReady) {
            api<IServerConfig>('config')
              .then(cfg =>
                api('config', {
                  method: 'PUT',
                  body: JSON.stringify({ ...cfg, ...serverConfigPatch(settings, model.token.decimals) })
                })
              )
              .catch(() => undefined); // a server without config: the settings still act here
          }
        });
      })
      .catch(() => applySettings(null));
  } else {
    applySettings(null);
  }
  return model;
}
