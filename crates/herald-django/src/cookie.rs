//! `django.http.parse_cookie`, which Channels' `CookieMiddleware` applies to the **first**
//! `Cookie` header of the handshake.
//!
//! Split on `;`; split each chunk on its first `=` (a chunk without `=` is a value with the empty
//! name); strip both parts; skip chunks where both are empty; unquote the value with Python's
//! `http.cookies._unquote`; a later duplicate name overwrites an earlier one.

/// The value of cookie `name` in a `Cookie` header, parsed exactly like Django does.
///
/// ```
/// use herald_django::cookie::cookie_value;
/// let header = "csrftoken=abc; sessionid=k1; sessionid=k2";
/// assert_eq!(cookie_value(header, "sessionid").as_deref(), Some("k2"));
/// assert_eq!(cookie_value(header, "missing"), None);
/// ```
pub fn cookie_value(header: &str, name: &str) -> Option<String> {
    let mut found = None;
    for chunk in header.split(';') {
        let (key, value) = chunk.split_once('=').unwrap_or(("", chunk));
        let (key, value) = (py_strip(key), py_strip(value));
        if (key.is_empty() && value.is_empty()) || key != name {
            continue;
        }
        // Later duplicates overwrite earlier ones (a dict assignment in Python).
        found = Some(unquote(value));
    }
    found
}

/// Python's `str.strip()` with no argument strips Unicode whitespace, like `char::is_whitespace`
/// (plus the ASCII separators \x1c-\x1f, which Python also counts as whitespace).
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// Decodes raw header bytes as latin-1, like Channels' `CookieMiddleware` (every byte is one
/// code point), for servers that hold the `Cookie` header as bytes.
///
/// ```
/// use herald_django::cookie::latin1;
/// assert_eq!(latin1(b"sessionid=abc\xe9"), "sessionid=abc\u{e9}");
/// ```
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// `http.cookies._unquote`: a value wrapped in double quotes loses them, and inside, `\ooo`
/// (first digit 0-3) becomes that octal code point and `\c` becomes `c`.
fn unquote(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 2 || chars[0] != '"' || chars[chars.len() - 1] != '"' {
        return value.to_owned();
    }
    let inner = &chars[1..chars.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c == '\\' {
            let octal = inner.get(i + 1..i + 4).and_then(|d| {
                let ok = ('0'..='3').contains(&d[0])
                    && ('0'..='7').contains(&d[1])
                    && ('0'..='7').contains(&d[2]);
                ok.then(|| {
                    let n = d
                        .iter()
                        .fold(0u32, |acc, c| acc * 8 + (*c as u32 - '0' as u32));
                    char::from_u32(n).unwrap_or('\u{fffd}')
                })
            });
            if let Some(ch) = octal {
                out.push(ch);
                i += 4;
                continue;
            }
            // Python's `[\\].` does not match a newline, and a lone trailing backslash stays.
            if let Some(&next) = inner.get(i + 1)
                && next != '\n'
            {
                out.push(next);
                i += 2;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cookie_among_others_with_spaces() {
        let h = "csrftoken=x;  sessionid = abcdefgh12345678 ; theme=dark";
        assert_eq!(
            cookie_value(h, "sessionid").as_deref(),
            Some("abcdefgh12345678")
        );
        assert_eq!(cookie_value(h, "theme").as_deref(), Some("dark"));
    }

    #[test]
    fn later_duplicate_wins() {
        assert_eq!(cookie_value("a=1; a=2", "a").as_deref(), Some("2"));
    }

    #[test]
    fn splits_on_first_equals_only() {
        // A signed_cookies session value contains ':' and may end with base64 chars, never '=',
        // but other cookies may; the value keeps every '=' after the first.
        assert_eq!(cookie_value("a=b=c==", "a").as_deref(), Some("b=c=="));
    }

    #[test]
    fn chunk_without_equals_has_empty_name() {
        assert_eq!(
            cookie_value("justvalue; a=1", "").as_deref(),
            Some("justvalue")
        );
        assert_eq!(cookie_value("justvalue; a=1", "justvalue"), None);
    }

    #[test]
    fn empty_header_and_empty_chunks_find_nothing() {
        assert_eq!(cookie_value("", "sessionid"), None);
        assert_eq!(cookie_value(" ; ;", ""), None);
        assert_eq!(cookie_value("sessionid=", "sessionid").as_deref(), Some(""));
    }

    #[test]
    fn unquotes_like_python() {
        // Python: http.cookies._unquote('"a\\"b\\073c\\\\d"') == 'a"b;c\\d'
        assert_eq!(
            cookie_value(r#"k="a\"b\073c\\d""#, "k").as_deref(),
            Some("a\"b;c\\d")
        );
        assert_eq!(cookie_value(r#"k="""#, "k").as_deref(), Some(""));
        assert_eq!(cookie_value(r#"k=""#, "k").as_deref(), Some("\""));
        assert_eq!(cookie_value(r#"k=a"b""#, "k").as_deref(), Some("a\"b\""));
    }

    #[test]
    fn name_is_case_sensitive() {
        assert_eq!(cookie_value("SessionID=x", "sessionid"), None);
    }
}
