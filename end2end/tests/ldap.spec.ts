// Directory settings against a real OpenLDAP: test connection, test login,
// save, write-only password, field errors; then a directory user signs in
// through the login page and is refused once disabled in the directory.

import { LdapPage } from './fixtures/ldap-page';
import { SecurityPage } from './fixtures/security-page';
import { UserPage } from './fixtures/user-page';
import { UsersPage } from './fixtures/users-page';
import { modifyDirectory, startDirectory, stopDirectory, type Directory } from './fixtures/slapd';
import { expect, signIn, test } from './fixtures/test';

let d: Directory;
test.beforeAll(() => {
  d = startDirectory();
});
test.afterAll(() => {
  stopDirectory(d);
});

test('LDAP settings: a wrong password fails the bind step, the right one passes every step; test login; save', async ({ adminPage: page }) => {
  test.slow();
  const ldap = new LdapPage(page);
  await ldap.goto();
  await ldap.fill({
    server_uris: d.ldap_url,
    bind_dn: d.bind_dn,
    bind_password: 'not-the-password',
    search_ous: `ou=people,${d.base_dn}|ou=tech,${d.base_dn}`,
    search_filter: '(uid=%(user)s)',
    attr_map: '{"username":"uid","name":"cn","email":"mail","is_active":"userAccountControl","groups":"memberOf"}',
  });

  // Wrong bind password: the bind step fails and says why, with the LDAP code.
  await ldap.testConnection();
  await expect(ldap.probeReport).toContainText('Connection test failed');
  await expect(ldap.step('tcp')).toContainText('ok');
  await expect(ldap.step('bind')).toContainText('invalid credentials (LDAP 49)');

  // The right password: every step passes, with the number of users.
  await ldap.field('bind_password').fill(d.bind_password);
  await ldap.testConnection();
  await expect(ldap.probeReport).toContainText('Connection test passed');
  await expect(page.getByTestId('user-count')).toHaveText('8 users match the filter.');
  for (const step of ['parse', 'tcp', 'bind', 'count', 'sample']) {
    await expect(ldap.step(step)).toContainText('✓ ok');
  }

  // Test login for the locked user says locked.
  await ldap.testLogin('locked', 'Locked-Password-1');
  await expect(page.getByTestId('account-state')).toHaveText('locked');
  await expect(page.getByTestId('login-verdict')).toContainText('Would be refused');
  await ldap.testLogin('jdoe', 'Jdoe-Password-1');
  await expect(page.getByTestId('login-verdict')).toHaveText(
    'Would be let in as jdoe. No group mappings: a new user gets role User and the default organisation.',
  );
  await expect(page.getByTestId('mapped-role')).toHaveText('no mapping matches (User)');
  await expect(page.getByTestId('login-groups')).toContainText('cn=admins');

  // An invalid URI is refused with the field marked, and nothing is saved.
  await ldap.field('server_uris').fill('http://ldap.example.com');
  await ldap.save();
  await expect(ldap.fieldError('server_uris')).toContainText('must start with ldap:// or ldaps://');
  await expect(page.getByText('Nothing was saved.')).toBeVisible();
  await page.reload();
  await expect(ldap.passwordState).toHaveText('No password is set.');

  // Save for real (enabled); after a reload the password is set, never shown.
  await ldap.goto();
  await ldap.fill({
    server_uris: d.ldap_url,
    bind_dn: d.bind_dn,
    bind_password: d.bind_password,
    search_ous: `ou=people,${d.base_dn}|ou=tech,${d.base_dn}`,
    search_filter: '(uid=%(user)s)',
    attr_map: '{"username":"uid","name":"cn","email":"mail","is_active":"userAccountControl","groups":"memberOf"}',
  });
  await ldap.field('enabled').check();
  await ldap.save();
  await expect(page.getByRole('status').filter({ hasText: 'Saved.' })).toBeVisible();
  await page.reload();
  await expect(ldap.passwordState).toContainText('A password is set');
  await expect(ldap.field('bind_password')).toHaveValue('');
  expect(await page.content()).not.toContain(d.bind_password);
  await expect(ldap.field('server_uris')).toHaveValue(d.ldap_url);
});

