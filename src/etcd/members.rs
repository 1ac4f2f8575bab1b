//! The member list a foreign member keeps from its initial cluster and the attributes
//! published through raft, and the JSON bodies of `GET /members` and `GET /version`.

use serde::{Deserialize, Serialize};

use super::ids::InitialCluster;
use super::requests::V2Request;

/// A member's published attributes (the value of `/0/members/<id>/attributes`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttributes {
    /// Name.
    pub name: String,
    /// Client URLs.
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
}

/// One member as `/members` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberEntry {
    /// ID (decimal in JSON, as etcd writes it).
    pub id: u64,
    /// Peer URLs.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Name (from `--initial-cluster` until published).
    pub name: String,
    /// Client URLs: empty until the member publishes them. (A member booting a new
    /// cluster refuses to start if a peer lists *it* with client URLs, so never invent
    /// them.)
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

/// The members we know of, sorted by ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Members.
    pub members: Vec<MemberEntry>,
}

impl Membership {
    /// The initial members, none published.
    pub fn from_initial(c: &InitialCluster) -> Membership {
        Membership {
            members: c
                .members
                .iter()
                .map(|m| MemberEntry {
                    id: m.id,
                    peer_urls: m.peer_urls.clone(),
                    name: m.name.clone(),
                    client_urls: Vec::new(),
                })
                .collect(),
        }
    }

    /// Applies a committed v2 request if it publishes attributes; returns the member
    /// whose attributes changed.
    pub fn apply_v2(&mut self, r: &V2Request) -> Option<u64> {
        let id = r
            .path
            .strip_prefix("/0/members/")?
            .strip_suffix("/attributes")?;
        let id = crate::json::id_from_hex(id)?;
        let attrs: MemberAttributes = serde_json::from_str(&r.val).ok()?;
        let m = self.members.iter_mut().find(|m| m.id == id)?;
        m.name = attrs.name;
        m.client_urls = attrs.client_urls;
        Some(id)
    }

    /// The member with `id`.
    pub fn get(&self, id: u64) -> Option<&MemberEntry> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The body of `GET /members`, newline-terminated as Go's `json.Encoder` writes it.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string(&self.members).unwrap_or_else(|_| "[]".into());
        s.push('\n');
        s
    }
}

/// The body of `GET /version`.
pub fn version_json(server: &str, cluster: &str) -> String {
    #[derive(Serialize)]
    struct Versions<'a> {
        etcdserver: &'a str,
        etcdcluster: &'a str,
    }
    serde_json::to_string(&Versions {
        etcdserver: server,
        etcdcluster: cluster,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_json_matches_etcd_after_publish() {
        let c = InitialCluster::parse(
            "m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803",
            "rafthttp-interop",
        )
        .unwrap();
        let mut ms = Membership::from_initial(&c);
        assert!(ms.to_json().contains(r#""name":"m3","clientURLs":[]"#));
        for (id, n) in [
            (0x5f1298836671828du64, 1),
            (0xb09a17ddc8c72954, 2),
            (0xcaff9c7f440d9bc5, 3),
        ] {
            let r = V2Request {
                method: "PUT".into(),
                path: format!("/0/members/{id:x}/attributes"),
                val: format!(r#"{{"name":"m{n}","clientURLs":["http://127.0.0.1:2379{n}"]}}"#),
                ..Default::default()
            };
            assert_eq!(ms.apply_v2(&r), Some(id));
        }
        // The body of the golden probe-leader/members.response.bin.
        assert_eq!(
            ms.to_json(),
            r#"[{"id":6850705673310798477,"peerURLs":["http://127.0.0.1:23801"],"name":"m1","clientURLs":["http://127.0.0.1:23791"]},{"id":12725509938412464468,"peerURLs":["http://127.0.0.1:23802"],"name":"m2","clientURLs":["http://127.0.0.1:23792"]},{"id":14627582185139182533,"peerURLs":["http://127.0.0.1:23803"],"name":"m3","clientURLs":["http://127.0.0.1:23793"]}]
"#
        );
    }

    #[test]
    fn other_paths_and_bad_values_change_nothing() {
        let c = InitialCluster::parse("a=http://h:1", "t").unwrap();
        let mut ms = Membership::from_initial(&c);
        let before = ms.clone();
        for (path, val) in [
            ("/0/version", "3.4.0"),
            ("/0/members/zz/attributes", "{}"),
            ("/0/members/1/attributes", r#"{"name":"x"}"#),
            (
                &*format!("/0/members/{:x}/attributes", c.members[0].id),
                "not json",
            ),
        ] {
            let r = V2Request {
                path: path.into(),
                val: val.into(),
                ..Default::default()
            };
            assert_eq!(ms.apply_v2(&r), None);
        }
        assert_eq!(ms, before);
        assert_eq!(
            version_json("3.4.23", "3.4.0"),
            r#"{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}"#
        );
    }
}
