// Benchmark, not a test: the Dashboard's time to interactive, measured 5
// times in fresh browser contexts (empty cache, as a first visit), median
// printed with the bytes the browser downloaded for the WASM. Run by
// `scripts/bench wasm` against a release build; never part of the suite.

import { ADMIN_STORAGE_STATE } from '../tests/fixtures/env';
import { expect, test } from '../tests/fixtures/test';

// The hydrated router registers its `popstate` listener on `window`: the
// moment the console answers clicks in the browser.
const TTI_PROBE = `(() => {
  const original = EventTarget.prototype.addEventListener;
  EventTarget.prototype.addEventListener = function (type, listener, options) {
    if (type === 'popstate' && this === window && window.__tti === undefined) window.__tti = performance.now();
    return original.call(this, type, listener, options);
  };
})();`;

const RUNS = 5;

test('Dashboard time to interactive', async ({ browser }) => {
  test.setTimeout(120_000);
  const times: number[] = [];
  let wasmBytes = 0;
  let wasmEncoding = '';
  for (let i = 0; i < RUNS; i++) {
    const context = await browser.newContext({ storageState: ADMIN_STORAGE_STATE });
    await context.addInitScript({ content: TTI_PROBE });
    const page = await context.newPage();
    page.on('response', async (r) => {
      if (/\.wasm$/.test(new URL(r.url()).pathname)) {
        wasmEncoding = (await r.allHeaders())['content-encoding'] ?? 'identity';
        wasmBytes = (await r.request().sizes()).responseBodySize;
      }
    });
    await page.goto('/');
    await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
    const tti = await page.waitForFunction(() => (window as unknown as { __tti?: number }).__tti, null, { timeout: 60_000 });
    times.push(Number(await tti.jsonValue()));
    await context.close();
  }
  const sorted = [...times].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  console.log(
    `dashboard time to interactive: median ${median.toFixed(0)} ms over ${RUNS} runs ` +
      `(${times.map((t) => t.toFixed(0)).join(', ')} ms); wasm transferred ${wasmBytes} bytes (${wasmEncoding})`,
  );
  expect(times.length).toBe(RUNS);
});