test('a directory user signs in, is disabled in the directory and is signed out at their next request', async ({ adminPage, newSession }) => {
  // Re-check directory accounts on every request (0 minutes) for this test.
  const security = new SecurityPage(adminPage);
  await security.goto();
  await security.save({ maxFailures: 5, windowMinutes: 15, revalidateMinutes: 0 });

  const page = await newSession();
  await signIn(page, 'tina', 'Tina-Password-1');
  await expect(page.getByTestId('home-user')).toContainText('You are signed in as tina (User).');
  await page.reload();
  await expect(page.getByTestId('home-user')).toContainText('You are signed in as tina (User).');

  modifyDirectory(d, 'dn: uid=tina,ou=tech,dc=example,dc=com\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n');
  // Her next request asks the directory, which says disabled: signed out.
  await page.goto('/');
  await expect(page).toHaveURL(/\/login/);
  // And she cannot sign in again.
  const other = await newSession();
  await other.goto('/login');
  await other.getByLabel('Username').fill('tina');
  await other.getByLabel('Password').fill('Tina-Password-1');
  await other.getByRole('button', { name: 'Sign in' }).click();
  await expect(other.getByTestId('login-error')).toHaveText('Invalid username or password.');

  // The admin sees why on her page.
  const users = new UsersPage(adminPage);
  await users.openUser('tina');
  const user = new UserPage(adminPage);
  await expect(user.status).toHaveText('disabled');
  await user.explain();
  await expect(user.explainVerdict).toContainText('tina cannot sign in');
  await expect(user.fact('Account state in the directory')).toHaveText('disabled in the directory');

  await security.goto();
  await security.save({ maxFailures: 5, windowMinutes: 15, revalidateMinutes: 5 });
});

test('Explain access for a user locked in the directory says locked; the dashboard shows server health', async ({ adminPage, newSession }) => {
  const page = await newSession();
  await signIn(page, 'jdoe', 'Jdoe-Password-1');
  await expect(page.getByTestId('home-user')).toContainText('You are signed in as jdoe');

  const users = new UsersPage(adminPage);
  await users.openUser('jdoe');
  const user = new UserPage(adminPage);
  await user.explain();
  await expect(user.explainVerdict).toHaveText('jdoe can sign in.');
  await expect(user.fact('Search OU matched')).toHaveText(`ou=people,${d.base_dn}`);
  await expect(user.fact('Groups')).toContainText('cn=admins,ou=groups');

  modifyDirectory(d, 'dn: uid=jdoe,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n');
  await user.explain();
  await expect(user.explainVerdict).toContainText('jdoe cannot sign in — Account state in the directory: locked');
  await expect(user.fact('Account state in the directory')).toHaveText('locked in the directory');

  await adminPage.goto('/');
  const health = adminPage.getByTestId('health-table');
  await expect(health).toContainText(d.ldap_url);
  await expect(health.getByTestId('health-state').first()).toHaveText('up');
});

test('Fetch certificate shows the chain; trusting its CA makes ldaps:// verify', async ({ adminPage: page }) => {
  const ldap = new LdapPage(page, 'ldap-ha');
  await ldap.goto();
  await ldap.fill({
    server_uris: d.ldaps_url,
    bind_dn: d.bind_dn,
    bind_password: d.bind_password,
    search_ous: `ou=people,${d.base_dn}`,
    search_filter: '(uid=%(user)s)',
    attr_map: '{"username":"uid"}',
    ca_pem: '',
  });
  // Nothing trusted: the TLS step fails and says why.
  await ldap.testConnection();
  await expect(ldap.step('tls')).toContainText('certificate not trusted');

  await page.getByRole('button', { name: 'Fetch certificate' }).click();
  const certs = page.getByTestId('certificate');
  await expect(certs).toHaveCount(2);
  await expect(certs.first()).toContainText('CN=localhost');
  await expect(certs.nth(1)).toContainText('Bindery Test CA');
  // The fixture's certificates live 10 days: flagged on the page.
  await expect(page.getByTestId('expiring').first()).toHaveText('This certificate expires in less than 30 days.');
  await expect(certs.first()).toContainText(/SHA-256[\s\S]*[0-9A-F]{2}(:[0-9A-F]{2}){31}/);
  await page.getByRole('button', { name: 'Trust this CA' }).click();
  await expect(ldap.field('ca_pem')).toHaveValue(/-----BEGIN CERTIFICATE-----/);

  await ldap.testConnection();
  await expect(ldap.probeReport).toContainText('Connection test passed');
  await expect(ldap.step('tls')).toContainText('chain and host name verified');
});
