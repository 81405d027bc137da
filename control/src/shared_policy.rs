//! The rule policy as the resolver sees it: the compiled lists and custom
//! rules behind a pointer that reloads swap atomically, so queries in
//! flight keep the set they started with.

use std::{net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use dnsgate_common::rules::DEFAULT_CLIENT_GROUPS;
use hickory_proto::rr::Name;

use crate::{
    policy::{Decision, Policy},
    resolver::{BlockStyle, PolicyAction, QueryPolicy},
};

/// The policy in force and how blocked names are answered.
#[derive(Debug)]
pub struct SharedPolicy {
    policy: ArcSwap<Policy>,
    style: ArcSwap<BlockStyle>,
}

impl SharedPolicy {
    /// Starts with `policy` and `style`.
    pub fn new(policy: Policy, style: BlockStyle) -> Self {
        Self { policy: ArcSwap::from_pointee(policy), style: ArcSwap::from_pointee(style) }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Replaces the policy; queries already being judged finish with the
    /// old one.
    pub fn replace(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Replaces the answer style.
    pub fn set_style(&self, style: BlockStyle) {
        self.style.store(Arc::new(style));
    }
}

impl QueryPolicy for SharedPolicy {
    fn check(&self, name: &Name, qtype: u16, _client: IpAddr) -> PolicyAction {
        let policy = self.policy.load();
        let style = **self.style.load();
        // Per-client groups are not configurable yet: every client is in
        // group 0, as in the kernel's client map.
        match policy.decide(&name.to_ascii(), qtype, DEFAULT_CLIENT_GROUPS) {
            Decision::NoMatch => PolicyAction::Pass,
            Decision::Allow => PolicyAction::Allow,
            Decision::Block { rule_label } => {
                let labels = usize::from(name.num_labels());
                let rule = if rule_label < labels { name.trim_to(labels - rule_label) } else { name.clone() };
                PolicyAction::Block { rule, style }
            }
            Decision::Rewrite { v4, v6 } => PolicyAction::Rewrite { v4, v6, ttl: style.ttl },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::{load_and_compile, Budget, ListFormat, ListRole, SourceSpec};

    fn policy_from(list: &str) -> SharedPolicy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(&path, list).unwrap();
        let spec = SourceSpec::new(path.to_string_lossy(), ListFormat::Adblock, ListRole::Block);
        let compiled = load_and_compile(&[spec], &Budget::default()).unwrap();
        SharedPolicy::new(Policy::new(compiled).unwrap(), BlockStyle::default())
    }

    #[test]
    fn block_names_the_rule_suffix() {
        let shared = policy_from("||ads.example^\n");
        let name = Name::from_ascii("x.y.ads.example.").unwrap();
        let PolicyAction::Block { rule, .. } = shared.check(&name, 1, "192.0.2.1".parse().unwrap()) else {
            panic!("expected a block");
        };
        assert_eq!(rule, Name::from_ascii("ads.example.").unwrap());
    }

    #[test]
    fn exception_allows_and_other_names_pass() {
        let shared = policy_from("||ads.example^\n@@||good.ads.example^\n");
        let client = "192.0.2.1".parse().unwrap();
        assert_eq!(shared.check(&Name::from_ascii("good.ads.example.").unwrap(), 1, client), PolicyAction::Allow);
        assert_eq!(shared.check(&Name::from_ascii("example.org.").unwrap(), 1, client), PolicyAction::Pass);
    }
}
