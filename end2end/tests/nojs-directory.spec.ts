// Runs in the `no-js` project: the directory settings form without
// JavaScript, against a real OpenLDAP. Test connection, Test login and
// Fetch certificate post the unsaved values and answer with the page and
// the result in words (the LDAP code included); a bad value is named and
// nothing is saved. Uses LDAP HA, which no other spec configures.

import type { Page } from '@playwright/test';

import { LdapPage } from './fixtures/ldap-page';
import { startDirectory, stopDirectory, type Directory } from './fixtures/slapd';
import { expect, test } from './fixtures/test';

let d: Directory;
test.beforeAll(() => {
  d = startDirectory();
});
test.afterAll(() => {
  stopDirectory(d);
});

async function open(page: Page, bindPassword: string): Promise<LdapPage> {
  const ldap = new LdapPage(page, 'ldap-ha');
  await page.goto('/settings/ldap-ha');
  await ldap.fill({
    server_uris: d.ldap_url,
    bind_dn: d.bind_dn,
    bind_password: bindPassword,
    search_ous: `ou=people,${d.base_dn}|ou=tech,${d.base_dn}`,
    search_filter: '(uid=%(user)s)',
    attr_map: '{"username":"uid","name":"cn","email":"mail","is_active":"userAccountControl","groups":"memberOf"}',
  });
  return ldap;
}

async function click(page: Page, ldap: LdapPage, button: string): Promise<void> {
  const nav = page.waitForNavigation();
  await ldap.form.getByRole('button', { name: button, exact: true }).click();
  await nav;
  await expect(page).toHaveURL(/\/settings\/ldap-ha$/);
  expect(await page.evaluate(() => document.contentType), 'a page, not JSON').toBe('text/html');
}

test.beforeEach(async ({ javaScriptEnabled }) => {
  expect(javaScriptEnabled, 'this file belongs to the no-js project').toBe(false);
});

test('without JavaScript: Test connection says which step failed and why, then passes', async ({ adminPage: page }) => {
  test.slow();
  let ldap = await open(page, 'not-the-password');
  await click(page, ldap, 'Test connection');
  await expect(page.getByTestId('flash')).toContainText('Connection test failed');
  await expect(page.getByTestId('flash')).toContainText(/bind step: .*invalid credentials \(LDAP 49\)/);
  await expect(page.getByTestId('flash')).toHaveAttribute('role', 'alert');

  ldap = await open(page, d.bind_password);
  await click(page, ldap, 'Test connection');
  await expect(page.getByTestId('flash')).toHaveText(/Connection test passed: every server answered; 8 users match the filter\./);

  ldap = await open(page, d.bind_password);
  await ldap.form.locator('[name="test_username"]').fill('locked');
  await ldap.form.locator('[name="test_password"]').fill('Locked-Password-1');
  await click(page, ldap, 'Test login');
  await expect(page.getByTestId('flash')).toContainText('Would be refused');
  await expect(page.getByTestId('flash')).toHaveAttribute('role', 'alert');

  ldap = await open(page, d.bind_password);
  await ldap.field('server_uris').fill(d.ldaps_url);
  await click(page, ldap, 'Fetch certificate');
  await expect(page.getByTestId('flash')).toContainText('SHA-256');
});

test('without JavaScript: a bad server URI is named and nothing is saved', async ({ adminPage: page }) => {
  const ldap = await open(page, d.bind_password);
  await ldap.field('server_uris').fill('http://ldap.example.com');
  await click(page, ldap, 'Save');
  await expect(page.getByTestId('flash').locator('li[data-field="server_uris"]')).toContainText('ldap://');
  await expect(ldap.field('server_uris')).not.toHaveValue('http://ldap.example.com');
});
