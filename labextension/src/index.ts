import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';

import { requestAPI } from './request';
import { IHealth } from './tokens';

/** Placeholder plugin: checks that the server extension answers. The panel comes later. */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-gpumarket:plugin',
  description: 'GPU market for Jupyter kernels',
  autoStart: true,
  activate: (_app: JupyterFrontEnd) => {
    requestAPI<IHealth>('health')
      .then(health => console.log(`jupyter-gpumarket ${health.version} is active`))
      .catch(reason => console.error('jupyter-gpumarket server extension not reachable', reason));
  }
};

export default plugin;
