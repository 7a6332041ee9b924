import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161"><path d="M3 7h15a2 2 0 0 1 2 2v6a2 2 0 0 1-2 2H3v-2h1v-6H3z
M6 9v6h10V9zm2 1.5a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zm5 0a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3z
M21 10h1v4h-1zM5 18h2v2H5zm4 0h2v2H9z"/></g></svg>`;

export const gpuMarketIcon = new LabIcon({ name: 'jupyter-gpumarket:gpu', svgstr: svg });
