//! A PostgreSQL cluster of one test's own (`initdb` into a temp dir, `pg_ctl` on a free port), for tests that
//! restart or crash the database server: the shared cluster of `ORCHARD_TEST_POSTGRES_URL` serves every test
//! running in parallel and must never be restarted. Uses the newest `/usr/lib/postgresql/<version>/bin` (Debian's
//! layout; scripts/test.sh installs PostgreSQL) and, when run as root (which `initdb` refuses), runs the
//! server as the `postgres` user. The superuser is `orchard`, trusted on 127.0.0.1 only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The running cluster; stopped (immediately) and removed when dropped.
pub struct PostgresCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }
}

impl PostgresCluster {
    /// Initialises and starts a cluster on a free port of 127.0.0.1.
    pub fn start() -> Result<PostgresCluster> {
        let bin = newest_bin_dir()?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let as_postgres = running_as_root();
        if as_postgres {
            // The server runs as postgres: it must reach and own its directory.
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()))?;
        }
        let port = free_port()?;
        let cluster = PostgresCluster {
            bin,
            data,
            port,
            as_postgres,
            _dir: dir,
        };
        run(&mut cluster.command(
            "initdb",
            &[
                "-D",
                &cluster.data.display().to_string(),
                "-U",
                "orchard",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        ))
        .context("initdb")?;
        cluster.pg_ctl(&["start", "-w", "-t", "120"])?;
        Ok(cluster)
    }

    /// `postgres://orchard@127.0.0.1:<port>/postgres`: an admin URL for [`crate::TestDatabase::create_postgres_on`].
    pub fn admin_url(&self) -> String {
        format!("postgres://orchard@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server the hard way (every backend killed, no checkpoint: a crash) and starts it again, which
    /// recovers from the write-ahead log. Returns once it accepts connections.
    pub fn crash_and_restart(&self) -> Result<()> {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"])?;
        self.pg_ctl(&["start", "-w", "-t", "120"])
    }

    /// Stops the server (immediately); [`PostgresCluster::start_again`] brings it back.
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"])
    }

    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl(&["start", "-w", "-t", "120"])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let data = self.data.display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log").display().to_string();
        let mut all = vec!["-D", &data, "-o", &options, "-l", &log];
        all.extend_from_slice(args);
        run(&mut self.command("pg_ctl", &all)).with_context(|| format!("pg_ctl {args:?}"))
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path).args(args);
            command.current_dir("/tmp");
            command
        } else {
            let mut command = Command::new(path);
            command.args(args);
            command
        }
    }
}

fn run(command: &mut Command) -> Result<()> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The bin directory of the newest PostgreSQL installed the Debian way.
fn newest_bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .with_context(|| format!("{}: is PostgreSQL installed?", root.display()))?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL with initdb under /usr/lib/postgresql")
}

/// A port nothing listens on now (the OS's pick for 127.0.0.1:0).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether this process runs as root (`/proc/self` belongs to the process's effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
