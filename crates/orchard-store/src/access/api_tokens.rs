//! API tokens: creating them, finding one by its secret's hash (with the state of the person it acts for),
//! scoped listing, revocation, who made them and when they were last used.

use sqlx::any::AnyRow;

use orchard_types::{TokenId, UnixTime};

use crate::sql::Sql;
use crate::{rows, ApiToken, Scope, Store, StoreError};

const API_TOKEN_COLUMNS: &str =
    "t.id, t.name, t.role, t.tenant_id, t.token_hash, t.created_at, t.expires_at, \
     t.revoked_at, t.owner_user_id";

fn api_token_from_row(row: &AnyRow) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: rows::token_id(row, "id")?,
        name: rows::text(row, "name")?,
        role: rows::role(row, "role")?,
        tenant_id: rows::opt_tenant_id(row, "tenant_id")?,
        token_hash: rows::text(row, "token_hash")?,
        created_at: rows::time(row, "created_at")?,
        expires_at: rows::opt_time(row, "expires_at")?,
        revoked_at: rows::opt_time(row, "revoked_at")?,
        owner_user_id: rows::opt_text(row, "owner_user_id")?,
    })
}

/// A token found by its secret, and whether the person it acts for (if any) may still act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedToken {
    pub token: ApiToken,
    /// False when the token acts for a person who is disabled or no longer exists: it dies with them.
    pub owner_active: bool,
}

/// A token as listed (never its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenListing {
    pub id: TokenId,
    pub name: String,
    pub role: orchard_types::Role,
    pub tenant_id: Option<orchard_types::TenantId>,
    pub created_at: UnixTime,
    pub created_by: Option<String>,
    pub expires_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
    pub last_used_at: Option<UnixTime>,
}

const LISTING_COLUMNS: &str =
    "id, name, role, tenant_id, created_at, created_by, expires_at, revoked_at, last_used_at";

fn listing_from_row(row: &sqlx::any::AnyRow) -> Result<ApiTokenListing, StoreError> {
    Ok(ApiTokenListing {
        id: rows::token_id(row, "id")?,
        name: rows::text(row, "name")?,
        role: rows::role(row, "role")?,
        tenant_id: rows::opt_tenant_id(row, "tenant_id")?,
        created_at: rows::time(row, "created_at")?,
        created_by: rows::opt_text(row, "created_by")?,
        expires_at: rows::opt_time(row, "expires_at")?,
        revoked_at: rows::opt_time(row, "revoked_at")?,
        last_used_at: rows::opt_time(row, "last_used_at")?,
    })
}

impl Store {
    /// Conflict when the hash (or id) exists; NotFound when the tenant does not.
    pub async fn create_api_token(&self, t: &ApiToken) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, tenant_id, token_hash, created_at, expires_at, revoked_at, \
             owner_user_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(t.id.to_string())
        .bind(&t.name)
        .bind(t.role.as_str())
        .bind(t.tenant_id.map(|id| id.to_string()))
        .bind(&t.token_hash)
        .bind(t.created_at.0)
        .bind(t.expires_at.map(|v| v.0))
        .bind(t.revoked_at.map(|v| v.0))
        .bind(t.owner_user_id.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The token whose secret hashes to `token_hash`, revoked or expired ones included (the caller decides),
    /// with its owner's state read in the same query (one round trip per authenticated request).
    pub async fn find_api_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<PresentedToken>, StoreError> {
        let sql = format!(
            "SELECT {API_TOKEN_COLUMNS}, \
               CAST(CASE WHEN t.owner_user_id IS NULL THEN 1 \
                    WHEN u.id IS NOT NULL AND u.disabled_at IS NULL THEN 1 ELSE 0 END AS BIGINT) AS owner_active \
             FROM api_tokens t LEFT JOIN users u ON u.id = t.owner_user_id WHERE t.token_hash = $1"
        );
        sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(|row| {
                Ok(PresentedToken {
                    token: api_token_from_row(row)?,
                    owner_active: rows::int(row, "owner_active")? != 0,
                })
            })
            .transpose()
    }

    /// Tokens in the scope (a tenant sees only its own tokens; central tokens have no tenant), oldest first.
    pub async fn list_api_tokens(
        &self,
        scope: Scope,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<ApiTokenListing>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {LISTING_COLUMNS} FROM api_tokens WHERE 1 = 1"
        ));
        sql.in_scope("tenant_id", scope).push(&format!(
            " ORDER BY created_at, id LIMIT {} OFFSET {}",
            limit.max(0),
            offset.max(0)
        ));
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(listing_from_row)
            .collect()
    }

    /// One token in the scope.
    pub async fn api_token(
        &self,
        scope: Scope,
        id: TokenId,
    ) -> Result<Option<ApiTokenListing>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {LISTING_COLUMNS} FROM api_tokens WHERE id = "
        ));
        sql.bind(id.to_string()).in_scope("tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(listing_from_row)
            .transpose()
    }

    /// Revokes a token in the scope (idempotent: the first revocation time is kept). NotFound outside it.
    pub async fn revoke_api_token(
        &self,
        scope: Scope,
        id: TokenId,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ");
        sql.bind(now.0)
            .push(") WHERE id = ")
            .bind(id.to_string())
            .in_scope("tenant_id", scope);
        if sql.query().execute(&self.pool).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Records who made a token (set once, right after creation).
    pub async fn set_api_token_creator(&self, id: TokenId, by: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET created_by = $2 WHERE id = $1 AND created_by IS NULL")
            .bind(id.to_string())
            .bind(by)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks a token used now, unless it was marked less than `granularity_seconds` ago. Returns whether it
    /// marked it (so the caller records one use per period, not one per request).
    pub async fn touch_api_token(
        &self,
        id: TokenId,
        now: UnixTime,
        granularity_seconds: i64,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1 \
             AND (last_used_at IS NULL OR last_used_at <= $3)",
        )
        .bind(id.to_string())
        .bind(now.0)
        .bind(now.0 - granularity_seconds)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }
}
