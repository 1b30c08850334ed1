// One identity lifecycle (issue 14): the directory's group mapping decides
// the role at every sign-in (a person removed from the admin group is a User
// again), and a reused username is a conflict an administrator resolves with
// "Relink to this entry".

import { waitForHydration } from './fixtures/hydration';
import { modifyDirectory, startDirectory, stopDirectory, type Directory } from './fixtures/slapd';
import { ADMIN_STORAGE_STATE, BASE_URL } from './fixtures/env';
import { LoginPage } from './fixtures/login-page';
import { UsersPage } from './fixtures/users-page';
import { expect, signIn, test } from './fixtures/test';

const headers = { Origin: BASE_URL };
let d: Directory;

test.beforeAll(() => {
  d = startDirectory();
});

test.afterAll(async ({ browser }) => {
  // Leave nothing behind for the other specs (their directories have other entryUUIDs).
  const context = await browser.newContext({ baseURL: BASE_URL, storageState: ADMIN_STORAGE_STATE });
  const list = await (await context.request.get('/api/v1/users?q=tom')).json();
  for (const u of list.items ?? []) {
    if (u.username === 'tom') await context.request.delete(`/api/v1/users/${u.id}`, { headers });
  }
  await context.request.delete('/api/v1/directories/ldap', { headers });
  await context.close();
  stopDirectory(d);
});

const admins = () => `cn=admins,ou=groups,${d.base_dn}`;
// tom: no other spec signs tom in, so nothing here can collide with them.
const tom = () => `uid=tom,ou=tech,${d.base_dn}`;
const jdoe = () => `uid=jdoe,ou=people,${d.base_dn}`;

test('removed from the mapped admin group in the directory, the user is a User at the next sign-in', async ({ adminPage, newSession }) => {
  test.slow();
  const saved = await adminPage.request.put('/api/v1/directories/ldap', {
    headers,
    data: {
      enabled: true,
      server_uris: [d.ldap_url],
      bind_dn: d.bind_dn,
      bind_password: d.bind_password,
      search_ous: `ou=people,${d.base_dn}|ou=tech,${d.base_dn}`,
      search_filter: '(uid=%(user)s)',
      attr_map: '{"username":"uid","name":"cn","email":"mail","is_active":"userAccountControl","groups":"memberOf"}',
      nested_groups: false,
      group_mappings: [{ group_dn: admins(), role: 'admin', organisations: [] }],
    },
  });
  expect(saved.status(), await saved.text()).toBe(200);

  // tom joins the mapped admin group (jdoe stays: a group needs a member).
  modifyDirectory(d, `dn: ${admins()}\nchangetype: modify\nreplace: member\nmember: ${jdoe()}\nmember: ${tom()}\n`);
  const users = new UsersPage(adminPage);
  const person = await newSession();
  await signIn(person, 'tom', 'Tom-Password-1');
  await users.goto('tom');
  await expect(users.userCell('tom', 'System Admin')).toBeVisible();

  // The directory's admin takes tom out of the group; tom signs in again.
  modifyDirectory(d, `dn: ${admins()}\nchangetype: modify\nreplace: member\nmember: ${jdoe()}\n`);
  await signIn(await newSession(), 'tom', 'Tom-Password-1');
  await users.goto('tom');
  await expect(users.userCell('tom', 'User')).toBeVisible();
  await expect(users.userCell('tom', 'System Admin')).toHaveCount(0);
});

test('a reused username shows as a conflict in the import table until an administrator relinks the account', async ({ adminPage: page, newSession }) => {
  test.slow();
  // tom leaves; a new person gets the name (a new entryUUID).
  modifyDirectory(d, `dn: ${tom()}\nchangetype: delete\n`);
  modifyDirectory(
    d,
    `dn: ${tom()}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: tom\ncn: Tom New\nsn: New\nmail: tom.new@example.com\nuserPassword: New-Tom-Password-1\n`,
  );

  await page.goto('/import?dir=ldap');
  await waitForHydration(page, { forms: true });
  await page.getByRole('button', { name: 'Sync users' }).click();
  await expect(page.getByTestId('fetch-state')).toHaveAttribute('data-state', 'done');
  await page.goto('/import?dir=ldap&q=tom&status=conflict');
  const row = page.getByTestId('staged-table').locator('tr[data-username="tom"]');
  await expect(row.getByTestId('staged-status')).toHaveText(/^conflict/);
  await expect(row).toContainText('linked to another directory entry');

  // The new person cannot sign in as the old account.
  const stranger = new LoginPage(await newSession());
  await stranger.goto();
  await stranger.signIn('tom', 'New-Tom-Password-1');
  await expect(stranger.error).toBeVisible();

  // The administrator relinks on the user page; then the new person signs in.
  const users = new UsersPage(page);
  await users.openUser('tom');
  await waitForHydration(page, { forms: true });
  await page.getByRole('button', { name: 'Relink to this entry' }).click();
  await expect(page.getByTestId('relinked')).toContainText('every session and token was revoked');
  await signIn(await newSession(), 'tom', 'New-Tom-Password-1');
});
