//! etcd's member and cluster IDs (`membership.NewMember`, `Cluster.genID`) and the
//! `--initial-cluster` string they are derived from.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};

/// A member ID: the first 8 bytes (big-endian) of SHA-1 over the sorted peer URLs,
/// concatenated, followed by the cluster token. (Members added at runtime hash the
/// current time instead of a token; their IDs come from `member add`.)
pub fn member_id(peer_urls: &[impl AsRef<str>], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(AsRef::as_ref).collect();
    urls.sort_unstable();
    let mut h = Sha1::new();
    for u in urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    first_u64(&h.finalize())
}

/// A cluster ID: the first 8 bytes of SHA-1 over the member IDs, sorted ascending,
/// each as 8 big-endian bytes.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// Why an `--initial-cluster` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitialClusterError {
    /// An element is not `name=url`.
    #[error("--initial-cluster: {0:?} is not name=URL")]
    NotNameUrl(String),
    /// A URL is not `http://host:port`.
    #[error("--initial-cluster: {url:?} of {name} is not an http://host:port URL")]
    BadUrl {
        /// The member.
        name: String,
        /// The URL.
        url: String,
    },
    /// Two members derive the same ID (the same URLs).
    #[error("--initial-cluster: members {0} and {1} have the same peer URLs")]
    DuplicateId(String, String),
    /// The string names no member.
    #[error("--initial-cluster is empty")]
    Empty,
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// `--name`.
    pub name: String,
    /// Peer URLs, as given.
    pub peer_urls: Vec<String>,
    /// The derived ID.
    pub id: u64,
}

/// A parsed `--initial-cluster` (`m1=http://h:p,m2=http://h:p,…`) with its token: every
/// member's name, URLs and ID, and the cluster ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster {
    /// Members, sorted by ID.
    pub members: Vec<InitialMember>,
    /// The cluster ID.
    pub cluster_id: u64,
}

impl InitialCluster {
    /// Parses `spec` as etcd does; a name may repeat to give a member several URLs.
    pub fn parse(spec: &str, token: &str) -> Result<InitialCluster, InitialClusterError> {
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, url) = part
                .split_once('=')
                .ok_or_else(|| InitialClusterError::NotNameUrl(part.to_string()))?;
            if name.is_empty() || url.parse::<crate::http::client::PeerUrl>().is_err() {
                return Err(InitialClusterError::BadUrl {
                    name: name.to_string(),
                    url: url.to_string(),
                });
            }
            by_name
                .entry(name.to_string())
                .or_default()
                .push(url.to_string());
        }
        if by_name.is_empty() {
            return Err(InitialClusterError::Empty);
        }
        let mut members: Vec<InitialMember> = by_name
            .into_iter()
            .map(|(name, peer_urls)| InitialMember {
                id: member_id(&peer_urls, token),
                name,
                peer_urls,
            })
            .collect();
        members.sort_by_key(|m| m.id);
        for w in members.windows(2) {
            if w[0].id == w[1].id {
                return Err(InitialClusterError::DuplicateId(
                    w[0].name.clone(),
                    w[1].name.clone(),
                ));
            }
        }
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        Ok(InitialCluster {
            cluster_id: cluster_id(&ids),
            members,
        })
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&InitialMember> {
        self.members.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From the golden capture (`ids.json`), checked against `etcdctl member list`.
    const SPEC: &str =
        "m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803";

    #[test]
    fn ids_match_etcd() {
        let c = InitialCluster::parse(SPEC, "rafthttp-interop").unwrap();
        assert_eq!(c.member("m1").unwrap().id, 0x5f1298836671828d);
        assert_eq!(c.member("m2").unwrap().id, 0xb09a17ddc8c72954);
        assert_eq!(c.member("m3").unwrap().id, 0xcaff9c7f440d9bc5);
        assert_eq!(c.cluster_id, 0x332b4329fb5bbb93);
    }

    #[test]
    fn urls_are_sorted_before_hashing_and_token_matters() {
        let a = member_id(&["http://b:2", "http://a:1"], "t");
        let b = member_id(&["http://a:1", "http://b:2"], "t");
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["http://a:1", "http://b:2"], "u"));
        // Go's url.String() is not applied: a trailing slash is a different member.
        assert_ne!(
            member_id(&["http://a:1"], "t"),
            member_id(&["http://a:1/"], "t")
        );
    }

    #[test]
    fn repeated_names_give_one_member_with_several_urls() {
        let c = InitialCluster::parse("a=http://h:1,a=http://h:2,b=http://h:3", "t").unwrap();
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.member("a").unwrap().peer_urls.len(), 2);
    }

    #[test]
    fn bad_specs_are_refused() {
        assert_eq!(
            InitialCluster::parse("", "t"),
            Err(InitialClusterError::Empty)
        );
        assert!(matches!(
            InitialCluster::parse("m1", "t"),
            Err(InitialClusterError::NotNameUrl(_))
        ));
        assert!(matches!(
            InitialCluster::parse("m1=ftp://x", "t"),
            Err(InitialClusterError::BadUrl { .. })
        ));
        assert!(matches!(
            InitialCluster::parse("a=http://h:1,b=http://h:1", "t"),
            Err(InitialClusterError::DuplicateId(..))
        ));
    }
}
