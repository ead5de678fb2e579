//! The return-URL allow-list (`connect_return_urls`): comma-separated URLs;
//! a return URL is allowed when its scheme, host and port equal an entry's
//! and its path is the entry's path or below it (on a `/` boundary), so
//! `https://app.example.evil.test` or `https://app.example/settings-evil`
//! never pass for `https://app.example/settings`. No user info, no
//! fragment.

use url::Url;

/// The allow-list, parsed.
#[derive(Debug, Clone)]
pub struct AllowList {
    entries: Vec<Url>,
}

impl AllowList {
    /// Parses the variable; unparsable entries are a configuration error.
    pub fn parse(spec: &str) -> Result<AllowList, String> {
        let mut entries = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let url = Url::parse(entry)
                .map_err(|_| format!("connect_return_urls: `{entry}` is not a URL"))?;
            if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
                return Err(format!(
                    "connect_return_urls: `{entry}` is not an http(s) URL"
                ));
            }
            entries.push(url);
        }
        Ok(AllowList { entries })
    }

    /// The first entry: where a connect without a return URL goes back to.
    pub fn default_url(&self) -> Option<String> {
        self.entries.first().map(Url::to_string)
    }

    /// `candidate` if it is allowed (normalised), else why not.
    pub fn check(&self, candidate: &str) -> Result<String, String> {
        let url = Url::parse(candidate).map_err(|_| "return_url is not a URL".to_string())?;
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err("return_url must not carry user info or a fragment".into());
        }
        let allowed = self.entries.iter().any(|entry| {
            entry.scheme() == url.scheme()
                && entry.host_str() == url.host_str()
                && entry.port_or_known_default() == url.port_or_known_default()
                && under(entry.path(), url.path())
        });
        if allowed {
            Ok(url.to_string())
        } else {
            Err("return_url is not on the allow-list (connect_return_urls)".into())
        }
    }
}

fn under(base: &str, path: &str) -> bool {
    let base = base.trim_end_matches('/');
    base.is_empty()
        || path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_same_origin_and_path_below_pass() {
        let list = AllowList::parse("https://app.example/settings, http://127.0.0.1:3000").unwrap();
        assert!(list.check("https://app.example/settings").is_ok());
        assert!(
            list.check("https://app.example/settings/accounts?tab=1")
                .is_ok()
        );
        assert!(list.check("http://127.0.0.1:3000/anything").is_ok());
        for bad in [
            "https://app.example/settings-evil",
            "https://app.example.evil.test/settings",
            "http://app.example/settings",
            "https://app.example:444/settings",
            "https://user@app.example/settings",
            "https://app.example/settings#x",
            "javascript:alert(1)",
            "http://127.0.0.1:3001/",
        ] {
            assert!(list.check(bad).is_err(), "{bad}");
        }
        assert_eq!(list.default_url().unwrap(), "https://app.example/settings");
    }
}
