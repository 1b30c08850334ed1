// Runs in the `no-js` project (JavaScript disabled): the login and password
// forms are plain HTML forms and must work without the WASM app.

import { ChangePasswordPage } from './fixtures/change-password-page';
import { adminPassword, readState, strongPassword } from './fixtures/env';
import { LoginPage } from './fixtures/login-page';
import { expect, test } from './fixtures/test';

test('without JavaScript: a wrong password is refused, the right one signs in', async ({ page, javaScriptEnabled, context }) => {
  expect(javaScriptEnabled, 'this file belongs to the no-js project').toBe(false);
  const user = readState().nojsUser;
  if (!user) throw new Error('the setup project did not create the no-JavaScript user');
  const login = new LoginPage(page);

  await test.step('a wrong password shows the generic error', async () => {
    await login.goto();
    await login.signIn(user.username, 'not-the-password');
    await login.expectFailed();
    expect((await context.cookies()).find((c) => c.name === 'bindery_session')).toBeUndefined();
  });

  await test.step('the right (one-time) password signs in and asks for a new password', async () => {
    await login.signIn(user.username, user.password);
    await expect(login.error).toHaveCount(0);
    await expect(page).toHaveURL(/\/change-password$/);
    const session = (await context.cookies()).find((c) => c.name === 'bindery_session');
    expect(session?.httpOnly).toBe(true);
  });

  const newPassword = strongPassword();
  await test.step('the password change works without JavaScript too', async () => {
    const change = new ChangePasswordPage(page);
    await change.change(user.password, newPassword, `${newPassword}x`);
    await expect(change.fieldError('confirm_password')).toBeVisible();
    await change.change(user.password, newPassword);
    await expect(page).toHaveURL(/\/\?password_changed=1$/);
  });

  await test.step('the session is real and no longer forced: /login sends us to /', async () => {
    // Signed-in people are sent from /login to the console; people who still
    // must change their password would be sent to /change-password instead.
    await page.goto('/login');
    await expect(page).toHaveURL(/\/$/);
  });
});

test('without JavaScript: the admin signs in with the password set in setup', async ({ page }) => {
  const login = new LoginPage(page);
  await login.goto('/settings/security');
  await login.signIn('admin', adminPassword());
  await expect(login.error).toHaveCount(0);
  await expect(page).toHaveURL(/\/settings\/security$/);
  await expect(page.getByRole('heading', { level: 1, name: 'Settings' })).toBeVisible();
});
