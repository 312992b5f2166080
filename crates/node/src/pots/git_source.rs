//! Pots from git: which URLs are accepted, and the clone itself, run as the pot's user with
//! an environment of its own.
//!
//! `git clone` as root with the node's environment would read root's git config and
//! credentials and could be pointed at the node's own files (`file://`, a local path) or
//! made to run a program (`ext::`). Only `https://` is accepted (and ssh when the operator
//! allows it); git itself is held to the same protocols, for redirects and submodules too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::privilege::RunAs;
use super::redact::redact_credentials;

/// Longest a clone may take.
const CLONE_TIMEOUT: Duration = Duration::from_secs(300);
const GIT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What the operator allows for git sources (`honeypot.git_allow_ssh`, `git_ca_file`).
#[derive(Debug, Clone, Default)]
pub(crate) struct GitPolicy {
    pub allow_ssh: bool,
    pub ca_file: Option<PathBuf>,
}

impl GitPolicy {
    /// `GIT_ALLOW_PROTOCOL`: what git may speak at all, including for redirects.
    fn protocols(&self) -> &'static str {
        if self.allow_ssh {
            "https:ssh"
        } else {
            "https"
        }
    }
}

/// `Err` with the reason when `url` is not an allowed remote repository.
pub(crate) fn check_git_url(url: &str, policy: &GitPolicy) -> Result<(), String> {
    let shown = redact_credentials(url);
    let refused = |why: &str| {
        Err(format!(
            "git url {shown:?} is refused: {why}; only https:// URLs are accepted{}",
            if policy.allow_ssh {
                " (and ssh:// or user@host:path)"
            } else {
                " (ssh only with honeypot.git_allow_ssh: true); file://, local paths, git:// and ext:: never"
            }
        ))
    };
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return refused("it contains spaces or control characters");
    }
    if let Some(rest) = url.strip_prefix("https://") {
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        if host.is_empty() {
            return refused("it names no host");
        }
        return Ok(());
    }
    if policy.allow_ssh && (url.starts_with("ssh://") || is_scp_like(url)) {
        return Ok(());
    }
    refused("not an https URL")
}

/// `user@host:path`, git's short form of an ssh URL (never a local path or `ext::`).
fn is_scp_like(url: &str) -> bool {
    let Some((user_host, path)) = url.split_once(':') else {
        return false;
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return false;
    };
    let name = |text: &str| {
        !text.is_empty()
            && !text.starts_with('-')
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    name(user) && name(host) && !path.starts_with(':')
}

/// Clones `url` into `<home>/checkout` as `user` (the node's own user when `None`), with
/// only the environment git needs: `HOME` is `home`, no system or global config, no
/// prompts, only the allowed protocols.
pub(crate) async fn clone_as_pot_user(
    url: &str,
    branch: Option<&str>,
    home: &Path,
    user: Option<&RunAs>,
    policy: &GitPolicy,
) -> Result<PathBuf, String> {
    check_git_url(url, policy)?;
    let shown = redact_credentials(url);
    if let Some(branch) = branch {
        if branch.starts_with('-') || branch.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("git branch {branch:?} is refused"));
        }
    }
    let target = home.join("checkout");
    let mut command = tokio::process::Command::new("git");
    command.args([
        "clone",
        "--quiet",
        "--depth",
        "1",
        "--no-recurse-submodules",
    ]);
    if let Some(branch) = branch {
        command.args(["--branch", branch]);
    }
    command
        .arg("--")
        .arg(url)
        .arg(&target)
        .env_clear()
        .env("PATH", GIT_PATH)
        .env("HOME", home)
        .env("LANG", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ALLOW_PROTOCOL", policy.protocols())
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .current_dir(home)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(ca_file) = &policy.ca_file {
        command.env("GIT_SSL_CAINFO", ca_file);
    }
    if policy.allow_ssh {
        // No host keys are known to a fresh pot user: accept the first one, never prompt.
        command.env(
            "GIT_SSH_COMMAND",
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
        );
    }
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    let output = tokio::time::timeout(CLONE_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("git clone {shown} timed out"))?
        .map_err(|error| format!("cannot run git: {error}"))?;
    if !output.status.success() {
        return Err(redact_credentials(&format!(
            "git clone {shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_pass_and_ssh_only_when_allowed() {
        let strict = GitPolicy::default();
        let ssh = GitPolicy {
            allow_ssh: true,
            ca_file: None,
        };
        assert!(check_git_url("https://github.com/o/r.git", &strict).is_ok());
        assert!(check_git_url("https://u:p@github.com/o/r.git", &strict).is_ok());
        for refused in [
            "file:///etc",
            "/root/repo",
            "./repo",
            "git://example.org/r.git",
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "http://example.org/r.git",
            "-uhttps://x",
            "https:///no-host",
            "ssh://git@example.org/r.git",
            "git@example.org:o/r.git",
            "fd::17",
        ] {
            let error = check_git_url(refused, &strict).unwrap_err();
            assert!(error.contains("is refused"), "{refused}: {error}");
        }
        assert!(check_git_url("ssh://git@example.org/r.git", &ssh).is_ok());
        assert!(check_git_url("git@example.org:o/r.git", &ssh).is_ok());
        assert!(check_git_url("file:///etc", &ssh).is_err());
        assert!(check_git_url("ext::ssh -o x", &ssh).is_err());
        assert!(check_git_url("/local:path", &ssh).is_err());
        let error = check_git_url("file://user:secret@host/x", &strict).unwrap_err();
        assert!(!error.contains("secret"), "{error}");
    }
}
