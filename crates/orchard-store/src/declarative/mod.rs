//! Declarative device management: per enrollment channel, the DeclarationsToken last announced, the
//! DeclarativeManagement command waiting for an answer, and the status the device reported.

pub(crate) mod channels;
