/**
 * The events websocket (`GET gpumarket/api/events`) with reconnect and backoff; while it is
 * down the model polls `GET launches` every poll interval instead.
 */
import { reconnectDelay } from './backoff';
import { GpuMarketModel } from './model';
import { openEventsSocket } from './request';
import { GpuMarketEvent } from './tokens';

const MAX_MESSAGE = 1 << 20;

export class EventStream {
  constructor(
    private model: GpuMarketModel,
    private pollIntervalS: () => number
  ) {}

  start(): void {
    this.disposed = false;
    this.connect();
    this.schedulePoll();
  }

  dispose(): void {
    this.disposed = true;
    window.clearTimeout(this.reconnectTimer);
    window.clearTimeout(this.pollTimer);
    this.socket?.close();
    this.socket = null;
  }

  private connect(): void {
    if (this.disposed) {
      return;
    }
    if (!this.model.serverReady) {
      this.retry();
      return;
    }
    let ws: WebSocket;
    try {
      ws = openEventsSocket();
    } catch {
      this.retry();
      return;
    }
    this.socket = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.model.streamMode = 'websocket';
      this.model.emit();
    };
    ws.onmessage = msg => {
      if (typeof msg.data !== 'string' || msg.data.length > MAX_MESSAGE) {
        return;
      }
      let ev: GpuMarketEvent;
      try {
        ev = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (ev && typeof ev === 'object' && typeof ev.type === 'string') {
        this.model.apply(ev);
      }
    };
    ws.onerror = () => undefined;
    ws.onclose = () => {
      if (this.socket === ws) {
        this.socket = null;
        this.retry();
      }
    };
  }

  private retry(): void {
    if (this.disposed) {
      return;
    }
    if (this.model.streamMode !== 'polling') {
      this.model.streamMode = 'polling';
      this.model.emit();
    }
    const delay = reconnectDelay(this.attempt++, Math.random() * 2 - 1);
    this.reconnectTimer = window.setTimeout(() => this.connect(), delay);
  }

  private schedulePoll(): void {
    if (this.disposed) {
      return;
    }
    const every = Math.max(1, this.pollIntervalS()) * 1000;
    this.pollTimer = window.setTimeout(async () => {
      if (!this.model.serverReady) {
        if (await this.model.checkHealth()) {
          this.attempt = 0;
        }
      } else if (this.model.streamMode !== 'websocket') {
        await this.model.pollLaunches();
      }
      this.schedulePoll();
    }, every);
  }

  private socket: WebSocket | null = null;
  private attempt = 0;
  private disposed = false;
  private reconnectTimer = 0;
  private pollTimer = 0;
}
