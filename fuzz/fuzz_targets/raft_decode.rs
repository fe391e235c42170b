//! Raft data a peer or the disk hands the state machine: a snapshot (any known state
//! format, migrated), and log entries whose commands are then applied. A decoded snapshot
//! must re-encode and decode to itself.
#![no_main]

use berth_consensus::raft_types::Entry;
use berth_consensus::ClusterState;
use libfuzzer_sys::fuzz_target;
use openraft::EntryPayload;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    if sel % 2 == 0 {
        if let Ok(state) = ClusterState::decode(body) {
            let bytes = state.encode().expect("a decoded state encodes");
            let again = ClusterState::decode(&bytes).expect("an encoded state decodes");
            assert_eq!(state, again);
        }
    } else if let Ok(entries) = serde_json::from_slice::<Vec<Entry>>(body) {
        let mut state = ClusterState::default();
        for e in &entries {
            match &e.payload {
                EntryPayload::Normal(cmd) => {
                    state.apply(e.log_id.index, cmd);
                }
                _ => {
                    state.apply_internal(e.log_id.index);
                }
            }
        }
        let bytes = state.encode().expect("an applied state encodes");
        assert_eq!(ClusterState::decode(&bytes).expect("decodes"), state);
    }
});
