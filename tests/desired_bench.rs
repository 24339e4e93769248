//! Benchmarks of desired state (issue 12), ignored by the suite; `scripts/bench-desired.sh` runs them on a
//! release build, on SQLite and (with `ORCHARD_TEST_POSTGRES_URL`) PostgreSQL.
//!
//! 1. **Assigning one profile to a smart group of 50,000 iPads**: the time from the assignment's use case until
//!    every InstallProfile is queued for delivery: its unit has put every member in the reconciler's work set,
//!    and a member that connects plans its own install before it asks for a command. Goal: ≤ 0.5 s on SQLite,
//!    ≤ 1 s on PostgreSQL. Then what the rest costs: 1,000 members arriving first (each plans its own
//!    install), and the reconciler's passes (one node, its default batch, back to back, as its job runs them
//!    when woken) writing the other 49,000 installs.
//! 2. **The reconciler's cost per inventory report**: what an inventory report adds for desired state — its
//!    smart groups re-evaluated and the device marked (in a unit of its own here, so its commit is counted
//!    too), then its share of the reconciler's pass that finds nothing to do — as process CPU time (and the
//!    PostgreSQL server's) divided by the reports. Goal: ≤ 0.2 ms CPU. Measured twice:
//!    - strictly: minus a unit that only looks the device up (a real report's unit also writes, so its
//!      commit is charged to desired state here);
//!    - through the report path itself: 200 iPads enrolled through SCEP answer DeviceInformation in signed
//!      reports, each changed answer followed by one that repeats it (the facts digest skips desired state).
//!      A changed answer either renames the iPad (a fact no group reads differently and no plan reads: the
//!      groups are re-evaluated, the device is not marked) or updates its OS within the groups' ranges (a
//!      fact the plans read: re-evaluated, marked, visited by a pass). The difference between a changed
//!      kind's session and a repeating one is desired state's share.
//!
//! The iPads are written into the database directly (55,000 of them: 50,000 on iOS older than 18.2), since
//! the work measured starts after enrollment and inventory (the report path's 200 aside); the tenant, group,
//! profiles and assignments go through the use cases. The service runs in-process (`PushSetup`), so no HTTP
//! or TLS cost is mixed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use orchard_core::access::principal::Principal;
use orchard_core::desired::assignments::AssignmentInput;
use orchard_core::desired::groups::GroupInput;
use orchard_core::desired::profiles::ProfileInput;
use orchard_protocol::commands::{decode_command, Command};
use orchard_protocol::report::ReportStatus;
use orchard_sim::cpu::{cpu_by_process, process_cpu, CpuOptions};
use orchard_store::Tenant;
use orchard_testkit::service::{DeviceInformationAnswer, DeviceNode, PushSetup, SignedIpad};
use orchard_testkit::Backend;
use orchard_types::{Clock, DeviceId, RequestType, TenantId};
use serde_json::json;
use sqlx::{Executor, Row};

const MEMBERS: usize = 50_000;
/// Members that connect before the reconciler's passes reach them.
const ARRIVALS: usize = 1_000;
const OTHERS: usize = 5_000;
const REPORTS: usize = 5_000;
/// iPads enrolled through SCEP that answer DeviceInformation in signed reports (the report path's figure).
const REPORTING_IPADS: usize = 200;
/// Rounds of each changed kind (a rename, an OS update) every reporting iPad goes through, each followed by a
/// round that repeats its answer.
const REPORT_ROUNDS: usize = 20;

