// Runs in the `no-js` project: the rest of the console's forms without
// JavaScript — Sync users and Import on the import page, a held sync run
// approved, a directory user relinked, a locked user unlocked, a user
// deleted, an API token revoked. Each answers with a page (never JSON) and
// the result in words. Uses LDAP HA with an OU of its own in a slapd of its
// own.

import type { Locator, Page } from '@playwright/test';

import { BASE_URL, strongPassword, uniqueName } from './fixtures/env';
import { modifyDirectory, saveAsLdapHa, startDirectory, stopDirectory, type Directory } from './fixtures/slapd';
import { expect, test } from './fixtures/test';

const OU = 'e2enojsact';
let d: Directory;
test.beforeAll(() => {
  d = startDirectory();
  let ldif = `dn: ou=${OU},${d.base_dn}\nchangetype: add\nobjectClass: organizationalUnit\nou: ${OU}\n\n`;
  for (const u of ['nja1', 'nja2', 'nja3', 'nja4']) {
    ldif += `dn: uid=${u},ou=${OU},${d.base_dn}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: ${u}\ncn: ${u}\nsn: NoJs\nmail: ${u}@example.com\nuserPassword: Nja-Password-1\n\n`;
  }
  modifyDirectory(d, ldif);
});
test.afterAll(() => {
  stopDirectory(d);
});

async function submit(page: Page, scope: Locator | Page, button: string): Promise<void> {
  const nav = page.waitForNavigation();
  await scope.getByRole('button', { name: button, exact: true }).click();
  await nav;
  expect(await page.evaluate(() => document.contentType), 'a page, not JSON').toBe('text/html');
}

async function runState(page: Page, id: number, want: string): Promise<void> {
  await expect
    .poll(async () => (await (await page.request.get(`/api/v1/sync/runs/${id}`)).json()).run.state, { timeout: 30_000 })
    .toBe(want);
}

async function userId(page: Page, username: string): Promise<number> {
  const list = await (await page.request.get(`/api/v1/users?q=${username}&per_page=100`)).json();
  const u = list.items.find((x: { username: string }) => x.username === username);
  expect(u, `${username} exists`).toBeTruthy();
  return u.id as number;
}

test.beforeEach(async ({ javaScriptEnabled }) => {
  expect(javaScriptEnabled, 'this file belongs to the no-js project').toBe(false);
});

test('without JavaScript: Sync users and Import on the import page, then a held run approved', async ({ adminPage: page }) => {
  test.slow();
  const headers = { Origin: BASE_URL };
  await saveAsLdapHa(page.request, d, BASE_URL, { search_ous: `ou=${OU},${d.base_dn}`, attr_map: '{"username":"uid","name":"cn","email":"mail"}' });
  const off = await page.request.put('/api/v1/directories/ldap_ha/sync/settings', { headers, data: { disable_missing: false, threshold_percent: 10 } });
  expect(off.status(), await off.text()).toBe(200);

  await page.goto('/import?dir=ldap_ha');
  await submit(page, page.getByRole('form', { name: 'Sync users' }), 'Sync users');
  await expect(page).toHaveURL(/\/import\?dir=ldap_ha$/);
  await expect(page.getByTestId('flash')).toContainText('Sync users started');
  await expect
    .poll(async () => (await (await page.request.get('/api/v1/directories/ldap_ha/users/fetch')).json())?.state, { timeout: 30_000 })
    .toBe('done');

  await page.goto('/import?dir=ldap_ha&q=nja&status=new');
  await expect(page.getByTestId('staged-total')).toHaveText('Total 4');
  const form = page.getByRole('form', { name: 'Import users' });
  await form.getByRole('checkbox', { name: 'Select nja1' }).check();
  await form.getByRole('checkbox', { name: 'Select nja2' }).check();
  await submit(page, form, 'Import');
  await expect(page).toHaveURL(/\/import\?dir=ldap_ha/);
  await expect(page.getByTestId('flash')).toHaveText('Import finished: 2 created, 0 updated, 0 unchanged, 0 failed.');
  await expect(page.getByTestId('staged-total')).toHaveText('Total 2');

  // Everything else in: two of four then leave with disabling on → held;
  // approved without JavaScript, and applied.
  const all = page.getByRole('form', { name: 'Import users' });
  await all.getByRole('checkbox', { name: /^Import all 2 matching rows/ }).check();
  await submit(page, all, 'Import');
  await expect(page.getByTestId('flash')).toHaveText('Import finished: 2 created, 0 updated, 0 unchanged, 0 failed.');
  const on = await page.request.put('/api/v1/directories/ldap_ha/sync/settings', { headers, data: { disable_missing: true, threshold_percent: 10 } });
  expect(on.status(), await on.text()).toBe(200);
  modifyDirectory(d, `dn: uid=nja3,ou=${OU},${d.base_dn}\nchangetype: delete\n\ndn: uid=nja4,ou=${OU},${d.base_dn}\nchangetype: delete\n`);
  const started = await page.request.post('/api/v1/directories/ldap_ha/sync', { headers, data: {} });
  expect(started.status(), await started.text()).toBe(202);
  const held = (await started.json()).id as number;
  await runState(page, held, 'held');
  await page.goto(`/sync/runs/${held}`);
  await submit(page, page.getByRole('form', { name: 'Approve' }), 'Approve and apply');
  await expect(page).toHaveURL(new RegExp(`/sync/runs/${held}$`));
  await expect(page.getByTestId('flash')).toContainText('Approved');
  await runState(page, held, 'done');
  const gone = await (await page.request.get(`/api/v1/users/${await userId(page, 'nja3')}`)).json();
  expect(gone.is_active, 'the approved run disabled nja3').toBe(false);
});

