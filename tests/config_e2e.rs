//! The configuration file through the real binary: `orchard config example` gives a file that
//! `orchard config check` accepts and that means the defaults; errors name the key and its line; the
//! environment overrides the file and a flag overrides both; secrets come from files and are never printed;
//! and a server started with `--config` uses it (a metrics token read from a file), on SQLite and PostgreSQL.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::{orchard_binary, TestServer};
use orchard_testkit::Backend;
use reqwest::Method;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The binary with `args`, without any `ORCHARD_*` variable of the calling environment, plus `env`.
fn orchard(env: &[(&str, &str)], args: &[&str]) -> Result<Run> {
    let mut command = Command::new(orchard_binary()?);
    for (name, _) in std::env::vars() {
        if name.starts_with("ORCHARD_") {
            command.env_remove(name);
        }
    }
    let out = command.envs(env.iter().copied()).args(args).output()?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    })
}

fn check(env: &[(&str, &str)], file: &Path, extra: &[&str]) -> Result<Run> {
    let path = file.to_str().context("utf-8 path")?;
    let mut args = vec!["config", "check", "--config", path];
    args.extend_from_slice(extra);
    orchard(env, &args)
}

/// The effective configuration `config check` printed.
fn effective(run: &Run) -> Result<toml::Table> {
    ensure!(
        run.code == 0,
        "config check failed ({}): {}",
        run.code,
        run.stderr
    );
    toml::from_str(&run.stdout).with_context(|| format!("not TOML: {}", run.stdout))
}

fn value<'a>(table: &'a toml::Table, section: &str, key: &str) -> Option<&'a toml::Value> {
    table.get(section)?.as_table()?.get(key)
}

#[test]
fn the_example_is_accepted_and_means_the_defaults() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let example = orchard(&[], &["config", "example"])?;
    ensure!(example.code == 0, "config example: {}", example.stderr);
    // Every key is explained: one comment line before each `key = value` (or commented-out example).
    ensure!(
        example
            .stdout
            .contains("# env ORCHARD_CHALLENGE_TTL_SECONDS, flag --challenge-ttl-seconds")
            && example.stdout.contains("challenge_ttl_seconds = 3600")
            && example.stdout.contains("# kek_file = "),
        "{}",
        example.stdout
    );
    let file = dir.path().join("orchard.toml");
    std::fs::write(&file, &example.stdout)?;
    let from_example = effective(&check(&[], &file, &[])?)?;
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "")?;
    let from_defaults = effective(&check(&[], &empty, &[])?)?;
    ensure!(
        from_example == from_defaults,
        "{from_example:#?}\n{from_defaults:#?}"
    );
    ensure!(
        value(&from_example, "enrollment", "challenge_ttl_seconds")
            == Some(&toml::Value::Integer(3600))
    );
    Ok(())
}

