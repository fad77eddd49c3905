/**
 * Progress on stderr: a redrawn bar on a terminal, one summary line otherwise (logs stay readable).
 */
export interface Progress {
  update(done: number, total?: number): void;
  finish(message?: string): void;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function createProgress(label: string, opts: { bytes?: boolean; stream?: NodeJS.WriteStream; quiet?: boolean } = {}): Progress {
  const stream = opts.stream ?? process.stderr;
  const started = performance.now();
  const format = (n: number) => (opts.bytes ? formatBytes(n) : String(n));
  let lastDraw = 0;
  let last = { done: 0, total: undefined as number | undefined };
  const draw = () => {
    const { done, total } = last;
    const fraction = total ? Math.min(1, done / total) : 0;
    const bar = total ? `[${'#'.repeat(Math.round(fraction * 24)).padEnd(24, '.')}] ${(fraction * 100).toFixed(0).padStart(3)}% ` : '';
    const seconds = (performance.now() - started) / 1000;
    const rate = opts.bytes && seconds > 0 ? ` ${formatBytes(done / seconds)}/s` : '';
    stream.write(`\r${label} ${bar}${format(done)}${total ? ` / ${format(total)}` : ''}${rate}\x1b[K`);
  };
  return {
    update(done, total) {
      last = { done, total: total ?? last.total };
      if (opts.quiet || !stream.isTTY) return;
      const now = performance.now();
      if (now - lastDraw < 100 && done !== last.total) return;
      lastDraw = now;
      draw();
    },
    finish(message) {
      if (opts.quiet) return;
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
      const summary = message ?? `${label} ${format(last.done)} in ${seconds} s`;
      stream.write(stream.isTTY ? `\r${summary}\x1b[K\n` : `${summary}\n`);
    },
  };
}