test('without JavaScript: relink, unlock, delete a user, revoke a token', async ({ adminPage: page, browser }) => {
  test.slow();
  // nja1 was imported by the test above (or sign in creates them now).
  const id = await userId(page, 'nja1').catch(async () => {
    const r = await page.request.post('/api/v1/authn/ldap/nja1/authenticate', { data: { password: 'Nja-Password-1' } });
    expect(r.status(), await r.text()).toBe(200);
    return userId(page, 'nja1');
  });
  // The entry is deleted and created again: same name, a new entryUUID, so
  // the account is linked to an entry that no longer exists.
  const dn = `uid=nja1,ou=${OU},${d.base_dn}`;
  modifyDirectory(
    d,
    `dn: ${dn}\nchangetype: delete\n\ndn: ${dn}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: nja1\ncn: nja1\nsn: NoJs\nmail: nja1@example.com\nuserPassword: Nja-Password-1\n\n`,
  );
  await page.goto(`/users/${id}`);
  await submit(page, page.getByRole('form', { name: 'Relink to the directory entry' }), 'Relink to this entry');
  await expect(page).toHaveURL(new RegExp(`/users/${id}$`));
  await expect(page.getByTestId('flash')).toContainText('Relinked');

  // A local user locked by five wrong passwords, unlocked from their page.
  const victim = uniqueName('nojs-lock');
  const created = await page.request.post('/api/v1/users', {
    headers: { Origin: BASE_URL },
    data: { username: victim, password: strongPassword() },
  });
  expect(created.status(), await created.text()).toBe(201);
  const vid = (await created.json()).id as number;
  const anon = await browser.newContext({ javaScriptEnabled: false, baseURL: BASE_URL });
  for (let i = 0; i < 5; i++) {
    const r = await anon.request.post('/rpc/login', {
      // A browser's form post: leptos answers a page's form with a redirect.
      headers: { Origin: BASE_URL, Accept: 'text/html' },
      form: { username: victim, password: 'wrong-password' },
      maxRedirects: 0,
    });
    expect([302, 303], 'refused: back to the login page').toContain(r.status());
  }
  await anon.close();
  await expect.poll(async () => (await (await page.request.get(`/api/v1/users/${vid}`)).json()).locked).toBe(true);
  await page.goto(`/users/${vid}`);
  await submit(page, page, 'Unlock');
  await expect(page.getByTestId('flash')).toHaveText('Unlocked.');
  const locks = await (await page.request.get('/api/v1/lockouts')).json();
  expect(locks.map((l: { key: string }) => l.key)).not.toContain(`user:${victim}`);
  // The address' own counter (these five failures) is cleared for the
  // tests that follow.
  await page.request.delete(`/api/v1/lockouts/${encodeURIComponent('ip:127.0.0.1')}`, { headers: { Origin: BASE_URL } });

  // Delete the user: back to the user list, which no longer has them.
  await page.goto(`/users/${vid}`);
  await submit(page, page, 'Delete');
  await expect(page).toHaveURL(/\/users$/);
  await expect(page.getByRole('link', { name: victim, exact: true })).toHaveCount(0);
  expect((await page.request.get(`/api/v1/users/${vid}`)).status()).toBe(404);

  // An API token created, then revoked from its row.
  const name = uniqueName('nojs-tok');
  const tok = await page.request.post('/api/v1/tokens', { headers: { Origin: BASE_URL }, data: { name } });
  expect(tok.status(), await tok.text()).toBe(201);
  await page.goto('/settings/tokens');
  const row = page.getByRole('row').filter({ hasText: name });
  await submit(page, row, 'Revoke');
  await expect(page).toHaveURL(/\/settings\/tokens$/);
  await expect(page.getByTestId('flash')).toHaveText('Token revoked.');
  await expect(page.getByRole('row').filter({ hasText: name })).toContainText('revoked');
});
