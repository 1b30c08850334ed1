// The `setup` project: the admin's first login with the one-time password the
// server printed, the forced password change, and what the other projects
// need afterwards (the admin's password and session, a user for the
// no-JavaScript tests).

import fs from 'node:fs';
import path from 'node:path';

import { ChangePasswordPage } from '../fixtures/change-password-page';
import { ConsoleHeader, DashboardPage } from '../fixtures/console';
import { ADMIN_STORAGE_STATE, strongPassword, uniqueName, updateState } from '../fixtures/env';
import { LoginPage } from '../fixtures/login-page';
import { expect, test } from '../fixtures/test';
import { UsersPage } from '../fixtures/users-page';

test('first login: the admin must replace the one-time password', async ({ page, state }) => {
  expect(state.adminOneTimePassword, 'the global setup captured the one-time password').toMatch(/^[A-Za-z0-9]{20}$/);

  await test.step('a signed-out visit to / goes to the login page', async () => {
    await page.goto('/');
    await expect(page).toHaveURL(/\/login$/);
    await new LoginPage(page).expectShown();
  });

  const change = new ChangePasswordPage(page);
  await test.step('the one-time password leads to the forced password change', async () => {
    await new LoginPage(page).signIn('admin', state.adminOneTimePassword);
    await expect(page).toHaveURL(/\/change-password$/);
    await expect(change.forcedNotice).toBeVisible();
  });

  await test.step('the console stays closed until the password is changed', async () => {
    await page.goto('/users');
    await expect(page).toHaveURL(/\/change-password$/);
  });

  const newPassword = strongPassword();
  await test.step('a mismatched confirmation is refused with a field error', async () => {
    await change.change(state.adminOneTimePassword, newPassword, `${newPassword}-typo`);
    await expect(page).toHaveURL(/\/change-password\?/);
    await expect(change.fieldError('confirm_password')).toBeVisible();
    await expect(change.fieldError('confirm_password')).not.toBeEmpty();
    await expect(change.forcedNotice).toBeVisible();
  });

  await test.step('a good new password opens the console', async () => {
    await change.change(state.adminOneTimePassword, newPassword);
    await expect(page).toHaveURL(/\/\?password_changed=1$/);
    await expect(new DashboardPage(page).heading).toBeVisible();
    await new ConsoleHeader(page).expectSignedInAs('admin', 'System Admin');
  });
  updateState({ adminPassword: newPassword });

  await test.step('the new password also signs in from another browser', async () => {
    // Checked in a separate browser so this session stays signed in.
    const other = await page.context().browser()!.newContext({ baseURL: state.baseURL });
    try {
      const p = await other.newPage();
      const login = new LoginPage(p);
      await login.goto();
      await login.signIn('admin', newPassword);
      await expect(p).toHaveURL(/\/$/);
      await new ConsoleHeader(p).expectSignedInAs('admin', 'System Admin');
    } finally {
      await other.close();
    }
  });

  fs.mkdirSync(path.dirname(ADMIN_STORAGE_STATE), { recursive: true });
  await page.context().storageState({ path: ADMIN_STORAGE_STATE });
});

test('setup: a plain user for the no-JavaScript login tests', async ({ adminPage }) => {
  const users = new UsersPage(adminPage);
  await users.goto();
  const nojsUser = { username: uniqueName('e2e-nojs'), password: strongPassword() };
  await users.createUser({ ...nojsUser, role: 'user', name: 'No Script' });
  await expect(users.userLink(nojsUser.username)).toBeVisible();
  updateState({ nojsUser });
});
