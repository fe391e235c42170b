//! Who in the cluster owns a blob or a tag: rendezvous (highest random weight) hashing
//! over the live members, and the member list berthd keeps current.
//!
//! Owns: the ordering of members for a key ([`rendezvous_order`]), the keys of blobs and
//! tags ([`OwnerKey`]), and the shared view of the live members ([`PeerSet`]). Does not
//! own: cluster membership or liveness (berthd feeds them from the cluster state and its
//! prober), the transport ([`super::quic`]), or what is fetched ([`super::Mirror`]).
//!
//! Rendezvous hashing (D. Thaler, C. Ravishankar, "Using name-based mappings to increase
//! hit rates", IEEE/ACM Transactions on Networking 6(1), 1998): every member `m` gets the
//! weight `w(m, key) = H(m.id, key)` and the key's owner is the member of highest weight;
//! sorting by weight gives the order in which members are tried when the owner is down or
//! slow. Every node computes the same order from the same member list without talking to
//! the others. When a member leaves, only the keys it owned move (each to the member that
//! was second for it); a member joining takes only the keys for which it now weighs most.
//!
//! ```text
//!  berthd (cluster state + prober) --set(live members)--> PeerSet (watch)
//!                                                             |
//!  Mirror miss --key(digest | upstream/repo:tag)--> rendezvous_order --> [owner, 2nd, ...]
//!     members ranked before this node are asked in turn; at this node: the registry
//! ```

use std::net::SocketAddr;

use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use super::route::UpstreamRepo;
use crate::digest::Digest;

/// One live cluster member as the mirror sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// The node's cluster id (stable across restarts and address changes): the input of
    /// the rendezvous weight.
    pub id: String,
    /// Where its peer transport (QUIC, UDP) listens.
    pub addr: SocketAddr,
}

/// What is being placed: a blob (or manifest) by digest, or a tag by repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerKey {
    /// Content by digest: one owner per digest, whatever repository names it.
    Digest(Digest),
    /// A tag: one owner per `upstream/repository:tag`.
    Tag { target: UpstreamRepo, tag: String },
}

impl OwnerKey {
    /// The bytes hashed with each member id.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            OwnerKey::Digest(d) => format!("blob\0{d}").into_bytes(),
            OwnerKey::Tag { target, tag } => {
                format!("tag\0{}\0{}\0{tag}", target.upstream, target.repository).into_bytes()
            }
        }
    }
}

/// The rendezvous weight of `member_id` for `key`: the first 8 bytes of
/// SHA-256(len(member_id) as u32 BE || member_id || key), big-endian. The length prefix
/// keeps `("ab", "c")` and `("a", "bc")` apart.
pub fn weight(member_id: &str, key: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update((member_id.len() as u32).to_be_bytes());
    h.update(member_id.as_bytes());
    h.update(key);
    let out = h.finalize();
    u64::from_be_bytes(out[..8].try_into().expect("8 bytes"))
}

/// `members` sorted by descending weight for `key` (ties, practically impossible, by id):
/// the owner first, then the order in which to fall back. Duplicated ids count once.
pub fn rendezvous_order<'a>(key: &OwnerKey, members: &'a [Member]) -> Vec<&'a Member> {
    let k = key.bytes();
    let mut ranked: Vec<(u64, &Member)> = members.iter().map(|m| (weight(&m.id, &k), m)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    ranked.dedup_by(|a, b| a.1.id == b.1.id);
    ranked.into_iter().map(|(_, m)| m).collect()
}

/// The members to ask for `key` before this node fetches from the registry itself: those
/// ranked above `self_id`, in order. Empty when this node owns the key; every member
/// except this one when it is not in the list (it is not live as far as it knows).
pub fn sources_before_self<'a>(
    key: &OwnerKey,
    members: &'a [Member],
    self_id: &str,
) -> Vec<&'a Member> {
    rendezvous_order(key, members)
        .into_iter()
        .take_while(|m| m.id != self_id)
        .collect()
}

/// The live members, as berthd last reported them. Cheap to clone; readers always see
/// the latest list.
#[derive(Debug, Clone)]
pub struct PeerSet {
    self_id: String,
    tx: std::sync::Arc<watch::Sender<Vec<Member>>>,
}

impl PeerSet {
    /// A set for the node `self_id` with no members yet (every fetch goes upstream).
    pub fn new(self_id: impl Into<String>) -> Self {
        PeerSet {
            self_id: self_id.into(),
            tx: std::sync::Arc::new(watch::channel(Vec::new()).0),
        }
    }

