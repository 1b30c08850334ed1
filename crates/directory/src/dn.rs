//! Distinguished names (RFC 4514): syntax check of what administrators type.

/// Check that `s` is a syntactically valid DN: one or more RDNs separated by
/// `,`, each one or more `type=value` joined by `+`, with `\`-escapes
/// (`\,` or two hex digits) in values. Returns the problem in words.
pub fn check(s: &str) -> Result<(), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("is empty".into());
    }
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    loop {
        // attribute type: a name (letter, then letters/digits/hyphens) or an OID
        let start = i;
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        let t0 = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '-' || chars[i] == '.') {
            i += 1;
        }
        let ty: String = chars[t0..i].iter().collect();
        let ty = ty.trim();
        let valid_type = !ty.is_empty()
            && (ty.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && !ty.contains('.')
                || ty.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())));
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        if !valid_type || i >= chars.len() || chars[i] != '=' {
            let at: String = chars[start..chars.len().min(start + 20)].iter().collect();
            return Err(format!("expected attribute=value near \"{at}\""));
        }
        i += 1;
        // value, up to an unescaped , or +
        let mut len = 0;
        while i < chars.len() && chars[i] != ',' && chars[i] != '+' {
            if chars[i] == '\\' {
                let next = chars.get(i + 1).copied();
                match next {
                    Some(c) if c.is_ascii_hexdigit() && chars.get(i + 2).is_some_and(|d| d.is_ascii_hexdigit()) => i += 3,
                    Some(c) if " \"#+,;<=>\\".contains(c) => i += 2,
                    _ => return Err("has a backslash that escapes nothing valid".into()),
                }
            } else if matches!(chars[i], '"' | ';' | '<' | '>') {
                return Err(format!("has an unescaped {:?}", chars[i]));
            } else {
                i += 1;
            }
            len += 1;
        }
        if len == 0 {
            return Err(format!("has an empty value for {ty}"));
        }
        if i >= chars.len() {
            return Ok(());
        }
        i += 1; // skip , or +
        if i >= chars.len() {
            return Err("ends with a separator".into());
        }
    }
}

/// A DN in a form fit for comparison: escapes decoded (`\2C` and `\,` are
/// the same), spaces around separators dropped, lowercased. Servers return
/// DNs in their own spelling (OpenLDAP hex-escapes `,`), so compare these.
pub fn normalize(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let bytes: Vec<char> = dn.trim().chars().collect();
    let mut i = 0;
    let mut raw: Vec<u8> = Vec::new();
    let flush = |raw: &mut Vec<u8>, out: &mut String| {
        out.push_str(&String::from_utf8_lossy(raw).to_lowercase());
        raw.clear();
    };
    while i < bytes.len() {
        let c = bytes[i];
        if c == '\\' && i + 2 < bytes.len() + 1 {
            let h: String = bytes.get(i + 1..i + 3).map(|s| s.iter().collect()).unwrap_or_default();
            if h.len() == 2 && h.chars().all(|c| c.is_ascii_hexdigit()) {
                raw.push(u8::from_str_radix(&h, 16).unwrap_or(b'?'));
                i += 3;
                continue;
            }
            if let Some(n) = bytes.get(i + 1) {
                let mut buf = [0u8; 4];
                raw.extend_from_slice(n.encode_utf8(&mut buf).as_bytes());
                i += 2;
                continue;
            }
        }
        if c == ',' || c == '=' || c == '+' {
            // trailing spaces before a separator
            while raw.last() == Some(&b' ') {
                raw.pop();
            }
            flush(&mut raw, &mut out);
            out.push(if c == ',' { '\u{1}' } else { c });
            i += 1;
            while i < bytes.len() && bytes[i] == ' ' {
                i += 1;
            }
            continue;
        }
        let mut buf = [0u8; 4];
        raw.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        i += 1;
    }
    flush(&mut raw, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::{check, normalize};

    #[test]
    fn normalized_dns_compare_equal() {
        assert_eq!(
            normalize("cn=Smith\\2C John,ou=People, dc=Example,dc=com"),
            normalize("CN=smith\\, john , ou=people,dc=example,dc=com")
        );
        assert_eq!(normalize("cn=Équipe Ünïcode,ou=groups"), normalize("cn=\\C3\\89quipe \\C3\\9Cn\\C3\\AFcode,ou=groups"));
        assert_ne!(normalize("cn=a,dc=x"), normalize("cn=a\\,dc=x"));
    }

    #[test]
    fn valid_dns() {
        for dn in [
            "dc=example,dc=com",
            "cn=admin,dc=example,dc=com",
            "ou=tech, dc=example, dc=com",
            "cn=Smith\\, John (Jr.) *,ou=people,dc=example,dc=com",
            "cn=a+uid=b,dc=x",
            "2.5.4.3=x,dc=y",
            "cn=Élodie Dupré,dc=x",
            "cn=\\23hash,dc=x",
        ] {
            assert_eq!(check(dn), Ok(()), "{dn}");
        }
    }

    #[test]
    fn invalid_dns() {
        for dn in ["", "example.com", "dc=,dc=com", "dc=example,", "=x", "cn=a\\", "cn=a;b", "1cn=x", "dc=example,,dc=com"] {
            assert!(check(dn).is_err(), "{dn}");
        }
    }
}

/// Whether `dn` is `base` or below it (both as a server or an
/// administrator spelled them).
pub fn is_within(dn: &str, base: &str) -> bool {
    let (dn, base) = (normalize(dn), normalize(base));
    !base.is_empty() && (dn == base || dn.ends_with(&format!("\u{1}{base}")))
}

#[cfg(test)]
mod within_tests {
    #[test]
    fn a_dn_is_within_its_suffix_and_itself_only() {
        assert!(super::is_within("uid=a,OU=People, dc=example,dc=com", "ou=people,dc=example,dc=com"));
        assert!(super::is_within("dc=example,dc=com", "DC=example,DC=com"));
        assert!(!super::is_within("uid=a,ou=people2,dc=example,dc=com", "ou=people,dc=example,dc=com"));
        assert!(!super::is_within("uid=a,ou=xpeople,dc=example,dc=com", "people,dc=example,dc=com"));
        assert!(!super::is_within("uid=a", ""));
    }
}
