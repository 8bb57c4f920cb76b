//! Credentials out of what is shown: URLs and connection strings as they may appear in
//! logs, `facestream config`, `GET /v1/cameras` and error messages.
//!
//! Used by the cameras (their URLs), the config printer, and the event sinks (endpoint
//! URLs in errors); it imports nothing of the crate.

/// Query parameters whose values are credentials (cameras that take them in the URL).
const SECRET_PARAMS: [&str; 9] = [
    "password",
    "passwd",
    "pass",
    "pwd",
    "token",
    "key",
    "secret",
    "auth",
    "signature",
];

/// `rtsp://user:secret@host/…?pwd=secret` → `rtsp://user:***@host/…?pwd=***`.
///
/// The password may hold `/`, `?`, `#` or `@` (users paste them unencoded): everything
/// up to the **last** `@` is the user information. Credentials in the query string are
/// replaced too.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // the user information ends at the last `@` before the path (a query may hold `@`)
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end]
        .rfind('@')
        .or_else(|| rest.rfind('@').filter(|at| rest[..*at].contains(':')));
    let rest = match at {
        Some(at) if rest[..at].contains(':') => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{user}:***{}", &rest[at..])
        }
        // `https://TOKEN@host/…`: a lone user part is as often a token as a name
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_string(),
    };
    let Some((before, query)) = rest.split_once('?') else {
        return format!("{scheme}://{rest}");
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=***")
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    match fragment {
        Some(f) => format!("{scheme}://{before}?{query}#{f}"),
        None => format!("{scheme}://{before}?{query}"),
    }
}

/// Keys of a libpq `key=value` connection string whose values are secrets.
const SECRET_CONNINFO_KEYS: &[&str] = &["password", "sslpassword"];

/// A connection string in either form: a URL through [`url`], or libpq's
/// `host=db user=fs password='pa ss'` with the password's value (quoted or not) replaced.
pub fn secrets(text: &str) -> String {
    if text.contains("://") {
        return urls_in(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        // copy the white space, then one `key = value` pair
        let word = rest.trim_start();
        out.push_str(&rest[..rest.len() - word.len()]);
        rest = word;
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        let after_key = rest[key_end..].trim_start();
        let Some(value) = after_key.strip_prefix('=') else {
            out.push_str(key);
            rest = &rest[key_end..];
            continue;
        };
        let value = value.trim_start();
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            // up to the closing quote; `\'` and `\\` are escapes
            let mut escaped = false;
            let close = quoted
                .char_indices()
                .find(|&(_, c)| {
                    let end = !escaped && c == '\'';
                    escaped = !escaped && c == '\\';
                    end
                })
                .map_or(quoted.len(), |(i, _)| i + 1);
            1 + close
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        let value_start = rest.len() - value.len();
        if SECRET_CONNINFO_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
            out.push_str(key);
            out.push_str("=***");
        } else {
            out.push_str(&rest[..value_start + value_len]);
        }
        rest = &rest[value_start + value_len..];
    }
    out
}

/// Every URL inside a text (a custom gst-launch `pipeline`) passed through [`url`].
pub fn urls_in(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            // `location="rtsp://…"` or a bare URL
            match word.find("://") {
                Some(i) => {
                    let start = word[..i].rfind(['=', '"']).map_or(0, |p| p + 1);
                    let end = word[start..].find('"').map_or(word.len(), |e| start + e);
                    format!(
                        "{}{}{}",
                        &word[..start],
                        url(&word[start..end]),
                        &word[end..]
                    )
                }
                None => word.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_with_separators_and_query_credentials_are_redacted() {
        for (u, expected) in [
            (
                "rtsp://admin:pa/ss@10.0.0.5:554/Streaming/Channels/101",
                "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101",
            ),
            ("rtsp://admin:p?w#d@cam/x", "rtsp://admin:***@cam/x"),
            ("rtsp://admin:p@ss@cam/x", "rtsp://admin:***@cam/x"),
            (
                "http://cam/cgi-bin/mjpg?user=admin&pwd=s3cret&channel=1",
                "http://cam/cgi-bin/mjpg?user=admin&pwd=***&channel=1",
            ),
            (
                "rtsp://cam:554/live?Password=x&token=y#frag",
                "rtsp://cam:554/live?Password=***&token=***#frag",
            ),
            ("rtsp://cam/x", "rtsp://cam/x"),
            ("file:///videos/door.mp4", "file:///videos/door.mp4"),
            // a token as the user part, with or without a path
            (
                "https://t0k3n@hooks.example/in",
                "https://***@hooks.example/in",
            ),
            (
                "postgresql://s3cret@db.internal:5432/fs",
                "postgresql://***@db.internal:5432/fs",
            ),
            ("nats://t0k3n@bus:4222", "nats://***@bus:4222"),
            // an `@` in the query is not user information
            ("http://cam/x?mail=a@b", "http://cam/x?mail=a@b"),
        ] {
            let got = url(u);
            assert_eq!(got, expected, "{u}");
            for secret in ["pa/ss", "p?w#d", "p@ss", "s3cret", "t0k3n"] {
                assert!(!got.contains(secret), "{got}");
            }
        }
    }

    #[test]
    fn key_value_connection_strings_are_redacted() {
        for (text, expected) in [
            (
                "host=db.internal user=fs password=pg-pa55 dbname=facestream",
                "host=db.internal user=fs password=*** dbname=facestream",
            ),
            (
                "host=db password = 'it\\'s pa55' dbname=x",
                "host=db password=*** dbname=x",
            ),
            ("host=db PASSWORD='a b'", "host=db PASSWORD=***"),
            ("host=db sslpassword=k3y", "host=db sslpassword=***"),
            ("host=db user=fs", "host=db user=fs"),
            ("postgresql://fs:pg-pa55@db/x", "postgresql://fs:***@db/x"),
        ] {
            assert_eq!(secrets(text), expected, "{text}");
        }
    }
}
