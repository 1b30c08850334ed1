import { defineConfig } from '@playwright/test';

import { BASE_URL } from './tests/fixtures/env';

// One server for the whole run (started by the global setup from the built
// binary), shared lockout counters and one admin: tests run one at a time.
export default defineConfig({
  testDir: './tests',
  globalSetup: './tests/fixtures/global-setup.ts',
  globalTeardown: './tests/fixtures/global-teardown.ts',
  workers: 1,
  fullyParallel: false,
  retries: 0,
  forbidOnly: !!process.env.CI,
  reporter: 'list',
  timeout: 30_000,
  expect: { timeout: 10_000 },
  use: {
    baseURL: BASE_URL,
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    launchOptions: {
      // Debian's Chromium: `npx playwright install` cannot download here.
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
  projects: [
    {
      name: 'setup',
      testMatch: /setup\/.*\.setup\.ts$/,
    },
    {
      name: 'chromium',
      testMatch: /.*\.spec\.ts$/,
      testIgnore: /nojs/,
      dependencies: ['setup'],
    },
    // `scripts/bench wasm` only (BINDERY_BENCH=1): benchmarks, not tests.
    ...(process.env.BINDERY_BENCH
      ? [{ name: 'bench', testDir: './bench', testMatch: /.*\.bench\.ts$/, dependencies: ['setup'] }]
      : []),
    {
      name: 'no-js',
      testMatch: /nojs.*\.spec\.ts$/,
      dependencies: ['setup'],
      use: { javaScriptEnabled: false },
    },
  ],
});
