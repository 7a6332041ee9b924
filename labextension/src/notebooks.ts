/** Which notebook and kernel the panel and the status item are about. */
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

export interface INotebookRef {
  panel: NotebookPanel;
  path: string;
  kernelId: string | null;
  kernelName: string | null;
}

export function currentNotebook(tracker: INotebookTracker): INotebookRef | null {
  const panel = tracker.currentWidget;
  if (!panel) {
    return null;
  }
  const kernel = panel.sessionContext.session?.kernel ?? null;
  return { panel, path: panel.context.path, kernelId: kernel?.id ?? null, kernelName: kernel?.name ?? null };
}

export function findNotebook(tracker: INotebookTracker, path: string | undefined): NotebookPanel | null {
  if (path) {
    return tracker.find(p => p.context.path === path) ?? null;
  }
  return tracker.currentWidget;
}

/** A gpumarket kernel: the `gpumarket` spec or a pinned one (`gpumarket-*`). */
export function isGpuMarketKernel(name: string | null | undefined): boolean {
  return !!name && (name === 'gpumarket' || name.startsWith('gpumarket-') || name.startsWith('gpumarket_'));
}
