/** Which notebook and kernel the panel and the status item are about. */
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

import { sameNotebook } from './launch';

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
    // a launch names its notebook relative to the server root or as an absolute path
    const found = tracker.find(p => p.context.path === path) ?? tracker.find(p => sameNotebook(path, p.context.path));
    return found ?? null;
  }
  return tracker.currentWidget;
}

/** A gpumarket kernel: the `gpumarket` spec, or any spec (a pinned one from `gpumarket
 * kernelspec add`, whatever its name) whose provisioner is `gpumarket-provisioner`. */
export function isGpuMarketKernel(name: string | null | undefined, metadata?: Record<string, unknown> | null): boolean {
  if (!name) {
    return false;
  }
  if (name === 'gpumarket') {
    return true;
  }
  const provisioner = (metadata?.kernel_provisioner as { provisioner_name?: unknown } | undefined)?.provisioner_name;
  return provisioner === 'gpumarket-provisioner';
}
