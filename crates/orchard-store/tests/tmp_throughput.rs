#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! temporary
use orchard_store::*;
use orchard_types::*;
use std::time::Instant;

async fn run(store: Store, label: &str) {
    let t = Tenant { id: TenantId::new(), name: "x".into(), code: "x".into(), created_at: UnixTime(0) };
    store.create_tenant(&t).await.unwrap();
    let n = 2000;
    let mut chans = Vec::new();
    let mut cmds = Vec::new();
    for i in 0..n {
        let udid = Udid::parse(&format!("UDID-{i:06}")).unwrap();
        let d = store.authenticate_device(&AuthenticateDevice { udid: udid.clone(), tenant_id: t.id, cert_fingerprint: "f".into(), topic: "t".into(), facts: DeviceFacts::default(), now: UnixTime(0) }).await.unwrap();
        let ch = ChannelId::device(&udid);
        cmds.push(NewCommand { uuid: CommandUuid::new_random(), device_id: d.id, tenant_id: t.id, channel: ch.clone(), request_type: "DeviceInformation".into(), payload: vec![0; 600], queued_by: None, queued_at: UnixTime(0), expires_at: Some(UnixTime(1000)) });
        chans.push(ch);
    }
    let start = Instant::now();
    store.enqueue_commands(&cmds).await.unwrap();
    println!("{label}: enqueue {n} in {:?}", start.elapsed());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        let mine: Vec<ChannelId> = chans.iter().skip(w).step_by(8).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for ch in mine {
                let c = store.next_command(&ch, false, UnixTime(5)).await.unwrap().unwrap();
                store.record_result(&CommandResultRecord { channel: ch.clone(), uuid: c.uuid, status: CommandStatus::Acknowledged, result: Some(vec![0; 2000]), error_chain: None, now: UnixTime(5) }).await.unwrap();
                assert!(store.next_command(&ch, true, UnixTime(5)).await.unwrap().is_none());
            }
        }));
    }
    for t in tasks { t.await.unwrap(); }
    let el = start.elapsed();
    println!("{label}: {n} sessions (3 calls each) in {el:?} = {:.0} calls/s", (3 * n) as f64 / el.as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap();
    run(store, "sqlite").await;
    sqlx::any::install_default_drivers();
    use sqlx::{Connection, Executor};
    let mut admin = sqlx::AnyConnection::connect("postgres://orchard:orchard@127.0.0.1:5432/postgres").await.unwrap();
    admin.execute("DROP DATABASE IF EXISTS orchard_tp WITH (FORCE)").await.unwrap();
    admin.execute("CREATE DATABASE orchard_tp").await.unwrap();
    let store = Store::connect("postgres://orchard:orchard@127.0.0.1:5432/orchard_tp").await.unwrap();
    run(store.clone(), "postgres").await;
    store.close().await;
    admin.execute("DROP DATABASE orchard_tp WITH (FORCE)").await.unwrap();
}