    /// This node's id.
    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// Replaces the live members (this node included or not; it is matched by id).
    /// Sorted and deduplicated, so an unchanged list wakes no one.
    pub fn set(&self, mut members: Vec<Member>) {
        members.sort();
        members.dedup_by(|a, b| a.id == b.id);
        self.tx.send_if_modified(|cur| {
            if *cur == members {
                false
            } else {
                *cur = members;
                true
            }
        });
    }

    /// The live members now.
    pub fn members(&self) -> Vec<Member> {
        self.tx.borrow().clone()
    }

    /// The other live members now.
    pub fn peers(&self) -> Vec<Member> {
        self.tx
            .borrow()
            .iter()
            .filter(|m| m.id != self.self_id)
            .cloned()
            .collect()
    }

    /// Members ranked above this node for `key` ([`sources_before_self`]), owned.
    pub fn sources(&self, key: &OwnerKey) -> Vec<Member> {
        let members = self.tx.borrow();
        sources_before_self(key, &members, &self.self_id)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Watches the member list.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Member>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                id: format!("node{i:02}"),
                addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 2377)),
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<OwnerKey> {
        (0..n)
            .map(|i| OwnerKey::Digest(Digest::of(format!("blob {i}").as_bytes())))
            .collect()
    }

    fn owner(key: &OwnerKey, m: &[Member]) -> String {
        rendezvous_order(key, m)[0].id.clone()
    }

    #[test]
    fn the_order_is_a_stable_function_of_the_key_and_the_member_set() {
        let m = members(5);
        let mut shuffled = m.clone();
        shuffled.reverse();
        for k in keys(50) {
            let a: Vec<_> = rendezvous_order(&k, &m).iter().map(|x| &x.id).collect();
            let b: Vec<_> = rendezvous_order(&k, &shuffled)
                .iter()
                .map(|x| &x.id)
                .collect();
            assert_eq!(a, b);
            assert_eq!(a.len(), 5);
        }
        // A fixed value: the weight must not change between releases (mixed versions in
        // one cluster would disagree on owners).
        assert_eq!(weight("node00", b"blob\0x"), 0xf442_bff4_9494_f347);
        assert_ne!(weight("ab", b"c"), weight("a", b"bc"));
    }

    #[test]
    fn ownership_is_balanced() {
        let m = members(5);
        let mut count: HashMap<String, usize> = HashMap::new();
        for k in keys(5000) {
            *count.entry(owner(&k, &m)).or_default() += 1;
        }
        assert_eq!(count.len(), 5);
        for (id, c) in count {
            // 1000 expected each; 5 sigma is about 140.
            assert!((850..=1150).contains(&c), "{id} owns {c} of 5000");
        }
    }

    #[test]
    fn a_member_leaving_moves_only_its_keys_to_their_second_choice() {
        let m = members(5);
        let without: Vec<Member> = m.iter().filter(|x| x.id != "node02").cloned().collect();
        let mut moved = 0;
        for k in keys(2000) {
            let order = rendezvous_order(&k, &m);
            let before = order[0].id.clone();
            let after = owner(&k, &without);
            if before == "node02" {
                moved += 1;
                assert_eq!(after, order[1].id);
            } else {
                assert_eq!(after, before);
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn a_member_joining_takes_only_keys_it_now_owns() {
        let m = members(5);
        let more = members(6);
        for k in keys(2000) {
            let (before, after) = (owner(&k, &m), owner(&k, &more));
            assert!(after == before || after == "node05");
        }
    }

    #[test]
    fn tags_and_digests_have_distinct_keys() {
        let t = OwnerKey::Tag {
            target: UpstreamRepo {
                upstream: "docker.io".into(),
                repository: "library/busybox".into(),
            },
            tag: "latest".into(),
        };
        let t2 = OwnerKey::Tag {
            target: UpstreamRepo {
                upstream: "docker.io".into(),
                repository: "library/busybox".into(),
            },
            tag: "1.36".into(),
        };
        assert_ne!(t.bytes(), t2.bytes());
        assert_ne!(t.bytes(), OwnerKey::Digest(Digest::of(b"x")).bytes());
    }

    #[test]
    fn sources_are_the_members_ranked_above_self() {
        let m = members(5);
        let set = PeerSet::new("node03");
        set.set(m.clone());
        for k in keys(100) {
            let order = rendezvous_order(&k, &m);
            let pos = order.iter().position(|x| x.id == "node03").unwrap();
            let src: Vec<_> = set.sources(&k).into_iter().map(|x| x.id).collect();
            let want: Vec<_> = order[..pos].iter().map(|x| x.id.clone()).collect();
            assert_eq!(src, want);
        }
        // Not a member (yet): every other member is asked first.
        let outsider = PeerSet::new("elsewhere");
        outsider.set(m.clone());
        assert_eq!(outsider.sources(&keys(1)[0]).len(), 5);
        assert_eq!(set.peers().len(), 4);
    }
}
