#!/usr/bin/env python3
"""Write the seed LDIF of the Bindery test directory to stdout.

Usage: gen-seed.py SERVICE_PASSWORD [EXTRA_USERS]

The memberOf values are written here because slapadd bypasses overlays: the
memberof overlay only maintains memberOf for changes made through slapd.
"""
import base64
import hashlib
import os
import sys
import uuid

BASE = "dc=example,dc=com"
PEOPLE = f"ou=people,{BASE}"
TECH = f"ou=tech,{BASE}"
GROUPS = f"ou=groups,{BASE}"
SERVICES = f"ou=services,{BASE}"
POLICIES = f"ou=policies,{BASE}"


def ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def line(attr: str, value: str) -> str:
    """An LDIF line; base64 (`::`) when the value is not a plain safe string."""
    raw = value.encode("utf-8")
    safe = (
        raw.isascii()
        and value != ""
        and value[0] not in " :<"
        and value[-1] != " "
        and "\n" not in value
        and "\r" not in value
        and "\0" not in value
    )
    if safe:
        return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(raw).decode('ascii')}"


# SLAPD_UUID_SEED set: every entry's entryUUID is derived from the seed and
# its DN, so two directories started with the same seed hold the same
# entries under the same ids, like a replicated pair (LDAP HA).
UUID_SEED = os.environ.get("SLAPD_UUID_SEED", "")


def entry(dn: str, attrs: list) -> str:
    out = [line("dn", dn)]
    if UUID_SEED:
        out.append(line("entryUUID", str(uuid.uuid5(uuid.NAMESPACE_URL, f"{UUID_SEED}/{dn}"))))
    for attr, value in attrs:
        out.append(line(attr, value))
    return "\n".join(out) + "\n\n"


