/** The plugins of jupyter-gpumarket (declarations only; the work is in the modules). */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { activateMain } from './main';
import { activateStatus, STATUS_ITEM_ID } from './statusItem';
import { IGpuMarketModel, PLUGIN_ID } from './tokens';

/** The panel, the launch stepper and toasts, the wallet, the commands and the settings. */
const mainPlugin: JupyterFrontEndPlugin<IGpuMarketModel> = {
  id: PLUGIN_ID,
  description: 'GPU Market: offers, one-click kernel switch, launch stepper, wallet',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ISettingRegistry, ICommandPalette, ILabShell],
  provides: IGpuMarketModel,
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    registry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    labShell: ILabShell | null
  ) => activateMain(app, tracker, registry, palette, labShell)
};

/** The spend item in the status bar, for gpumarket kernels. */
const statusPlugin: JupyterFrontEndPlugin<void> = {
  id: STATUS_ITEM_ID,
  description: 'GPU Market spend in the status bar',
  autoStart: true,
  requires: [IGpuMarketModel, IStatusBar, INotebookTracker],
  activate: (app: JupyterFrontEnd, model: IGpuMarketModel, statusBar: IStatusBar, tracker: INotebookTracker) =>
    activateStatus(app, model, statusBar, tracker)
};

export default [mainPlugin, statusPlugin];
