//! End to end, on SQLite and PostgreSQL: Shared iPads with the real server and simulated iPads. Three students
//! sign in and out of one Shared iPad: each TokenUpdate makes a user channel with its own queue, a user-scoped
//! DeclarativeManagement command and declaration set. The device's users in the API match the simulator's after a
//! UserList; logging out and deleting users work, deleting a user with unsynced data needs the explicit force
//! choice (confirmed with the serial number), and a deleted user's channel ends. A single-user iPad never
//! receives user commands; a viewer cannot act and another tenant sees none of it; bad input is a 4xx naming the
//! field; every action is in the audit log. A Shared iPad policy (temporary sessions only, a 30-minute timeout)
//! reaches exactly the tenant's Shared iPads through the reconciler and shows compliant; a group's policy
//! overrides the tenant's key by key.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use orchard_sim::{SimConfig, SimDevice};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use reqwest::Method;
use serde_json::{json, Value};

const GIB: i64 = 1 << 30;
const STUDENTS: [&str; 3] = [
    "ada@students.example.edu",
    "ben@students.example.edu",
    "cy@students.example.edu",
];
const USER_COMMANDS: [&str; 3] = ["UserList", "LogOutUser", "DeleteUser"];

/// One iPad of `tenant`, enrolled and through its first session; a Shared iPad when `shared`.
async fn enroll(server: &TestServer, tenant: &str, shared: bool) -> Result<(SimDevice, String)> {
    let config: SimConfig = server.sim_config();
    let link = server.enrollment_link(tenant, None).await?;
    let mut device = SimDevice::new_random(&config);
    device.state.shared_ipad = shared;
    device.enroll(&link).await.context("enrollment")?;
    device.poll().await?;
    let id = server.device_by_udid(device.udid()).await?["id"]
        .as_str()
        .context("device id")?
        .to_owned();
    Ok((device, id))
}

/// Polls the iPad until `done` holds (the reconciler runs beside the request that woke it). Bounded: a
/// reconciler that never acts fails the test instead of hanging it.
async fn poll_until(
    ipad: &mut SimDevice,
    what: &str,
    done: impl Fn(&SimDevice) -> bool,
) -> Result<()> {
    for _ in 0..400 {
        ipad.poll().await?;
        if done(ipad) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("gave up waiting: {what}")
}

/// The SharedDeviceConfiguration the simulated iPad accepted last.
fn accepted_configuration(ipad: &SimDevice) -> Value {
    ipad.state
        .shared_device_configuration
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null)
}

