// A signed-out visit to a console page goes to the login page, which
// remembers where the person was going.

import { ConsoleHeader } from './fixtures/console';
import { adminPassword } from './fixtures/env';
import { LoginPage } from './fixtures/login-page';
import { expect, test } from './fixtures/test';
import { UsersPage } from './fixtures/users-page';

test('signed out, /users leads to the login page and back to /users', async ({ page, state }) => {
  const response = await page.goto('/users');
  const url = new URL(page.url());
  expect(url.pathname).toBe('/login');
  expect(url.searchParams.get('next')).toBe('/users');
  expect(response?.request().redirectedFrom()?.url(), 'the server redirected').toBe(`${state.baseURL}/users`);

  const login = new LoginPage(page);
  await login.expectShown();
  await expect(page.locator('input[name="next"]')).toHaveValue('/users');
  await login.signIn('admin', adminPassword(state));

  await expect(page).toHaveURL(`${state.baseURL}/users`);
  await new UsersPage(page).expectShown();
  await new ConsoleHeader(page).expectSignedInAs('admin', 'System Admin');
});

test('signed out, any console page redirects to the login page', async ({ page }) => {
  for (const path of ['/', '/settings/security', '/users/1']) {
    await page.goto(path);
    await expect(page, `${path} needs a session`).toHaveURL(/\/login(\?|$)/);
    await expect(page.getByTestId('whoami')).toHaveCount(0);
  }
});
