import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/**
 * The single path to the gpumarket server extension: REST under `{base}gpumarket/` and the
 * events websocket. Raises ServerConnection.ResponseError on a non-2xx answer, with the
 * server's `message` (what happened, what to do) when it sent one; a body that is not JSON
 * (a 404 page when the server extension is missing) never throws anything else.
 */
export async function requestAPI<T>(endPoint = '', init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'gpumarket', endPoint);
  let response: Response;
  try {
    // 'no-cache' revalidates every answer without the bare cache-busting query parameter that
    // 'no-store' makes ServerConnection append (the API refuses unknown parameters)
    response = await ServerConnection.makeRequest(url, { cache: 'no-cache', ...init }, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: any = null;
  try {
    data = text.length > 0 ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message =
      data && typeof data.message === 'string' ? data.message : `${response.status} ${response.statusText}`;
    throw new ServerConnection.ResponseError(response, message);
  }
  if (text.length > 0 && data === null) {
    throw new ServerConnection.ResponseError(response, `${url} did not answer JSON`);
  }
  return data as T;
}

/** `api/` + path + query: the routes of docs/server-api.md. */
export function api<T>(path: string, init: RequestInit = {}, query = ''): Promise<T> {
  return requestAPI<T>(`api/${path}${query ? '?' + query : ''}`, init);
}

export function postJSON<T>(path: string, body: unknown): Promise<T> {
  return api<T>(path, { method: 'POST', body: JSON.stringify(body ?? {}) });
}

/** Open the events websocket (`GET gpumarket/api/events`), authenticated like the kernels'. */
export function openEventsSocket(): WebSocket {
  const settings = ServerConnection.makeSettings();
  let url = URLExt.join(settings.wsUrl, 'gpumarket', 'api', 'events');
  if (settings.token && settings.appendToken) {
    url += `?token=${encodeURIComponent(settings.token)}`;
  }
  return new settings.WebSocket(url);
}

/** What a failed request means to a user: the problem and how to fix it. */
export function describeError(error: unknown): { what: string; fix: string; status: number | null } {
  if (error instanceof ServerConnection.ResponseError) {
    const status = error.response.status;
    if (status === 404 && !/^\{/.test(error.message) && /404/.test(error.message)) {
      return {
        what: 'The GPU Market server extension is not running in this Jupyter server.',
        fix: 'Run `jupyter server extension enable jupyter_gpumarket` (or reinstall with `pip install jupyter-gpumarket`), then restart JupyterLab.',
        status
      };
    }
    if (status === 502) {
      return {
        what: `The chain or the provider is unreachable: ${error.message}`,
        fix: 'Check the network profile (Settings → GPU Market) and that its RPC answers, e.g. start `gpumarket devnet` for the devnet; then click Refresh.',
        status
      };
    }
    if (status === 403) {
      return { what: error.message, fix: 'Check the password and try again.', status };
    }
    return { what: error.message, fix: 'Do what the message says, then try again.', status };
  }
  if (error instanceof ServerConnection.NetworkError) {
    return {
      what: 'The Jupyter server does not answer.',
      fix: 'Check that JupyterLab’s server still runs, then try again.',
      status: null
    };
  }
  return { what: String((error as Error)?.message ?? error), fix: 'Try again; if it persists, check the Jupyter server’s log.', status: null };
}
