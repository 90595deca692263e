//! The PVA's configured appraisal policies (reference values with their policy, `docs/
//! reference-values.md`) as one set that a reload replaces whole: on SIGHUP (`tresor serve
//! pva`) or `POST /v1/policies/reload` by the PVA's own certificate (`docs/pva-api.md`).
//!
//! A nonce carries the index of the policy it was issued under. A reload keeps each
//! policy's index by id, appends new ids and leaves a removed policy's index empty, so a
//! nonce issued before the reload is appraised under the new version of its own policy, or
//! refused when that policy is gone — never under another one.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Error;
use crate::refvalues::ReferenceValues;

/// One generation of the configured policies.
#[derive(Debug)]
pub(crate) struct PolicySet {
    by_id: BTreeMap<String, u16>,
    list: Vec<Option<Arc<ReferenceValues>>>,
    default: String,
}

impl PolicySet {
    /// The set of `policies` (at least one, ids unique) with `default` (required when there
    /// are several); indices are kept from `previous`.
    pub(crate) fn build(
        policies: Vec<ReferenceValues>,
        default: Option<&str>,
        previous: Option<&PolicySet>,
    ) -> Result<Self, Error> {
        if policies.is_empty() {
            return Err(Error::Config("no policies configured".into()));
        }
        let mut list: Vec<Option<Arc<ReferenceValues>>> =
            previous.map(|p| vec![None; p.list.len()]).unwrap_or_default();
        let mut by_id = BTreeMap::new();
        let mut fresh: Vec<ReferenceValues> = Vec::new();
        for p in policies {
            if by_id.contains_key(p.id()) || fresh.iter().any(|f| f.id() == p.id()) {
                return Err(Error::Config(format!("policy id {:?} configured twice", p.id())));
            }
            match previous.and_then(|prev| prev.by_id.get(p.id())) {
                Some(&index) => {
                    by_id.insert(p.id().to_owned(), index);
                    list[usize::from(index)] = Some(Arc::new(p));
                }
                None => fresh.push(p),
            }
        }
        // New ids in id order, as a first build numbers them.
        fresh.sort_by(|a, b| a.id().cmp(b.id()));
        for p in fresh {
            let index = u16::try_from(list.len())
                .map_err(|_| Error::Config("more than 65536 policies configured".into()))?;
            by_id.insert(p.id().to_owned(), index);
            list.push(Some(Arc::new(p)));
        }
        let default = match default {
            Some(id) if by_id.contains_key(id) => id.to_owned(),
            Some(id) => {
                return Err(Error::Config(format!("default policy {id:?} is not configured")));
            }
            None if by_id.len() == 1 => by_id.keys().next().cloned().unwrap_or_default(),
            None => return Err(Error::Config("several policies: name the default one".into())),
        };
        Ok(Self { by_id, list, default })
    }

    /// The policy `id` and the index its nonces carry.
    pub(crate) fn get(&self, id: &str) -> Option<(u16, Arc<ReferenceValues>)> {
        let index = *self.by_id.get(id)?;
        self.list.get(usize::from(index))?.clone().map(|p| (index, p))
    }

    /// The policy a nonce's index names, unless a reload removed it.
    pub(crate) fn by_index(&self, index: u16) -> Option<Arc<ReferenceValues>> {
        self.list.get(usize::from(index))?.clone()
    }

    pub(crate) fn default_id(&self) -> &str {
        &self.default
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.by_id.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The example image's reference values under the policy id `id`.
    fn policy(id: &str) -> ReferenceValues {
        static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let text = TEXT.get_or_init(|| {
            let image = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/image");
            crate::refvalues::derive(&image, &[protocol::tpm::HashAlg::Sha256]).unwrap()
        });
        let named = text.replacen("\"tresor-sample-m2me-2025.1\"", &format!("\"{id}\""), 1);
        ReferenceValues::parse(&named).unwrap()
    }

    #[test]
    fn a_reload_keeps_each_policys_index_and_never_reuses_a_removed_one() {
        let first = PolicySet::build(vec![policy("b"), policy("a")], Some("a"), None).unwrap();
        let (a, b) = (first.get("a").unwrap().0, first.get("b").unwrap().0);
        assert_eq!((a, b), (0, 1), "a first build numbers by id");
        // b removed, c added: a keeps 0, b's index is empty, c gets a new one.
        let second =
            PolicySet::build(vec![policy("c"), policy("a")], Some("c"), Some(&first)).unwrap();
        assert_eq!(second.get("a").unwrap().0, 0);
        assert!(second.by_index(1).is_none(), "a nonce of the removed policy finds none");
        assert_eq!(second.get("c").unwrap().0, 2);
        assert_eq!(second.by_index(2).unwrap().id(), "c");
        assert_eq!((second.default_id(), second.ids()), ("c", vec!["a".into(), "c".into()]));
    }

    #[test]
    fn a_set_needs_policies_unique_ids_and_a_known_default() {
        assert!(PolicySet::build(vec![], None, None).is_err());
        assert!(PolicySet::build(vec![policy("a"), policy("a")], None, None).is_err());
        assert!(PolicySet::build(vec![policy("a"), policy("b")], None, None).is_err());
        assert!(PolicySet::build(vec![policy("a")], Some("b"), None).is_err());
        assert_eq!(PolicySet::build(vec![policy("a")], None, None).unwrap().default_id(), "a");
    }
}
