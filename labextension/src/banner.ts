/** Pure: which link trouble a kernel is in, in the words the banner shows. */
import { ILaunchEvent, IReceiptEvent, ISpendEvent } from './tokens';
import { formatAmount } from './format';

export type TroubleKind = 'link_down' | 'provider_gone' | 'deposit_used';

export interface ITrouble {
  kind: TroubleKind;
  text: string;
  /** offer "Relaunch on a similar offer" */
  relaunch: boolean;
}

export function linkTrouble(
  launch: ILaunchEvent | null,
  receipt: IReceiptEvent | null,
  spend: ISpendEvent | null
): ITrouble | null {
  if (!launch) {
    return null;
  }
  if (launch.state === 'reconnecting') {
    const attempt = launch.attempt ? ` (attempt ${launch.attempt})` : '';
    return {
      kind: 'link_down',
      text: `link down, reconnecting${attempt} (kernel alive, output buffered)`,
      relaunch: false
    };
  }
  const gone = launch.state === 'lost' || (launch.state === 'ended' && launch.reason === 'provider_gone');
  if (gone) {
    let refunded = 'deposit';
    if (receipt) {
      refunded = formatAmount(receipt.refunded, receipt.token.decimals, receipt.token.symbol);
    } else if (spend) {
      refunded = formatAmount(spend.deposit_left, spend.token.decimals, spend.token.symbol);
    }
    return { kind: 'provider_gone', text: `provider gone: ${refunded} refunded`, relaunch: true };
  }
  if (launch.state === 'ended' && (launch.reason === 'deposit_used' || launch.reason === 'budget')) {
    const what = launch.reason === 'budget' ? 'budget cap reached' : 'deposit used up';
    return { kind: 'deposit_used', text: what, relaunch: true };
  }
  return null;
}
