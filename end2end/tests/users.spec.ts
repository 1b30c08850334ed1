// An admin creates a user; the user signs in, must change the one-time
// password, sees the plain home page; the admin disables them; they can no
// longer sign in.

import { ConsoleHeader, HomePage } from './fixtures/console';
import { adminPassword, strongPassword, uniqueName } from './fixtures/env';
import { LoginPage } from './fixtures/login-page';
import { firstSignIn, expect, signIn, test } from './fixtures/test';
import { UserPage } from './fixtures/user-page';
import { UsersPage } from './fixtures/users-page';

test('a new user signs in, changes the one-time password, and is locked out once disabled', async ({ page, state }) => {
  test.slow(); // several browsers, sign-ins and Argon2 hashes on a small machine
  const header = new ConsoleHeader(page);
  const users = new UsersPage(page);
  const jane = { username: uniqueName('e2e-jane'), password: strongPassword() };
  const janeNewPassword = strongPassword();

  await test.step('the admin creates the user', async () => {
    await signIn(page, 'admin', adminPassword(state));
    await header.expectSignedInAs('admin', 'System Admin');
    await users.goto();
    await users.createUser({ ...jane, role: 'user', name: 'Jane E2E', email: `${jane.username}@example.org` });
    await expect(users.userCell(jane.username, 'User')).toBeVisible();
    await expect(users.userCell(jane.username, 'active')).toBeVisible();
    await header.signOut();
  });

  await test.step('the user signs in and must change the one-time password', async () => {
    await firstSignIn(page, jane.username, jane.password, janeNewPassword);
    await expect(new HomePage(page).greeting).toHaveText(`You are signed in as ${jane.username} (User).`);
    await header.expectSignedInAs(jane.username, 'User');
    // Plain users do not get the administrative navigation.
    await expect(header.mainNav.getByRole('link', { name: 'Users' })).toHaveCount(0);
    await header.signOut();
  });

  await test.step('the admin disables the user', async () => {
    await signIn(page, 'admin', adminPassword(state));
    await users.openUser(jane.username);
    const user = new UserPage(page);
    await user.expectShown(jane.username);
    await expect(user.status).toHaveText('active');
    await user.disable();
    await expect(user.enableButton).toBeVisible();
    // Still disabled after a fresh load (it was saved, not just displayed).
    await page.reload();
    await expect(user.status).toHaveText('disabled');
    await header.signOut();
  });

  await test.step('the disabled user cannot sign in and gets the generic message', async () => {
    const login = new LoginPage(page);
    await login.goto();
    await login.signIn(jane.username, janeNewPassword);
    await login.expectFailed();
    await expect(page.getByTestId('home-user')).toHaveCount(0);
  });
});