/// The user names and flags the API shows, sorted.
fn api_users(users: &Value) -> Vec<(String, bool, bool, i64, i64)> {
    let mut out: Vec<_> = users["users"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|u| {
            (
                u["user_name"].as_str().unwrap_or_default().to_owned(),
                u["is_logged_in"].as_bool().unwrap_or_default(),
                u["has_data_to_sync"].as_bool().unwrap_or_default(),
                u["data_quota"].as_i64().unwrap_or(-1),
                u["data_used"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    out.sort();
    out
}

/// The same from the simulator's state.
fn sim_users(device: &SimDevice) -> Vec<(String, bool, bool, i64, i64)> {
    let mut out: Vec<_> = device
        .state
        .shared_users
        .iter()
        .map(|u| {
            (
                u.user_name.clone(),
                u.is_logged_in,
                u.has_data_to_sync,
                u.data_quota,
                u.data_used,
            )
        })
        .collect();
    out.sort();
    out
}

fn user_channels(detail: &Value) -> Vec<String> {
    let mut out: Vec<String> = detail["channels"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["user_short_name"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let music_admin = server.create_token(Role::Admin, Some(&music), "music-admin")?;

    let (mut cart, cart_id) = enroll(&server, &physics, true).await?;
    let (mut single, single_id) = enroll(&server, &physics, false).await?;
    let (mut music_cart, music_cart_id) = enroll(&server, &music, true).await?;
    let serial = cart.state.serial_number.clone();
    let users_path = format!("/api/v1/devices/{cart_id}/users");

    // Three students sign in and out, one after the other: each gets a user channel whose first session
    // brings a user-scoped DeclarativeManagement and its declaration set.
    for (n, student) in STUDENTS.iter().enumerate() {
        cart.sign_in_user(student, 2 * GIB).await?;
        let session = cart.poll_user(student).await?;
        ensure!(
            session
                .handled
                .iter()
                .any(|h| h.request_type == "DeclarativeManagement"),
            "{student}: {session:?}"
        );
        let synced = cart
            .state
            .ddm
            .get(*student)
            .context("user channel synced")?;
        ensure!(
            synced
                .declarations
                .keys()
                .any(|k| k.ends_with("orchard.properties")),
            "{student}: {synced:?}"
        );
        cart.set_user_data(student, (n as i64 + 1) * 100_000_000, n == 1)?;
        if n < 2 {
            cart.sign_out_user();
        }
    }
    let detail = server.get(&format!("/api/v1/devices/{cart_id}")).await?;
    let mut expected_channels: Vec<String> = STUDENTS.iter().map(|s| s.to_string()).collect();
    expected_channels.sort();
    ensure!(user_channels(&detail) == expected_channels, "{detail}");
    let commands = server.commands_of(&cart_id).await?;
    for student in STUDENTS {
        ensure!(
            commands.iter().any(|c| c["channel"]
                .as_str()
                .is_some_and(|ch| ch.ends_with(&format!(":{student}")))
                && c["request_type"] == "DeclarativeManagement"
                && c["status"] == "acknowledged"),
            "user command of {student} in {commands:?}"
        );
    }
    let declarations = server
        .get(&format!("/api/v1/devices/{cart_id}/declarations"))
        .await?;
    let user_sets = declarations["channels"]
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| c["channel"] == "user").count());
    ensure!(user_sets == 3, "{declarations}");

    // Before any UserList the API knows the channels but no resident users.
    let users = server.get(&users_path).await?;
    ensure!(
        users["shared_ipad"] == true && users["refreshed_at"].is_null(),
        "{users}"
    );
    ensure!(
        users["other_user_channels"].as_array().map_or(0, Vec::len) == 3,
        "{users}"
    );

    // A refresh: UserList, and the API matches the simulator.
    let (s, queued) = server
        .api(&admin, Method::POST, &format!("{users_path}/refresh"), None)
        .await?;
    ensure!(
        s == 202 && queued["request_type"] == "UserList",
        "{s}: {queued}"
    );
    cart.poll().await?;
    let users = server.get(&users_path).await?;
    ensure!(
        api_users(&users) == sim_users(&cart),
        "{users} vs {:?}",
        cart.state.shared_users
    );
    ensure!(
        users["users"]
            .as_array()
            .is_some_and(|u| u.iter().all(|u| u["has_user_channel"] == true)),
        "{users}"
    );
    ensure!(users["users"][0]["data_quota"] == 2 * GIB, "{users}");

    // The usage report's detail counts the resident users per tenant (not billed).
    let usage = server
        .get("/api/v1/usage?from=2026-01-01&to=2026-01-02")
        .await?;
    let line = |tenant: &str| {
        usage["tenants"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["tenant_id"] == tenant).cloned())
            .unwrap_or(Value::Null)
    };
    ensure!(
        line(&physics)["shared_ipads"] == 1 && line(&physics)["resident_users"] == 3,
        "{usage}"
    );
    ensure!(line(&music)["resident_users"] == 0, "{usage}");

    // A viewer sees the users but cannot act; another tenant's admin cannot see the device at all.
    let (s, seen) = server.api(&viewer, Method::GET, &users_path, None).await?;
    ensure!(s == 200 && api_users(&seen) == api_users(&users), "{s}");
    for (path, body) in [
        ("/refresh", None),
        ("/log-out", None),
        ("/delete", Some(json!({"user_name": STUDENTS[0]}))),
        ("/delete-all", Some(json!({"confirm_serial": serial}))),
    ] {
        let (s, _) = server
            .api(
                &viewer,
                Method::POST,
                &format!("{users_path}{path}"),
                body.clone(),
            )
            .await?;
        ensure!(s == 403, "viewer {path} → {s}");
        let (s, refused) = server
            .api(
                &music_admin,
                Method::POST,
                &format!("{users_path}{path}"),
                body,
            )
            .await?;
        ensure!(s == 404, "other tenant {path} → {s}");
        ensure!(!refused.to_string().contains(&cart_id), "{refused}");
    }
    let (s, _) = server
        .api(&music_admin, Method::GET, &users_path, None)
        .await?;
    ensure!(s == 404, "other tenant reads users → {s}");

    // Bad input: 4xx naming the field, never 5xx.
    for body in [
        json!({"user_name": ""}),
        json!({"user_name": "a\u{7}b"}),
        json!({"user_name": "x".repeat(300)}),
        json!({"user_name": STUDENTS[0], "force": true}),
        json!({"name": STUDENTS[0]}),
        json!({"user_name": 7}),
    ] {
        let (s, refused) = server
            .api(
                &admin,
                Method::POST,
                &format!("{users_path}/delete"),
                Some(body.clone()),
            )
            .await?;
        ensure!(s == 400, "{body} → {s}: {refused}");
        let text = refused.to_string();
        ensure!(
            text.contains("user_name") || text.contains("force") || text.contains("name"),
            "{body}: {refused}"
        );
    }

    // Log out: nobody is signed in afterwards.
    let (s, queued) = server
        .api(&admin, Method::POST, &format!("{users_path}/log-out"), None)
        .await?;
    ensure!(
        s == 202 && queued["refresh_command_uuid"].is_string(),
        "{s}: {queued}"
    );
    cart.poll().await?;
    ensure!(cart.state.shared_users.iter().all(|u| !u.is_logged_in));
    let users = server.get(&users_path).await?;
    ensure!(api_users(&users) == sim_users(&cart), "{users}");

    // Ben has data that is not synced: deleting him needs the force choice, confirmed with the serial.
    let ben = STUDENTS[1];
    let (s, refused) = server
        .api(
            &admin,
            Method::POST,
            &format!("{users_path}/delete"),
            Some(json!({"user_name": ben})),
        )
        .await?;
    ensure!(s == 409, "{s}: {refused}");
    ensure!(refused.to_string().contains("force_deletion"), "{refused}");
    let (s, refused) = server
        .api(
            &admin,
            Method::POST,
            &format!("{users_path}/delete"),
            Some(json!({"user_name": ben, "force_deletion": true})),
        )
        .await?;
    ensure!(
        s == 400 && refused["error"]["code"] == "confirmation_required",
        "{s}: {refused}"
    );
    ensure!(cart.state.shared_users.iter().any(|u| u.user_name == ben));
    let (s, queued) = server
        .api(
            &admin,
            Method::POST,
            &format!("{users_path}/delete"),
            Some(json!({"user_name": ben, "force_deletion": true, "confirm_serial": serial})),
        )
        .await?;
    ensure!(
        s == 202 && queued["request_type"] == "DeleteUser",
        "{s}: {queued}"
    );
    cart.poll().await?;
    ensure!(!cart.state.shared_users.iter().any(|u| u.user_name == ben));

    // Ada has nothing unsynced: a plain delete works. Both channels ended with their users.
    let ada = STUDENTS[0];
    let (s, _) = server
        .api(
            &admin,
            Method::POST,
            &format!("{users_path}/delete"),
            Some(json!({"user_name": ada})),
        )
        .await?;
    ensure!(s == 202, "{s}");
    cart.poll().await?;
    let users = server.get(&users_path).await?;
    ensure!(api_users(&users) == sim_users(&cart), "{users}");
    ensure!(api_users(&users).len() == 1, "{users}");
    let detail = server.get(&format!("/api/v1/devices/{cart_id}")).await?;
    ensure!(
        user_channels(&detail) == vec![STUDENTS[2].to_owned()],
        "{detail}"
    );

    // Delete all users: needs the confirmation, then the device is empty and so are its user channels.
    let (s, refused) = server
        .api(
            &admin,
            Method::POST,
            &format!("{users_path}/delete-all"),
            Some(json!({})),
        )
        .await?;
    ensure!(
        s == 400 && refused["error"]["code"] == "confirmation_required",
        "{s}: {refused}"
    );
    let (s, _) = server
        .api(
            &admin,
            Method::POST,
            &format!("{users_path}/delete-all"),
            Some(json!({"confirm_serial": serial})),
        )
        .await?;
    ensure!(s == 202, "{s}");
    cart.poll().await?;
    ensure!(cart.state.shared_users.is_empty());
    let users = server.get(&users_path).await?;
    ensure!(api_users(&users).is_empty(), "{users}");
    let detail = server.get(&format!("/api/v1/devices/{cart_id}")).await?;
    ensure!(user_channels(&detail).is_empty(), "{detail}");

    // The single-user iPad: every user action is refused before anything is queued, and it never receives a
    // user command.
    let single_users = format!("/api/v1/devices/{single_id}/users");
    let users = server.get(&single_users).await?;
    ensure!(
        users["shared_ipad"] == false && users["users"] == json!([]),
        "{users}"
    );
    for (path, body) in [
        ("/refresh", None),
        ("/log-out", None),
        ("/delete", Some(json!({"user_name": ada}))),
        (
            "/delete-all",
            Some(json!({"confirm_serial": single.state.serial_number})),
        ),
    ] {
        let (s, refused) = server
            .api(&admin, Method::POST, &format!("{single_users}{path}"), body)
            .await?;
        ensure!(s == 409, "single-user {path} → {s}: {refused}");
    }
    single.poll().await?;
    ensure!(
        !server
            .commands_of(&single_id)
            .await?
            .iter()
            .any(|c| USER_COMMANDS.iter().any(|t| c["request_type"] == *t)),
        "single-user iPad got user commands"
    );
    ensure!(!single
        .state
        .handled_commands
        .iter()
        .any(|h| USER_COMMANDS.contains(&h.request_type.as_str())));

    // The Shared iPad policy: temporary sessions only, a 30-minute timeout. Bad settings are refused by name;
    // a viewer and another tenant cannot set it.
    let policy_path = format!("/api/v1/tenants/{physics}/shared-ipad-policy");
    let policy = json!({"temporary_session_only": true, "temporary_session_timeout": 1800});
    for (body, field) in [
        (
            json!({"temporary_session_timeout": 10}),
            "temporary_session_timeout",
        ),
        (
            json!({"passcode_lock_grace_period": 7}),
            "passcode_lock_grace_period",
        ),
        (
            json!({"managed_apple_id_default_domains": ["no domain"]}),
            "managed_apple_id_default_domains",
        ),
        (json!({"bogus": true}), "bogus"),
        (json!({"resident_users": "many"}), "resident_users"),
    ] {
        let (s, refused) = server
            .api(&admin, Method::PUT, &policy_path, Some(body.clone()))
            .await?;
        ensure!(
            s == 400 && refused.to_string().contains(field),
            "{body} → {s}: {refused}"
        );
    }
    let (s, _) = server
        .api(&viewer, Method::PUT, &policy_path, Some(policy.clone()))
        .await?;
    ensure!(s == 403, "viewer sets policy → {s}");
    let (s, refused) = server
        .api(
            &music_admin,
            Method::PUT,
            &policy_path,
            Some(policy.clone()),
        )
        .await?;
    ensure!(
        s == 404 && !refused.to_string().contains(&physics),
        "{s}: {refused}"
    );
    let (s, saved) = server
        .api(&admin, Method::PUT, &policy_path, Some(policy.clone()))
        .await?;
    ensure!(
        s == 200 && saved["revision"] == 1 && saved["settings"] == policy,
        "{s}: {saved}"
    );

    // The reconciler sends it to the Shared iPad, which accepts it; the compliance view says so.
    poll_until(&mut cart, "policy on the shared ipad", |ipad| {
        accepted_configuration(ipad)["temporary_session_timeout"] == 1800
    })
    .await?;
    let accepted = accepted_configuration(&cart);
    ensure!(
        accepted["item"] == "SharedDeviceConfiguration"
            && accepted["temporary_session_only"] == true,
        "{accepted}"
    );
    let compliance_path = format!("/api/v1/tenants/{physics}/shared-ipad-compliance");
    let compliance = server.get(&compliance_path).await?;
    ensure!(
        compliance["shared_ipads"] == 1 && compliance["compliant"] == 1,
        "{compliance}"
    );
    let of = |report: &Value, id: &str| {
        report["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["device_id"] == id).cloned())
            .unwrap_or(Value::Null)
    };
    ensure!(
        of(&compliance, &cart_id)["status"] == "compliant",
        "{compliance}"
    );
    ensure!(
        of(&compliance, &cart_id)["applied"] == policy,
        "{compliance}"
    );
    ensure!(
        of(&compliance, &single_id)["status"] == "not_shared_ipad",
        "{compliance}"
    );
    let (s, _) = server
        .api(&music_admin, Method::GET, &compliance_path, None)
        .await?;
    ensure!(s == 404, "other tenant reads compliance → {s}");

    // Exactly the tenant's Shared iPads: the single-user iPad and the other tenant's Shared iPad get nothing.
    single.poll().await?;
    music_cart.poll().await?;
    for (id, ipad) in [(&single_id, &single), (&music_cart_id, &music_cart)] {
        ensure!(
            !server
                .commands_of(id)
                .await?
                .iter()
                .any(|c| c["request_type"] == "Settings"),
            "{id} got Settings"
        );
        ensure!(ipad.state.shared_device_configuration.is_none());
    }
    let music_compliance = server
        .get(&format!("/api/v1/tenants/{music}/shared-ipad-compliance"))
        .await?;
    ensure!(
        of(&music_compliance, &music_cart_id)["status"] == "no_policy",
        "{music_compliance}"
    );

    // A group's policy overrides the tenant's key by key for its Shared iPads.
    let group = server
        .post(
            &format!("/api/v1/tenants/{physics}/groups"),
            json!({"name": "Lecture cart", "kind": "static"}),
        )
        .await?;
    let group_id = group["id"].as_str().context("group id")?.to_owned();
    server
        .post(
            &format!("/api/v1/tenants/{physics}/groups/{group_id}/members"),
            json!({"device_ids": [cart_id, single_id]}),
        )
        .await?;
    let group_policy = format!("/api/v1/tenants/{physics}/groups/{group_id}/shared-ipad-policy");
    let (s, refused) = server
        .api(
            &music_admin,
            Method::PUT,
            &group_policy,
            Some(json!({"temporary_session_timeout": 600})),
        )
        .await?;
    ensure!(s == 404, "{s}: {refused}");
    let (s, saved) = server
        .api(
            &admin,
            Method::PUT,
            &group_policy,
            Some(json!({"temporary_session_timeout": 600})),
        )
        .await?;
    ensure!(
        s == 200 && saved["group_name"] == "Lecture cart",
        "{s}: {saved}"
    );
    poll_until(&mut cart, "group policy on the shared ipad", |ipad| {
        accepted_configuration(ipad)["temporary_session_timeout"] == 600
    })
    .await?;
    ensure!(accepted_configuration(&cart)["temporary_session_only"] == true);
    let compliance = server.get(&compliance_path).await?;
    ensure!(
        of(&compliance, &cart_id)["status"] == "compliant",
        "{compliance}"
    );
    ensure!(
        of(&compliance, &cart_id)["wanted"]["temporary_session_timeout"] == 600,
        "{compliance}"
    );
    let policies = server.get(&policy_path).await?;
    ensure!(
        policies["tenant"]["settings"] == policy
            && policies["groups"].as_array().map_or(0, Vec::len) == 1,
        "{policies}"
    );
    single.poll().await?;
    ensure!(
        !server
            .commands_of(&single_id)
            .await?
            .iter()
            .any(|c| c["request_type"] == "Settings"),
        "the single-user iPad in the group got Settings"
    );
    let (s, _) = server
        .api(&admin, Method::DELETE, &group_policy, None)
        .await?;
    ensure!(s == 204, "delete group policy → {s}");

    // Every action is in the audit log, refused ones included, filed under the tenant.
    for (action, at_least) in [
        ("device.users.refresh", 1),
        ("device.user.log_out", 1),
        ("device.user.delete", 4),
        ("device.users.delete_all", 2),
        ("shared_ipad_policy.update", 8),
        ("shared_ipad_policy.group.update", 2),
        ("shared_ipad_policy.group.delete", 1),
    ] {
        let audit = server
            .get(&format!("/api/v1/audit?action={action}"))
            .await?;
        let n = audit["items"].as_array().map_or(0, Vec::len);
        ensure!(n >= at_least, "{action}: {n} events: {audit}");
    }
    Ok(())
}

orchard_testkit::backend_tests! {
    shared_ipad => scenario;
}
