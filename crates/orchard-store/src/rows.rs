//! Turning database rows back into typed values; anything undecodable is `StoreError::Corrupt`, never a panic.

use sqlx::any::AnyRow;
use sqlx::{Any, Decode, Row, Type};

use orchard_types::{
    ChannelId, CommandStatus, CommandUuid, DeviceId, EnrollmentLinkId, EnrollmentState, ParseError,
    QueuedBy, RequestType, Role, SetupState, TenantId, TokenId, Udid, UnixTime,
};

use crate::StoreError;

fn corrupt(column: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {column}: {reason}"))
}

pub(crate) fn get<'r, T>(row: &'r AnyRow, column: &str) -> Result<T, StoreError>
where
    T: Decode<'r, Any> + Type<Any>,
{
    row.try_get::<T, _>(column).map_err(|e| corrupt(column, e))
}

pub(crate) fn text(row: &AnyRow, column: &str) -> Result<String, StoreError> {
    get::<String>(row, column)
}

pub(crate) fn opt_text(row: &AnyRow, column: &str) -> Result<Option<String>, StoreError> {
    get::<Option<String>>(row, column)
}

pub(crate) fn int(row: &AnyRow, column: &str) -> Result<i64, StoreError> {
    get::<i64>(row, column)
}

pub(crate) fn opt_int(row: &AnyRow, column: &str) -> Result<Option<i64>, StoreError> {
    get::<Option<i64>>(row, column)
}

pub(crate) fn bytes(row: &AnyRow, column: &str) -> Result<Vec<u8>, StoreError> {
    get::<Vec<u8>>(row, column)
}

pub(crate) fn opt_bytes(row: &AnyRow, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
    get::<Option<Vec<u8>>>(row, column)
}

pub(crate) fn time(row: &AnyRow, column: &str) -> Result<UnixTime, StoreError> {
    int(row, column).map(UnixTime)
}

pub(crate) fn opt_time(row: &AnyRow, column: &str) -> Result<Option<UnixTime>, StoreError> {
    opt_int(row, column).map(|v| v.map(UnixTime))
}

/// Booleans are INTEGER 0/1 in both schemas (sqlx `Any` cannot decode SQLite BOOLEAN).
fn int_to_bool(column: &str, value: i64) -> Result<bool, StoreError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(corrupt(column, format!("{other} is not a 0/1 boolean"))),
    }
}

pub(crate) fn boolean(row: &AnyRow, column: &str) -> Result<bool, StoreError> {
    int_to_bool(column, int(row, column)?)
}

pub(crate) fn opt_boolean(row: &AnyRow, column: &str) -> Result<Option<bool>, StoreError> {
    opt_int(row, column)?
        .map(|v| int_to_bool(column, v))
        .transpose()
}

fn parsed<T>(
    row: &AnyRow,
    column: &str,
    parse: impl Fn(&str) -> Result<T, ParseError>,
) -> Result<T, StoreError> {
    parse(&text(row, column)?).map_err(|e| corrupt(column, e))
}

fn opt_parsed<T>(
    row: &AnyRow,
    column: &str,
    parse: impl Fn(&str) -> Result<T, ParseError>,
) -> Result<Option<T>, StoreError> {
    opt_text(row, column)?
        .map(|s| parse(&s).map_err(|e| corrupt(column, e)))
        .transpose()
}

pub(crate) fn tenant_id(row: &AnyRow, column: &str) -> Result<TenantId, StoreError> {
    parsed(row, column, TenantId::parse)
}

pub(crate) fn opt_tenant_id(row: &AnyRow, column: &str) -> Result<Option<TenantId>, StoreError> {
    opt_parsed(row, column, TenantId::parse)
}

pub(crate) fn device_id(row: &AnyRow, column: &str) -> Result<DeviceId, StoreError> {
    parsed(row, column, DeviceId::parse)
}

pub(crate) fn opt_device_id(row: &AnyRow, column: &str) -> Result<Option<DeviceId>, StoreError> {
    opt_parsed(row, column, DeviceId::parse)
}

pub(crate) fn link_id(row: &AnyRow, column: &str) -> Result<EnrollmentLinkId, StoreError> {
    parsed(row, column, EnrollmentLinkId::parse)
}

pub(crate) fn opt_link_id(
    row: &AnyRow,
    column: &str,
) -> Result<Option<EnrollmentLinkId>, StoreError> {
    opt_parsed(row, column, EnrollmentLinkId::parse)
}

pub(crate) fn token_id(row: &AnyRow, column: &str) -> Result<TokenId, StoreError> {
    parsed(row, column, TokenId::parse)
}

pub(crate) fn udid(row: &AnyRow, column: &str) -> Result<Udid, StoreError> {
    parsed(row, column, Udid::parse)
}

pub(crate) fn command_uuid(row: &AnyRow, column: &str) -> Result<CommandUuid, StoreError> {
    parsed(row, column, CommandUuid::parse)
}

pub(crate) fn channel_id(row: &AnyRow, column: &str) -> Result<ChannelId, StoreError> {
    text(row, column).map(ChannelId::from_stored)
}

pub(crate) fn role(row: &AnyRow, column: &str) -> Result<Role, StoreError> {
    let value = text(row, column)?;
    Role::parse(&value).ok_or_else(|| corrupt(column, format!("unknown role {value:?}")))
}

pub(crate) fn command_status(row: &AnyRow, column: &str) -> Result<CommandStatus, StoreError> {
    let value = text(row, column)?;
    CommandStatus::parse(&value)
        .ok_or_else(|| corrupt(column, format!("unknown command status {value:?}")))
}

pub(crate) fn enrollment_state(row: &AnyRow, column: &str) -> Result<EnrollmentState, StoreError> {
    let value = text(row, column)?;
    EnrollmentState::parse(&value)
        .ok_or_else(|| corrupt(column, format!("unknown enrollment state {value:?}")))
}

pub(crate) fn request_type(row: &AnyRow, column: &str) -> Result<RequestType, StoreError> {
    parsed(row, column, RequestType::parse)
}

pub(crate) fn opt_queued_by(row: &AnyRow, column: &str) -> Result<Option<QueuedBy>, StoreError> {
    opt_parsed(row, column, QueuedBy::parse)
}

pub(crate) fn opt_setup_state(
    row: &AnyRow,
    column: &str,
) -> Result<Option<SetupState>, StoreError> {
    opt_parsed(row, column, SetupState::parse)
}
