/**
 * `gpumarket:use-offer` ({offer, path}): the cost confirmation (GET quote), the selection
 * (POST selection with the notebook path) and the kernel switch to the `gpumarket` kernelspec
 * through sessionContext.changeKernel, after refreshSpecs() so a new spec is there at once.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { KernelSpec } from '@jupyterlab/services';
import { INotebookTracker } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { api, describeError, postJSON } from './request';
import { findNotebook } from './notebooks';
import { parseAmount } from './format';
import { IQuote, ISelection, ISettings, ITokenInfo } from './tokens';

export const GPUMARKET_SPEC = 'gpumarket';
const SPECS_WAIT_MS = 1000;

export interface IUseOfferArgs {
  offer: string | number;
  path?: string;
  /** a pinned spec from `gpumarket kernelspec add` */
  kernel?: string;
  /** a connected browser wallet signs the opening (else the server keystore) */
  browserAddress?: string | null;
}

export type UseOfferResult = 'switched' | 'cancelled' | 'failed';

/** refreshSpecs() now; once more if specsChanged did not fire within ~1 s and `name` is still
 * missing. Returns whether `name` is known. */
export async function ensureSpec(specs: KernelSpec.IManager, name: string): Promise<boolean> {
  const has = () => !!specs.specs?.kernelspecs?.[name];
  let fired = false;
  const onChange = () => {
    fired = true;
  };
  specs.specsChanged.connect(onChange);
  try {
    await specs.refreshSpecs();
    if (has()) {
      return true;
    }
    await new Promise(resolve => setTimeout(resolve, SPECS_WAIT_MS));
    if (!fired || !has()) {
      await specs.refreshSpecs();
    }
    return has();
  } finally {
    specs.specsChanged.disconnect(onChange);
  }
}

export async function useOffer(
  args: IUseOfferArgs,
  tracker: INotebookTracker,
  specs: KernelSpec.IManager,
  settings: ISettings,
  token: ITokenInfo
): Promise<UseOfferResult> {
  const panel = findNotebook(tracker, args.path);
  if (!panel) {
    Notification.warning('GPU Market: open the notebook first, then pick the offer again.', { autoClose: 8000 });
    return 'failed';
  }
  const path = panel.context.path;
  const query = new URLSearchParams({ offer: String(args.offer), initial_hours: '1' });
  if (settings.network) {
    query.set('network', settings.network);
  }
  const budget = settings.budgetCap ? parseAmount(settings.budgetCap, token.decimals) : null;
  if (budget !== null) {
    query.set('budget', String(budget));
  }
  let quote: IQuote;
  try {
    quote = await api<IQuote>('quote', {}, query.toString());
  } catch (error) {
    const d = describeError(error);
    Notification.error(`GPU Market: no quote for this offer. ${d.what} ${d.fix}`, { autoClose: false });
    return 'failed';
  }
  const body = document.createElement('div');
  body.className = 'jp-GpuMarket-quote';
  body.textContent = quote.text;
  const hint = document.createElement('p');
  hint.className = 'jp-GpuMarket-quoteHint';
  hint.textContent = `Switches ${path} to the GPU Market kernel. Billing starts when the kernel is ready; unused deposit is refunded.`;
  body.append(hint);
  const answer = await showDialog({
    title: 'Use this GPU for the notebook?',
    body: new Widget({ node: body }),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Confirm & switch kernel' })]
  });
  if (!answer.button.accept) {
    return 'cancelled';
  }
  const selection: ISelection & { path: string } = {
    offer: String(args.offer),
    network: settings.network || null,
    budget: quote.budget,
    initial_hours: 1,
    confirmed_quote: quote,
    path,
    ...(args.browserAddress ? { wallet: 'browser' as const, wallet_address: args.browserAddress } : {})
  };
  try {
    await postJSON<ISelection>('selection', selection);
  } catch (error) {
    const d = describeError(error);
    Notification.error(`GPU Market: the selection was not stored. ${d.what} ${d.fix}`, { autoClose: false });
    return 'failed';
  }
  const name = args.kernel || GPUMARKET_SPEC;
  if (!(await ensureSpec(specs, name))) {
    Notification.error(
      `GPU Market: the kernelspec "${name}" is missing. Reinstall jupyter-gpumarket (pip install jupyter-gpumarket) or run \`gpumarket kernelspec add\`, then try again.`,
      { autoClose: false }
    );
    return 'failed';
  }
  try {
    await panel.sessionContext.changeKernel({ name });
  } catch (error) {
    Notification.error(`GPU Market: the kernel did not switch: ${(error as Error)?.message ?? error}`, {
      autoClose: false
    });
    return 'failed';
  }
  return 'switched';
}
