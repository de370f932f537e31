//! `DATABASE_URL`: the connection settings as one URL, percent-decoded.

use std::path::PathBuf;

use ::url::Url;

use super::db::{check_database_name, check_tool_value};
use super::TlsConfig;
use crate::engine::EngineInfo;
use crate::env::EnvReader;
use crate::secret::Secret;

const VAR: &str = "DATABASE_URL";

/// Connection fields from `DATABASE_URL`, percent-decoded.
#[derive(Default)]
pub(super) struct UrlParts {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub name: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub tls: TlsConfig,
}

pub(super) fn read_database_url(env: &mut EnvReader<'_>, engine: &EngineInfo) -> UrlParts {
    let Some(raw) = env.secret(VAR) else {
        return UrlParts::default();
    };
    let what = format!(
        "a URL like {}://user:password@host:{}/dbname",
        engine.url_schemes[0], engine.default_port
    );
    let url = match Url::parse(raw.expose()) {
        Ok(url) => url,
        Err(e) => {
            env.problem(VAR, format!("is not a valid URL ({e}): expected {what}"));
            return UrlParts::default();
        }
    };
    if !engine.url_schemes.contains(&url.scheme()) {
        env.problem(
            VAR,
            format!(
                "scheme {:?} is not for this engine: use {} ({what})",
                url.scheme(),
                engine.url_schemes.join(" or ")
            ),
        );
        return UrlParts::default();
    }
    let decode = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_string());
    let mut parts = UrlParts {
        host: url
            .host_str()
            .map(|h| h.trim_matches(['[', ']']).to_string()),
        port: url.port(),
        name: Some(decode(url.path().trim_start_matches('/'))).filter(|s| !s.is_empty()),
        user: Some(decode(url.username())).filter(|s| !s.is_empty()),
        password: url.password().map(|p| Secret::new(decode(p))),
        tls: TlsConfig::default(),
    };
    if engine.tls_url_schemes.contains(&url.scheme()) {
        parts.tls.mode = Some("require".into());
    }
    for (k, v) in url.query_pairs() {
        let slot = match k.as_ref() {
            "sslmode" | "ssl-mode" | "ssl_mode" => {
                parts.tls.mode = Some(v.to_ascii_lowercase());
                continue;
            }
            "sslrootcert" | "ssl-ca" => &mut parts.tls.root_cert,
            "sslcert" | "ssl-cert" => &mut parts.tls.cert,
            "sslkey" | "ssl-key" => &mut parts.tls.key,
            "connect_timeout" => continue,
            other => {
                env.problem(
                    VAR,
                    format!(
                        "query parameter {other:?} is not supported: use sslmode, sslrootcert, \
                         sslcert, sslkey or connect_timeout"
                    ),
                );
                continue;
            }
        };
        check_tool_value(env, VAR, &format!("its {k} parameter"), &v);
        *slot = Some(PathBuf::from(v.as_ref()));
    }
    if let Some(host) = &parts.host {
        check_tool_value(env, VAR, "its host", host);
    }
    if let Some(user) = &parts.user {
        check_tool_value(env, VAR, "its user name", user);
    }
    if let Some(password) = &parts.password {
        check_tool_value(env, VAR, "its password", password.expose());
    }
    if let Some(name) = &parts.name {
        if check_tool_value(env, VAR, "its database name (the path)", name) {
            check_database_name(env, VAR, "its database name (the path)", name);
        }
    }
    parts
}

pub(super) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::load;
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("p%40ss%2Fw").as_deref(), Some("p@ss/w"));
        assert_eq!(percent_decode("a%0Ab").as_deref(), Some("a\nb"));
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("cut%4"), None);
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
    }

    #[test]
    fn decoded_control_characters_are_refused_without_showing_the_value() {
        // (URL, the part named in the message, the encoded character)
        let cases = [
            ("postgres://u:url-pw%0Asecret@h/d", "its password", "%0A"),
            ("postgres://u:url-pw%7Fsecret@h/d", "its password", "%7F"),
            ("postgres://evil%09user:url-pw@h/d", "its user name", "%09"),
            ("postgres://u@h/evil%0Adb", "its database name", "%0A"),
            (
                "postgres://u@h/d?sslrootcert=/evil%0D.pem",
                "its sslrootcert",
                "%0D",
            ),
            (
                "postgres://u@h/d?sslcert=/evil%00.pem",
                "its sslcert",
                "%00",
            ),
            ("postgres://u@h/d?sslkey=/evil%1B.pem", "its sslkey", "%1B"),
        ];
        for (url, part, encoded) in cases {
            let err = load(&[("DATABASE_URL", url)]).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{url}: {err}");
            assert_eq!(err.problems[0].var, "DATABASE_URL");
            let text = err.to_string();
            assert!(text.contains(part), "{part}: {text}");
            assert!(text.contains(encoded), "{encoded}: {text}");
            assert!(text.contains("control character"), "{text}");
            for shown in ["url-pw", "secret", "evil"] {
                assert!(!text.contains(shown), "value shown: {text}");
            }
        }
        // A raw control character in the variable itself is refused before parsing.
        let err = load(&[("DATABASE_URL", "postgres://u:url-pw@h/d\n")]).unwrap_err();
        assert_eq!(err.problems[0].var, "DATABASE_URL");
        assert!(!err.to_string().contains("url-pw"), "{err}");
        // Encoded characters that are not control characters are fine.
        let cfg = load(&[("DATABASE_URL", "postgres://u:a%20b%25c@h/my%20db")]).unwrap();
        assert_eq!(cfg.db.password.unwrap().expose(), "a b%c");
        assert_eq!(cfg.db.name, "my db");
    }
}
