// Runs in the `no-js` project: more of the console's forms without
// JavaScript — organisations, a user's page (explain access, reset
// password, disable), security settings. Each answers with its page and the
// result in words, or the field errors.

import type { Locator, Page } from '@playwright/test';

import { strongPassword, uniqueName } from './fixtures/env';
import { expect, test } from './fixtures/test';

async function submit(page: Page, scope: Locator | Page, button: string): Promise<void> {
  const nav = page.waitForNavigation();
  await scope.getByRole('button', { name: button, exact: true }).click();
  await nav;
  expect(await page.evaluate(() => document.contentType), 'a page, not JSON').toBe('text/html');
}

test.beforeEach(async ({ javaScriptEnabled }) => {
  expect(javaScriptEnabled, 'this file belongs to the no-js project').toBe(false);
});

test('without JavaScript: organisations are created, refused when taken, renamed and deleted', async ({ adminPage: page }) => {
  const name = uniqueName('nojs-org');
  await page.goto('/organisations');
  const create = page.getByRole('form', { name: 'Create an organisation' });
  await create.getByLabel('Name').fill(name);
  await submit(page, create, 'Create organisation');
  await expect(page).toHaveURL(/\/organisations$/);
  await expect(page.getByTestId('flash')).toHaveText('Saved.');
  const row = page.getByTestId('orgs-table').getByRole('row').filter({ hasText: name });
  await expect(row).toHaveCount(1);

  const again = page.getByRole('form', { name: 'Create an organisation' });
  await again.getByLabel('Name').fill(name.toUpperCase());
  await submit(page, again, 'Create organisation');
  await expect(page.getByTestId('flash')).toHaveAttribute('role', 'alert');
  await expect(page.getByTestId('flash').locator('li[data-field="name"]')).toBeVisible();

  const renamed = `${name}-renamed`;
  await row.getByLabel('New name').fill(renamed);
  await submit(page, row, 'Rename');
  const renamedRow = page.getByTestId('orgs-table').getByRole('row').filter({ hasText: renamed });
  await expect(renamedRow).toHaveCount(1);
  await submit(page, renamedRow, 'Delete');
  await expect(page.getByTestId('flash')).toHaveText('Deleted.');
  await expect(page.getByTestId('orgs-table').getByRole('row').filter({ hasText: renamed })).toHaveCount(0);
});

test("without JavaScript: a user's page explains access, resets the password and disables", async ({ adminPage: page }) => {
  const username = uniqueName('nojs-u');
  await page.goto('/users');
  const form = page.getByRole('form', { name: 'Create a user' });
  await form.getByLabel('Username').fill(username);
  await form.getByLabel('One-time password').fill(strongPassword());
  await submit(page, form, 'Create user');
  // The list is sorted by username and paged: the flash links the new user.
  await expect(page.getByTestId('flash')).toContainText(`Created ${username}.`);
  await page.getByTestId('flash-link').click();
  await expect(page).toHaveURL(/\/users\/\d+$/);
  const userUrl = page.url();

  await submit(page, page.getByRole('form', { name: 'Explain access' }), 'Explain access');
  await expect(page).toHaveURL(userUrl);
  await expect(page.getByTestId('flash')).toContainText(username);

  await submit(page, page, 'Reset password');
  await expect(page).toHaveURL(userUrl);
  const otp = (await page.getByTestId('flash-secret').textContent()) ?? '';
  expect(otp.length).toBeGreaterThanOrEqual(12);
  expect(page.url()).not.toContain(otp);

  await submit(page, page, 'Disable');
  await expect(page.getByTestId('flash')).toHaveText('Saved.');
  await expect(page.getByTestId('user-status')).toContainText(/disabled/i);
});

test('without JavaScript: security settings name a bad field and keep the saved values', async ({ adminPage: page }) => {
  await page.goto('/settings/security');
  const form = page.getByRole('form', { name: 'Security settings' });
  const field = form.getByLabel('Lock a username after this many failed logins');
  const saved = await field.inputValue();
  await field.fill('0');
  await submit(page, form, 'Save');
  await expect(page).toHaveURL(/\/settings\/security$/);
  await expect(page.getByTestId('flash').locator('li[data-field="lockout_max_failures"]')).toBeVisible();
  await expect(page.getByRole('form', { name: 'Security settings' }).getByLabel('Lock a username after this many failed logins')).toHaveValue(saved);
});
