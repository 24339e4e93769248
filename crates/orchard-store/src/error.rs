//! The one error type of the store: callers branch on conflicts and missing rows, everything else is a fault.

/// What can go wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (duplicate tenant code, command uuid, token hash, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The row to change does not exist, or a row it refers to (tenant, device, link) does not.
    #[error("not found")]
    NotFound,
    /// A stored value could not be turned back into its type; the database was changed behind our back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            if db.is_unique_violation() {
                return StoreError::Conflict(db.message().to_owned());
            }
            // A foreign key names a row that must exist first: to the caller that row was not found.
            if db.is_foreign_key_violation() {
                return StoreError::NotFound;
            }
        }
        StoreError::Database(error)
    }
}
