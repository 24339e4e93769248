//! Bootstrap tokens: a supervised device escrows its token with SetBootstrapToken (an empty one deletes it) and
//! asks it back with GetBootstrapToken; only the device's own bound identity reaches either (the check-in
//! authenticates the signer first). The token is sealed under the data key, bound to the device id, so the
//! database alone never reveals it and a sealed token copied to another device's row does not open.

use orchard_protocol::checkin::{GetBootstrapToken, SetBootstrapToken};
use orchard_store::Device;
use orchard_types::{DeviceId, UnixTime};

use crate::device::checkin::CheckinReply;
use crate::{CoreError, Orchard};

/// What a token is sealed with: the table and the device it belongs to.
fn bootstrap_token_context(device: DeviceId) -> Vec<u8> {
    format!("device_bootstrap_tokens:{device}").into_bytes()
}

impl Orchard {
    /// SetBootstrapToken from `device` (already authenticated as the signer's device).
    pub(crate) async fn set_bootstrap_token(
        &self,
        device: &Device,
        message: &SetBootstrapToken,
        now: UnixTime,
    ) -> Result<CheckinReply, CoreError> {
        if message.bootstrap_token.is_empty() {
            self.store.set_bootstrap_token(device.id, None, now).await?;
            tracing::info!(device = %device.id, "bootstrap token removed at the device's request");
        } else {
            let sealed = self.pki.data_key.seal(
                &message.bootstrap_token,
                &bootstrap_token_context(device.id),
            )?;
            self.store
                .set_bootstrap_token(device.id, Some(&sealed), now)
                .await?;
            tracing::info!(device = %device.id, awaiting_configuration = message.awaiting_configuration, "bootstrap token escrowed");
        }
        Ok(CheckinReply::Empty)
    }

    /// GetBootstrapToken: the escrowed token, or a dictionary without one when none is escrowed (Apple: the key is
    /// omitted then). A device held in Setup Assistant (AwaitingConfiguration) asks for it to finish setting up,
    /// so it is answered the same way; the check-in changes nothing else.
    pub(crate) async fn get_bootstrap_token(
        &self,
        device: &Device,
        message: &GetBootstrapToken,
    ) -> Result<CheckinReply, CoreError> {
        let mut reply = plist::Dictionary::new();
        if let Some(sealed) = self.store.bootstrap_token(device.id).await? {
            let token = self
                .pki
                .data_key
                .open(&sealed, &bootstrap_token_context(device.id))?;
            reply.insert(
                "BootstrapToken".into(),
                plist::Value::Data(token.expose().clone()),
            );
        }
        tracing::debug!(device = %device.id, awaiting_configuration = message.awaiting_configuration, escrowed = reply.contains_key("BootstrapToken"), "bootstrap token requested");
        let mut out = Vec::new();
        plist::to_writer_xml(&mut out, &reply)
            .map_err(|e| CoreError::Internal(format!("encoding the bootstrap token reply: {e}")))?;
        Ok(CheckinReply::Plist(out))
    }
}
