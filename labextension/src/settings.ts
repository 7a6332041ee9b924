/** The extension's settings (schema/plugin.json) read into ISettings, with the defaults. */
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { ISettings, Policy, IServerConfig } from './tokens';
import { parseAmount } from './format';

export const DEFAULT_SETTINGS: ISettings = {
  network: '',
  budgetCap: '',
  autoTopup: false,
  defaultPolicy: 'cheapest',
  verifiedOnly: false,
  pollIntervalS: 5,
  showStatusItem: true
};

export function readSettings(s: ISettingRegistry.ISettings | null): ISettings {
  if (!s) {
    return { ...DEFAULT_SETTINGS };
  }
  const c = s.composite as Partial<ISettings>;
  const policy = (['cheapest', 'fastest', 'value'] as Policy[]).includes(c.defaultPolicy as Policy)
    ? (c.defaultPolicy as Policy)
    : DEFAULT_SETTINGS.defaultPolicy;
  return {
    network: typeof c.network === 'string' ? c.network : '',
    budgetCap: typeof c.budgetCap === 'string' ? c.budgetCap : '',
    autoTopup: !!c.autoTopup,
    defaultPolicy: policy,
    verifiedOnly: !!c.verifiedOnly,
    pollIntervalS: typeof c.pollIntervalS === 'number' && c.pollIntervalS >= 1 ? c.pollIntervalS : 5,
    showStatusItem: c.showStatusItem !== false
  };
}

/** The server's <Config> fields the settings carry (PUT config when the user changes them). */
export function serverConfigPatch(s: ISettings, decimals: number): Partial<IServerConfig> {
  const patch: Partial<IServerConfig> = {
    auto_topup: s.autoTopup,
    policy: s.defaultPolicy,
    verified_only: s.verifiedOnly,
    budget_cap: s.budgetCap.trim() === '' ? null : parseAmount(s.budgetCap, decimals)
  };
  if (s.network) {
    patch.network = s.network;
  }
  return patch;
}
