//! Readiness for systemd (`Type=notify` in deploy/systemd/orchard.service): `READY=1` on the socket systemd
//! names in `NOTIFY_SOCKET`, sent once Orchard listens, so `systemctl start` (and the operator guide's `curl`
//! right after it) returns only when the server answers. Without systemd there is no socket and nothing is sent.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;

use anyhow::{Context, Result};

/// Sends `message` (e.g. `READY=1`) to the notification socket `socket`, the value of `NOTIFY_SOCKET`: a path,
/// or an abstract socket name written with a leading `@`.
pub fn notify(socket: &OsStr, message: &str) -> Result<()> {
    let sender = UnixDatagram::unbound().context("making a socket for systemd's notification")?;
    let name = socket.as_encoded_bytes();
    match name.strip_prefix(b"@") {
        Some(abstract_name) => send_abstract(&sender, abstract_name, message),
        None => sender
            .send_to(message.as_bytes(), socket)
            .map(|_| ())
            .with_context(|| format!("notifying systemd on {}", socket.to_string_lossy())),
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sender: &UnixDatagram, name: &[u8], message: &str) -> Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)
        .context("systemd's abstract notification socket name")?;
    sender
        .send_to_addr(message.as_bytes(), &address)
        .map(|_| ())
        .context("notifying systemd on its abstract socket")
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> Result<()> {
    anyhow::bail!("abstract notification sockets exist on Linux only")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_reaches_a_path_socket() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path)?;
        notify(path.as_os_str(), "READY=1")?;
        assert_eq!(received(&systemd), "READY=1");
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn ready_reaches_an_abstract_socket() -> Result<()> {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("orchard-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let systemd = UnixDatagram::bind_addr(&address)?;
        notify(OsStr::new(&format!("@{name}")), "READY=1")?;
        assert_eq!(received(&systemd), "READY=1");
        Ok(())
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().ok();
        let path = dir
            .as_ref()
            .map(|d| d.path().join("nobody-listens"))
            .unwrap_or_default();
        assert!(notify(path.as_os_str(), "READY=1").is_err());
    }
}