#[test]
fn errors_name_the_key_and_the_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("orchard.toml");

    std::fs::write(
        &file,
        "[server]\norganization = \"Physics\"\n\n[push]\nrte = 100\n",
    )?;
    let run = check(&[], &file, &[])?;
    ensure!(run.code != 0, "an unknown key was accepted: {}", run.stdout);
    ensure!(
        run.stderr.contains("orchard.toml, line 5") && run.stderr.contains("rte"),
        "{}",
        run.stderr
    );

    std::fs::write(&file, "[push]\nrate = \"fast\"\n")?;
    let run = check(&[], &file, &[])?;
    ensure!(
        run.code != 0 && run.stderr.contains("line 2") && run.stderr.contains("rate"),
        "{}",
        run.stderr
    );

    // A value that parses but cannot work: the key and its line.
    std::fs::write(
        &file,
        "[enrollment]\ndevice_identity_days = 30\nidentity_renewal_days = 45\n",
    )?;
    let run = check(&[], &file, &[])?;
    ensure!(
        run.code != 0
            && run
                .stderr
                .contains("orchard.toml, line 3: enrollment.identity_renewal_days"),
        "{}",
        run.stderr
    );

    // The same through a flag names the key too; `serve` refuses to start with it.
    let run = orchard(
        &[],
        &[
            "serve",
            "--public-url",
            "http://mdm.example.edu",
            "--listen",
            "127.0.0.1:0",
        ],
    )?;
    ensure!(
        run.code != 0 && run.stderr.contains("server.public_url"),
        "{}",
        run.stderr
    );

    // An explicit file that does not exist is an error, not the defaults.
    let run = check(&[], &dir.path().join("absent.toml"), &[])?;
    ensure!(
        run.code != 0 && run.stderr.contains("absent.toml"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[test]
fn flag_over_environment_over_file_over_default() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("orchard.toml");
    std::fs::write(
        &file,
        "[push]\nrate = 10\nburst = 11\n\n[enrollment]\nchallenge_ttl_seconds = 900\n",
    )?;
    let int = |n: i64| Some(toml::Value::Integer(n));
    let value = |t: &toml::Table, s: &str, k: &str| value(t, s, k).cloned();

    let from_file = effective(&check(&[], &file, &[])?)?;
    ensure!(value(&from_file, "push", "rate") == int(10));
    ensure!(
        value(&from_file, "push", "concurrency") == int(256),
        "default kept"
    );

    let env = [
        ("ORCHARD_PUSH_RATE", "20"),
        ("ORCHARD_CHALLENGE_TTL_SECONDS", "1200"),
    ];
    let from_env = effective(&check(&env, &file, &[])?)?;
    ensure!(value(&from_env, "push", "rate") == int(20));
    ensure!(value(&from_env, "push", "burst") == int(11), "file kept");
    ensure!(value(&from_env, "enrollment", "challenge_ttl_seconds") == int(1200));

    let from_flag = effective(&check(&env, &file, &["--push-rate", "30"])?)?;
    ensure!(value(&from_flag, "push", "rate") == int(30));
    ensure!(value(&from_flag, "enrollment", "challenge_ttl_seconds") == int(1200));

    // ORCHARD_CONFIG names the file when --config does not.
    let path = file.to_str().context("utf-8 path")?;
    let via_env = effective(&orchard(&[("ORCHARD_CONFIG", path)], &["config", "check"])?)?;
    ensure!(value(&via_env, "push", "rate") == int(10));
    Ok(())
}

#[test]
fn secrets_come_from_files_and_are_never_printed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("oidc-secret");
    std::fs::write(&secret, "oidc-s3cret\n")?;
    let file = dir.path().join("orchard.toml");
    std::fs::write(
        &file,
        format!(
            "[oidc]\nissuer = \"https://login.example.edu\"\nclient_id = \"orchard\"\nclient_secret_file = {:?}\n\n[limits]\nmetrics_token = \"metrics-s3cret\"\n",
            secret.display()
        ),
    )?;
    let run = check(&[], &file, &[])?;
    let shown = effective(&run)?;
    ensure!(!run.stdout.contains("s3cret"), "{}", run.stdout);
    ensure!(
        value(&shown, "limits", "metrics_token") == Some(&toml::Value::String("<redacted>".into()))
    );

    std::fs::remove_file(&secret)?;
    let run = check(&[], &file, &[])?;
    ensure!(
        run.code != 0 && run.stderr.contains("oidc.client_secret_file"),
        "{}",
        run.stderr
    );
    Ok(())
}

/// `serve --config FILE`: the server takes its metrics token from the file the configuration names.
async fn serve_with_config_file(backend: Backend) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, "scrape-me\n")?;
    let config = dir.path().join("orchard.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\norganization = \"Config Test University\"\n\n[limits]\nmetrics_token_file = {:?}\n",
            token_file.display()
        ),
    )?;
    let extra = vec![
        "--config".to_string(),
        config.to_str().context("utf-8 path")?.to_string(),
    ];
    let Some(server) = TestServer::start_with(backend, &extra).await? else {
        return Ok(());
    };
    let (status, _) = server.api("wrong", Method::GET, "/metrics", None).await?;
    ensure!(
        status == 403,
        "/metrics without the file's token → {status}"
    );
    let (status, body) = server
        .api("scrape-me", Method::GET, "/metrics", None)
        .await?;
    ensure!(
        status == 200,
        "/metrics with the file's token → {status}: {body}"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    serve_reads_its_config_file => serve_with_config_file;
}
