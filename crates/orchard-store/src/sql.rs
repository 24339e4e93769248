//! SQL text and the values it binds, built together: every `$n` placeholder is numbered by the value pushed
//! with it, never by hand, and the tenant filter of a scoped statement is appended in one call
//! ([`Sql::in_scope`]), text and bind at once.
//!
//! Statements that bind thousands of values on SQLite (the DEP sync) keep their anonymous `?` placeholders
//! instead (see `dep::sync::placeholders`); nothing here is on such a path.

use orchard_types::TenantId;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

use crate::Scope;

/// A value bound to a placeholder. Everything the portable schema stores is text or an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    /// A text column that may be NULL.
    OptText(Option<String>),
}

impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Text(s)
    }
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Text(s.to_owned())
    }
}

impl From<i64> for Arg {
    fn from(i: i64) -> Self {
        Arg::Int(i)
    }
}

impl From<TenantId> for Arg {
    fn from(t: TenantId) -> Self {
        Arg::Text(t.to_string())
    }
}

/// A statement under construction.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends SQL text that binds nothing.
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends the next placeholder and records the value it binds.
    pub(crate) fn bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.args.push(value.into());
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// Appends the placeholder of the value bound last once more (one value compared with several columns).
    pub(crate) fn bind_same_again(&mut self) -> &mut Self {
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// Appends the next placeholder for a text value that may be NULL.
    pub(crate) fn bind_optional(&mut self, value: Option<&str>) -> &mut Self {
        self.bind(Arg::OptText(value.map(str::to_owned)))
    }

    /// The tenant filter: ` AND {column} = $n` binding the scope's tenant, or nothing for a scope over every
    /// tenant. The only place a scope becomes SQL; `column` is a constant of the calling statement.
    pub(crate) fn in_scope(&mut self, column: &'static str, scope: Scope) -> &mut Self {
        if let Some(tenant) = scope.tenant_id() {
            self.push(" AND ").push(column).push(" = ").bind(tenant);
        }
        self
    }

    /// [`Sql::in_scope`] for objects that are a tenant's or global (NULL tenant, offered to every tenant):
    /// ` AND ({column} IS NULL OR {column} = $n)`, or nothing for a scope over every tenant.
    pub(crate) fn in_scope_or_global(&mut self, column: &'static str, scope: Scope) -> &mut Self {
        if let Some(tenant) = scope.tenant_id() {
            self.push(" AND (")
                .push(column)
                .push(" IS NULL OR ")
                .push(column)
                .push(" = ")
                .bind(tenant)
                .push(")");
        }
        self
    }

    /// The statement with its values bound, in order.
    pub(crate) fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut query = sqlx::query(&self.text);
        for arg in &self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s.as_str()),
                Arg::Int(i) => query.bind(*i),
                Arg::OptText(s) => query.bind(s.as_deref()),
            };
        }
        query
    }

    /// The text and the values, for tests of the statements built.
    #[cfg(test)]
    pub(crate) fn parts(&self) -> (&str, &[Arg]) {
        (&self.text, &self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScopeAuthority;

    #[test]
    fn placeholders_follow_the_values_and_the_tenant_filter_binds_its_own() {
        let authority = ScopeAuthority::of_opened_database();
        let physics = TenantId::new();
        let mut sql = Sql::new("SELECT id FROM devices WHERE id = ");
        sql.bind("d1")
            .in_scope("tenant_id", authority.tenant(physics))
            .push(" AND seen >= ")
            .bind(5);
        let (text, args) = sql.parts();
        assert_eq!(
            text,
            "SELECT id FROM devices WHERE id = $1 AND tenant_id = $2 AND seen >= $3"
        );
        assert_eq!(
            args,
            [
                Arg::Text("d1".into()),
                Arg::Text(physics.to_string()),
                Arg::Int(5)
            ]
        );
    }

    #[test]
    fn a_scope_over_every_tenant_adds_nothing() {
        let authority = ScopeAuthority::of_opened_database();
        let mut sql = Sql::new("SELECT id FROM devices WHERE 1 = 1");
        sql.in_scope("tenant_id", authority.all_tenants())
            .push(" AND id = ")
            .bind("d1");
        let (text, args) = sql.parts();
        assert_eq!(text, "SELECT id FROM devices WHERE 1 = 1 AND id = $1");
        assert_eq!(args, [Arg::Text("d1".into())]);
    }
}
