//! A database URL as messages may show it: rebuilt from its parsed parts,
//! so no password survives in any spelling, and the password's own
//! spellings, for the masker.

/// The URL without its password.
pub(super) fn shown_url(url: &str, config: &postgres::Config) -> String {
    let scheme = if url.starts_with("postgresql://") {
        "postgresql"
    } else {
        "postgres"
    };
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
            postgres::config::Host::Unix(path) => {
                format!("{}:{p}", path.display().to_string().replace('/', "%2F"))
            }
        })
        .collect();
    let db = config.get_dbname().unwrap_or_default();
    // Built from the parsed parts only: the query may hold the password
    // under any spelling the parser decodes (`pass%77ord=`).
    format!("{scheme}://{user}{}/{db}", hosts.join(","))
}

/// The password of `url` (as `config` parsed it), decoded and as the URL
/// spells it: what no output may show.
pub(super) fn secrets(url: &str, config: &postgres::Config) -> Vec<String> {
    let Some(pw) = config.get_password() else {
        return Vec::new();
    };
    let mut out = vec![String::from_utf8_lossy(pw).into_owned()];
    // As the URL spells it too (percent-encoded some way of its own).
    if let Some((userinfo, _)) = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
    {
        if let Some((_, raw)) = userinfo.split_once(':') {
            out.push(raw.to_string());
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for kv in query.split('&') {
            if let Some((_, v)) = kv.split_once('=') {
                if percent_encoding::percent_decode_str(v).decode_utf8_lossy() == out[0] {
                    out.push(v.to_string());
                }
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shown_url_has_no_password_and_the_secrets_have_every_spelling() {
        // (URL, what is shown, the secrets).
        let cases: [(&str, &str, &[&str]); 4] = [
            (
                "postgres://ann:pw@db:5433/runs",
                "postgres://ann@db:5433/runs",
                &["pw"],
            ),
            (
                "postgresql://ann:p%2aw@db/runs?sslmode=prefer",
                "postgresql://ann@db:5432/runs",
                &["p*w", "p%2aw"],
            ),
            (
                "postgres://ann@db/runs?pass%77ord=s3",
                "postgres://ann@db:5432/runs",
                &["s3"],
            ),
            ("postgres://ann@db/runs", "postgres://ann@db:5432/runs", &[]),
        ];
        for (url, shown, secrets_want) in cases {
            let config: postgres::Config = url.parse().unwrap();
            assert_eq!(shown_url(url, &config), shown, "{url}");
            let got = secrets(url, &config);
            for want in secrets_want {
                assert!(got.iter().any(|g| g == want), "{url}: {got:?}");
            }
            assert_eq!(got.is_empty(), secrets_want.is_empty(), "{url}: {got:?}");
        }
    }
}
