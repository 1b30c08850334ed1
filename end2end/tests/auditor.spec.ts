// An auditor may read the administrative pages but change nothing: no
// create/edit/delete controls, and the server refuses changes with 403.

import { ConsoleHeader, DashboardPage } from './fixtures/console';
import { strongPassword, uniqueName } from './fixtures/env';
import { firstSignIn, expect, test } from './fixtures/test';
import { UserPage } from './fixtures/user-page';
import { UsersPage } from './fixtures/users-page';

test('an auditor sees users but cannot create, disable or delete them', async ({ adminPage, page, state }) => {
  test.slow(); // several browsers, sign-ins and Argon2 hashes on a small machine
  const auditor = { username: uniqueName('e2e-audrey'), password: strongPassword() };
  const someone = { username: uniqueName('e2e-target'), password: strongPassword() };
  const refused = uniqueName('e2e-refused');

  await test.step('the admin creates an auditor and a user', async () => {
    const users = new UsersPage(adminPage);
    await users.goto();
    await users.createUser({ ...auditor, role: 'auditor', name: 'Audrey Auditor' });
    await users.createUser({ ...someone, role: 'user' });
    await expect(users.userCell(auditor.username, 'System Auditor')).toBeVisible();
  });

  await test.step('the auditor signs in (forced change) and sees the dashboard', async () => {
    await firstSignIn(page, auditor.username, auditor.password, strongPassword());
    await expect(new DashboardPage(page).heading).toBeVisible();
    await new ConsoleHeader(page).expectSignedInAs(auditor.username, 'System Auditor');
  });

  const users = new UsersPage(page);
  await test.step('the users page has the list but no "Create a user" form', async () => {
    await users.goto();
    await page.waitForLoadState('load');
    await expect(users.userLink(auditor.username)).toBeVisible();
    await expect(users.createForm).toHaveCount(0);
    await expect(page.getByRole('heading', { name: 'Create a user' })).toHaveCount(0);
    await expect(page.getByRole('button', { name: 'Create user' })).toHaveCount(0);
  });

  await test.step('a user page has the facts but no Disable / Delete / Edit controls', async () => {
    await users.openUser(someone.username);
    const user = new UserPage(page);
    await user.expectShown(someone.username);
    await expect(user.status).toHaveText('active');
    await page.waitForLoadState('load');
    await expect(user.disableButton).toHaveCount(0);
    await expect(user.deleteButton).toHaveCount(0);
    await expect(user.resetPasswordButton).toHaveCount(0);
    await expect(user.editForm).toHaveCount(0);
  });

  await test.step('a direct create_user call from the auditor is refused with 403', async () => {
    const response = await page.request.post('/rpc/create_user', {
      headers: { Origin: state.baseURL },
      form: {
        username: refused,
        name: 'Should Not Exist',
        email: '',
        role: 'admin',
        password: strongPassword(),
      },
      maxRedirects: 0,
    });
    expect(response.status()).toBe(403);
  });

  await test.step('and nothing was created', async () => {
    const adminUsers = new UsersPage(adminPage);
    await adminUsers.goto(refused);
    await expect(adminPage.getByTestId('total')).toHaveText('Total 0');
    await expect(adminUsers.userLink(refused)).toHaveCount(0);
  });
});
