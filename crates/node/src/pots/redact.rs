//! Removing credentials from text the node shows: a git URL may carry `user:password@`
//! (or a token as the user), and install statuses, answers, logs and `pots.json` are read
//! by anyone with a `read` API token or access to the node's logs. A pot's config values
//! (which may be passwords or tokens) are taken out of the output of a failed install step
//! and of the commands it quotes.

/// Replaces the user information of every `scheme://user[:password]@host` in `text` by
/// `***`; everything else is kept.
pub(crate) fn redact_credentials(text: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        output.push_str(before);
        // The authority ends at the first '/', whitespace, quote or the end of the text.
        let authority_end = after
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '>'))
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(user_end) => {
                output.push_str("***");
                output.push_str(&authority[user_end..]);
            }
            None => output.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    output.push_str(rest);
    output
}

/// Replaces every occurrence of each of `secrets` in `text` by `***` (longest first, so a
/// value containing another is removed whole); empty values are skipped.
pub(crate) fn redact_values<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut secrets: Vec<&str> = secrets
        .into_iter()
        .filter(|secret| !secret.is_empty())
        .collect();
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    secrets.dedup();
    let mut output = text.to_owned();
    for secret in secrets {
        output = output.replace(secret, "***");
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_removed_and_the_rest_kept() {
        assert_eq!(
            redact_credentials("installing x from https://user:pass@git.example/r.git"),
            "installing x from https://***@git.example/r.git"
        );
        assert_eq!(
            redact_credentials("fatal: 'https://tok3n@h/x' and ssh://git@h:22/y, https://plain/z"),
            "fatal: 'https://***@h/x' and ssh://***@h:22/y, https://plain/z"
        );
        assert_eq!(redact_credentials("no urls here"), "no urls here");
        assert_eq!(redact_credentials("https://a:b@c"), "https://***@c");
        assert_eq!(redact_credentials("x://"), "x://");
    }

    #[test]
    fn config_values_are_removed_longest_first() {
        assert_eq!(
            redact_values(
                "user s3cr3t-value at s3cr3t",
                ["s3cr3t", "s3cr3t-value", ""]
            ),
            "user *** at ***"
        );
        assert_eq!(redact_values("nothing", []), "nothing");
    }
}
