//! UUID newtypes, so that an event id can never be passed where a session id is expected.

use std::{fmt, str::FromStr};

use uuid::Uuid;

macro_rules! uuid_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Reads the 16-byte form used in protobuf bodies.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes).ok().map(Self)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

uuid_newtype!(
    /// The idempotency key of an event, unique per application. Server-assigned ids are UUIDv7
    /// (time-ordered, so they index well).
    EventId
);
uuid_newtype!(
    /// A session, identified by the applications; several applications may share one.
    SessionId
);
uuid_newtype!(
    /// An application: a trusted client holding API keys.
    ApplicationId
);

impl EventId {
    /// A new server-assigned id.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}