/// Writes `count` iPads of `tenant` on `os` (numbered from `first`), 500 rows per statement.
async fn seed(
    db: &mut sqlx::AnyConnection,
    tenant: TenantId,
    first: usize,
    count: usize,
    os: &str,
    now: i64,
) -> Result<()> {
    let models = ["iPad13,18", "iPad14,8", "iPad12,1", "iPad16,3"];
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(500);
        let rows: Vec<String> = (first + done..first + done + batch)
            .map(|i| {
                format!(
                    "('{id}', 'BENCH-UDID-{i:08}', '{tenant}', 'BNCH{i:08}', 'enrolled', 'Elevplatta {i}', \
                     '{model}', 'iPad', 'iPad', '{os}', '22B83', {supervised}, {enrolled}, {now}, {enrolled}, \
                     {now})",
                    id = DeviceId::new(),
                    model = models[i % models.len()],
                    supervised = i % 2,
                    enrolled = now - 200 * 86_400,
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO devices (id, udid, tenant_id, serial_number, state, device_name, model, model_name, \
             product_name, os_version, build_version, is_supervised, enrolled_at, last_seen_at, created_at, \
             updated_at) VALUES {}",
            rows.join(", ")
        );
        db.execute(sql.as_str()).await?;
        done += batch;
    }
    Ok(())
}

async fn count(db: &mut sqlx::AnyConnection, sql: &str) -> Result<i64> {
    Ok(db.fetch_one(sql).await?.try_get::<i64, _>(0)?)
}

/// CPU time so far of this process and, on PostgreSQL, of the database server's processes.
fn cpu(watch: &CpuOptions) -> Result<(Duration, Duration)> {
    let sample = watch.sample()?;
    Ok((
        process_cpu(std::process::id())?,
        sample.db.unwrap_or_default(),
    ))
}

/// The PostgreSQL backends serving clients other than `db`'s own: Orchard's pool. Their CPU is what executing
/// Orchard's statements costs the database; the rest of its processes (autovacuum, the WAL writer, the
/// checkpointer) do work that the writes cause later and in batches, whichever round it lands in. Empty when
/// the database is not PostgreSQL (`watch` names no database process).
async fn client_backends(watch: &CpuOptions, db: &mut sqlx::AnyConnection) -> Result<Vec<u32>> {
    if watch.db_process_name.is_none() {
        return Ok(Vec::new());
    }
    let rows = db
        .fetch_all(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND pid <> pg_backend_pid()",
        )
        .await?;
    rows.iter()
        .map(|row| Ok(u32::try_from(row.try_get::<i32, _>(0)?)?))
        .collect()
}

/// The CPU Orchard's client backends spent between `before` (read from the backends listed before) and now:
/// a backend started since counts whole. Also returns how many of those listed before have exited (their
/// last CPU is then missing here, and counted with the database's other processes).
async fn client_backends_since(
    watch: &CpuOptions,
    db: &mut sqlx::AnyConnection,
    before: &BTreeMap<u32, Duration>,
) -> Result<(Duration, usize)> {
    let mut pids = client_backends(watch, db).await?;
    pids.extend(before.keys());
    pids.sort_unstable();
    pids.dedup();
    let after = cpu_by_process(&pids);
    let spent = after
        .iter()
        .map(|(pid, now)| now.saturating_sub(before.get(pid).copied().unwrap_or_default()))
        .sum();
    let exited = before.keys().filter(|pid| !after.contains_key(pid)).count();
    Ok((spent, exited))
}

/// Runs reconciler passes until the work set is empty; returns the commands queued.
async fn drain(setup: &PushSetup) -> Result<usize> {
    Ok(drain_counting(setup).await?.0)
}

/// [`drain`], also returning how many devices the passes visited.
async fn drain_counting(setup: &PushSetup) -> Result<(usize, usize)> {
    let system = setup.orchard.system();
    let (mut queued, mut devices) = (0, 0);
    loop {
        let stats = setup.orchard.reconcile_once(&system).await?;
        queued += stats.queued;
        devices += stats.devices;
        if stats.devices == 0 {
            return Ok((queued, devices));
        }
    }
}

fn wifi_profile(name: &str, identifier: &str) -> Result<ProfileInput> {
    Ok(ProfileInput::Json(serde_json::from_value(json!({
        "name": name, "identifier": identifier,
        "payloads": [{"PayloadType": "com.apple.wifi.managed", "SSID_STR": name, "AutoJoin": true}]
    }))?))
}

async fn desired_state_50k(backend: Backend) -> Result<()> {
    // ORCHARD_BENCH_SQL_LOG=1 logs every statement with its elapsed time to stderr (Orchard's SQLite driver and
    // sqlx's PostgreSQL one log them under `sqlx::query`), the assignment between two marks: where its time goes.
    let sql_log = std::env::var_os("ORCHARD_BENCH_SQL_LOG").is_some();
    if sql_log {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,sqlx::query=debug")
            .with_writer(std::io::stderr)
            .try_init();
    }
    let Some(setup) = PushSetup::start(backend).await else {
        return Ok(());
    };
    let watch = CpuOptions {
        db_process_name: (backend == Backend::Postgres).then(|| "postgres".to_owned()),
        ..CpuOptions::default()
    };
    let operator = setup.operator.principal();
    let now = setup.clock.now();
    let tenant = TenantId::new();
    setup
        .store
        .create_tenant(&Tenant {
            id: tenant,
            name: "Music".into(),
            code: "mus".into(),
            created_at: now,
        })
        .await?;
    let mut db = setup.connect_database().await?;
    let seeding = Instant::now();
    seed(&mut db, tenant, 0, MEMBERS / 2, "18.1", now.0).await?;
    seed(&mut db, tenant, MEMBERS / 2, MEMBERS / 2, "17.7.2", now.0).await?;
    seed(&mut db, tenant, MEMBERS, OTHERS, "18.2", now.0).await?;
    println!(
        "\n{backend:?}: seeded {} iPads in {:.1} s",
        MEMBERS + OTHERS,
        seeding.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let group = setup
        .orchard
        .create_group(
            operator,
            tenant,
            serde_json::from_value::<GroupInput>(json!({
                "name": "iOS older than 18.2", "kind": "smart",
                "filter": {"conditions": [{"field": "os_version", "op": "lt", "value": "18.2"}]}
            }))?,
        )
        .await?;
    ensure!(
        group.member_count == MEMBERS as i64,
        "the smart group has {} members",
        group.member_count
    );
    let group_created = started.elapsed();
    // The new members were marked for the reconciler; nothing is assigned yet, so its passes queue nothing.
    let started = Instant::now();
    ensure!(drain(&setup).await? == 0, "nothing is assigned yet");
    let empty_passes = started.elapsed();
    let profile = setup
        .orchard
        .create_tenant_profile(
            operator,
            tenant,
            wifi_profile("Lab Wi-Fi", "edu.example.bench.wifi")?,
        )
        .await?;

    // 1. The assignment. Once its unit commits, every member is in the work set, and a member that connects
    // plans its own install before asking for a command: the time until then is the time until every
    // InstallProfile is queued for delivery.
    if sql_log {
        eprintln!("MARK assignment start");
    }
    let (cpu_before, db_before) = cpu(&watch)?;
    let started = Instant::now();
    setup
        .orchard
        .create_assignment(
            operator,
            tenant,
            serde_json::from_value::<AssignmentInput>(json!({
                "object_kind": "profile", "object_id": profile.profile.id, "groups": [group.id]
            }))?,
        )
        .await?;
    let assigned = started.elapsed();
    if sql_log {
        eprintln!("MARK assignment end");
    }
    let (cpu_after, db_after) = cpu(&watch)?;
    // An assignment marks every enrolled device of its tenant (a device it no longer targets may have to
    // lose the profile).
    let marked = count(&mut db, "SELECT COUNT(*) FROM reconcile_dirty").await?;
    ensure!(
        marked == (MEMBERS + OTHERS) as i64,
        "{marked} devices in the work set"
    );

    // ARRIVALS members connect before any pass reaches them: each plans its own install (one unit each).
    let arriving: Vec<DeviceId> = sqlx::query(&format!(
        "SELECT device_id FROM device_group_members WHERE group_id = '{}' ORDER BY device_id DESC LIMIT {ARRIVALS}",
        group.id
    ))
    .fetch_all(&mut db)
    .await?
    .iter()
    .map(|r| DeviceId::parse(&r.get::<String, _>(0)))
    .collect::<Result<_, _>>()?;
    let system = setup.orchard.system();
    if sql_log {
        eprintln!("MARK arrivals start");
    }
    let (arrival_cpu_before, arrival_db_before) = cpu(&watch)?;
    let started = Instant::now();
    for device in &arriving {
        setup.orchard.reconcile_device_now(&system, *device).await?;
    }
    let arrivals = started.elapsed();
    if sql_log {
        eprintln!("MARK arrivals end");
    }
    let (arrival_cpu_after, arrival_db_after) = cpu(&watch)?;
    let planned = count(
        &mut db,
        "SELECT COUNT(*) FROM commands WHERE request_type = 'InstallProfile' AND status = 'queued'",
    )
    .await?;
    ensure!(
        planned == ARRIVALS as i64,
        "{planned} installs queued by {ARRIVALS} arrivals"
    );

    // The reconciler's passes (its job, woken by the assignment) reach the rest.
    let (pass_cpu_before, pass_db_before) = cpu(&watch)?;
    let started = Instant::now();
    let queued = drain(&setup).await?;
    let passes = started.elapsed();
    let (pass_cpu_after, pass_db_after) = cpu(&watch)?;
    ensure!(
        queued == MEMBERS - ARRIVALS,
        "{queued} commands queued by the passes"
    );
    let installs = count(
        &mut db,
        "SELECT COUNT(*) FROM commands WHERE request_type = 'InstallProfile' AND status = 'queued'",
    )
    .await?;
    ensure!(
        installs == MEMBERS as i64,
        "{installs} InstallProfile commands"
    );
    println!("| step | wall | CPU (process) | CPU (PostgreSQL) |");
    println!("|---|---:|---:|---:|");
    println!(
        "| smart group created (members evaluated) | {:.0} ms | | |",
        group_created.as_secs_f64() * 1e3
    );
    println!(
        "| reconciler passes over the {MEMBERS} new members, nothing assigned | {:.0} ms | | |",
        empty_passes.as_secs_f64() * 1e3
    );
    println!(
        "| **profile assigned to the group → {MEMBERS} InstallProfile queued for delivery (work set marked)** | **{:.0} ms** | {:.0} ms | {:.0} ms |",
        assigned.as_secs_f64() * 1e3,
        (cpu_after - cpu_before).as_secs_f64() * 1e3,
        (db_after - db_before).as_secs_f64() * 1e3,
    );
    let per_arrival = |d: Duration| d.as_secs_f64() * 1e3 / ARRIVALS as f64;
    println!(
        "| {ARRIVALS} members arrive first and plan their own install | {:.3} ms/device | {:.3} ms/device | {:.3} ms/device |",
        per_arrival(arrivals),
        per_arrival(arrival_cpu_after - arrival_cpu_before),
        per_arrival(arrival_db_after - arrival_db_before),
    );
    println!(
        "| the reconciler's passes queue the other {} installs | {:.0} ms | {:.0} ms | {:.0} ms |",
        MEMBERS - ARRIVALS,
        passes.as_secs_f64() * 1e3,
        (pass_cpu_after - pass_cpu_before).as_secs_f64() * 1e3,
        (pass_db_after - pass_db_before).as_secs_f64() * 1e3,
    );

    // 2. Steady state: the installs acknowledged (as the devices' results would record them), then inventory
    // reports from REPORTS iPads.
    db.execute(
        "UPDATE device_profiles SET installed_version = pending_version, pending_action = NULL, \
         pending_version = NULL, pending_command = NULL",
    )
    .await?;
    db.execute("UPDATE commands SET status = 'acknowledged' WHERE status = 'queued'")
        .await?;
    // More desired state, as a department has it: four more smart groups with a profile each.
    let filters = [
        json!({"conditions": [{"field": "model", "op": "is", "value": "iPad13,18"}]}),
        json!({"conditions": [{"field": "supervised", "op": "is", "value": true}]}),
        json!({"conditions": [{"field": "device_name", "op": "matches", "value": "Elevplatta 1*"}]}),
        json!({"match": "any", "conditions": [{"field": "os_version", "op": "ge", "value": "18.2"},
                                              {"field": "model", "op": "is", "value": "iPad16,3"}]}),
    ];
    for (i, filter) in filters.into_iter().enumerate() {
        let group = setup
            .orchard
            .create_group(
                operator,
                tenant,
                serde_json::from_value::<GroupInput>(
                    json!({"name": format!("group {i}"), "kind": "smart", "filter": filter}),
                )?,
            )
            .await?;
        let profile = setup
            .orchard
            .create_tenant_profile(
                operator,
                tenant,
                wifi_profile(&format!("Wi-Fi {i}"), &format!("edu.example.bench.{i}"))?,
            )
            .await?;
        setup
            .orchard
            .create_assignment(
                operator,
                tenant,
                serde_json::from_value::<AssignmentInput>(json!({
                    "object_kind": "profile", "object_id": profile.profile.id, "groups": [group.id]
                }))?,
            )
            .await?;
    }
    drain(&setup).await?;
    db.execute(
        "UPDATE device_profiles SET installed_version = pending_version, pending_action = NULL, \
         pending_version = NULL, pending_command = NULL WHERE pending_command IS NOT NULL",
    )
    .await?;
    let ids: Vec<DeviceId> = sqlx::query(&format!(
        "SELECT id FROM devices WHERE tenant_id = '{tenant}' ORDER BY serial_number LIMIT {REPORTS}"
    ))
    .fetch_all(&mut db)
    .await?
    .iter()
    .map(|r| Ok(DeviceId::parse(&r.try_get::<String, _>(0)?)?))
    .collect::<Result<_>>()?;
    // What a report pays anyway, desired state or not: its unit (begin, commit) and the device's lookup. A
    // real report does the re-evaluation inside that unit, so this part is not desired state's.
    let (cpu_before, db_before) = cpu(&watch)?;
    for id in &ids {
        let mut unit = setup.store.begin_unit().await?;
        ensure!(unit.device_tenant(*id).await?.is_some(), "device {id}");
        unit.commit().await?;
    }
    let (cpu_after, db_after) = cpu(&watch)?;
    let (unit_cpu, unit_db) = (cpu_after - cpu_before, db_after - db_before);
    let system = setup.orchard.system();
    let (cpu_before, db_before) = cpu(&watch)?;
    let started = Instant::now();
    for id in &ids {
        setup.orchard.reevaluate_device_groups(&system, *id).await?;
    }
    let reevaluated = started.elapsed();
    let (cpu_mid, db_mid) = cpu(&watch)?;
    let queued = drain(&setup).await?;
    let (cpu_after, db_after) = cpu(&watch)?;
    ensure!(
        queued == 0,
        "{queued} commands queued for devices that have everything"
    );
    let per = |d: Duration| d.as_secs_f64() * 1e3 / REPORTS as f64;
    println!(
        "| {REPORTS} inventory reports: smart groups (5) re-evaluated + marked, a unit each | {:.0} ms | {:.3} ms/report | {:.3} ms/report |",
        reevaluated.as_secs_f64() * 1e3,
        per(cpu_mid - cpu_before),
        per(db_mid - db_before),
    );
    println!(
        "| the reconciler's passes over those {REPORTS} devices (5 assignments, nothing to do) | | {:.3} ms/report | {:.3} ms/report |",
        per(cpu_after - cpu_mid),
        per(db_after - db_mid),
    );
    println!(
        "| reconciler cost per inventory report, all of it (own unit included) | | {:.3} ms | {:.3} ms |",
        per(cpu_after - cpu_before),
        per(db_after - db_before),
    );
    println!(
        "| a unit with only the device's lookup (what the report's own unit costs anyway) | | {:.3} ms/report | {:.3} ms/report |",
        per(unit_cpu),
        per(unit_db),
    );
    println!(
        "| desired state's share of an inventory report, strict (all of it minus that unit) | | {:.3} ms | {:.3} ms |",
        per((cpu_after - cpu_before).saturating_sub(unit_cpu)),
        per((db_after - db_before).saturating_sub(unit_db)),
    );
    report_path_share(&setup, &watch, operator, tenant, &mut db).await
}

/// Sessions of every reporting iPad: each is asked for DeviceInformation and answers every command it is sent;
/// the DeviceInformation answer names the device `name` and says it runs `os_version`. Then the reconciler's
/// passes. Returns the commands other than DeviceInformation the iPads were sent, and the devices the passes
/// visited.
async fn reporting_round(
    setup: &PushSetup,
    node: &DeviceNode,
    operator: &Principal,
    ipads: &[SignedIpad],
    (name, os_version): (&str, &str),
) -> Result<(usize, usize)> {
    let mut others = 0;
    for (n, ipad) in ipads.iter().enumerate() {
        setup
            .orchard
            .queue_command(
                operator,
                ipad.device_id,
                Command::DeviceInformation {
                    queries: [
                        "DeviceName",
                        "OSVersion",
                        "ProductName",
                        "SerialNumber",
                        "IsSupervised",
                        "BatteryLevel",
                    ]
                    .map(String::from)
                    .to_vec(),
                },
            )
            .await?;
        let mut next = node
            .report(ipad, ReportStatus::Idle, None, plist::Dictionary::new())
            .await;
        while let Some(plist) = next {
            let (uuid, command) = decode_command(&plist)?;
            let body = if command.kind() == RequestType::DeviceInformation {
                DeviceInformationAnswer {
                    serial_number: &format!("BREP{n:08}"),
                    device_name: name,
                    os_version,
                    shared_ipad: false,
                    battery_level: 0.2 + 0.0001 * n as f64,
                }
                .body(&ipad.udid)
            } else {
                others += 1;
                plist::Dictionary::new()
            };
            next = node
                .report(ipad, ReportStatus::Acknowledged, Some(uuid), body)
                .await;
        }
    }
    let (_, reconciled) = drain_counting(setup).await?;
    Ok((others, reconciled))
}

/// Desired state's share of an inventory report measured through the report path itself (the second form of
/// figure 2): enrolled iPads of the tenant (its five smart groups and profiles) answer DeviceInformation in
/// signed reports, in rounds of three kinds. A repeat of the last answer (the facts digest skips desired
/// state); a new device name (no group reads it differently, and no plan reads it: the groups are
/// re-evaluated and the device is not marked); a new OS version in the same groups' ranges (a fact the plans
/// read: the groups are re-evaluated, the device marked, and its pass finds nothing to do). All kinds store
/// the same result, facts and inventory section in the same units, so each changed kind's difference from the
/// repeat is desired state's, the passes and any extra commit cost included.
async fn report_path_share(
    setup: &PushSetup,
    watch: &CpuOptions,
    operator: &Principal,
    tenant: TenantId,
    db: &mut sqlx::AnyConnection,
) -> Result<()> {
    let node = setup.device_node();
    let enrolling = Instant::now();
    let mut ipads = Vec::with_capacity(REPORTING_IPADS);
    for _ in 0..REPORTING_IPADS {
        ipads.push(node.enroll_ipad().await);
    }
    // Each came through a link of a tenant of its own; the bench's tenant is where the groups are.
    let ids: Vec<String> = ipads.iter().map(|i| format!("'{}'", i.device_id)).collect();
    db.execute(
        format!(
            "UPDATE devices SET tenant_id = '{tenant}' WHERE id IN ({})",
            ids.join(", ")
        )
        .as_str(),
    )
    .await?;
    // Their first answers join them to their groups, and the installs that follow are answered.
    let first = ("Elevplatta 9000", "18.1");
    reporting_round(setup, &node, operator, &ipads, first).await?;
    let mut settling = 0;
    while reporting_round(setup, &node, operator, &ipads, first)
        .await?
        .0
        > 0
    {
        settling += 1;
        ensure!(settling < 5, "the reporting iPads do not settle");
    }
    println!(
        "\n{REPORTING_IPADS} iPads enrolled through SCEP and settled in {:.1} s",
        enrolling.elapsed().as_secs_f64()
    );
    // CPU (process, PostgreSQL, PostgreSQL's client backends) spent by each kind of round: a repeat, a
    // rename, an OS update.
    let mut spent = [[Duration::ZERO; 3]; 3];
    let mut rounds = [0usize; 3];
    // Each round's kind and CPU per report in those three columns, for the per-cycle differences below.
    let mut per_round: Vec<(usize, [f64; 3])> = Vec::with_capacity(4 * REPORT_ROUNDS);
    let mut exited_backends = 0;
    let (mut name, mut os_version) = (first.0.to_owned(), first.1);
    for round in 0..4 * REPORT_ROUNDS {
        // A cycle of four rounds: a rename, a repeat, an OS update (18.1 and 18.1.1 alternate: both in
        // "older than 18.2"), a repeat.
        let kind = match round % 4 {
            0 => 1,
            2 => 2,
            _ => 0,
        };
        match kind {
            1 => name = format!("Elevplatta 9{:03}", round / 4 + 1),
            2 => {
                os_version = if os_version == "18.1" {
                    "18.1.1"
                } else {
                    "18.1"
                }
            }
            _ => {}
        }
        let clients_before = cpu_by_process(&client_backends(watch, db).await?);
        let (cpu_before, db_before) = cpu(watch)?;
        let (others, reconciled) =
            reporting_round(setup, &node, operator, &ipads, (&name, os_version)).await?;
        let (cpu_after, db_after) = cpu(watch)?;
        let (clients, exited) = client_backends_since(watch, db, &clients_before).await?;
        exited_backends += exited;
        ensure!(others == 0, "round {round} sent {others} other commands");
        // Only an answer that changes what the plans read marks the device; the passes visit those.
        let expected = if kind == 2 { REPORTING_IPADS } else { 0 };
        ensure!(
            reconciled == expected,
            "round {round}: the passes visited {reconciled} devices, not {expected}"
        );
        let round_spent = [cpu_after - cpu_before, db_after - db_before, clients];
        for (total, this) in spent[kind].iter_mut().zip(round_spent) {
            *total += this;
        }
        rounds[kind] += 1;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / REPORTING_IPADS as f64;
        per_round.push((kind, round_spent.map(ms)));
    }
    let per =
        |kind: usize, d: Duration| d.as_secs_f64() * 1e3 / (REPORTING_IPADS * rounds[kind]) as f64;
    let [same, renamed, updated] = [0, 1, 2].map(|k| spent[k].map(|d| per(k, d)));
    let postgres = watch.db_process_name.is_some();
    println!(
        "| through the report path ({} signed DeviceInformation reports of each changed kind, {} repeats) | CPU (process) | CPU (PostgreSQL) | of which its client backends |",
        REPORTING_IPADS * rounds[1],
        REPORTING_IPADS * rounds[0]
    );
    println!("|---|---:|---:|---:|");
    for (what, [process, server, clients]) in [
        ("a session whose answer repeats the facts (queue, Idle, answer; desired state skipped)", same),
        ("a session whose answer renames the iPad (groups re-evaluated, no mark)", renamed),
        ("a session whose answer updates the OS (groups re-evaluated, mark, the reconciler's pass)", updated),
    ] {
        println!("| {what} | {process:.3} ms | {server:.3} ms | {clients:.3} ms |");
    }
    for (what, changed) in [("a rename", renamed), ("an OS update", updated)] {
        let [process, server, clients] = [0, 1, 2].map(|c| (changed[c] - same[c]).max(0.0));
        println!(
            "| **desired state's share of an inventory report: {what}** (the difference) | **{process:.3} ms** | {server:.3} ms | {clients:.3} ms |"
        );
    }
    // The same differences taken per cycle against the repeats on either side of each changed round: a burst
    // of other work on the machine moves one cycle, not the median.
    for (kind, what) in [(1, "a rename"), (2, "an OS update")] {
        let [process, server, clients] = [0, 1, 2].map(|column| {
            let mut differences: Vec<f64> = (0..per_round.len())
                .filter(|&i| per_round[i].0 == kind)
                .map(|i| {
                    let neighbours: Vec<f64> = [i.checked_sub(1), Some(i + 1)]
                        .into_iter()
                        .flatten()
                        .filter_map(|j| per_round.get(j))
                        .filter(|r| r.0 == 0)
                        .map(|r| r.1[column])
                        .collect();
                    per_round[i].1[column]
                        - neighbours.iter().sum::<f64>() / neighbours.len() as f64
                })
                .collect();
            differences.sort_by(f64::total_cmp);
            let median = differences[differences.len() / 2];
            format!(
                "{median:.3} ms (cycles {:.3} to {:.3})",
                differences[0],
                differences[differences.len() - 1]
            )
        });
        println!(
            "| desired state's share, median of the {} per-cycle differences: {what} | {process} | {server} | {clients} |",
            rounds[kind]
        );
    }
    if postgres {
        // What the database's other processes did over all the rounds, per report of any kind: the writes'
        // later work (vacuum, WAL, checkpoints), not attributable to a round.
        let reports = REPORTING_IPADS * rounds.iter().sum::<usize>();
        let others: Duration = spent.iter().map(|k| k[1].saturating_sub(k[2])).sum();
        println!(
            "| PostgreSQL's other processes over all {reports} reports (autovacuum, WAL writer, checkpointer; {exited_backends} client backends exited and count here) | | {:.3} ms/report | |",
            others.as_secs_f64() * 1e3 / reports as f64
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-desired.sh"]
async fn desired_state_50k_sqlite() -> Result<()> {
    desired_state_50k(Backend::Sqlite).await.context("sqlite")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-desired.sh"]
async fn desired_state_50k_postgres() -> Result<()> {
    desired_state_50k(Backend::Postgres)
        .await
        .context("postgres")
}
