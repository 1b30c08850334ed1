// Runs in the `no-js` project (JavaScript disabled): a console form posts
// straight to its server function, and the browser gets its page back with
// the result or the field errors (a one-time flash), never raw JSON, and
// never a secret in the URL.

import type { Page, Response } from '@playwright/test';

import { strongPassword, uniqueName } from './fixtures/env';
import { expect, test } from './fixtures/test';

/** Submit `form` natively and return the document the browser ends on. */
async function submit(page: Page, form: ReturnType<Page['getByRole']>, button: string): Promise<Response | null> {
  const nav = page.waitForNavigation();
  await form.getByRole('button', { name: button }).click();
  return nav;
}

async function expectPage(page: Page, path: RegExp): Promise<void> {
  await expect(page).toHaveURL(path);
  const type = await page.evaluate(() => document.contentType);
  expect(type, 'a page, not the server function JSON').toBe('text/html');
}

test.beforeEach(async ({ javaScriptEnabled }) => {
  expect(javaScriptEnabled, 'this file belongs to the no-js project').toBe(false);
});

test('without JavaScript: basic settings show field errors, then save', async ({ adminPage: page }) => {
  await page.goto('/settings/basic');
  const form = page.getByRole('form', { name: 'Basic settings' });
  await form.getByLabel('Session idle timeout (minutes)').fill('a lot');
  await submit(page, form, 'Save');
  await expectPage(page, /\/settings\/basic$/);
  const flash = page.getByTestId('flash');
  await expect(flash).toHaveAttribute('role', 'alert');
  await expect(flash.locator('li[data-field="session_idle_minutes"]')).toBeVisible();
  // Shown once: a reload no longer has it.
  await page.reload();
  await expect(page.getByTestId('flash')).toHaveCount(0);

  await page.getByRole('form', { name: 'Basic settings' }).getByLabel('Session idle timeout (minutes)').fill('30');
  await submit(page, page.getByRole('form', { name: 'Basic settings' }), 'Save');
  await expectPage(page, /\/settings\/basic$/);
  await expect(page.getByTestId('flash')).toHaveText('Saved.');
});

test('without JavaScript: a new API token shows its secret once, never in the URL', async ({ adminPage: page }) => {
  await page.goto('/settings/tokens');
  const form = page.getByRole('form', { name: 'Create an API token' });
  const name = uniqueName('nojs-token');
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('Expires in days (empty: never)').fill('never');
  await submit(page, form, 'Create token');
  await expectPage(page, /\/settings\/tokens$/);
  await expect(page.getByTestId('flash').locator('li[data-field="expires_in_days"]')).toBeVisible();

  const again = page.getByRole('form', { name: 'Create an API token' });
  await again.getByLabel('Name').fill(name);
  await submit(page, again, 'Create token');
  await expectPage(page, /\/settings\/tokens$/);
  const secret = (await page.getByTestId('flash-secret').textContent()) ?? '';
  expect(secret).toMatch(/^bdy_/);
  expect(page.url()).not.toContain(secret);
  // The secret works, and the page forgets it.
  const me = await page.request.get('/api/v1/me', { headers: { Authorization: `Bearer ${secret}` } });
  expect(me.status()).toBe(200);
  await page.reload();
  await expect(page.getByTestId('flash-secret')).toHaveCount(0);
});

test('without JavaScript: creating a user and a group answers in words', async ({ adminPage: page }) => {
  await page.goto('/users');
  const form = page.getByRole('form', { name: 'Create a user' });
  const username = uniqueName('nojs-user');
  await form.getByLabel('Username').fill(username);
  await form.getByLabel('One-time password').fill(strongPassword());
  await submit(page, form, 'Create user');
  await expectPage(page, /\/users$/);
  await expect(page.getByTestId('flash')).toContainText(`Created ${username}.`);

  await page.goto('/groups');
  const group = page.getByRole('form', { name: 'Create a group' });
  await group.getByLabel('Name', { exact: true }).fill(uniqueName('nojs-group'));
  await group.locator('[name="members"]').fill('nobody-by-this-name');
  await submit(page, group, 'Create group');
  await expectPage(page, /\/groups$/);
  await expect(page.getByTestId('flash')).toHaveAttribute('role', 'alert');
  await expect(page.getByTestId('flash').locator('li[data-field="members"]')).toBeVisible();
});
