//! `RaftMessage` <-> openraft request/response types.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::pb::RaftMessage;
use crate::error::ConsensusError;

/// Encoding of `RaftMessage.body` written by this build: JSON of openraft 0.9 serde types.
pub const RAFT_MESSAGE_FORMAT: u32 = 1;

/// Wrap an openraft value.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<RaftMessage, ConsensusError> {
    Ok(RaftMessage {
        format: RAFT_MESSAGE_FORMAT,
        body: serde_json::to_vec(value)
            .map_err(|source| ConsensusError::Encode { what, source })?,
    })
}

/// Unwrap an openraft value.
pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    message: &RaftMessage,
) -> Result<T, ConsensusError> {
    if message.format != RAFT_MESSAGE_FORMAT {
        return Err(ConsensusError::UnknownFormat {
            what,
            found: message.format,
            supported: RAFT_MESSAGE_FORMAT,
        });
    }
    serde_json::from_slice(&message.body).map_err(|source| ConsensusError::Decode { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::Vote;

    #[test]
    fn round_trip_and_format_check() {
        let vote = Vote::new(3, 7u64);
        let msg = encode("vote", &vote).unwrap();
        let back: Vote<u64> = decode("vote", &msg).unwrap();
        assert_eq!(back, vote);
        let wrong = RaftMessage {
            format: 2,
            body: msg.body,
        };
        assert!(decode::<Vote<u64>>("vote", &wrong).is_err());
    }
}
