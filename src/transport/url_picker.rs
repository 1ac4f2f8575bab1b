//! etcd's `urlPicker`: the peer's URLs in order, the current one, and a move to the next
//! on failure that happens only once however many channels report the same failure.

use std::sync::Mutex;

use crate::http::client::PeerUrl;

/// Picks which of a peer's URLs to use; shared by all of the peer's channels.
#[derive(Debug)]
pub struct UrlPicker {
    state: Mutex<(Vec<PeerUrl>, usize)>,
}

impl UrlPicker {
    /// A picker over `urls` (at least one), starting at the first.
    pub fn new(urls: Vec<PeerUrl>) -> Self {
        UrlPicker {
            state: Mutex::new((urls, 0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<PeerUrl>, usize)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current URL.
    pub fn pick(&self) -> Option<PeerUrl> {
        let s = self.lock();
        s.0.get(s.1).cloned()
    }

    /// [`UrlPicker::pick`] into `slot`, cloning only when the pick differs from what
    /// `slot` holds already (the prober asks every few seconds, for the same URL).
    pub fn pick_into(&self, slot: &mut Option<PeerUrl>) {
        let s = self.lock();
        let now = s.0.get(s.1);
        if slot.as_ref() != now {
            *slot = now.cloned();
        }
    }

    /// `url` failed: move on, but only if it is still the current one, so concurrent
    /// failures of the same URL skip ahead once.
    pub fn unreachable(&self, url: &PeerUrl) {
        let mut s = self.lock();
        if s.0.get(s.1) == Some(url) && !s.0.is_empty() {
            s.1 = (s.1 + 1) % s.0.len();
        }
    }

    /// Replaces the URLs and starts over at the first.
    pub fn update(&self, urls: Vec<PeerUrl>) {
        *self.lock() = (urls, 0);
    }

    /// All the URLs.
    pub fn urls(&self) -> Vec<PeerUrl> {
        self.lock().0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> PeerUrl {
        s.parse().unwrap()
    }

    #[test]
    fn advances_once_per_failure_of_the_current_url() {
        let p = UrlPicker::new(vec![u("http://a:1"), u("http://b:2"), u("http://c:3")]);
        let first = p.pick().unwrap();
        p.unreachable(&first);
        p.unreachable(&first); // a second channel reporting the same failure
        assert_eq!(p.pick().unwrap(), u("http://b:2"));
        p.unreachable(&u("http://b:2"));
        p.unreachable(&u("http://c:3"));
        assert_eq!(p.pick().unwrap(), u("http://a:1"), "round robin");
        p.update(vec![u("http://d:4")]);
        assert_eq!(p.pick().unwrap(), u("http://d:4"));
    }

    #[test]
    fn pick_into_follows_the_current_url() {
        let p = UrlPicker::new(vec![u("http://a:1"), u("http://b:2")]);
        let mut slot = None;
        p.pick_into(&mut slot);
        assert_eq!(slot, Some(u("http://a:1")));
        p.pick_into(&mut slot);
        assert_eq!(slot, Some(u("http://a:1")));
        p.unreachable(&u("http://a:1"));
        p.pick_into(&mut slot);
        assert_eq!(slot, Some(u("http://b:2")));
        p.update(Vec::new());
        p.pick_into(&mut slot);
        assert_eq!(slot, None);
    }
}