def main() -> None:
    service_password = sys.argv[1]
    extra = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else 0

    admins = f"cn=admins,{GROUPS}"
    developers = f"cn=developers,{GROUPS}"
    equipe = f"cn=Équipe Ünïcode,{GROUPS}"

    w = sys.stdout.write
    w(entry(BASE, [("objectClass", "top"), ("objectClass", "dcObject"),
                   ("objectClass", "organization"), ("dc", "example"), ("o", "Example Corp")]))
    for ou in ("people", "tech", "groups", "services", "policies"):
        w(entry(f"ou={ou},{BASE}", [("objectClass", "organizationalUnit"), ("ou", ou)]))
    # A referral object (RFC 3296) inside a search OU: a subtree search of
    # ou=people answers with a continuation reference to it, which Bindery
    # must never follow. Its `ref` points at nothing here; a test can point
    # it at a server of its own (ldapmodify -M, the ManageDsaIT control).
    w(entry(f"ou=partners,{PEOPLE}", [
        ("objectClass", "referral"), ("objectClass", "extensibleObject"), ("ou", "partners"),
        ("ref", f"ldap://127.0.0.1:9/ou=partners,{BASE}"),
    ]))

    # Password policies (ppolicy overlay; schema built into the 2.5 module).
    w(entry(f"cn=default,{POLICIES}", [
        ("objectClass", "organizationalRole"), ("objectClass", "pwdPolicy"),
        ("cn", "default"), ("pwdAttribute", "userPassword"),
        ("pwdLockout", "TRUE"), ("pwdMaxFailure", "5"),
        ("pwdLockoutDuration", "0"), ("pwdFailureCountInterval", "0"),
    ]))
    # Service accounts must not be locked out by tests that use a wrong password.
    w(entry(f"cn=services,{POLICIES}", [
        ("objectClass", "organizationalRole"), ("objectClass", "pwdPolicy"),
        ("cn", "services"), ("pwdAttribute", "userPassword"), ("pwdLockout", "FALSE"),
    ]))
    # For accounts whose password an administrator reset (pwdReset): they must
    # change it first. Tests add such a user when they need one.
    w(entry(f"cn=mustchange,{POLICIES}", [
        ("objectClass", "organizationalRole"), ("objectClass", "pwdPolicy"),
        ("cn", "mustchange"), ("pwdAttribute", "userPassword"), ("pwdMustChange", "TRUE"),
        ("pwdLockout", "FALSE"),
    ]))
    w(entry(f"cn=bindery,{SERVICES}", [
        ("objectClass", "applicationProcess"), ("objectClass", "simpleSecurityObject"),
        ("cn", "bindery"), ("description", "Bindery read-only service account"),
        ("userPassword", ssha(service_password)),
        ("pwdPolicySubentry", f"cn=services,{POLICIES}"),
    ]))

    def user(parent, uid, password, *, cn, sn, given=None, mail=None, uac=512,
             rdn=None, member_of=(), extra_attrs=()):
        dn = rdn + "," + parent if rdn else f"uid={uid},{parent}"
        attrs = [("objectClass", "inetOrgPerson"), ("objectClass", "binderyADUser"),
                 ("uid", uid), ("cn", cn), ("sn", sn)]
        if given:
            attrs.append(("givenName", given))
        attrs.append(("displayName", cn))
        if mail:
            attrs.append(("mail", mail))
        attrs += [("sAMAccountName", uid), ("userPrincipalName", f"{uid}@example.com"),
                  ("userAccountControl", str(uac)), ("userPassword", ssha(password))]
        attrs += list(extra_attrs)
        attrs += [("memberOf", g) for g in member_of]
        w(entry(dn, attrs))
        return dn

    jdoe = user(PEOPLE, "jdoe", "Jdoe-Password-1", cn="John Doe", sn="Doe", given="John",
                mail="jdoe@example.com", member_of=[admins])
    user(PEOPLE, "nomail", "Nomail-Password-1", cn="No Mail", sn="Mail", given="No")
    elodie = user(PEOPLE, "élodie", "Pässwörd-É-1", cn="Élodie Dupré", sn="Dupré",
                  given="Élodie", mail="elodie@example.com", member_of=[equipe])
    user(PEOPLE, "jsmith", "Jsmith-Password-1", cn="Smith, John (Jr.) *", sn="Smith",
         given="John", mail="jsmith@example.com", rdn=r"cn=Smith\, John (Jr.) *")
    user(PEOPLE, "locked", "Locked-Password-1", cn="Locked User", sn="User", given="Locked",
         mail="locked@example.com", extra_attrs=[("pwdAccountLockedTime", "000001010000Z")])
    user(PEOPLE, "disabled", "Disabled-Password-1", cn="Disabled User", sn="User",
         given="Disabled", mail="disabled@example.com", uac=514)
    tina = user(TECH, "tina", "Tina-Password-1", cn="Tina Tech", sn="Tech", given="Tina",
                mail="tina@example.com", member_of=[developers])
    user(TECH, "tom", "Tom-Password-1", cn="Tom Tech", sn="Tech", given="Tom",
         mail="tom@example.com")

    # Groups; the nested group admins is itself memberOf developers (as the overlay does).
    w(entry(admins, [("objectClass", "groupOfNames"), ("cn", "admins"),
                     ("description", "Administrators"), ("member", jdoe),
                     ("memberOf", developers)]))
    w(entry(developers, [("objectClass", "groupOfNames"), ("cn", "developers"),
                         ("description", "Developers (contains the admins group)"),
                         ("member", tina), ("member", admins)]))
    w(entry(equipe, [("objectClass", "groupOfNames"), ("cn", "Équipe Ünïcode"),
                     ("description", "Non-ASCII group name"), ("member", elodie)]))

    # Bulk users for benchmarks: cheap plaintext password.
    chunk = []
    for i in range(1, extra + 1):
        u = f"user{i:06d}"
        dn = f"uid={u},{PEOPLE}"
        uid = f"entryUUID: {uuid.uuid5(uuid.NAMESPACE_URL, f'{UUID_SEED}/{dn}')}\n" if UUID_SEED else ""
        chunk.append(
            f"dn: {dn}\n{uid}objectClass: inetOrgPerson\nobjectClass: binderyADUser\n"
            f"uid: {u}\ncn: User {i:06d}\nsn: {i:06d}\ngivenName: User\n"
            f"mail: {u}@example.com\nsAMAccountName: {u}\n"
            f"userPrincipalName: {u}@example.com\nuserAccountControl: 512\n"
            f"userPassword: User-Password-1\n\n")
        if len(chunk) >= 10000:
            w("".join(chunk))
            chunk.clear()
    w("".join(chunk))


if __name__ == "__main__":
    main()
