//! Loopback fakes of the outside platforms, each speaking the wire format
//! `../shared/PLATFORMS.md` documents, field by field.

pub mod bluesky;
pub mod instagram;
pub mod linkedin;
pub mod oauth;
pub mod openai;
pub mod replicate;
pub mod strava;
pub mod venice;
pub mod x;
