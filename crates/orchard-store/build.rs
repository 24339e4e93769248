//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds the SQL files.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations/sqlite");
    println!("cargo:rerun-if-changed=../../migrations/postgres");
}
