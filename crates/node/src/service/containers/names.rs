//! The index of container IDs and names: unique names, 64-hex IDs, and lookup by full ID,
//! name, or unique ID prefix, as the docker CLI expects. Pure.

use std::collections::{BTreeMap, HashMap};

use crate::error::ServiceError;

#[derive(Debug, Default, Clone)]
pub struct NameIndex {
    /// ID -> name.
    ids: BTreeMap<String, String>,
    /// name -> ID.
    names: HashMap<String, String>,
}

impl NameIndex {
    /// Reserves `name` for `id`; refused if another container has it.
    pub fn insert(&mut self, id: &str, name: &str) -> Result<(), ServiceError> {
        if let Some(owner) = self.names.get(name) {
            if owner != id {
                return Err(ServiceError::conflict(format!(
                    "Conflict. The container name \"/{name}\" is already in use by container \"{owner}\". You have to remove (or rename) that container to be able to reuse that name."
                )));
            }
        }
        if let Some(old) = self.ids.insert(id.to_string(), name.to_string()) {
            self.names.remove(&old);
        }
        self.names.insert(name.to_string(), id.to_string());
        Ok(())
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(name) = self.ids.remove(id) {
            self.names.remove(&name);
        }
    }

    /// Resolves a full ID, a name (with or without `/`), or a unique ID prefix.
    pub fn resolve(&self, key: &str) -> Result<String, ServiceError> {
        let missing = || ServiceError::not_found(format!("No such container: {key}"));
        if key.is_empty() {
            return Err(missing());
        }
        if self.ids.contains_key(key) {
            return Ok(key.to_string());
        }
        if let Some(id) = self.names.get(key.strip_prefix('/').unwrap_or(key)) {
            return Ok(id.clone());
        }
        let mut matches = self
            .ids
            .range(key.to_string()..)
            .take_while(|(id, _)| id.starts_with(key))
            .map(|(id, _)| id);
        match (matches.next(), matches.next()) {
            (Some(id), None) => Ok(id.clone()),
            (Some(_), Some(_)) => Err(ServiceError::invalid(format!(
                "multiple IDs found with provided prefix: {key}"
            ))),
            _ => Err(missing()),
        }
    }

    /// A free name in Docker's `adjective_surname` style, derived from `seed`.
    pub fn generate_name(&self, seed: &[u8]) -> String {
        const LEFT: &[&str] = &[
            "admiring",
            "brave",
            "calm",
            "dazzling",
            "eager",
            "focused",
            "gallant",
            "happy",
            "jolly",
            "keen",
            "lucid",
            "modest",
            "nifty",
            "optimistic",
            "quirky",
            "serene",
            "tender",
            "upbeat",
            "vibrant",
            "wizardly",
            "youthful",
            "zealous",
        ];
        const RIGHT: &[&str] = &[
            "albattani",
            "babbage",
            "curie",
            "darwin",
            "euler",
            "feynman",
            "gauss",
            "hopper",
            "hypatia",
            "johnson",
            "kepler",
            "lovelace",
            "meitner",
            "noether",
            "pascal",
            "ritchie",
            "shannon",
            "thompson",
            "turing",
            "wozniak",
            "yalow",
        ];
        let mut n = 0usize;
        for b in seed {
            n = n.wrapping_mul(31).wrapping_add(*b as usize);
        }
        let base = format!(
            "{}_{}",
            LEFT[n % LEFT.len()],
            RIGHT[(n / LEFT.len()) % RIGHT.len()]
        );
        if !self.names.contains_key(&base) {
            return base;
        }
        (1..)
            .map(|i| format!("{base}{i}"))
            .find(|c| !self.names.contains_key(c))
            .expect("an unused suffix exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111";
    const B: &str = "aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222";

    #[test]
    fn lookup_by_id_name_and_unique_prefix() {
        let mut ix = NameIndex::default();
        ix.insert(A, "web").unwrap();
        ix.insert(B, "db").unwrap();
        assert_eq!(ix.resolve(A).unwrap(), A);
        assert_eq!(ix.resolve("web").unwrap(), A);
        assert_eq!(ix.resolve("/db").unwrap(), B);
        assert_eq!(ix.resolve("aaaa1").unwrap(), A);
        assert!(matches!(
            ix.resolve("aaaa"),
            Err(ServiceError::InvalidArgument { .. })
        ));
        assert!(matches!(
            ix.resolve("zzz"),
            Err(ServiceError::NotFound { .. })
        ));
        assert!(matches!(ix.resolve(""), Err(ServiceError::NotFound { .. })));
    }

    #[test]
    fn names_are_unique_and_renames_free_the_old_name() {
        let mut ix = NameIndex::default();
        ix.insert(A, "web").unwrap();
        assert!(matches!(
            ix.insert(B, "web"),
            Err(ServiceError::Conflict { .. })
        ));
        ix.insert(A, "web2").unwrap();
        assert!(ix.resolve("web").is_err());
        ix.insert(B, "web").unwrap();
        ix.remove(A);
        assert!(ix.resolve("web2").is_err());
        assert_eq!(ix.resolve("web").unwrap(), B);
    }

    #[test]
    fn generated_names_do_not_collide() {
        let mut ix = NameIndex::default();
        let n1 = ix.generate_name(b"seed");
        ix.insert(A, &n1).unwrap();
        let n2 = ix.generate_name(b"seed");
        assert_ne!(n1, n2);
        assert!(n2.starts_with(&n1));
    }
}
