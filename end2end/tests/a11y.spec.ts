// Accessibility: axe-core on every page of the console (and the sign-in
// page), after hydration. No violation of impact serious or critical:
// labels, contrast, landmarks, names of links and buttons.

import AxeBuilder from '@axe-core/playwright';
import type { Page } from '@playwright/test';

import { waitForHydration } from './fixtures/hydration';
import { expect, test } from './fixtures/test';

const PAGES = [
  '/',
  '/users',
  '/users/1',
  '/import?dir=ldap',
  '/sync/runs',
  '/groups',
  '/organisations',
  '/logs/logins',
  '/logs/operations',
  '/settings/basic',
  '/settings/security',
  '/settings/tokens',
  '/settings/ldap',
  '/settings/ldap-ha',
];

async function check(page: Page, path: string): Promise<string[]> {
  await page.goto(path);
  await waitForHydration(page);
  const result = await new AxeBuilder({ page }).analyze();
  expect(result.passes.length, `axe checked ${path}`).toBeGreaterThan(10);
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${path}: ${v.id} (${v.impact}) ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
}

test('no serious or critical accessibility violation on any console page', async ({ adminPage: page }) => {
  test.setTimeout(120_000);
  const found: string[] = [];
  for (const path of PAGES) found.push(...(await check(page, path)));
  expect(found, found.join('\n')).toEqual([]);
});

test('the sign-in page has no serious or critical accessibility violation', async ({ page }) => {
  const found = await check(page, '/login');
  expect(found, found.join('\n')).toEqual([]);
});

test('the check finds a violation when there is one', async ({ page }) => {
  await page.goto('/login');
  await waitForHydration(page);
  // An input without a label, white on white: what the check exists to catch.
  await page.evaluate(() => {
    const i = document.createElement('input');
    i.style.cssText = 'color:#fff;background:#fff';
    document.querySelector('main, body')!.appendChild(i);
  });
  const result = await new AxeBuilder({ page }).analyze();
  expect(result.violations.map((v) => v.id)).toContain('label');
});

test('no console page scrolls sideways at 1024 or 768 px (tables scroll in their box)', async ({ adminPage: page }) => {
  test.setTimeout(120_000);
  const wide: string[] = [];
  for (const width of [1024, 768]) {
    await page.setViewportSize({ width, height: 900 });
    for (const path of PAGES) {
      await page.goto(path);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (overflow > 0) wide.push(`${path} at ${width} px: ${overflow} px too wide`);
    }
  }
  expect(wide, wide.join('\n')).toEqual([]);
});
