//! SMS composition: the contract's texts (§4) in five locales, and their encoding into SMPP
//! parts (GSM 03.38 or UCS-2, split with UDH, SAR or one message_payload).

pub mod compose;
pub mod config;
pub mod encoding;
pub mod templates;

pub use compose::Composer;
pub use encoding::{Coding, Segments, split};
pub use templates::{Locale, Templates};
