/** Pure: how long to wait before the next websocket reconnect (1 s, 2 s, 4 s … 30 s). */
export const BACKOFF_MAX_S = 30;

export function reconnectDelay(attempt: number, jitter = 0): number {
  const base = Math.min(BACKOFF_MAX_S, 2 ** Math.max(0, attempt));
  return Math.round((base + base * 0.2 * Math.max(-1, Math.min(1, jitter))) * 1000);
}
