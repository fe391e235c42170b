//! Versioned encoding of every record berth-consensus writes to redb.
//!
//! A record is one format byte followed by JSON. The byte lets a later build migrate or
//! refuse old data instead of misreading it.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ConsensusError;

/// Format of log entries, votes, log ids and snapshot metadata written by this build.
pub const RECORD_FORMAT: u8 = 1;

/// Encode `value` as a format-1 record.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, ConsensusError> {
    let mut out = vec![RECORD_FORMAT];
    serde_json::to_writer(&mut out, value)
        .map_err(|source| ConsensusError::Encode { what, source })?;
    Ok(out)
}

/// Decode a record of any known format.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, ConsensusError> {
    match bytes.split_first() {
        Some((&RECORD_FORMAT, json)) => {
            serde_json::from_slice(json).map_err(|source| ConsensusError::Decode { what, source })
        }
        Some((&found, _)) => Err(ConsensusError::UnknownFormat {
            what,
            found: u32::from(found),
            supported: u32::from(RECORD_FORMAT),
        }),
        None => Err(ConsensusError::UnknownFormat {
            what,
            found: 0,
            supported: u32::from(RECORD_FORMAT),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_format() {
        let bytes = encode("x", &vec![1u64, 2]).unwrap();
        assert_eq!(bytes[0], RECORD_FORMAT);
        let back: Vec<u64> = decode("x", &bytes).unwrap();
        assert_eq!(back, vec![1, 2]);
        let mut future = bytes.clone();
        future[0] = 7;
        assert!(matches!(
            decode::<Vec<u64>>("x", &future),
            Err(ConsensusError::UnknownFormat { found: 7, .. })
        ));
        assert!(decode::<Vec<u64>>("x", &[]).is_err());
    }
}
