//! The university's OpenID Connect provider, played by a real one: `tests/oidc/provider.mjs` (node-oidc-provider,
//! installed with `npm ci --prefix tests/oidc`) in its own process on a port the OS picks. Orchard is registered
//! as its client once Orchard's redirect URL is known, so the sign-in tests run the whole authorization-code
//! flow over HTTP with real signed ID tokens.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::json;

/// The provider process; killed when dropped.
pub struct OidcProvider {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The issuer URL Orchard is configured with (`--oidc-issuer`).
    pub issuer: String,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OidcProvider {
    /// `tests/oidc` at the workspace's root, where the provider script and its npm lock file live.
    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
    }

    /// Starts the provider on a port the OS picks.
    pub fn start() -> Result<OidcProvider> {
        let dir = Self::dir();
        if !dir.join("node_modules/oidc-provider/package.json").exists() {
            bail!(
                "the test OpenID provider is not installed: run `npm ci --prefix tests/oidc` \
                 (scripts/test.sh does it)"
            );
        }
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting node (is Node.js installed?)")?;
        let stdin = child.stdin.take().context("provider stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("provider stdout")?);
        let mut provider = OidcProvider {
            child,
            stdin: Some(stdin),
            stdout,
            issuer: String::new(),
        };
        let line = provider.line_starting("listening ")?;
        provider.issuer = line.trim_start_matches("listening ").trim().to_string();
        println!("OpenID provider at {}", provider.issuer);
        Ok(provider)
    }

    fn line_starting(&mut self, prefix: &str) -> Result<String> {
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("the OpenID provider exited before printing {prefix:?}");
            }
            if line.starts_with(prefix) {
                return Ok(line.trim().to_string());
            }
        }
    }

    /// Registers Orchard as the provider's client, now that its redirect URL is known.
    pub fn configure(
        &mut self,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
    ) -> Result<()> {
        let config = json!({
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uri": redirect_uri,
        });
        let stdin = self.stdin.as_mut().context("provider stdin closed")?;
        writeln!(stdin, "{config}")?;
        stdin.flush()?;
        self.line_starting("ready")?;
        Ok(())
    }
}
