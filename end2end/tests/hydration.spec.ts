// The console hydrates: a console form is handled by the WASM app in the
// browser (a server-function call), not by a full-page form post.

import { strongPassword, uniqueName } from './fixtures/env';
import { waitForHydration } from './fixtures/hydration';
import { expect, test } from './fixtures/test';
import { UsersPage } from './fixtures/users-page';

test('creating a user on /users happens in place, without a page load', async ({ adminPage: page }) => {
  const users = new UsersPage(page);
  await users.goto();
  await waitForHydration(page, { forms: true });

  // Anything that reloads or navigates the document would lose this.
  await page.evaluate(() => {
    (window as unknown as { __e2eMarker: string }).__e2eMarker = 'same document';
  });
  const documentRequests: string[] = [];
  page.on('request', (r) => {
    if (r.isNavigationRequest()) documentRequests.push(`${r.method()} ${r.url()}`);
  });
  const rpc = page.waitForResponse((r) => r.url().endsWith('/rpc/create_user') && r.request().method() === 'POST');

  const username = uniqueName('e2e-hydra');
  await users.createUser({ username, password: strongPassword(), role: 'user', name: 'Hydration Check' });

  const response = await rpc;
  expect(response.status(), 'the server function answered directly').toBe(200);
  expect(response.request().resourceType(), 'the browser app called the server function').toMatch(/^(fetch|xhr)$/);
  await expect(users.createdMessage(username)).toHaveText(
    `Created ${username}. They must change the password at first sign-in.`,
  );
  // The list refreshes in place too.
  await expect(users.userLink(username)).toBeVisible();

  expect(await page.evaluate(() => (window as unknown as { __e2eMarker?: string }).__e2eMarker)).toBe('same document');
  expect(documentRequests, 'no page load happened').toEqual([]);
  await expect(page).toHaveURL(/\/users$/);
});
