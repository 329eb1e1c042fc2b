//! MX sites (`[shaping] group_by_mx_site`): domains whose MX hosts are the
//! same are one destination for shaping (one provider behind many
//! domains). The map from domain to site is learned from the MX answers
//! of earlier deliveries (shared by all workers, kept across reloads); a
//! domain not seen yet is its own destination until its first delivery
//! has looked it up. Bounded in size and age.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most domains remembered.
const MAX_DOMAINS: usize = 10_000;
/// How long a learned site is trusted (MX records change rarely; the
/// next delivery learns it again).
const MAX_AGE: Duration = Duration::from_secs(3600);
/// Most MX host names making a site's name.
const MAX_HOSTS: usize = 8;

/// Domain → MX site name.
#[derive(Default)]
pub struct MxSites {
    map: Mutex<HashMap<String, (String, Instant), foldhash::fast::RandomState>>,
}

impl MxSites {
    /// Records the MX hosts found for `domain` (lowercase, without a
    /// trailing dot). The site's name is `mx:` and the sorted, distinct
    /// host names.
    pub fn learn<'a>(&self, domain: &str, hosts: impl Iterator<Item = &'a str>) {
        let Some(site) = site_name(hosts) else {
            return;
        };
        let mut map = match self.map.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        if map.len() >= MAX_DOMAINS && !map.contains_key(domain) {
            map.retain(|_, (_, learned)| now.duration_since(*learned) < MAX_AGE);
            if map.len() >= MAX_DOMAINS {
                map.clear();
            }
        }
        map.insert(domain.to_ascii_lowercase(), (site, now));
    }

    /// The site of `domain`, when learned and fresh.
    pub fn site_of(&self, domain: &str) -> Option<String> {
        let map = match self.map.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (site, learned) = map.get(&domain.to_ascii_lowercase())?;
        (learned.elapsed() < MAX_AGE).then(|| site.clone())
    }
}

/// `mx:` and the sorted distinct host names (lowercase, no trailing dot),
/// at most [`MAX_HOSTS`]; None for no host.
pub fn site_name<'a>(hosts: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut names: Vec<String> = hosts
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.truncate(MAX_HOSTS);
    if names.is_empty() {
        return None;
    }
    Some(format!("mx:{}", names.join(",")))
}

#[cfg(test)]
#[path = "sites_tests.rs"]
mod tests;
