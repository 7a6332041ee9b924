/** Shapes of what the server extension returns. */
export interface IHealth {
  version: string;
  kernels: number;
}
